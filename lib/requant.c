/* bitnet requant: a GGUF with its LM head in another type, everything else copied. */
#include "requant.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bitnet/kernel.h"
#include "gguf.h"
#include "gguf_write.h"
#include "quant.h"

#define IO_BUF (4u << 20)
#define COPY_STEP (8u << 20)        /* bytes copied per write, and pages dropped behind */
#define PROGRESS_STEP (16u << 20)

int bn_requant_parse_head(const char *s)
{
	if (!strcasecmp(s, "q8_0"))
		return BN_TYPE_Q8_0;
	if (!strcasecmp(s, "f16"))
		return BN_TYPE_F16;
	return -EINVAL;
}

struct rq {
	const struct bn_requant_opts *o;
	const struct bn_gguf *g;
	struct bn_ggufw *w;
	uint64_t done, total, last_report;
	size_t page;
};

static int emit(struct rq *q, const void *buf, size_t n, struct bn_error *err)
{
	int rc = bn_ggufw_write(q->w, buf, n, err);
	if (rc)
		return rc;
	q->done += n;
	if (q->o->progress && q->done - q->last_report >= PROGRESS_STEP) {
		q->last_report = q->done;
		q->o->progress(q->o->user, q->done, q->total);
	}
	return 0;
}

/* Gives back the pages of [p, p + n) of the input map once consumed: a 1 GB model streamed
 * through would otherwise stay resident (only the mapping's pages go; the page cache keeps
 * them). */
static void drop(const struct rq *q, const uint8_t *p, size_t n)
{
	if (!q->g->mapped)
		return;
	uintptr_t a = ((uintptr_t)p + q->page - 1) & ~(uintptr_t)(q->page - 1);
	uintptr_t e = ((uintptr_t)p + n) & ~(uintptr_t)(q->page - 1);
	if (e > a)
		madvise((void *)a, e - a, MADV_DONTNEED);
}

static int copy_tensor(struct rq *q, const struct bn_gguf_tensor *t, struct bn_error *err)
{
	const uint8_t *p = t->data;
	for (uint64_t off = 0; off < t->size;) {
		size_t n = t->size - off < COPY_STEP ? (size_t)(t->size - off) : COPY_STEP;
		int rc = emit(q, p + off, n, err);
		if (rc)
			return rc;
		drop(q, p + off, n);
		off += n;
	}
	return 0;
}

/* Row r of a float head as f32. f: [k] */
static void load_row(const struct bn_gguf_tensor *t, uint64_t r, size_t k, float *f)
{
	const uint8_t *p = (const uint8_t *)t->data;
	if (t->type == BN_TYPE_F32) {
		memcpy(f, p + r * k * 4, k * 4);   /* the file may place it off 4-byte alignment */
		return;
	}
	const uint8_t *h = p + r * k * 2;
	for (size_t j = 0; j < k; j++) {
		uint16_t v = (uint16_t)(h[2 * j] | h[2 * j + 1] << 8);
		f[j] = t->type == BN_TYPE_F16 ? bn_f16_to_f32(v) : bn_bf16_to_f32(v);
	}
}

