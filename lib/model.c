#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bitnet/kernel.h"
#include "log.h"
#include "model.h"
#include "norms.h"
#include "quant.h"
#include "sha256.h"

static const char *const arch_names[] = { "bitnet-b1.58", "bitnet-25", "bitnet", "llama" };

static void *model_alloc(struct bn_model *m, size_t bytes)
{
	if (m->n_owned == m->cap_owned) {
		size_t cap = m->cap_owned ? m->cap_owned * 2 : 64;
		void **n = realloc(m->owned, cap * sizeof(*n));
		if (!n)
			return NULL;
		m->owned = n;
		m->cap_owned = cap;
	}
	void *p = NULL;
	if (posix_memalign(&p, 64, bytes ? bytes : 1))
		return NULL;
	m->owned[m->n_owned++] = p;
	m->bytes_copied += bytes;
	return p;
}

static int get_u32(struct bn_model *m, const char *suffix, uint32_t *out, bool required,
                   struct bn_error *err)
{
	char key[128];
	snprintf(key, sizeof(key), "%s.%s", m->hp.arch_name, suffix);
	int rc = bn_gguf_get_u32(m->g, key, out);
	if (rc == -ENOENT && !required)
		return 0;
	if (rc == -ENOENT)
		return bn_err_set(err, -EBADMSG, "%s: required key '%s' is missing", m->path, key);
	if (rc)
		return bn_err_set(err, -EBADMSG, "%s: key '%s' is not an unsigned 32-bit integer",
		                  m->path, key);
	return 0;
}

static int get_f32(struct bn_model *m, const char *suffix, float *out, bool required,
                   struct bn_error *err)
{
	char key[128];
	snprintf(key, sizeof(key), "%s.%s", m->hp.arch_name, suffix);
	int rc = bn_gguf_get_f32(m->g, key, out);
	if (rc == -ENOENT && !required)
		return 0;
	if (rc == -ENOENT)
		return bn_err_set(err, -EBADMSG, "%s: required key '%s' is missing", m->path, key);
	if (rc)
		return bn_err_set(err, -EBADMSG, "%s: key '%s' is not a float", m->path, key);
	return 0;
}

/* Keys that llama.cpp honours for arch llama and that would change the arithmetic: a file
 * using any of them is refused rather than run as if they were absent. */
static int check_llama_keys(struct bn_model *m, struct bn_error *err)
{
	const struct bn_hparams *hp = &m->hp;
	char key[128];
	struct bn_gguf_str s;
	uint32_t u;
	float f;
	snprintf(key, sizeof(key), "%s.rope.scaling.type", hp->arch_name);
	if (bn_gguf_find_kv(m->g, key) &&
	    (bn_gguf_get_str(m->g, key, &s) || !bn_gguf_str_eq(s, "none")))
		return bn_err_set(err, -ENOTSUP, "%s: key '%s': RoPE scaling is not supported", m->path,
		                  key);
	static const char *const factors[] = { "rope.scaling.factor", "rope.scale_linear" };
	for (size_t i = 0; i < 2; i++) {
		snprintf(key, sizeof(key), "%s.%s", hp->arch_name, factors[i]);
		if (bn_gguf_find_kv(m->g, key) && (bn_gguf_get_f32(m->g, key, &f) || f != 1.0f))
			return bn_err_set(err, -ENOTSUP, "%s: key '%s': RoPE scaling is not supported",
			                  m->path, key);
	}
	snprintf(key, sizeof(key), "%s.expert_count", hp->arch_name);
	if (bn_gguf_find_kv(m->g, key) && (bn_gguf_get_u32(m->g, key, &u) || u))
		return bn_err_set(err, -ENOTSUP, "%s: key '%s': mixture-of-experts models are not "
		                  "supported", m->path, key);
	static const char *const lens[] = { "attention.key_length", "attention.value_length" };
	for (size_t i = 0; i < 2; i++) {
		snprintf(key, sizeof(key), "%s.%s", hp->arch_name, lens[i]);
		if (bn_gguf_find_kv(m->g, key) && (bn_gguf_get_u32(m->g, key, &u) || u != hp->head_dim))
			return bn_err_set(err, -ENOTSUP, "%s: key '%s': only a head size of embedding / "
			                  "heads = %u is supported", m->path, key, hp->head_dim);
	}
	return 0;
}

