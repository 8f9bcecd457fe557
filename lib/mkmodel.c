/* Synthetic model generator (see mkmodel.h). */
#include "mkmodel.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bitnet/kernel.h"
#include "gguf.h"
#include "gguf_write.h"
#include "quant.h"
#include "rng.h"
#include "tokjson.h"
#include "vocab.h"

#define PROGRESS_STEP (8u << 20)   /* bytes between progress calls inside a tensor */

/* ---- options ------------------------------------------------------------------------- */

struct preset {
	const char *name;
	uint32_t hidden, ff, layers, heads, kv_heads, vocab, ctx;
};

static const struct preset presets[] = {
	{ "tiny", 256, 512, 2, 4, 2, 512, 512 },
	{ "small", 512, 1536, 3, 8, 2, 1024, 1024 },
	{ "2b4t", 2560, 6912, 30, 20, 5, 128256, 4096 },
};

void bn_mkmodel_defaults(struct bn_mkmodel_opts *o)
{
	memset(o, 0, sizeof *o);
	o->arch = "bitnet-b1.58";
	o->wtype = BN_TYPE_I2_S;
	o->embd_type = BN_TYPE_F16;
	o->seed = 1;
	o->rope_base = 500000.0f;
	o->eps = 1e-5f;
	bn_mkmodel_preset(o, "tiny");
}

int bn_mkmodel_preset(struct bn_mkmodel_opts *o, const char *name)
{
	for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
		const struct preset *p = &presets[i];
		if (name && !strcmp(name, p->name)) {
			o->hidden = p->hidden;
			o->ff = p->ff;
			o->layers = p->layers;
			o->heads = p->heads;
			o->kv_heads = p->kv_heads;
			o->vocab = p->vocab;
			o->ctx = p->ctx;
			return 0;
		}
	}
	return -EINVAL;
}

static const struct {
	const char *name;
	uint32_t type;
	uint32_t file_type;   /* general.file_type (llama_ftype) of a file with these projections */
} types[] = {
	{ "f32", BN_TYPE_F32, 0 },
	{ "f16", BN_TYPE_F16, 1 },
	{ "bf16", BN_TYPE_BF16, 32 },
	{ "tq1_0", BN_TYPE_TQ1_0, 36 },
	{ "tq2_0", BN_TYPE_TQ2_0, 37 },
	{ "i2_s", BN_TYPE_I2_S, 40 },
};

int bn_mkmodel_parse_type(const char *s)
{
	for (size_t i = 0; s && i < sizeof types / sizeof types[0]; i++)
		if (!strcasecmp(s, types[i].name))
			return (int)types[i].type;
	return -EINVAL;
}

static const char *type_str(uint32_t t)
{
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
		if (types[i].type == t)
			return types[i].name;
	return NULL;
}

static uint32_t file_type(uint32_t t)
{
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
		if (types[i].type == t)
			return types[i].file_type;
	return 0;
}

static bool is_tq(uint32_t t)
{
	return t == BN_TYPE_TQ1_0 || t == BN_TYPE_TQ2_0;
}

static bool arch_ok(const char *a)
{
	return a && (!strcmp(a, "bitnet-b1.58") || !strcmp(a, "bitnet-25") || !strcmp(a, "bitnet") ||
	             !strcmp(a, "llama"));
}

/* Synthetic vocab: 256 bytes + one token per merge + 4 control tokens at least. */
#define N_MERGES 40
#define SYNTH_MIN_VOCAB (256 + N_MERGES + 4)