static int write_head(struct rq *q, const struct bn_gguf_tensor *src, uint32_t type,
                      struct bn_requant_report *rep, struct bn_error *err)
{
	size_t k = (size_t)src->ne[0];
	uint64_t rows = src->ne[1];
	size_t rb = type == BN_TYPE_Q8_0 ? bn_q8_0_row_bytes(k) : k * 2;
	float *f = malloc(k * sizeof(float));    /* [k] source row */
	float *back = malloc(k * sizeof(float)); /* [k] the row as written, decoded */
	uint8_t *row = malloc(rb);               /* [rb] encoded */
	int rc = 0;
	if (!f || !back || !row) {
		rc = bn_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	double se = 0, ss = 0;
	size_t src_rb = (size_t)(src->size / rows);
	for (uint64_t r = 0; r < rows && !rc; r++) {
		load_row(src, r, k, f);
		if (type == BN_TYPE_Q8_0) {
			if (bn_q8_0_encode_row(f, k, row)) {
				size_t j = 0;
				while (j < k && isfinite(f[j]))
					j++;
				rc = bn_err_set(err, -ERANGE, "file %s: tensor '%s': row %llu: %s", q->o->in,
				                src->name, (unsigned long long)r,
				                j < k ? "a value is not finite"
				                      : "a value is too large for q8_0 (|x| > 8.3e6)");
				break;
			}
			bn_q8_0_decode_row(row, k, back);
		} else {
			uint16_t *h = (uint16_t *)(void *)row;
			for (size_t j = 0; j < k; j++) {
				h[j] = bn_f32_to_f16(f[j]);
				back[j] = bn_f16_to_f32(h[j]);
				if (isfinite(f[j]) && !isfinite(back[j])) {
					rc = bn_err_set(err, -ERANGE, "file %s: tensor '%s': element [%llu][%zu] "
					                "= %g overflows f16", q->o->in, src->name,
					                (unsigned long long)r, j, (double)f[j]);
					break;
				}
			}
			if (rc)
				break;
		}
		for (size_t j = 0; j < k; j++) {
			double d = (double)back[j] - f[j];
			se += d * d;
			ss += (double)f[j] * f[j];
		}
		rc = emit(q, row, rb, err);
		if (!rc && (r + 1) % 1024 == 0)
			drop(q, (const uint8_t *)src->data + (r - 1023) * src_rb, 1024 * src_rb);
	}
	rep->rel_rms_error = ss > 0 ? sqrt(se / ss) : 0;
out:
	free(f);
	free(back);
	free(row);
	return rc;
}

/* Which tensor is the head, and whether the conversion makes sense. */
static int pick_source(const struct bn_requant_opts *o, const struct bn_gguf *g,
                       const struct bn_gguf_tensor **srcp, struct bn_error *err)
{
	const struct bn_gguf_tensor *out = bn_gguf_find_tensor(g, "output.weight");
	const struct bn_gguf_tensor *src = out ? out : bn_gguf_find_tensor(g, "token_embd.weight");
	const char *tn = bn_ggml_type_name(o->head_type);
	if (!src)
		return bn_err_set(err, -EBADMSG, "file %s: neither 'output.weight' nor "
		                  "'token_embd.weight' is there: no LM head to convert", o->in);
	if (src->n_dims != 2 || src->ne[2] != 1 || src->ne[3] != 1)
		return bn_err_set(err, -EBADMSG, "file %s: tensor '%s' has %u dimensions, 2 expected",
		                  o->in, src->name, src->n_dims);
	if (src->type == o->head_type)
		return bn_err_set(err, -EEXIST, "file %s: the LM head ('%s') is already %s: nothing "
		                  "to do", o->in, src->name, tn);
	if (src->type == BN_TYPE_Q8_0)
		return bn_err_set(err, -ENOTSUP, "file %s: the LM head ('%s') is q8_0: converting it "
		                  "to %s would keep the 8-bit rounding (run requant on the original "
		                  "file instead)", o->in, src->name, tn);
	if (src->type != BN_TYPE_F16 && src->type != BN_TYPE_BF16 && src->type != BN_TYPE_F32)
		return bn_err_set(err, -ENOTSUP, "file %s: tensor '%s' has type %s (f16, bf16 or f32 "
		                  "expected for an LM head)", o->in, src->name,
		                  bn_ggml_type_name(src->type));
	if (o->head_type == BN_TYPE_Q8_0 && src->ne[0] % BN_Q8_0_BLOCK)
		return bn_err_set(err, -ENOTSUP, "file %s: tensor '%s': row length %llu is not a "
		                  "multiple of %d (q8_0 blocks)", o->in, src->name,
		                  (unsigned long long)src->ne[0], BN_Q8_0_BLOCK);
	*srcp = src;
	return 0;
}

static int write_kvs(struct rq *q, struct bn_error *err)
{
	const struct bn_gguf *g = q->g;
	for (uint64_t i = 0; i < g->n_kv; i++) {
		const struct bn_gguf_kv *kv = &g->kv[i];
		char *key = strndup(kv->key.ptr, (size_t)kv->key.len);
		const uint8_t *val;
		uint64_t len;
		if (!key)
			return bn_err_set(err, -ENOMEM, "out of memory");
		int rc = bn_gguf_kv_value(kv, &val, &len);
		if (rc)
			rc = bn_err_set(err, rc, "file %s: key '%s': cannot copy its value", q->o->in, key);
		else
			rc = bn_ggufw_kv_raw(q->w, key, kv->type, val, (size_t)len, err);
		free(key);
		if (rc)
			return rc;
	}
	return 0;
}

int bn_requant(const struct bn_requant_opts *opts, struct bn_requant_report *rep,
               struct bn_error *err)
{
	struct bn_requant_report dummy;
	if (!rep)
		rep = &dummy;
	memset(rep, 0, sizeof *rep);
	if (!opts->in || !opts->out)
		return bn_err_set(err, -EINVAL, "an input and an output file are required");
	if (opts->head_type != BN_TYPE_Q8_0 && opts->head_type != BN_TYPE_F16)
		return bn_err_set(err, -EINVAL, "head type %s: q8_0 or f16 expected",
		                  bn_ggml_type_name(opts->head_type));
	struct rq q = { .o = opts, .page = (size_t)sysconf(_SC_PAGESIZE) };
	struct bn_gguf *g = NULL;
	const struct bn_gguf_tensor *src = NULL;
	char tmp[4200] = "";
	FILE *fp = NULL;
	char *iobuf = NULL;
	int rc = bn_gguf_open(&g, opts->in, err);
	if (rc)
		return rc;
	q.g = g;
	if ((rc = pick_source(opts, g, &src, err)))
		goto out;
	const struct bn_gguf_tensor *outw = bn_gguf_find_tensor(g, "output.weight");
	rep->source = outw ? "output.weight" : "token_embd.weight";
	rep->source_type = src->type;
	rep->replaced = outw != NULL;
	rep->n_embd = (uint32_t)src->ne[0];
	rep->n_vocab = (uint32_t)src->ne[1];
	rep->head_bytes_in = src->size;