static int load_hparams(struct bn_model *m, struct bn_error *err)
{
	struct bn_hparams *hp = &m->hp;
	struct bn_gguf_str arch;
	if (bn_gguf_get_str(m->g, "general.architecture", &arch))
		return bn_err_set(err, -EBADMSG, "%s: key 'general.architecture' is missing or not a string",
		                  m->path);
	size_t i;
	for (i = 0; i < sizeof(arch_names) / sizeof(arch_names[0]); i++)
		if (bn_gguf_str_eq(arch, arch_names[i]))
			break;
	if (i == sizeof(arch_names) / sizeof(arch_names[0]))
		return bn_err_set(err, -ENOTSUP,
		                  "%s: architecture '%.*s' is not supported (bitnet-b1.58, bitnet-25, "
		                  "bitnet, llama)", m->path, (int)(arch.len > 64 ? 64 : arch.len), arch.ptr);
	hp->arch = (enum bn_arch)i;
	snprintf(hp->arch_name, sizeof(hp->arch_name), "%s", arch_names[i]);
	hp->silu = hp->arch == BN_ARCH_BITNET || hp->arch == BN_ARCH_LLAMA;
	hp->sub_norms = hp->arch != BN_ARCH_LLAMA;
	/* llama.cpp's converter permutes the q/k rows of arch llama so that its "normal" RoPE
	 * (LLAMA_ROPE_TYPE_NORM) rotates pairs (2i, 2i+1); the bitnet archs keep HF's layout */
	hp->rope_interleaved = hp->arch == BN_ARCH_LLAMA;

	int rc;
	uint32_t rope_dim = 0;
	if ((rc = get_u32(m, "embedding_length", &hp->n_embd, true, err)) ||
	    (rc = get_u32(m, "feed_forward_length", &hp->n_ff, true, err)) ||
	    (rc = get_u32(m, "block_count", &hp->n_layer, true, err)) ||
	    (rc = get_u32(m, "attention.head_count", &hp->n_head, true, err)) ||
	    (rc = get_u32(m, "context_length", &hp->n_ctx_train, true, err)))
		return rc;
	hp->n_head_kv = hp->n_head;
	hp->rope_base = 10000.0f;
	hp->eps = 1e-5f;
	if ((rc = get_u32(m, "attention.head_count_kv", &hp->n_head_kv, false, err)) ||
	    (rc = get_u32(m, "rope.dimension_count", &rope_dim, false, err)) ||
	    (rc = get_f32(m, "rope.freq_base", &hp->rope_base, false, err)) ||
	    (rc = get_f32(m, "attention.layer_norm_rms_epsilon", &hp->eps, false, err)))
		return rc;

	const char *p = m->path;
	if (!hp->n_embd || !hp->n_ff || !hp->n_layer || !hp->n_head || !hp->n_head_kv || !hp->n_ctx_train)
		return bn_err_set(err, -EBADMSG, "%s: a hyper-parameter is zero (embedding %u, ff %u, "
		                  "layers %u, heads %u/%u, context %u)", p, hp->n_embd, hp->n_ff,
		                  hp->n_layer, hp->n_head, hp->n_head_kv, hp->n_ctx_train);
	if (hp->n_layer > 4096 || hp->n_embd > 65536 || hp->n_ff > 262144 || hp->n_ctx_train > (1u << 24))
		return bn_err_set(err, -EBADMSG, "%s: hyper-parameters out of range", p);
	if (hp->n_embd % hp->n_head)
		return bn_err_set(err, -EBADMSG, "%s: %u heads do not divide the width %u", p,
		                  hp->n_head, hp->n_embd);
	if (hp->n_head % hp->n_head_kv)
		return bn_err_set(err, -EBADMSG, "%s: %u kv heads do not divide %u heads", p,
		                  hp->n_head_kv, hp->n_head);
	hp->head_dim = hp->n_embd / hp->n_head;
	if (hp->head_dim % 2)
		return bn_err_set(err, -EBADMSG, "%s: head dimension %u is odd", p, hp->head_dim);
	if (rope_dim && rope_dim != hp->head_dim)
		return bn_err_set(err, -ENOTSUP, "%s: key '%s.rope.dimension_count' = %u: partial "
		                  "rotary embeddings (head dimension %u) are not supported", p,
		                  hp->arch_name, rope_dim, hp->head_dim);
	if (!(hp->eps > 0.0f) || !(hp->eps < 1.0f) || !(hp->rope_base > 1.0f) || !isfinite(hp->rope_base))
		return bn_err_set(err, -EBADMSG, "%s: epsilon %g or rope base %g out of range", p,
		                  (double)hp->eps, (double)hp->rope_base);
	return hp->arch == BN_ARCH_LLAMA ? check_llama_keys(m, err) : 0;
}