/* vocab 0 is accepted only with a tokenizer (it then comes from there). */
int bn_mkmodel_validate(const struct bn_mkmodel_opts *o, struct bn_error *err)
{
	if (!arch_ok(o->arch))
		return bn_err_set(err, -EINVAL, "option arch: '%s' is not bitnet-b1.58, bitnet-25, bitnet "
		                  "or llama",
		                  o->arch ? o->arch : "(null)");
	if (!type_str(o->wtype))
		return bn_err_set(err, -EINVAL, "option type: unsupported projection type %u", o->wtype);
	if (o->embd_type != BN_TYPE_F16 && o->embd_type != BN_TYPE_BF16 && o->embd_type != BN_TYPE_F32)
		return bn_err_set(err, -EINVAL, "option embd-type: must be f16, bf16 or f32");
	if (o->head_type && o->head_type != BN_TYPE_Q8_0)
		return bn_err_set(err, -EINVAL, "option head: must be q8_0 (or none: tied)");
	if (o->head_type && o->untied)
		return bn_err_set(err, -EINVAL, "options head and untied: choose one (an untied model's "
		                  "head becomes Q8_0 with `bitnet requant --head q8_0`)");
	struct { const char *name; uint32_t v, max; } lim[] = {
		{ "hidden", o->hidden, 65536 }, { "ff", o->ff, 262144 }, { "layers", o->layers, 1024 },
		{ "heads", o->heads, 4096 }, { "kv-heads", o->kv_heads, 4096 },
		{ "ctx", o->ctx, 1u << 24 },
	};
	for (size_t i = 0; i < sizeof lim / sizeof lim[0]; i++)
		if (lim[i].v == 0 || lim[i].v > lim[i].max)
			return bn_err_set(err, -EINVAL, "option %s: %u is out of range 1..%u", lim[i].name,
			                  lim[i].v, lim[i].max);
	if (o->vocab > (1u << 22) || (o->vocab == 0 && !o->tokenizer_json))
		return bn_err_set(err, -EINVAL, "option vocab: %u is out of range 1..%u", o->vocab,
		                  1u << 22);
	if (!o->tokenizer_json && o->vocab < SYNTH_MIN_VOCAB)
		return bn_err_set(err, -EINVAL,
		                  "option vocab: %u is too small for the synthetic tokenizer (min %u)",
		                  o->vocab, SYNTH_MIN_VOCAB);
	uint32_t blk = is_tq(o->wtype) ? 256 : 128;
	if (o->hidden % blk)
		return bn_err_set(err, -EINVAL, "option hidden: %u is not a multiple of %u (%s rows)",
		                  o->hidden, blk, type_str(o->wtype));
	if (o->ff % blk)
		return bn_err_set(err, -EINVAL, "option ff: %u is not a multiple of %u (%s rows)", o->ff,
		                  blk, type_str(o->wtype));
	if (o->hidden % o->heads)
		return bn_err_set(err, -EINVAL, "option heads: %u does not divide hidden %u", o->heads,
		                  o->hidden);
	if (o->heads % o->kv_heads)
		return bn_err_set(err, -EINVAL, "option kv-heads: %u does not divide heads %u",
		                  o->kv_heads, o->heads);
	if ((o->hidden / o->heads) % 2)
		return bn_err_set(err, -EINVAL, "option heads: head dim %u (hidden/heads) is odd",
		                  o->hidden / o->heads);
	if (!(o->gamma_rms >= 0.0f) || !isfinite(o->gamma_rms))
		return bn_err_set(err, -EINVAL, "option gamma-rms: must be a finite value >= 0");
	if (!(o->rope_base > 0.0f) || !isfinite(o->rope_base))
		return bn_err_set(err, -EINVAL, "option rope-base: must be finite and > 0");
	if (!(o->eps > 0.0f) || !isfinite(o->eps))
		return bn_err_set(err, -EINVAL, "option eps: must be finite and > 0");
	if (o->scale_tensors && strcmp(o->arch, "bitnet"))
		return bn_err_set(err, -EINVAL, "option scale-tensors: only for arch bitnet, not %s",
		                  o->arch);
	return 0;
}

/* ---- tensor plan -------------------------------------------------------------------- */

enum kind { K_EMBD, K_NORM, K_PROJ, K_SCALE, K_HEAD };

struct plan {
	char name[64];
	enum kind kind;
	uint32_t n_dims;
	uint64_t ne[2];      /* ne[0] row length (fan in), ne[1] rows */
	uint32_t type;
	bool attn_norm;      /* subject to gamma_rms */
};