	if (!(iobuf = malloc(IO_BUF))) {
		rc = bn_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	if (!(fp = bn_ggufw_open_temp(opts->out, tmp, sizeof tmp, err))) {
		rc = err->code;
		goto out;
	}
	setvbuf(fp, iobuf, _IOFBF, IO_BUF);
	if ((rc = bn_ggufw_open_fp(&q.w, fp, opts->out, err)) || (rc = write_kvs(&q, err)))
		goto fail;
	const uint64_t head_ne[2] = { src->ne[0], src->ne[1] };
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		const struct bn_gguf_tensor *t = &g->tensors[i];
		bool head = t == outw;
		uint32_t type = head ? opts->head_type : t->type;
		if ((rc = bn_ggufw_tensor(q.w, t->name, t->n_dims, head ? head_ne : t->ne, type, err)))
			goto fail;
		uint64_t sz = bn_ggufw_tensor_nbytes(type, t->n_dims, head ? head_ne : t->ne);
		if (!head && sz != t->size) {   /* both sides size types the same way: a bug if not */
			rc = bn_err_set(err, -EBADMSG, "file %s: tensor '%s': %llu bytes, the writer "
			                "counts %llu", opts->in, t->name, (unsigned long long)t->size,
			                (unsigned long long)sz);
			goto fail;
		}
		q.total += sz;
	}
	if (!outw) {
		if ((rc = bn_ggufw_tensor(q.w, "output.weight", 2, head_ne, opts->head_type, err)))
			goto fail;
		q.total += bn_ggufw_tensor_nbytes(opts->head_type, 2, head_ne);
	}
	rep->head_bytes_out = bn_ggufw_tensor_nbytes(opts->head_type, 2, head_ne);
	if ((rc = bn_ggufw_begin_data(q.w, err)))
		goto fail;
	for (uint64_t i = 0; i < g->n_tensors && !rc; i++) {
		const struct bn_gguf_tensor *t = &g->tensors[i];
		rc = t == outw ? write_head(&q, src, opts->head_type, rep, err) : copy_tensor(&q, t, err);
		if (!rc && opts->progress) {
			q.last_report = q.done;
			opts->progress(opts->user, q.done, q.total);
		}
	}
	if (!rc && !outw) {
		rc = write_head(&q, src, opts->head_type, rep, err);
		if (!rc && opts->progress)
			opts->progress(opts->user, q.done, q.total);
	}
	if (rc)
		goto fail;
	rep->bytes = bn_ggufw_file_size(q.w);
	rc = bn_ggufw_close(q.w, err);
	q.w = NULL;
	if (rc)
		goto fail;
	rc = bn_ggufw_commit_temp(fp, tmp, opts->out, err);
	fp = NULL;
	if (rc)
		goto fail;
	goto out;
fail:
	bn_ggufw_abort(q.w);   /* opened on our stream: neither closes nor removes it */
	if (fp)
		fclose(fp);
	if (tmp[0])
		unlink(tmp);
out:
	free(iobuf);
	bn_gguf_close(g);
	return rc;
}