static const struct bn_gguf_tensor *need_tensor(struct bn_model *m, const char *name,
                                                uint64_t ne0, uint64_t ne1, struct bn_error *err)
{
	const struct bn_gguf_tensor *t = bn_gguf_find_tensor(m->g, name);
	if (!t) {
		bn_err_set(err, -EBADMSG, "%s: tensor '%s' is missing", m->path, name);
		return NULL;
	}
	uint64_t want[4] = { ne0, ne1, 1, 1 };
	for (int d = 0; d < 4; d++) {
		if (t->ne[d] != want[d]) {
			bn_err_set(err, -EBADMSG, "%s: tensor '%s' has shape {%llu, %llu, %llu, %llu}, "
			           "expected {%llu, %llu}", m->path, name,
			           (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
			           (unsigned long long)t->ne[2], (unsigned long long)t->ne[3],
			           (unsigned long long)ne0, (unsigned long long)ne1);
			return NULL;
		}
	}
	return t;
}

/* Norm weights are used as f32 from the map; other float types are converted. */
static int load_norm(struct bn_model *m, const char *name, uint32_t n, const float **out,
                     struct bn_error *err)
{
	const struct bn_gguf_tensor *t = need_tensor(m, name, n, 1, err);
	if (!t)
		return err->code;
	if (t->type == BN_TYPE_F32) {
		*out = t->data;
		return 0;
	}
	if (t->type != BN_TYPE_F16 && t->type != BN_TYPE_BF16)
		return bn_err_set(err, -ENOTSUP, "%s: norm tensor '%s' has type %s (f32, f16 or bf16 expected)",
		                  m->path, name, bn_ggml_type_name(t->type));
	float *w = model_alloc(m, n * sizeof(float));   /* [n] */
	if (!w)
		return bn_err_set(err, -ENOMEM, "%s: out of memory converting '%s'", m->path, name);
	const uint16_t *h = t->data;
	for (uint32_t i = 0; i < n; i++)
		w[i] = t->type == BN_TYPE_F16 ? bn_f16_to_f32(h[i]) : bn_bf16_to_f32(h[i]);
	*out = w;
	return 0;
}

/* Converts a float tensor that must hold ternary x one scale. */
static int float_to_ternary(struct bn_model *m, const struct bn_gguf_tensor *t, struct bn_tmat *w,
                            uint8_t *codes, struct bn_error *err)
{
	size_t k = w->k, rows = w->rows;
	float scale = 0.0f;
	for (size_t i = 0; i < k * rows; i++) {
		float v = t->type == BN_TYPE_F32 ? ((const float *)t->data)[i]
		        : t->type == BN_TYPE_F16 ? bn_f16_to_f32(((const uint16_t *)t->data)[i])
		        : bn_bf16_to_f32(((const uint16_t *)t->data)[i]);
		if (!isfinite(v))
			return bn_err_set(err, -EBADMSG, "%s: tensor '%s': element %zu is not finite",
			                  m->path, t->name, i);
		if (fabsf(v) > scale)
			scale = fabsf(v);
	}
	int8_t *row = malloc(k);   /* [k] ternary */
	if (!row)
		return bn_err_set(err, -ENOMEM, "out of memory");
	for (size_t r = 0; r < rows; r++) {
		for (size_t j = 0; j < k; j++) {
			size_t i = r * k + j;
			float v = t->type == BN_TYPE_F32 ? ((const float *)t->data)[i]
			        : t->type == BN_TYPE_F16 ? bn_f16_to_f32(((const uint16_t *)t->data)[i])
			        : bn_bf16_to_f32(((const uint16_t *)t->data)[i]);
			if (v == 0.0f)
				row[j] = 0;
			else if (v == scale)
				row[j] = 1;
			else if (v == -scale)
				row[j] = -1;
			else {
				free(row);
				return bn_err_set(err, -ENOTSUP, "%s: tensor '%s' is not ternary: element "
				                  "[%zu][%zu] = %g but the tensor's scale is %g", m->path,
				                  t->name, r, j, (double)v, (double)scale);
			}
		}
		bn_i2s_encode_row(row, k, codes + r * (k / 4));
	}
	free(row);
	w->scale = scale;
	return 0;
}

/* TQ2_0 / TQ1_0 -> canonical: every block's d must be the same value, except blocks whose
 * weights are all zero (any d represents them exactly). */
static int tq_to_ternary(struct bn_model *m, const struct bn_gguf_tensor *t, struct bn_tmat *w,
                         uint8_t *codes, struct bn_error *err)
{
	size_t k = w->k, rows = w->rows, nb = k / 256;
	size_t row_bytes = t->type == BN_TYPE_TQ2_0 ? bn_tq2_row_bytes(k) : bn_tq1_row_bytes(k);
	int8_t *row = malloc(k);                   /* [k] ternary */
	uint16_t *d = malloc(nb * sizeof(*d));     /* [k/256] f16 */
	if (!row || !d) {
		free(row);
		free(d);
		return bn_err_set(err, -ENOMEM, "out of memory");
	}
	bool have_d = false;
	uint16_t dref = 0;
	int rc = 0;
	for (size_t r = 0; r < rows && !rc; r++) {
		const uint8_t *src = (const uint8_t *)t->data + r * row_bytes;
		rc = t->type == BN_TYPE_TQ2_0 ? bn_tq2_decode_row(src, k, row, d)
		                              : bn_tq1_decode_row(src, k, row, d);
		if (rc) {
			rc = bn_err_set(err, -ENOTSUP, "%s: tensor '%s': row %zu holds a value outside "
			                "{-1, 0, 1}", m->path, t->name, r);
			break;
		}
		for (size_t b = 0; b < nb; b++) {
			bool nonzero = false;
			for (size_t j = 0; j < 256; j++)
				nonzero |= row[b * 256 + j] != 0;
			float dv = bn_f16_to_f32(d[b]);
			if (!nonzero || dv == 0.0f) {
				memset(row + b * 256, 0, 256);   /* d = 0 zeroes the block too */
				continue;
			}
			if (!isfinite(dv)) {
				rc = bn_err_set(err, -EBADMSG, "%s: tensor '%s': block scale is not finite",
				                m->path, t->name);
				break;
			}
			if (!have_d) {
				dref = d[b];
				have_d = true;
			} else if (d[b] != dref) {
				rc = bn_err_set(err, -ENOTSUP, "%s: tensor '%s': block scales differ (%g at row "
				                "%zu block %zu, %g before); one scale per tensor is required",
				                m->path, t->name, (double)dv, r, b,
				                (double)bn_f16_to_f32(dref));
				break;
			}
		}
		if (!rc)
			bn_i2s_encode_row(row, k, codes + r * (k / 4));
	}
	free(row);
	free(d);
	w->scale = have_d ? bn_f16_to_f32(dref) : 0.0f;
	return rc;
}

static int load_proj(struct bn_model *m, int layer, const char *proj, uint32_t k, uint32_t rows,
                     struct bn_tmat *w, struct bn_error *err)
{
	char name[96];
	snprintf(name, sizeof(name), "blk.%d.%s.weight", layer, proj);
	const struct bn_gguf_tensor *t = need_tensor(m, name, k, rows, err);
	if (!t)
		return err->code;
	if (k % BN_I2S_BLOCK)
		return bn_err_set(err, -ENOTSUP, "%s: tensor '%s': row length %u is not a multiple of %d",
		                  m->path, name, k, BN_I2S_BLOCK);
	w->k = k;
	w->rows = rows;
	w->src_type = t->type;
	w->out_scale = 1.0f;
	if (!m->proj_type)
		m->proj_type = t->type;
	int rc = 0;
	if (t->type == BN_TYPE_I2_S) {
		w->codes = t->data;   /* zero copy */
		w->scale = bn_i2s_tensor_scale(t->data, rows, k);
		if (!isfinite(w->scale))
			return bn_err_set(err, -EBADMSG, "%s: tensor '%s': scale is not finite", m->path, name);
	} else {
		uint8_t *codes = model_alloc(m, (size_t)rows * k / 4);   /* [rows][k/4] */
		if (!codes)
			return bn_err_set(err, -ENOMEM, "%s: out of memory converting '%s'", m->path, name);
		switch (t->type) {
		case BN_TYPE_TQ2_0:
		case BN_TYPE_TQ1_0:
			rc = tq_to_ternary(m, t, w, codes, err);
			break;
		case BN_TYPE_F32:
		case BN_TYPE_F16:
		case BN_TYPE_BF16:
			rc = float_to_ternary(m, t, w, codes, err);
			break;
		case BN_TYPE_Q8_0:
			rc = bn_err_set(err, -ENOTSUP, "%s: tensor '%s' has type q8_0, which only the LM "
			                "head (output.weight) may have", m->path, name);
			break;
		default:
			rc = bn_err_set(err, -ENOTSUP, "%s: tensor '%s' has unsupported type %s", m->path,
			                name, bn_ggml_type_name(t->type));
		}
		w->codes = codes;
	}
	if (rc)
		return rc;
	snprintf(name, sizeof(name), "blk.%d.%s.scale", layer, proj);
	const struct bn_gguf_tensor *s = bn_gguf_find_tensor(m->g, name);
	if (s) {
		if (m->hp.arch != BN_ARCH_BITNET)
			return bn_err_set(err, -EBADMSG, "%s: tensor '%s' is only valid for architecture 'bitnet'",
			                  m->path, name);
		if (s->type != BN_TYPE_F32 || s->ne[0] != 1 || s->ne[1] != 1 || s->ne[2] != 1 || s->ne[3] != 1)
			return bn_err_set(err, -EBADMSG, "%s: tensor '%s' must be a single f32", m->path, name);
		w->out_scale = *(const float *)s->data;
		w->has_out_scale = true;
		if (!isfinite(w->out_scale))
			return bn_err_set(err, -EBADMSG, "%s: tensor '%s' is not finite", m->path, name);
	}
	return 0;
}

/* Tensor data (f32 norms and scales, f16 rows) is read in place: a file whose
 * general.alignment puts a tensor off a 4-byte boundary would have the engine read
 * misaligned floats, so it is refused (GGUF's default alignment is 32). */
static int check_alignment(struct bn_model *m, struct bn_error *err)
{
	for (uint64_t i = 0; i < m->g->n_tensors; i++) {
		const struct bn_gguf_tensor *t = &m->g->tensors[i];
		if ((uintptr_t)t->data % 4)
			return bn_err_set(err, -EBADMSG, "%s: tensor '%s' starts at file offset %llu, not "
			                  "on a 4-byte boundary (general.alignment %u)", m->path, t->name,
			                  (unsigned long long)((const uint8_t *)t->data - m->g->base),
			                  m->g->alignment);
	}
	return 0;
}

/* A llama file holds exactly the tensors the engine reads. llama.cpp would run some others
 * (biases, rope_freqs) and ignore the rest (a bitnet sub-norm); either way the file's model
 * is not the one computed here, so it is refused, naming the tensor. */
static int check_llama_tensors(struct bn_model *m, struct bn_error *err)
{
	static const char *const layer_names[] = {
		"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
		"ffn_norm", "ffn_gate", "ffn_up", "ffn_down",
	};
	for (uint64_t i = 0; i < m->g->n_tensors; i++) {
		const char *name = m->g->tensors[i].name;
		if (!strcmp(name, "token_embd.weight") || !strcmp(name, "output.weight") ||
		    !strcmp(name, "output_norm.weight"))
			continue;
		bool known = false;
		if (!strncmp(name, "blk.", 4) && name[4] >= '0' && name[4] <= '9') {
			unsigned long l = strtoul(name + 4, NULL, 10);
			for (size_t j = 0; !known && l < m->hp.n_layer &&
			     j < sizeof(layer_names) / sizeof(layer_names[0]); j++) {
				char want[96];   /* the canonical spelling: no leading zeros */
				snprintf(want, sizeof(want), "blk.%lu.%s.weight", l, layer_names[j]);
				known = !strcmp(name, want);
			}
		}
		if (known)
			continue;
		if (strstr(name, "_sub_norm."))
			return bn_err_set(err, -EBADMSG, "%s: tensor '%s': a llama layer has no sub-norm "
			                  "(is this a bitnet model with the wrong architecture?); refusing "
			                  "rather than ignoring it", m->path, name);
		return bn_err_set(err, -ENOTSUP, "%s: tensor '%s' is not part of a %u-layer llama "
		                  "model with ternary projections; refusing rather than ignoring it",
		                  m->path, name, m->hp.n_layer);
	}
	return 0;
}

static int load_weights(struct bn_model *m, struct bn_error *err)
{
	const struct bn_hparams *hp = &m->hp;
	uint32_t kvd = hp->head_dim * hp->n_head_kv;
	int rc;

	/* Vocabulary size: token list, embedding rows and the optional key must agree. */
	const struct bn_gguf_kv *toks = bn_gguf_find_kv(m->g, "tokenizer.ggml.tokens");
	const struct bn_gguf_tensor *te = bn_gguf_find_tensor(m->g, "token_embd.weight");
	if (!te)
		return bn_err_set(err, -EBADMSG, "%s: tensor 'token_embd.weight' is missing", m->path);
	if (te->ne[0] != hp->n_embd || te->ne[2] != 1 || te->ne[3] != 1 || te->ne[1] > INT32_MAX)
		return bn_err_set(err, -EBADMSG, "%s: tensor 'token_embd.weight' has shape {%llu, %llu}, "
		                  "expected {%u, n_vocab}", m->path, (unsigned long long)te->ne[0],
		                  (unsigned long long)te->ne[1], hp->n_embd);
	m->hp.n_vocab = (uint32_t)te->ne[1];
	if (toks && (toks->type != BN_GGUF_ARRAY || toks->arr_n != m->hp.n_vocab))
		return bn_err_set(err, -EBADMSG, "%s: 'tokenizer.ggml.tokens' has %llu entries but "
		                  "'token_embd.weight' has %u rows", m->path,
		                  (unsigned long long)toks->arr_n, m->hp.n_vocab);
	uint32_t vs = 0;
	if ((rc = get_u32(m, "vocab_size", &vs, false, err)))
		return rc;
	if (vs && vs != m->hp.n_vocab)
		return bn_err_set(err, -EBADMSG, "%s: key '%s.vocab_size' = %u but 'token_embd.weight' "
		                  "has %u rows", m->path, hp->arch_name, vs, m->hp.n_vocab);
	if (te->type != BN_TYPE_F16 && te->type != BN_TYPE_BF16 && te->type != BN_TYPE_F32)
		return bn_err_set(err, -ENOTSUP, "%s: tensor 'token_embd.weight' has type %s "
		                  "(f16, bf16 or f32 expected%s)", m->path, bn_ggml_type_name(te->type),
		                  te->type == BN_TYPE_Q8_0 ? "; q8_0 is for output.weight only" : "");
	m->tok_embd = te->data;
	m->embd_type = te->type;
	m->head = te->data;
	m->head_type = te->type;
	const struct bn_gguf_tensor *out = bn_gguf_find_tensor(m->g, "output.weight");
	if (out) {
		if (!need_tensor(m, "output.weight", hp->n_embd, m->hp.n_vocab, err))
			return err->code;
		/* Q8_0 (an 8-bit head, `bitnet requant --head q8_0`) only here: the reader's
		 * block check already made the row length a multiple of 32 */
		if (out->type != BN_TYPE_F16 && out->type != BN_TYPE_BF16 && out->type != BN_TYPE_F32 &&
		    out->type != BN_TYPE_Q8_0)
			return bn_err_set(err, -ENOTSUP, "%s: tensor 'output.weight' has type %s "
			                  "(f16, bf16, f32 or q8_0 expected)", m->path,
			                  bn_ggml_type_name(out->type));
		m->head = out->data;
		m->head_type = out->type;
	}
	if ((rc = load_norm(m, "output_norm.weight", hp->n_embd, &m->output_norm, err)))
		return rc;

	m->layers = calloc(hp->n_layer, sizeof(*m->layers));
	if (!m->layers)
		return bn_err_set(err, -ENOMEM, "out of memory");
	for (uint32_t l = 0; l < hp->n_layer; l++) {
		struct bn_layer *L = &m->layers[l];
		char name[96];
#define NORM(field, tname, len) \
		snprintf(name, sizeof(name), "blk.%u.%s.weight", l, tname); \
		if ((rc = load_norm(m, name, len, &L->field, err))) \
			return rc;
		NORM(attn_norm, "attn_norm", hp->n_embd)
		if (hp->sub_norms) {
			NORM(attn_sub_norm, "attn_sub_norm", hp->n_embd)
		}
		NORM(ffn_norm, "ffn_norm", hp->n_embd)
		if (hp->sub_norms) {
			NORM(ffn_sub_norm, "ffn_sub_norm", hp->n_ff)
		}
#undef NORM
		if ((rc = load_proj(m, l, "attn_q", hp->n_embd, hp->n_embd, &L->wq, err)) ||
		    (rc = load_proj(m, l, "attn_k", hp->n_embd, kvd, &L->wk, err)) ||
		    (rc = load_proj(m, l, "attn_v", hp->n_embd, kvd, &L->wv, err)) ||
		    (rc = load_proj(m, l, "attn_output", hp->n_embd, hp->n_embd, &L->wo, err)) ||
		    (rc = load_proj(m, l, "ffn_gate", hp->n_embd, hp->n_ff, &L->wgate, err)) ||
		    (rc = load_proj(m, l, "ffn_up", hp->n_embd, hp->n_ff, &L->wup, err)) ||
		    (rc = load_proj(m, l, "ffn_down", hp->n_ff, hp->n_embd, &L->wdown, err)))
			return rc;
	}
	return hp->arch == BN_ARCH_LLAMA ? check_llama_tensors(m, err) : 0;
}

int bn_model_load(struct bn_model **out, const char *path, const struct bn_model_opts *opts,
                  struct bn_error *err)
{
	static const struct bn_model_opts defaults;
	if (!opts)
		opts = &defaults;
	*out = NULL;
	struct bn_model *m = calloc(1, sizeof(*m));
	if (!m)
		return bn_err_set(err, -ENOMEM, "out of memory");
	m->path = strdup(path);
	int rc = m->path ? bn_gguf_open(&m->g, path, err) : bn_err_set(err, -ENOMEM, "out of memory");
	if (!rc) {
		bn_sha256_hex(m->g->base, m->g->header_size, m->header_sha256);
		bn_gguf_get_u32(m->g, "general.file_type", &m->file_type);
		rc = load_hparams(m, err);
	}
	if (!rc)
		rc = check_alignment(m, err);
	if (!rc)
		rc = load_weights(m, err);
	if (!rc)
		rc = bn_norms_apply_load_opts(m, opts, err);
	if (!rc && opts->mlock) {
		if (mlock(m->g->base, m->g->size))
			rc = bn_err_set(err, -errno, "%s: mlock of %zu bytes failed: %s", path,
			                m->g->size, strerror(errno));
		else
			m->locked = true;
	}
	if (rc) {
		bn_model_free(m);
		return rc;
	}
	bn_log(BN_LOG_INFO, "model %s: %s, %u layers, width %u, ff %u, heads %u/%u, vocab %u, "
	       "weights %s%s, head %s%s", path, m->hp.arch_name, m->hp.n_layer, m->hp.n_embd,
	       m->hp.n_ff, m->hp.n_head, m->hp.n_head_kv, m->hp.n_vocab,
	       bn_ggml_type_name(m->proj_type), m->bytes_copied ? " (converted at load)" : " (zero copy)",
	       bn_ggml_type_name(m->head_type), m->head == m->tok_embd ? " (tied)" : "");
	*out = m;
	return 0;
}

void bn_model_free(struct bn_model *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n_owned; i++)
		free(m->owned[i]);
	free(m->owned);
	free(m->layers);
	free(m->corrections);
	if (m->locked)
		munlock(m->g->base, m->g->size);
	bn_gguf_close(m->g);
	free(m->path);
	free(m);
}