/* plan: [1 + layers * 18 + 2] at most */
static size_t build_plan(const struct bn_mkmodel_opts *o, struct plan *p)
{
	size_t n = 0;
	bool sub_norms = strcmp(o->arch, "llama") != 0;
	uint64_t H = o->hidden, FF = o->ff, KV = (uint64_t)o->hidden / o->heads * o->kv_heads;
	p[n++] = (struct plan){ "token_embd.weight", K_EMBD, 2, { H, o->vocab }, o->embd_type, false };
	for (uint32_t l = 0; l < o->layers; l++) {
		struct { const char *n; int proj; uint64_t in, out; } seq[11] = {
			{ "attn_norm", -1, H, 0 }, { "attn_q", 0, H, H }, { "attn_k", 1, H, KV },
			{ "attn_v", 2, H, KV }, { "attn_output", 3, H, H }, { "attn_sub_norm", -1, H, 0 },
			{ "ffn_norm", -1, H, 0 }, { "ffn_gate", 4, H, FF }, { "ffn_up", 5, H, FF },
			{ "ffn_down", 6, FF, H }, { "ffn_sub_norm", -1, FF, 0 },
		};
		for (size_t i = 0; i < 11; i++) {
			if (!sub_norms && strstr(seq[i].n, "_sub_norm"))
				continue;
			struct plan *t = &p[n++];
			memset(t, 0, sizeof *t);
			snprintf(t->name, sizeof t->name, "blk.%u.%s.weight", l, seq[i].n);
			t->ne[0] = seq[i].in;
			if (seq[i].proj < 0) {
				t->kind = K_NORM;
				t->n_dims = 1;
				t->ne[1] = 1;
				t->type = BN_TYPE_F32;
				t->attn_norm = i == 0;
				continue;
			}
			t->kind = K_PROJ;
			t->n_dims = 2;
			t->ne[1] = seq[i].out;
			t->type = o->wtype;
			if (o->scale_tensors) {
				struct plan *s = &p[n++];
				memset(s, 0, sizeof *s);
				snprintf(s->name, sizeof s->name, "blk.%u.%s.scale", l, seq[i].n);
				s->kind = K_SCALE;
				s->n_dims = 1;
				s->ne[0] = 1;
				s->ne[1] = 1;
				s->type = BN_TYPE_F32;
			}
		}
	}
	p[n++] = (struct plan){ "output_norm.weight", K_NORM, 1, { H, 1 }, BN_TYPE_F32, false };
	if (o->untied)
		p[n++] = (struct plan){ "output.weight", K_EMBD, 2, { H, o->vocab }, o->embd_type, false };
	else if (o->head_type)
		p[n++] = (struct plan){ "output.weight", K_HEAD, 2, { H, o->vocab }, o->head_type, false };
	return n;
}

static size_t plan_cap(const struct bn_mkmodel_opts *o)
{
	return 3 + (size_t)o->layers * 18;
}

static uint64_t plan_bytes(const struct plan *p, size_t n)
{
	uint64_t total = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t b = bn_ggufw_tensor_nbytes(p[i].type, p[i].n_dims, p[i].ne);
		if (!b || total + b < total)
			return 0;
		total += b;
	}
	return total;
}

uint64_t bn_mkmodel_data_bytes(const struct bn_mkmodel_opts *o)
{
	if (bn_mkmodel_validate(o, NULL) || o->vocab == 0)
		return 0;
	struct plan *p = malloc(plan_cap(o) * sizeof *p);
	if (!p)
		return 0;
	uint64_t b = plan_bytes(p, build_plan(o, p));
	free(p);
	return b;
}

/* ---- PRNG: splitmix64 seeds xoshiro256**, one stream per tensor ----------------------- */

/* The stream of a tensor depends on the seed and the tensor's name only. */
static void rng_init(struct bn_rng *r, uint64_t seed, const char *stream)
{
	uint64_t h = 0xcbf29ce484222325ull;   /* FNV-1a of the name */
	for (const char *c = stream; *c; c++)
		h = (h ^ (uint8_t)*c) * 0x100000001b3ull;
	uint64_t x = seed;
	bn_rng_seed(r, bn_splitmix64(&x) ^ h);
}

/* A row of standard normals (Box-Muller, both values used). out: [n] */
static void rng_normals(struct bn_rng *r, float *out, size_t n, double sigma)
{
	for (size_t i = 0; i < n; i += 2) {
		double u1 = ((double)(bn_rng_next(r) >> 11) + 1.0) * 0x1p-53;   /* (0, 1] */
		double u2 = bn_rng_double(r);
		double rad = sqrt(-2.0 * log(u1)) * sigma;
		out[i] = (float)(rad * cos(2.0 * M_PI * u2));
		if (i + 1 < n)
			out[i + 1] = (float)(rad * sin(2.0 * M_PI * u2));
	}
}

/* trit5[b]: the 5 base-3 digits of b < 243 as ternary values; a random byte below 243
 * gives 5 exactly uniform trits, bytes 243..255 are rejected. */
struct trit_table {
	int8_t d[243][5];
};

static void trit_table_init(struct trit_table *tt)
{
	for (unsigned b = 0; b < 243; b++) {
		unsigned v = b;
		for (int j = 0; j < 5; j++) {
			tt->d[b][j] = (int8_t)(v % 3) - 1;
			v /= 3;
		}
	}
}

/* t: [n] */
static void rng_trits(struct bn_rng *r, const struct trit_table *tt, int8_t *t, size_t n)
{
	size_t i = 0;
	while (i < n) {
		uint64_t w = bn_rng_next(r);
		for (int byte = 0; byte < 8 && i < n; byte++, w >>= 8) {
			unsigned b = (unsigned)(w & 0xff);
			if (b >= 243)
				continue;
			for (int j = 0; j < 5 && i < n; j++)
				t[i++] = tt->d[b][j];
		}
	}
}

/* U(0.5, 1.5) / sqrt(fan_in), rounded to 8 significant bits so f16 and bf16 hold it exactly */
static float draw_scale(struct bn_rng *r, uint64_t fan_in)
{
	double s = (0.5 + bn_rng_double(r)) / sqrt((double)fan_in);
	int e;
	double m = frexp(s, &e);               /* [0.5, 1) */
	return (float)ldexp(nearbyint(ldexp(m, 8)), e - 8);
}

/* ---- synthetic vocab ------------------------------------------------------------------ */

#define G "\xc4\xa0"   /* U+0120, the GPT-2 alphabet's space */

/* Common English pairs, in rank order; each adds the token of its concatenation. */
static const char *const synth_merges[N_MERGES] = {
	G " t", "h e", "i n", "n g", "n d", "e r", "a n", G " a", "o n", "r e",
	G "t he", G " s", "e n", "a t", "o r", G " w", "e s", "i s", G " o", G " c",
	"i t", G " b", "a l", G " f", "i ng", G " p", G " m", "o u", "l l", G " d",
	"e d", G " h", G "a nd", G " i", G "o f", G "t o", G " l", G " n", "l e", G "i n",
};

/* The GPT-2 byte alphabet: printable Latin-1 bytes keep their code point, the other 68
 * map in order to U+0100.. . out: [3] UTF-8 + NUL */
static void byte_token(unsigned b, char out[3])
{
	unsigned cp;
	if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae) {
		cp = b;
	} else {
		unsigned n = 0;   /* rank of b among the remapped bytes */
		for (unsigned c = 0; c < b; c++)
			if (!((c >= 0x21 && c <= 0x7e) || (c >= 0xa1 && c <= 0xac) || c >= 0xae))
				n++;
		cp = 0x100 + n;
	}
	if (cp < 0x80) {
		out[0] = (char)cp;
		out[1] = 0;
	} else {
		out[0] = (char)(0xc0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3f));
		out[2] = 0;
	}
}

static int synth_vocab(uint32_t n, struct bn_vocab *v, struct bn_error *err)
{
	memset(v, 0, sizeof *v);
	v->n_tokens = n;
	v->tokens = calloc(n, sizeof *v->tokens);
	v->types = calloc(n, sizeof *v->types);
	v->merges = calloc(N_MERGES, sizeof *v->merges);
	if (!v->tokens || !v->types || !v->merges)
		goto oom;
	v->n_merges = N_MERGES;
	for (uint32_t i = 0; i < n; i++) {
		char buf[40];
		if (i < 256) {
			byte_token(i, buf);
		} else if (i < 256 + N_MERGES) {
			/* "a b" -> "ab" */
			const char *m = synth_merges[i - 256], *sp = strchr(m, ' ');
			snprintf(buf, sizeof buf, "%.*s%s", (int)(sp - m), m, sp + 1);
		} else if (i < n - 4) {
			/* brackets and digits only: no merge can form it and it is no special token */
			snprintf(buf, sizeof buf, "[tok%u]", i);
		} else {
			static const char *const ctl[4] = {
				"<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|pad|>",
			};
			snprintf(buf, sizeof buf, "%s", ctl[i - (n - 4)]);
		}
		if (!(v->tokens[i] = strdup(buf)))
			goto oom;
		v->types[i] = i >= n - 4 ? BN_TOKEN_CONTROL : BN_TOKEN_NORMAL;
	}
	for (uint32_t i = 0; i < N_MERGES; i++)
		if (!(v->merges[i] = strdup(synth_merges[i])))
			goto oom;
	v->bos = (int32_t)n - 4;
	v->eos = (int32_t)n - 3;
	v->eot = (int32_t)n - 2;
	v->pad = (int32_t)n - 1;
	v->add_bos = true;
	snprintf(v->model, sizeof v->model, "gpt2");
	snprintf(v->pre, sizeof v->pre, "llama-bpe");
	return 0;
oom:
	bn_vocab_free(v);
	return bn_err_set(err, -ENOMEM, "synthetic vocab: out of memory");
}