const struct bn_hparams *bn_model_hparams(const struct bn_model *m) { return &m->hp; }
const struct bn_gguf *bn_model_gguf(const struct bn_model *m) { return m->g; }
const char *bn_model_path(const struct bn_model *m) { return m->path; }
size_t bn_model_bytes_copied(const struct bn_model *m) { return m->bytes_copied; }
const char *bn_model_weight_type(const struct bn_model *m) { return bn_ggml_type_name(m->proj_type); }
const char *bn_model_head_type(const struct bn_model *m) { return bn_ggml_type_name(m->head_type); }
bool bn_model_head_tied(const struct bn_model *m) { return m->head == m->tok_embd; }

double bn_model_head_bytes(const struct bn_model *m)
{
	double n = (double)m->hp.n_vocab * m->hp.n_embd;
	switch (m->head_type) {
	case BN_TYPE_F32: return 4 * n;
	case BN_TYPE_Q8_0: return n / BN_Q8_0_BLOCK * BN_Q8_0_BLOCK_BYTES;
	default: return 2 * n;
	}
}

void bn_model_identity(const struct bn_model *m, struct bn_model_identity *id)
{
	id->path = m->path;
	id->size = m->g->size;
	id->arch = m->hp.arch_name;
	id->file_type = m->file_type;
	id->weight_type = bn_model_weight_type(m);
	id->head_type = bn_model_head_type(m);
	memcpy(id->header_sha256, m->header_sha256, sizeof(id->header_sha256));
}

size_t bn_model_prefault(const struct bn_model *m)
{
	const struct bn_gguf *g = m->g;
	if (!g->mapped)
		return 0;
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	madvise((void *)g->base, g->size, MADV_WILLNEED);   /* readahead; a hint only */
	volatile unsigned char sink = 0;
	for (size_t o = 0; o < g->size; o += pg)
		sink ^= g->base[o];
	(void)sink;
	return g->size;
}

const struct bn_correction *bn_model_corrections(const struct bn_model *m, size_t *n)
{
	*n = m->n_corrections;
	return m->corrections;
}

void *bn_model_alloc_owned(struct bn_model *m, size_t bytes)
{
	return model_alloc(m, bytes);
}