/* ---- writing -------------------------------------------------------------------------- */

struct gen {
	const struct bn_mkmodel_opts *o;
	struct bn_ggufw *w;
	struct trit_table tt;
	void (*progress)(void *, uint64_t, uint64_t);
	void *user;
	uint64_t done, total, last_report;
	int8_t *t;        /* [max_k] ternary row */
	float *f;         /* [max_k] float row */
	uint8_t *row;     /* [max_k * 4] encoded row (f32 is the widest) */
	float last_scale; /* the scale of the projection just written, for its .scale tensor */
};

static int emit(struct gen *g, const void *buf, size_t n, struct bn_error *err)
{
	int rc = bn_ggufw_write(g->w, buf, n, err);
	if (rc)
		return rc;
	g->done += n;
	if (g->progress && g->done - g->last_report >= PROGRESS_STEP) {
		g->last_report = g->done;
		g->progress(g->user, g->done, g->total);
	}
	return 0;
}

/* A row of floats in a float type (F32, F16, BF16). */
static int emit_float_row(struct gen *g, uint32_t type, const float *x, size_t n,
                          struct bn_error *err)
{
	if (type == BN_TYPE_F32)
		return emit(g, x, n * sizeof *x, err);
	uint16_t *h = (uint16_t *)g->row;
	if (type == BN_TYPE_F16)
		bn_f16_encode_row(x, n, h);
	else
		bn_bf16_encode_row(x, n, h);
	return emit(g, h, n * 2, err);
}

static int gen_embd(struct gen *g, const struct plan *p, struct bn_rng *r, struct bn_error *err)
{
	for (uint64_t row = 0; row < p->ne[1]; row++) {
		rng_normals(r, g->f, p->ne[0], 0.02);
		int rc = emit_float_row(g, p->type, g->f, p->ne[0], err);
		if (rc)
			return rc;
	}
	return 0;
}

/* The untied head: the embedding's rows as they are stored (rounded to embd_type), each
 * quantized to Q8_0, so that the model computes what the tied one does up to the head's
 * 8-bit rounding (the same rows `bitnet requant --head q8_0` would write). */
static int gen_head(struct gen *g, const struct plan *p, struct bn_error *err)
{
	struct bn_rng r;
	rng_init(&r, g->o->seed, "token_embd.weight");
	size_t k = p->ne[0];
	for (uint64_t row = 0; row < p->ne[1]; row++) {
		rng_normals(&r, g->f, k, 0.02);
		for (size_t i = 0; i < k; i++)
			g->f[i] = g->o->embd_type == BN_TYPE_F16 ? bn_f16_to_f32(bn_f32_to_f16(g->f[i]))
			        : g->o->embd_type == BN_TYPE_BF16 ? bn_bf16_to_f32(bn_f32_to_bf16(g->f[i]))
			        : g->f[i];
		if (bn_q8_0_encode_row(g->f, k, g->row))
			return bn_err_set(err, -ERANGE, "tensor %s: row %llu cannot be quantized", p->name,
			                  (unsigned long long)row);
		int rc = emit(g, g->row, bn_q8_0_row_bytes(k), err);
		if (rc)
			return rc;
	}
	return 0;
}

static int gen_norm(struct gen *g, const struct plan *p, struct bn_rng *r, struct bn_error *err)
{
	size_t n = p->ne[0];
	double ss = 0;
	for (size_t i = 0; i < n; i++) {
		g->f[i] = (float)(0.5 + bn_rng_double(r));
		ss += (double)g->f[i] * g->f[i];
	}
	if (p->attn_norm && g->o->gamma_rms > 0.0f) {
		double k = g->o->gamma_rms / sqrt(ss / (double)n);
		for (size_t i = 0; i < n; i++)
			g->f[i] = (float)(g->f[i] * k);
	}
	return emit(g, g->f, n * sizeof(float), err);
}

static int gen_proj(struct gen *g, const struct plan *p, struct bn_rng *r, struct bn_error *err)
{
	size_t k = p->ne[0];
	float scale = draw_scale(r, k);
	/* with .scale tensors the weights carry bare codes and the scale lives outside */
	float stored = g->o->scale_tensors ? 1.0f : scale;
	uint16_t d16 = bn_f32_to_f16(stored);
	uint16_t d[262144 / BN_QK_K];   /* [k/256] per-block d; validate caps k at 262144 */
	for (size_t b = 0; b < k / BN_QK_K; b++)
		d[b] = d16;
	g->last_scale = scale;
	for (uint64_t row = 0; row < p->ne[1]; row++) {
		rng_trits(r, &g->tt, g->t, k);
		int enc = 0;
		size_t nb = 0;
		switch (p->type) {
		case BN_TYPE_I2_S:
			enc = bn_i2s_encode_row(g->t, k, g->row);
			nb = bn_i2s_row_bytes(k);
			break;
		case BN_TYPE_TQ2_0:
			enc = bn_tq2_encode_row(g->t, k, d, g->row);
			nb = bn_tq2_row_bytes(k);
			break;
		case BN_TYPE_TQ1_0:
			enc = bn_tq1_encode_row(g->t, k, d, g->row);
			nb = bn_tq1_row_bytes(k);
			break;
		default:
			for (size_t i = 0; i < k; i++)
				g->f[i] = (float)g->t[i] * stored;
			break;
		}
		if (enc)
			return bn_err_set(err, enc, "tensor %s: encoding failed", p->name);
		int rc = nb ? emit(g, g->row, nb, err) : emit_float_row(g, p->type, g->f, k, err);
		if (rc)
			return rc;
	}
	if (p->type == BN_TYPE_I2_S) {
		uint8_t tail[BN_I2S_TAIL];
		bn_i2s_write_tail(stored, tail);
		return emit(g, tail, sizeof tail, err);
	}
	return 0;
}

static int write_kvs(struct bn_ggufw *w, const struct bn_mkmodel_opts *o,
                     const struct bn_vocab *v, struct bn_error *err)
{
	char key[128];
	const char *a = o->arch;
	int rc;
#define KEY(suffix) (snprintf(key, sizeof key, "%s.%s", a, suffix), key)
	if ((rc = bn_ggufw_kv_str(w, "general.architecture", a, err)) ||
	    (rc = bn_ggufw_kv_str(w, "general.name", o->name ? o->name : "mkmodel", err)) ||
	    (rc = bn_ggufw_kv_u32(w, "general.alignment", 32, err)) ||
	    (rc = bn_ggufw_kv_u32(w, "general.file_type", file_type(o->wtype), err)) ||
	    (rc = bn_ggufw_kv_u32(w, "general.quantization_version", 2, err)) ||
	    (rc = bn_ggufw_kv_u32(w, KEY("vocab_size"), o->vocab, err)) ||
	    (rc = bn_ggufw_kv_u32(w, KEY("context_length"), o->ctx, err)) ||
	    (rc = bn_ggufw_kv_u32(w, KEY("embedding_length"), o->hidden, err)) ||
	    (rc = bn_ggufw_kv_u32(w, KEY("block_count"), o->layers, err)) ||
	    (rc = bn_ggufw_kv_u32(w, KEY("feed_forward_length"), o->ff, err)) ||
	    (rc = bn_ggufw_kv_u32(w, KEY("rope.dimension_count"), o->hidden / o->heads, err)) ||
	    (rc = bn_ggufw_kv_u32(w, KEY("attention.head_count"), o->heads, err)) ||
	    (rc = bn_ggufw_kv_u32(w, KEY("attention.head_count_kv"), o->kv_heads, err)) ||
	    (rc = bn_ggufw_kv_f32(w, KEY("attention.layer_norm_rms_epsilon"), o->eps, err)) ||
	    (rc = bn_ggufw_kv_f32(w, KEY("rope.freq_base"), o->rope_base, err)))
		return rc;
#undef KEY
	if ((rc = bn_ggufw_vocab(w, v, err)) ||
	    (rc = bn_ggufw_kv_bool(w, "tokenizer.ggml.add_eos_token", false, err)))
		return rc;
	return 0;
}

int bn_mkmodel_write(const struct bn_mkmodel_opts *opts, const char *path,
                     void (*progress)(void *user, uint64_t done, uint64_t total), void *user,
                     struct bn_error *err)
{
	int rc = bn_mkmodel_validate(opts, err);
	if (rc)
		return rc;
	struct bn_mkmodel_opts o = *opts;
	struct bn_vocab v;
	memset(&v, 0, sizeof v);
	if (o.tokenizer_json) {
		if ((rc = bn_tokjson_load(o.tokenizer_json, &v, err)))
			return rc;
		if (o.vocab == 0) {
			o.vocab = v.n_tokens;
		} else if (o.vocab != v.n_tokens) {
			rc = bn_err_set(err, -EINVAL, "option vocab: %u differs from the %u tokens of %s",
			                o.vocab, v.n_tokens, o.tokenizer_json);
			bn_vocab_free(&v);
			return rc;
		}
		if (o.vocab == 0 || o.vocab > (1u << 22)) {
			rc = bn_err_set(err, -EINVAL, "tokenizer %s: %u tokens is out of range",
			                o.tokenizer_json, o.vocab);
			bn_vocab_free(&v);
			return rc;
		}
	} else if ((rc = synth_vocab(o.vocab, &v, err))) {
		return rc;
	}

	struct gen g;
	memset(&g, 0, sizeof g);
	g.o = &o;
	g.progress = progress;
	g.user = user;
	trit_table_init(&g.tt);
	size_t max_k = o.hidden > o.ff ? o.hidden : o.ff;
	struct plan *plan = malloc(plan_cap(&o) * sizeof *plan);
	g.t = malloc(max_k);
	g.f = malloc(max_k * sizeof(float));
	g.row = malloc(max_k * 4);
	if (!plan || !g.t || !g.f || !g.row) {
		rc = bn_err_set(err, -ENOMEM, "file %s: out of memory", path);
		goto out;
	}
	size_t n = build_plan(&o, plan);
	g.total = plan_bytes(plan, n);

	if ((rc = bn_ggufw_open(&g.w, path, err)))
		goto out;
	if ((rc = write_kvs(g.w, &o, &v, err)))
		goto fail;
	bn_vocab_free(&v);
	memset(&v, 0, sizeof v);
	for (size_t i = 0; i < n; i++)
		if ((rc = bn_ggufw_tensor(g.w, plan[i].name, plan[i].n_dims, plan[i].ne, plan[i].type,
		                          err)))
			goto fail;
	if ((rc = bn_ggufw_begin_data(g.w, err)))
		goto fail;
	for (size_t i = 0; i < n; i++) {
		const struct plan *p = &plan[i];
		struct bn_rng r;
		rng_init(&r, o.seed, p->name);
		switch (p->kind) {
		case K_EMBD:
			rc = gen_embd(&g, p, &r, err);
			break;
		case K_NORM:
			rc = gen_norm(&g, p, &r, err);
			break;
		case K_PROJ:
			rc = gen_proj(&g, p, &r, err);
			break;
		case K_SCALE:
			rc = emit(&g, &g.last_scale, sizeof g.last_scale, err);
			break;
		case K_HEAD:
			rc = gen_head(&g, p, err);
			break;
		}
		if (rc)
			goto fail;
		if (progress) {
			g.last_report = g.done;
			progress(user, g.done, g.total);
		}
	}
	rc = bn_ggufw_close(g.w, err);
	g.w = NULL;
	goto out;
fail:
	bn_ggufw_abort(g.w);
	g.w = NULL;
out:
	bn_vocab_free(&v);
	free(plan);
	free(g.t);
	free(g.f);
	free(g.row);
	return rc;
}
