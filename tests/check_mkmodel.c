/* lib/mkmodel.c and lib/gguf_write.c: models written to a temp dir are read back with the
 * GGUF reader and checked key by key, tensor by tensor, and decoded through lib/quant.c.
 * With TEST_DATA, the layout is compared with the golden files. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitnet/kernel.h"
#include "gguf.h"
#include "gguf_write.h"
#include "mkmodel.h"
#include "quant.h"

/* ck_assert reports every passed check to the parent process through a pipe in fork
 * mode, far too slow for per-weight checks: hot loops use this instead. */
#define REQUIRE(cond, ...) do { if (!(cond)) ck_abort_msg(__VA_ARGS__); } while (0)

static char tmpdir[PATH_MAX - 256];   /* leaves room for a file name */

/* out: [PATH_MAX] */
static const char *tpath(char *out, const char *name)
{
	snprintf(out, PATH_MAX, "%s/%s", tmpdir, name);
	return out;
}

static void write_model(const struct bn_mkmodel_opts *o, const char *path)
{
	struct bn_error err = { 0 };
	int rc = bn_mkmodel_write(o, path, NULL, NULL, &err);
	ck_assert_msg(rc == 0, "mkmodel %s: %s", path, err.msg);
}

static struct bn_gguf *open_model(const char *path)
{
	struct bn_gguf *g = NULL;
	struct bn_error err = { 0 };
	int rc = bn_gguf_open(&g, path, &err);
	ck_assert_msg(rc == 0, "open %s: %s", path, err.msg);
	return g;
}

static const char *shared_dir(void)
{
	const char *s = getenv("TEST_DATA");
	if (!s || !*s)
		return NULL;
	char p[PATH_MAX];
	snprintf(p, sizeof p, "%s/golden/tiny-i2_s.gguf", s);
	return access(p, R_OK) == 0 ? s : NULL;
}

/* Reads a whole file. *n: its size. */
static uint8_t *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	ck_assert_ptr_nonnull(f);
	fseek(f, 0, SEEK_END);
	long sz = ftell(f);
	rewind(f);
	uint8_t *b = malloc((size_t)sz + 1);
	ck_assert_uint_eq(fread(b, 1, (size_t)sz, f), (size_t)sz);
	fclose(f);
	*n = (size_t)sz;
	return b;
}

/* Row r of a projection as ternary values (out: [k]); returns the scale the row carries
 * (NAN for an all-zero float row, which carries none). Asserts that every value is
 * ternary x scale and that the TQ block scales are all equal. */
static float decode_row(const struct bn_gguf_tensor *t, size_t r, int8_t *out)
{
	size_t k = t->ne[0], rows = t->ne[1];
	const uint8_t *p = t->data;
	uint16_t d[1024];   /* [k/256] */
	float s = NAN;
	switch (t->type) {
	case BN_TYPE_I2_S:
		REQUIRE(bn_i2s_decode_row(p + r * bn_i2s_row_bytes(k), k, out) == 0, "%s", t->name);
		return bn_i2s_tensor_scale(p, rows, k);
	case BN_TYPE_TQ2_0:
	case BN_TYPE_TQ1_0:
		if (t->type == BN_TYPE_TQ2_0)
			REQUIRE(bn_tq2_decode_row(p + r * bn_tq2_row_bytes(k), k, out, d) == 0, "%s", t->name);
		else
			REQUIRE(bn_tq1_decode_row(p + r * bn_tq1_row_bytes(k), k, out, d) == 0, "%s", t->name);
		for (size_t b = 1; b < k / 256; b++)
			REQUIRE(d[b] == d[0], "%s row %zu: block scales differ", t->name, r);
		return bn_f16_to_f32(d[0]);
	default:
		for (size_t j = 0; j < k; j++) {
			float v;
			if (t->type == BN_TYPE_F32)
				memcpy(&v, p + (r * k + j) * 4, 4);
			else if (t->type == BN_TYPE_F16)
				v = bn_f16_to_f32(((const uint16_t *)p)[r * k + j]);
			else
				v = bn_bf16_to_f32(((const uint16_t *)p)[r * k + j]);
			out[j] = (int8_t)(v > 0 ? 1 : v < 0 ? -1 : 0);
			if (v == 0)
				continue;
			if (isnan(s))
				s = fabsf(v);
			REQUIRE(fabsf(v) == s, "%s row %zu: %g is not +-%g", t->name, r, v, s);
		}
		return s;
	}
}

static bool is_proj(const struct bn_gguf_tensor *t)
{
	return t->n_dims == 2 && strncmp(t->name, "blk.", 4) == 0;
}

/* ---- options ------------------------------------------------------------------------ */

static void expect_invalid(const struct bn_mkmodel_opts *o, const char *word)
{
	struct bn_error err = { 0 };
	ck_assert_int_eq(bn_mkmodel_validate(o, &err), -EINVAL);
	ck_assert_msg(strstr(err.msg, word) != NULL, "message '%s' lacks '%s'", err.msg, word);
	/* write refuses too, and leaves no file */
	char p[PATH_MAX];
	memset(&err, 0, sizeof err);
	ck_assert_int_eq(bn_mkmodel_write(o, tpath(p, "invalid.gguf"), NULL, NULL, &err), -EINVAL);
	ck_assert_int_ne(access(p, F_OK), 0);
}

START_TEST(validate_options)
{
	struct bn_mkmodel_opts o, b;
	struct bn_error err = { 0 };
	bn_mkmodel_defaults(&b);
	ck_assert_int_eq(bn_mkmodel_validate(&b, &err), 0);
	ck_assert_str_eq(b.arch, "bitnet-b1.58");
	ck_assert_uint_eq(b.wtype, BN_TYPE_I2_S);
	ck_assert_uint_eq(b.embd_type, BN_TYPE_F16);

	o = b; o.heads = 3;                          expect_invalid(&o, "heads");
	o = b; o.kv_heads = 3;                       expect_invalid(&o, "kv-heads");
	o = b; o.hidden = 320; o.heads = 5; o.kv_heads = 5; expect_invalid(&o, "hidden");
	o = b; o.wtype = BN_TYPE_TQ2_0; o.hidden = 384; o.heads = 6; o.kv_heads = 2;
	expect_invalid(&o, "hidden");
	o = b; o.wtype = BN_TYPE_TQ1_0; o.ff = 640;  expect_invalid(&o, "ff");
	o = b; o.ff = 200;                           expect_invalid(&o, "ff");
	o = b; o.hidden = 384; o.heads = 128; o.kv_heads = 128; expect_invalid(&o, "odd");
	o = b; o.arch = "falcon";                    expect_invalid(&o, "arch");
	o = b; o.arch = "llama"; o.scale_tensors = true; expect_invalid(&o, "scale-tensors");
	o = b; o.vocab = 100;                        expect_invalid(&o, "vocab");
	o = b; o.vocab = 0;                          expect_invalid(&o, "vocab");
	o = b; o.layers = 0;                         expect_invalid(&o, "layers");
	o = b; o.ctx = 0;                            expect_invalid(&o, "ctx");
	o = b; o.gamma_rms = -1.0f;                  expect_invalid(&o, "gamma-rms");
	o = b; o.eps = 0.0f;                         expect_invalid(&o, "eps");
	o = b; o.scale_tensors = true;               expect_invalid(&o, "scale-tensors");
	o = b; o.wtype = 2;                          expect_invalid(&o, "type");
	o = b; o.embd_type = BN_TYPE_I2_S;           expect_invalid(&o, "embd-type");
	/* the same shapes are fine where the block allows them */
	o = b; o.wtype = BN_TYPE_F16; o.hidden = 384; o.heads = 6; o.kv_heads = 2;
	ck_assert_int_eq(bn_mkmodel_validate(&o, &err), 0);
	o = b; o.arch = "bitnet"; o.scale_tensors = true;
	ck_assert_int_eq(bn_mkmodel_validate(&o, &err), 0);
	o = b; o.arch = "llama"; o.untied = true;
	ck_assert_int_eq(bn_mkmodel_validate(&o, &err), 0);
}
END_TEST

START_TEST(presets)
{
	struct bn_mkmodel_opts o;
	bn_mkmodel_defaults(&o);
	ck_assert_int_eq(bn_mkmodel_preset(&o, "small"), 0);
	ck_assert_uint_eq(o.hidden, 512);
	ck_assert_uint_eq(o.ff, 1536);
	ck_assert_uint_eq(o.layers, 3);
	ck_assert_uint_eq(o.heads, 8);
	ck_assert_uint_eq(o.kv_heads, 2);
	ck_assert_uint_eq(o.vocab, 1024);
	ck_assert_uint_eq(o.ctx, 1024);
	ck_assert_int_eq(bn_mkmodel_preset(&o, "huge"), -EINVAL);
	ck_assert_uint_eq(o.hidden, 512);
	ck_assert_int_eq(bn_mkmodel_preset(&o, "2b4t"), 0);
	ck_assert_uint_eq(o.hidden, 2560);
	ck_assert_uint_eq(o.ff, 6912);
	ck_assert_uint_eq(o.layers, 30);
	ck_assert_uint_eq(o.heads, 20);
	ck_assert_uint_eq(o.kv_heads, 5);
	ck_assert_uint_eq(o.vocab, 128256);
	ck_assert_uint_eq(o.ctx, 4096);
	/* 2.085 G ternary weights at 2 bits + 210 tails + F16 embedding + norms */
	uint64_t proj = 30ull * (2560ull * 2560 * 2 + 2560ull * 640 * 2 + 3ull * 2560 * 6912);
	uint64_t want = proj / 4 + 210 * 32 + 2560ull * 128256 * 2 +
	                30ull * (3 * 2560 + 6912) * 4 + 2560 * 4;
	ck_assert_uint_eq(bn_mkmodel_data_bytes(&o), want);
	ck_assert_int_eq(bn_mkmodel_preset(&o, "tiny"), 0);
	ck_assert_uint_eq(o.hidden, 256);
	ck_assert_int_eq(bn_mkmodel_parse_type("TQ2_0"), BN_TYPE_TQ2_0);
	ck_assert_int_eq(bn_mkmodel_parse_type("i2_s"), BN_TYPE_I2_S);
	ck_assert_int_eq(bn_mkmodel_parse_type("q4_0"), -EINVAL);
}
END_TEST

/* ---- keys and tensors ------------------------------------------------------------- */

static void expect_u32(const struct bn_gguf *g, const char *key, uint32_t want)
{
	const struct bn_gguf_kv *kv = bn_gguf_find_kv(g, key);
	ck_assert_msg(kv != NULL, "no key %s", key);
	ck_assert_msg(kv->type == BN_GGUF_UINT32, "key %s: type %u", key, kv->type);
	ck_assert_msg(kv->v.u64 == want, "key %s: %llu, want %u", key,
	              (unsigned long long)kv->v.u64, want);
}

static void expect_str(const struct bn_gguf *g, const char *key, const char *want)
{
	const struct bn_gguf_kv *kv = bn_gguf_find_kv(g, key);
	ck_assert_msg(kv != NULL && kv->type == BN_GGUF_STRING, "key %s", key);
	ck_assert_msg(bn_gguf_str_eq(kv->v.str, want), "key %s: '%.*s', want '%s'", key,
	              (int)kv->v.str.len, kv->v.str.ptr, want);
}

static void expect_f32(const struct bn_gguf *g, const char *key, float want)
{
	const struct bn_gguf_kv *kv = bn_gguf_find_kv(g, key);
	ck_assert_msg(kv != NULL && kv->type == BN_GGUF_FLOAT32, "key %s", key);
	ck_assert_msg((float)kv->v.f64 == want, "key %s: %g want %g", key, kv->v.f64, (double)want);
}

static void expect_bool(const struct bn_gguf *g, const char *key, bool want)
{
	const struct bn_gguf_kv *kv = bn_gguf_find_kv(g, key);
	ck_assert_msg(kv != NULL && kv->type == BN_GGUF_BOOL, "key %s", key);
	ck_assert_int_eq(kv->v.b, want);
}

START_TEST(keys_and_tensors)
{
	struct bn_mkmodel_opts o;
	char p[PATH_MAX];
	bn_mkmodel_defaults(&o);
	o.name = "check-tiny";
	o.ctx = 300;
	o.seed = 11;
	write_model(&o, tpath(p, "kv.gguf"));
	struct bn_gguf *g = open_model(p);
	ck_assert_uint_eq(g->version, 3);
	ck_assert_uint_eq(g->alignment, 32);
	ck_assert_uint_eq(g->n_kv, 26);
	expect_str(g, "general.architecture", "bitnet-b1.58");
	expect_str(g, "general.name", "check-tiny");
	expect_u32(g, "general.alignment", 32);
	expect_u32(g, "general.file_type", 40);
	expect_u32(g, "general.quantization_version", 2);
	expect_u32(g, "bitnet-b1.58.vocab_size", 512);
	expect_u32(g, "bitnet-b1.58.context_length", 300);
	expect_u32(g, "bitnet-b1.58.embedding_length", 256);
	expect_u32(g, "bitnet-b1.58.block_count", 2);
	expect_u32(g, "bitnet-b1.58.feed_forward_length", 512);
	expect_u32(g, "bitnet-b1.58.rope.dimension_count", 64);
	expect_u32(g, "bitnet-b1.58.attention.head_count", 4);
	expect_u32(g, "bitnet-b1.58.attention.head_count_kv", 2);
	expect_f32(g, "bitnet-b1.58.attention.layer_norm_rms_epsilon", 1e-5f);
	expect_f32(g, "bitnet-b1.58.rope.freq_base", 500000.0f);
	expect_str(g, "tokenizer.ggml.model", "gpt2");
	expect_str(g, "tokenizer.ggml.pre", "llama-bpe");
	expect_u32(g, "tokenizer.ggml.bos_token_id", 508);
	expect_u32(g, "tokenizer.ggml.eos_token_id", 509);
	expect_u32(g, "tokenizer.ggml.eot_token_id", 510);
	expect_u32(g, "tokenizer.ggml.padding_token_id", 511);
	expect_bool(g, "tokenizer.ggml.add_bos_token", true);
	expect_bool(g, "tokenizer.ggml.add_eos_token", false);

	const struct bn_gguf_kv *tk = bn_gguf_find_kv(g, "tokenizer.ggml.tokens");
	ck_assert_ptr_nonnull(tk);
	ck_assert_uint_eq(tk->arr_type, BN_GGUF_STRING);
	ck_assert_uint_eq(tk->arr_n, 512);
	struct bn_gguf_str toks[512];
	ck_assert_int_eq(bn_gguf_arr_strs(tk, toks), 0);
	ck_assert(bn_gguf_str_eq(toks[0], "\xc4\x80"));      /* byte 0 -> U+0100 */
	ck_assert(bn_gguf_str_eq(toks[32], "\xc4\xa0"));     /* space -> U+0120 */
	ck_assert(bn_gguf_str_eq(toks[10], "\xc4\x8a"));     /* newline -> U+010A */
	ck_assert(bn_gguf_str_eq(toks['A'], "A"));
	ck_assert(bn_gguf_str_eq(toks[0xe9], "\xc3\xa9"));   /* Latin-1 keeps its code point */
	ck_assert(bn_gguf_str_eq(toks[0xad], "\xc5\x83"));   /* soft hyphen: 68th remapped -> U+0143 */
	ck_assert(bn_gguf_str_eq(toks[256], "\xc4\xa0t"));
	ck_assert(bn_gguf_str_eq(toks[257], "he"));
	ck_assert(bn_gguf_str_eq(toks[300], "[tok300]"));
	ck_assert(bn_gguf_str_eq(toks[508], "<|begin_of_text|>"));
	ck_assert(bn_gguf_str_eq(toks[509], "<|end_of_text|>"));
	ck_assert(bn_gguf_str_eq(toks[510], "<|eot_id|>"));
	ck_assert(bn_gguf_str_eq(toks[511], "<|pad|>"));
	/* every token distinct */
	for (int i = 0; i < 512; i++)
		for (int j = i + 1; j < 512; j++)
			REQUIRE(toks[i].len != toks[j].len || memcmp(toks[i].ptr, toks[j].ptr, toks[i].len),
			        "tokens %d and %d are equal", i, j);
	const struct bn_gguf_kv *tt = bn_gguf_find_kv(g, "tokenizer.ggml.token_type");
	ck_assert_ptr_nonnull(tt);
	ck_assert_uint_eq(tt->arr_type, BN_GGUF_INT32);
	ck_assert_uint_eq(tt->arr_n, 512);
	for (uint64_t i = 0; i < 512; i++) {
		int32_t ty;
		REQUIRE(bn_gguf_arr_i32(tt, i, &ty) == 0 && ty == (i >= 508 ? 3 : 1), "token_type %d",
		        (int)i);
	}
	const struct bn_gguf_kv *mk = bn_gguf_find_kv(g, "tokenizer.ggml.merges");
	ck_assert_ptr_nonnull(mk);
	ck_assert_uint_eq(mk->arr_n, 40);
	struct bn_gguf_str merges[40];
	ck_assert_int_eq(bn_gguf_arr_strs(mk, merges), 0);
	ck_assert(bn_gguf_str_eq(merges[0], "\xc4\xa0 t"));
	ck_assert(bn_gguf_str_eq(merges[10], "\xc4\xa0t he"));
	/* merge i produces token 256 + i, from tokens that exist before it */
	for (int i = 0; i < 40; i++) {
		char buf[64];
		snprintf(buf, sizeof buf, "%.*s", (int)merges[i].len, merges[i].ptr);
		char *sp = strchr(buf, ' ');
		ck_assert_ptr_nonnull(sp);
		*sp = 0;
		char cat[64];
		snprintf(cat, sizeof cat, "%s%s", buf, sp + 1);
		ck_assert(bn_gguf_str_eq(toks[256 + i], cat));
		int found = 0;
		for (int j = 0; j < 256 + i; j++)
			found += bn_gguf_str_eq(toks[j], buf) + bn_gguf_str_eq(toks[j], sp + 1);
		ck_assert_int_eq(found, 2);
	}

	/* tensor table: order, shapes, types */
	static const char *const per_layer[11] = {
		"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "attn_sub_norm", "ffn_norm",
		"ffn_gate", "ffn_up", "ffn_down", "ffn_sub_norm",
	};
	static const uint64_t shape[11][2] = {
		{ 256, 1 }, { 256, 256 }, { 256, 128 }, { 256, 128 }, { 256, 256 }, { 256, 1 },
		{ 256, 1 }, { 256, 512 }, { 256, 512 }, { 512, 256 }, { 512, 1 },
	};
	ck_assert_uint_eq(g->n_tensors, 24);
	ck_assert_str_eq(g->tensors[0].name, "token_embd.weight");
	ck_assert_uint_eq(g->tensors[0].type, BN_TYPE_F16);
	ck_assert_uint_eq(g->tensors[0].ne[0], 256);
	ck_assert_uint_eq(g->tensors[0].ne[1], 512);
	for (int l = 0; l < 2; l++)
		for (int i = 0; i < 11; i++) {
			const struct bn_gguf_tensor *t = &g->tensors[1 + l * 11 + i];
			char name[64];
			snprintf(name, sizeof name, "blk.%d.%s.weight", l, per_layer[i]);
			ck_assert_str_eq(t->name, name);
			ck_assert_uint_eq(t->ne[0], shape[i][0]);
			ck_assert_uint_eq(t->ne[1], shape[i][1]);
			ck_assert_uint_eq(t->n_dims, shape[i][1] == 1 ? 1 : 2);
			ck_assert_uint_eq(t->type, shape[i][1] == 1 ? BN_TYPE_F32 : BN_TYPE_I2_S);
			ck_assert_uint_eq(t->offset % 32, 0);
		}
	ck_assert_str_eq(g->tensors[23].name, "output_norm.weight");
	ck_assert_uint_eq(g->tensors[23].ne[0], 256);

	/* values: norms in [0.5, 1.5), embedding small with sd near 0.02, projections ternary
	 * with a scale U(0.5,1.5)/sqrt(fan_in) of 8 significant bits */
	double ss = 0;
	const uint16_t *e = g->tensors[0].data;
	for (size_t i = 0; i < 256 * 512; i++) {
		float v = bn_f16_to_f32(e[i]);
		REQUIRE(fabsf(v) < 0.2f, "embedding value %g", v);
		ss += (double)v * v;
	}
	double sd = sqrt(ss / (256 * 512));
	ck_assert_msg(sd > 0.0195 && sd < 0.0205, "embedding sd %g", sd);
	int8_t row[512];
	for (uint64_t i = 1; i < g->n_tensors; i++) {
		const struct bn_gguf_tensor *t = &g->tensors[i];
		if (!is_proj(t)) {
			const float *w = t->data;
			for (uint64_t j = 0; j < t->ne[0]; j++)
				REQUIRE(w[j] >= 0.5f && w[j] < 1.5f, "%s: %g", t->name, w[j]);
			continue;
		}
		float s = bn_i2s_tensor_scale(t->data, t->ne[1], t->ne[0]);
		double u = s * sqrt((double)t->ne[0]);
		ck_assert_msg(u >= 0.499 && u <= 1.501, "%s: scale %g", t->name, s);
		int ex;
		double m = frexp(s, &ex) * 256;
		ck_assert(m == floor(m));
		long cnt[3] = { 0 };
		for (uint64_t r = 0; r < t->ne[1]; r++) {
			REQUIRE(decode_row(t, r, row) == s, "%s row %llu", t->name, (unsigned long long)r);
			for (uint64_t j = 0; j < t->ne[0]; j++)
				cnt[row[j] + 1]++;
		}
		long n = (long)(t->ne[0] * t->ne[1]);
		for (int v = 0; v < 3; v++)
			ck_assert_msg(cnt[v] > n * 0.3 && cnt[v] < n * 0.37, "%s: %ld of %ld are %d",
			              t->name, cnt[v], n, v - 1);
		/* the 28 pad bytes after the scale are zero */
		const uint8_t *tail = (const uint8_t *)t->data + t->ne[0] * t->ne[1] / 4;
		for (int j = 4; j < 32; j++)
			ck_assert_uint_eq(tail[j], 0);
		ck_assert_uint_eq(t->size, t->ne[0] * t->ne[1] / 4 + 32);
	}
	bn_gguf_close(g);
}
END_TEST

/* ---- the same weights in every format --------------------------------------------------- */

START_TEST(formats_same_weights)
{
	static const uint32_t wt[6] = { BN_TYPE_I2_S, BN_TYPE_TQ2_0, BN_TYPE_TQ1_0, BN_TYPE_F16,
	                                BN_TYPE_BF16, BN_TYPE_F32 };
	static const uint32_t ftype[6] = { 40, 37, 36, 1, 32, 0 };
	struct bn_gguf *g[6];
	char p[PATH_MAX];
	for (int f = 0; f < 6; f++) {
		struct bn_mkmodel_opts o;
		bn_mkmodel_defaults(&o);
		o.hidden = 512;
		o.ff = 768;
		o.heads = 8;
		o.kv_heads = 4;
		o.layers = 1;
		o.vocab = 320;
		o.seed = 77;
		o.wtype = wt[f];
		char name[32];
		snprintf(name, sizeof name, "fmt%d.gguf", f);
		write_model(&o, tpath(p, name));
		g[f] = open_model(p);
		expect_u32(g[f], "general.file_type", ftype[f]);
	}
	int8_t *t0 = malloc(768), *t1 = malloc(768);   /* [k] */
	int n_proj = 0;
	for (uint64_t i = 0; i < g[0]->n_tensors; i++) {
		const struct bn_gguf_tensor *a = &g[0]->tensors[i];
		for (int f = 1; f < 6; f++) {
			const struct bn_gguf_tensor *b = &g[f]->tensors[i];
			ck_assert_str_eq(a->name, b->name);
			ck_assert_uint_eq(a->ne[0], b->ne[0]);
			ck_assert_uint_eq(a->ne[1], b->ne[1]);
			if (!is_proj(a)) {   /* norms and embedding: byte-identical */
				ck_assert_uint_eq(a->size, b->size);
				ck_assert(!memcmp(a->data, b->data, a->size));
				continue;
			}
			ck_assert_uint_eq(b->type, wt[f]);
			for (uint64_t r = 0; r < a->ne[1]; r++) {
				float sa = decode_row(a, r, t0), sb = decode_row(b, r, t1);
				REQUIRE(!memcmp(t0, t1, a->ne[0]), "%s row %llu differs in format %d",
				        a->name, (unsigned long long)r, f);
				REQUIRE(isnan(sb) || sa == sb, "%s: scale %g vs %g", a->name, sa, sb);
			}
		}
		n_proj += is_proj(a);
	}
	ck_assert_int_eq(n_proj, 7);
	free(t0);
	free(t1);
	for (int f = 0; f < 6; f++)
		bn_gguf_close(g[f]);
}
END_TEST

START_TEST(determinism)
{
	struct bn_mkmodel_opts o;
	char p1[PATH_MAX], p2[PATH_MAX], p3[PATH_MAX];
	bn_mkmodel_defaults(&o);
	o.wtype = BN_TYPE_TQ1_0;
	o.seed = 5;
	write_model(&o, tpath(p1, "det1.gguf"));
	write_model(&o, tpath(p2, "det2.gguf"));
	o.seed = 6;
	write_model(&o, tpath(p3, "det3.gguf"));
	size_t n1, n2, n3;
	uint8_t *a = slurp(p1, &n1), *b = slurp(p2, &n2), *c = slurp(p3, &n3);
	ck_assert_uint_eq(n1, n2);
	ck_assert(!memcmp(a, b, n1));
	ck_assert_uint_eq(n1, n3);
	/* another seed: every tensor differs (compare the data sections tensor by tensor) */
	struct bn_gguf *ga = open_model(p1), *gc = open_model(p3);
	for (uint64_t i = 0; i < ga->n_tensors; i++)
		ck_assert_msg(memcmp(ga->tensors[i].data, gc->tensors[i].data, ga->tensors[i].size),
		              "%s is the same with another seed", ga->tensors[i].name);
	bn_gguf_close(ga);
	bn_gguf_close(gc);
	free(a);
	free(b);
	free(c);
}
END_TEST

/* arch llama: the bitnet layout without the sub-norms, the same weights for one seed (the
 * streams are keyed by tensor name), and an untied head of its own */
START_TEST(llama_layout)
{
	struct bn_mkmodel_opts o;
	char p1[PATH_MAX], p2[PATH_MAX];
	bn_mkmodel_defaults(&o);
	o.seed = 8;
	write_model(&o, tpath(p1, "b158.gguf"));
	o.arch = "llama";
	o.untied = true;
	write_model(&o, tpath(p2, "llama.gguf"));
	struct bn_gguf *a = open_model(p1), *b = open_model(p2);
	expect_str(b, "general.architecture", "llama");
	expect_u32(b, "llama.embedding_length", 256);
	expect_u32(b, "llama.attention.head_count_kv", 2);
	ck_assert_uint_eq(b->n_tensors, 1 + 2 * 9 + 2);
	for (uint64_t i = 0, j = 0; i < a->n_tensors; i++) {
		const struct bn_gguf_tensor *ta = &a->tensors[i];
		if (strstr(ta->name, "_sub_norm")) {
			ck_assert_ptr_null(bn_gguf_find_tensor(b, ta->name));
			continue;
		}
		const struct bn_gguf_tensor *tb = &b->tensors[j++];
		ck_assert_str_eq(ta->name, tb->name);
		ck_assert_uint_eq(ta->size, tb->size);
		ck_assert(!memcmp(ta->data, tb->data, ta->size));
	}
	const struct bn_gguf_tensor *out = &b->tensors[b->n_tensors - 1], *te = &b->tensors[0];
	ck_assert_str_eq(out->name, "output.weight");
	ck_assert_uint_eq(out->type, BN_TYPE_F16);
	ck_assert_uint_eq(out->ne[0], 256);
	ck_assert_uint_eq(out->ne[1], 512);
	ck_assert_uint_eq(out->size, te->size);
	ck_assert(memcmp(out->data, te->data, te->size));
	bn_gguf_close(a);
	bn_gguf_close(b);
}
END_TEST

START_TEST(scale_tensors)
{
	struct bn_mkmodel_opts o;
	char p1[PATH_MAX], p2[PATH_MAX];
	bn_mkmodel_defaults(&o);
	o.arch = "bitnet";
	o.seed = 4;
	write_model(&o, tpath(p1, "plain.gguf"));
	o.scale_tensors = true;
	write_model(&o, tpath(p2, "scaled.gguf"));
	struct bn_gguf *a = open_model(p1), *b = open_model(p2);
	expect_str(b, "general.architecture", "bitnet");
	expect_u32(b, "bitnet.embedding_length", 256);
	ck_assert_uint_eq(b->n_tensors, 24 + 14);
	int8_t t0[512], t1[512];
	uint64_t j = 0;   /* index in b */
	for (uint64_t i = 0; i < a->n_tensors; i++, j++) {
		const struct bn_gguf_tensor *ta = &a->tensors[i], *tb = &b->tensors[j];
		ck_assert_str_eq(ta->name, tb->name);
		if (!is_proj(ta)) {
			ck_assert(!memcmp(ta->data, tb->data, ta->size));
			continue;
		}
		float sa = bn_i2s_tensor_scale(ta->data, ta->ne[1], ta->ne[0]);
		ck_assert(bn_i2s_tensor_scale(tb->data, tb->ne[1], tb->ne[0]) == 1.0f);
		for (uint64_t r = 0; r < ta->ne[1]; r++) {
			decode_row(ta, r, t0);
			decode_row(tb, r, t1);
			REQUIRE(!memcmp(t0, t1, ta->ne[0]), "%s row %llu", ta->name, (unsigned long long)r);
		}
		/* blk.N.<proj>.scale F32 [1] follows its projection */
		const struct bn_gguf_tensor *ts = &b->tensors[++j];
		char want[96];
		snprintf(want, sizeof want, "%.*s.scale", (int)(strlen(ta->name) - strlen(".weight")),
		         ta->name);
		ck_assert_str_eq(ts->name, want);
		ck_assert_uint_eq(ts->type, BN_TYPE_F32);
		ck_assert_uint_eq(ts->n_dims, 1);
		ck_assert_uint_eq(ts->ne[0], 1);
		float s;
		memcpy(&s, ts->data, 4);
		ck_assert(s == sa);
	}
	ck_assert_uint_eq(j, b->n_tensors);
	bn_gguf_close(a);
	bn_gguf_close(b);
}
END_TEST

START_TEST(gamma_rms)
{
	struct bn_mkmodel_opts o;
	char p1[PATH_MAX], p2[PATH_MAX];
	bn_mkmodel_defaults(&o);
	o.seed = 3;
	write_model(&o, tpath(p1, "g0.gguf"));
	o.gamma_rms = 0.04419417f;
	write_model(&o, tpath(p2, "g1.gguf"));
	struct bn_gguf *a = open_model(p1), *b = open_model(p2);
	for (uint64_t i = 0; i < a->n_tensors; i++) {
		const struct bn_gguf_tensor *ta = &a->tensors[i], *tb = &b->tensors[i];
		if (!strstr(ta->name, ".attn_norm.")) {
			ck_assert(!memcmp(ta->data, tb->data, ta->size));
			continue;
		}
		const float *wa = ta->data, *wb = tb->data;
		double ss = 0;
		for (uint64_t j = 0; j < ta->ne[0]; j++) {
			ss += (double)wb[j] * wb[j];
			/* same shape as before, only rescaled */
			REQUIRE(fabs(wb[j] / wa[j] - wb[0] / wa[0]) < 1e-6, "%s[%llu]", ta->name,
			        (unsigned long long)j);
		}
		double rms = sqrt(ss / (double)ta->ne[0]);
		ck_assert_msg(fabs(rms / 0.04419417 - 1) < 1e-6, "%s: rms %g", ta->name, rms);
	}
	bn_gguf_close(a);
	bn_gguf_close(b);
}
END_TEST

/* ---- tokenizer.json ------------------------------------------------------------------ */

START_TEST(tokenizer_json)
{
	char tj[PATH_MAX], p[PATH_MAX];
	FILE *f = fopen(tpath(tj, "tokenizer.json"), "w");
	ck_assert_ptr_nonnull(f);
	/* 300 tokens: a, b, ab, then filler, then two specials */
	fputs("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2", f);
	for (int i = 3; i < 298; i++)
		fprintf(f, ",\"x%d\":%d", i, i);
	fputs("},\"merges\":[\"a b\"]},\"added_tokens\":["
	      "{\"id\":298,\"content\":\"<|begin_of_text|>\",\"special\":true},"
	      "{\"id\":299,\"content\":\"<|end_of_text|>\",\"special\":true}]}", f);
	fclose(f);

	struct bn_mkmodel_opts o;
	struct bn_error err = { 0 };
	bn_mkmodel_defaults(&o);
	o.tokenizer_json = tj;
	/* a vocab size that is not the tokenizer's is an error */
	ck_assert_int_eq(bn_mkmodel_write(&o, tpath(p, "tj-bad.gguf"), NULL, NULL, &err), -EINVAL);
	ck_assert_msg(strstr(err.msg, "vocab") && strstr(err.msg, "300"), "%s", err.msg);
	ck_assert_int_ne(access(p, F_OK), 0);
	/* vocab 0: taken from the tokenizer */
	o.vocab = 0;
	write_model(&o, tpath(p, "tj.gguf"));
	struct bn_gguf *g = open_model(p);
	expect_u32(g, "bitnet-b1.58.vocab_size", 300);
	expect_u32(g, "tokenizer.ggml.bos_token_id", 298);
	expect_u32(g, "tokenizer.ggml.eos_token_id", 299);
	ck_assert_ptr_null(bn_gguf_find_kv(g, "tokenizer.ggml.eot_token_id"));
	const struct bn_gguf_kv *tk = bn_gguf_find_kv(g, "tokenizer.ggml.tokens");
	ck_assert_uint_eq(tk->arr_n, 300);
	struct bn_gguf_str toks[300];
	ck_assert_int_eq(bn_gguf_arr_strs(tk, toks), 0);
	ck_assert(bn_gguf_str_eq(toks[2], "ab"));
	ck_assert(bn_gguf_str_eq(toks[298], "<|begin_of_text|>"));
	ck_assert_uint_eq(bn_gguf_find_tensor(g, "token_embd.weight")->ne[1], 300);
	bn_gguf_close(g);
	/* a missing file is reported with its name */
	o.tokenizer_json = "/nonexistent/tokenizer.json";
	memset(&err, 0, sizeof err);
	ck_assert_int_lt(bn_mkmodel_write(&o, tpath(p, "tj-missing.gguf"), NULL, NULL, &err), 0);
	ck_assert_msg(strstr(err.msg, "/nonexistent/tokenizer.json") != NULL, "%s", err.msg);
}
END_TEST

/* ---- progress ------------------------------------------------------------------------ */

struct prog {
	uint64_t last, total;
	int calls;
	bool monotonic;
};

static void on_progress(void *user, uint64_t done, uint64_t total)
{
	struct prog *p = user;
	p->monotonic &= done >= p->last && done <= total && (p->total == 0 || p->total == total);
	p->last = done;
	p->total = total;
	p->calls++;
}

START_TEST(progress)
{
	struct bn_mkmodel_opts o;
	struct bn_error err = { 0 };
	char p[PATH_MAX];
	bn_mkmodel_defaults(&o);
	struct prog pr = { 0, 0, 0, true };
	ck_assert_int_eq(bn_mkmodel_write(&o, tpath(p, "prog.gguf"), on_progress, &pr, &err), 0);
	ck_assert(pr.monotonic);
	ck_assert_int_ge(pr.calls, 24);
	ck_assert_uint_eq(pr.last, pr.total);
	ck_assert_uint_eq(pr.total, bn_mkmodel_data_bytes(&o));
	/* the file is header + aligned data, nothing more */
	struct bn_gguf *g = open_model(p);
	const struct bn_gguf_tensor *last = &g->tensors[g->n_tensors - 1];
	ck_assert_uint_eq(g->size, g->data_offset + ((last->offset + last->size + 31) / 32 * 32));
	uint64_t sum = 0;
	for (uint64_t i = 0; i < g->n_tensors; i++)
		sum += g->tensors[i].size;
	ck_assert_uint_eq(sum, pr.total);
	bn_gguf_close(g);
	/* an unwritable path: error names it */
	memset(&err, 0, sizeof err);
	ck_assert_int_lt(bn_mkmodel_write(&o, "/nonexistent/dir/x.gguf", NULL, NULL, &err), 0);
	ck_assert_msg(strstr(err.msg, "/nonexistent/dir/x.gguf") != NULL, "%s", err.msg);
}
END_TEST

/* ---- the writer alone ------------------------------------------------------------------ */

START_TEST(writer)
{
	char p[PATH_MAX];
	struct bn_ggufw *w;
	struct bn_error err = { 0 };
	uint64_t ne2[2] = { 128, 2 }, ne1[1] = { 5 };
	ck_assert_int_eq(bn_ggufw_open(&w, tpath(p, "w.gguf"), &err), 0);
	ck_assert_int_eq(bn_ggufw_kv_u32(w, "general.alignment", 64, &err), 0);
	ck_assert_int_eq(bn_ggufw_kv_i32(w, "x.i", -7, &err), 0);
	ck_assert_int_eq(bn_ggufw_kv_bool(w, "x.b", true, &err), 0);
	const char *strs[3] = { "a", "", "ccc" };
	ck_assert_int_eq(bn_ggufw_kv_arr_str(w, "x.s", strs, 3, &err), 0);
	const float fs[2] = { 1.5f, -2.0f };
	ck_assert_int_eq(bn_ggufw_kv_arr_f32(w, "x.f", fs, 2, &err), 0);
	ck_assert_int_eq(bn_ggufw_kv_arr_i32(w, "x.e", NULL, 0, &err), 0);
	ck_assert_int_eq(bn_ggufw_tensor(w, "q", 2, ne2, BN_TYPE_I2_S, &err), 0);
	ck_assert_int_eq(bn_ggufw_tensor(w, "n", 1, ne1, BN_TYPE_F32, &err), 0);
	ck_assert_uint_eq(bn_ggufw_tensor_nbytes(BN_TYPE_I2_S, 2, ne2), 128 * 2 / 4 + 32);
	uint8_t q[128 * 2 / 4 + 32];
	for (size_t i = 0; i < sizeof q; i++)
		q[i] = (uint8_t)i;
	/* any chunking */
	ck_assert_int_eq(bn_ggufw_write(w, q, 10, &err), 0);
	ck_assert_str_eq(bn_ggufw_current(w), "q");
	ck_assert_int_eq(bn_ggufw_write(w, q + 10, sizeof q - 10, &err), 0);
	ck_assert_str_eq(bn_ggufw_current(w), "n");
	float n[5] = { 1, 2, 3, 4, 5 };
	ck_assert_int_eq(bn_ggufw_write(w, n, sizeof n, &err), 0);
	ck_assert_ptr_null(bn_ggufw_current(w));
	uint64_t fsize = bn_ggufw_file_size(w);
	ck_assert_int_eq(bn_ggufw_close(w, &err), 0);

	struct bn_gguf *g = open_model(p);
	ck_assert_uint_eq(g->alignment, 64);
	ck_assert_uint_eq(g->size, fsize);
	ck_assert_uint_eq(g->data_offset % 64, 0);
	const struct bn_gguf_kv *kv = bn_gguf_find_kv(g, "x.i");
	ck_assert_uint_eq(kv->type, BN_GGUF_INT32);
	ck_assert_int_eq(kv->v.i64, -7);
	kv = bn_gguf_find_kv(g, "x.s");
	struct bn_gguf_str s[3];
	ck_assert_int_eq(bn_gguf_arr_strs(kv, s), 0);
	ck_assert(bn_gguf_str_eq(s[1], "") && bn_gguf_str_eq(s[2], "ccc"));
	float fv;
	ck_assert_int_eq(bn_gguf_arr_f32(bn_gguf_find_kv(g, "x.f"), 1, &fv), 0);
	ck_assert(fv == -2.0f);
	ck_assert_uint_eq(bn_gguf_find_kv(g, "x.e")->arr_n, 0);
	const struct bn_gguf_tensor *tq = bn_gguf_find_tensor(g, "q"), *tn = bn_gguf_find_tensor(g, "n");
	ck_assert_uint_eq(tq->offset, 0);
	ck_assert_uint_eq(tn->offset, 128);   /* 96 bytes rounded up to 64 */
	ck_assert(!memcmp(tq->data, q, sizeof q));
	ck_assert(!memcmp(tn->data, n, sizeof n));
	bn_gguf_close(g);

	/* misuse: duplicate key/tensor, bad shape, overrun, incomplete close */
	ck_assert_int_eq(bn_ggufw_open(&w, tpath(p, "w2.gguf"), &err), 0);
	ck_assert_int_eq(bn_ggufw_kv_u32(w, "k", 1, &err), 0);
	ck_assert_int_eq(bn_ggufw_kv_str(w, "k", "again", &err), -EINVAL);
	ck_assert(strstr(err.msg, "w2.gguf") && strstr(err.msg, "key k"));
	bn_ggufw_abort(w);
	ck_assert_int_ne(access(p, F_OK), 0);

	ck_assert_int_eq(bn_ggufw_open(&w, tpath(p, "w3.gguf"), &err), 0);
	uint64_t bad[2] = { 100, 2 };
	ck_assert_int_eq(bn_ggufw_tensor(w, "t", 2, bad, BN_TYPE_TQ2_0, &err), -EINVAL);
	ck_assert(strstr(err.msg, "tensor t") && strstr(err.msg, "TQ2_0"));
	bn_ggufw_abort(w);

	ck_assert_int_eq(bn_ggufw_open(&w, tpath(p, "w4.gguf"), &err), 0);
	ck_assert_int_eq(bn_ggufw_tensor(w, "t", 1, ne1, BN_TYPE_F32, &err), 0);
	ck_assert_int_eq(bn_ggufw_tensor(w, "t", 1, ne1, BN_TYPE_F32, &err), -EINVAL);
	bn_ggufw_abort(w);

	ck_assert_int_eq(bn_ggufw_open(&w, tpath(p, "w5.gguf"), &err), 0);
	ck_assert_int_eq(bn_ggufw_tensor(w, "t", 1, ne1, BN_TYPE_F32, &err), 0);
	ck_assert_int_eq(bn_ggufw_write(w, n, 24, &err), -EINVAL);
	ck_assert(strstr(err.msg, "tensor t") && strstr(err.msg, "24"));
	ck_assert_int_eq(bn_ggufw_write(w, n, 4, &err), -EINVAL);   /* sticky */
	bn_ggufw_abort(w);

	ck_assert_int_eq(bn_ggufw_open(&w, tpath(p, "w6.gguf"), &err), 0);
	ck_assert_int_eq(bn_ggufw_tensor(w, "t", 1, ne1, BN_TYPE_F32, &err), 0);
	ck_assert_int_eq(bn_ggufw_write(w, n, 8, &err), 0);
	ck_assert_int_eq(bn_ggufw_kv_u32(w, "late", 1, &err), -EINVAL);
	ck_assert_int_eq(bn_ggufw_close(w, &err), -EINVAL);
	ck_assert(strstr(err.msg, "tensor t") && strstr(err.msg, "incomplete"));
	ck_assert_int_ne(access(p, F_OK), 0);

	ck_assert_int_eq(bn_ggufw_open(&w, tpath(p, "w7.gguf"), &err), 0);
	ck_assert_int_eq(bn_ggufw_kv_u32(w, "general.alignment", 48, &err), -EINVAL);
	bn_ggufw_abort(w);

	/* into a caller's stream, which stays open; no tensors at all is a valid file */
	FILE *fp = tmpfile();
	ck_assert_ptr_nonnull(fp);
	ck_assert_int_eq(bn_ggufw_open_fp(&w, fp, "(tmp)", &err), 0);
	ck_assert_int_eq(bn_ggufw_kv_str(w, "general.architecture", "bitnet", &err), 0);
	ck_assert_int_eq(bn_ggufw_close(w, &err), 0);
	long sz = ftell(fp);
	ck_assert_int_gt(sz, 0);
	uint8_t *buf = malloc((size_t)sz);
	rewind(fp);
	ck_assert_uint_eq(fread(buf, 1, (size_t)sz, fp), (size_t)sz);
	fclose(fp);
	ck_assert_int_eq(bn_gguf_parse(&g, buf, (size_t)sz, &err), 0);
	ck_assert_uint_eq(g->n_tensors, 0);
	expect_str(g, "general.architecture", "bitnet");
	bn_gguf_close(g);
	free(buf);
}
END_TEST

/* ---- outputs that are not regular files -------------------------------------------------- */

/* A device or FIFO given as the output is written in place: never renamed over, never removed
 * (`bitnet mkmodel --out /dev/full` as root removed /dev/full when the write failed). A FIFO
 * whose reader has gone makes the flush fail (EPIPE; SIGPIPE is ignored here); a read end
 * held open meanwhile (rfd) lets the writer open it without blocking. */
static void expect_fifo(const char *p)
{
	struct stat st;
	ck_assert_int_eq(stat(p, &st), 0);
	ck_assert_msg(S_ISFIFO(st.st_mode), "%s is no longer a FIFO", p);
}

START_TEST(special_output)
{
	char p[PATH_MAX], tmp[PATH_MAX + 64];
	struct bn_error err = { 0 };
	signal(SIGPIPE, SIG_IGN);
	ck_assert_int_eq(mkfifo(tpath(p, "fifo"), 0600), 0);

	/* bn_ggufw_open (mkmodel): a failed write leaves the FIFO */
	int rfd = open(p, O_RDONLY | O_NONBLOCK);
	ck_assert_int_ge(rfd, 0);
	struct bn_ggufw *w;
	ck_assert_int_eq(bn_ggufw_open(&w, p, &err), 0);
	close(rfd);
	uint64_t ne1[1] = { 5 };
	float n[5] = { 0 };
	ck_assert_int_eq(bn_ggufw_tensor(w, "t", 1, ne1, BN_TYPE_F32, &err), 0);
	bn_ggufw_write(w, n, sizeof n, &err);   /* buffered: the error may come at close */
	ck_assert_int_lt(bn_ggufw_close(w, &err), 0);
	ck_assert_msg(strstr(err.msg, "fifo") != NULL, "%s", err.msg);
	expect_fifo(p);

	/* bn_ggufw_open_temp (convert, requant): the FIFO itself, no temporary beside it, and a
	 * failed commit leaves it */
	rfd = open(p, O_RDONLY | O_NONBLOCK);
	ck_assert_int_ge(rfd, 0);
	FILE *fp = bn_ggufw_open_temp(p, tmp, sizeof tmp, &err);
	ck_assert_ptr_nonnull(fp);
	ck_assert_str_eq(tmp, "");
	close(rfd);
	fputs("GGUF", fp);
	ck_assert_int_lt(bn_ggufw_commit_temp(fp, tmp, p, &err), 0);
	expect_fifo(p);

	/* with a reader the bytes arrive, and the FIFO stays */
	rfd = open(p, O_RDONLY | O_NONBLOCK);
	ck_assert_int_ge(rfd, 0);
	fp = bn_ggufw_open_temp(p, tmp, sizeof tmp, &err);
	ck_assert_ptr_nonnull(fp);
	fputs("GGUF-ok", fp);
	ck_assert_int_eq(bn_ggufw_commit_temp(fp, tmp, p, &err), 0);
	char got[16] = { 0 };
	ck_assert_int_eq(read(rfd, got, sizeof got - 1), 7);
	ck_assert_str_eq(got, "GGUF-ok");
	close(rfd);
	expect_fifo(p);
	signal(SIGPIPE, SIG_DFL);
}
END_TEST

/* ---- the golden layout ------------------------------------------------------------------ */

/* Same KV keys, types and values (but general.name), same tensor table. */
static void compare_layout(const char *golden, const struct bn_mkmodel_opts *o, const char *out)
{
	char gp[PATH_MAX], p[PATH_MAX];
	snprintf(gp, sizeof gp, "%s/golden/%s", shared_dir(), golden);
	write_model(o, tpath(p, out));
	struct bn_gguf *a = open_model(gp), *b = open_model(p);
	ck_assert_uint_eq(a->version, b->version);
	ck_assert_uint_eq(a->n_kv, b->n_kv);
	for (uint64_t i = 0; i < a->n_kv; i++) {
		const struct bn_gguf_kv *ka = &a->kv[i], *kb = &b->kv[i];
		char key[256];
		snprintf(key, sizeof key, "%.*s", (int)ka->key.len, ka->key.ptr);
		ck_assert_msg(bn_gguf_str_eq(kb->key, key), "%s: KV %llu is %.*s, want %s", golden,
		              (unsigned long long)i, (int)kb->key.len, kb->key.ptr, key);
		ck_assert_msg(ka->type == kb->type, "%s: key %s: type %u vs %u", golden, key, kb->type,
		              ka->type);
		if (!strcmp(key, "general.name"))
			continue;
		switch (ka->type) {
		case BN_GGUF_STRING:
			ck_assert_msg(ka->v.str.len == kb->v.str.len &&
			              !memcmp(ka->v.str.ptr, kb->v.str.ptr, ka->v.str.len), "key %s", key);
			break;
		case BN_GGUF_ARRAY:
			ck_assert_uint_eq(ka->arr_type, kb->arr_type);
			ck_assert_msg(ka->arr_n == kb->arr_n, "key %s: %llu vs %llu elements", key,
			              (unsigned long long)kb->arr_n, (unsigned long long)ka->arr_n);
			if (ka->arr_type == BN_GGUF_STRING) {
				struct bn_gguf_str *sa = calloc(ka->arr_n, sizeof *sa);
				struct bn_gguf_str *sb = calloc(kb->arr_n, sizeof *sb);
				ck_assert_int_eq(bn_gguf_arr_strs(ka, sa), 0);
				ck_assert_int_eq(bn_gguf_arr_strs(kb, sb), 0);
				for (uint64_t j = 0; j < ka->arr_n; j++)
					REQUIRE(sa[j].len == sb[j].len && !memcmp(sa[j].ptr, sb[j].ptr, sa[j].len),
					        "key %s[%llu]", key, (unsigned long long)j);
				free(sa);
				free(sb);
			} else {
				for (uint64_t j = 0; j < ka->arr_n; j++) {
					int32_t va = 0, vb = 1;
					REQUIRE(!bn_gguf_arr_i32(ka, j, &va) && !bn_gguf_arr_i32(kb, j, &vb) &&
					        va == vb, "key %s[%llu]", key, (unsigned long long)j);
				}
			}
			break;
		case BN_GGUF_FLOAT32:
			ck_assert_msg(ka->v.f64 == kb->v.f64, "key %s", key);
			break;
		case BN_GGUF_BOOL:
			ck_assert_msg(ka->v.b == kb->v.b, "key %s", key);
			break;
		default:
			ck_assert_msg(ka->v.u64 == kb->v.u64, "key %s: %llu vs %llu", key,
			              (unsigned long long)kb->v.u64, (unsigned long long)ka->v.u64);
		}
	}
	ck_assert_uint_eq(a->n_tensors, b->n_tensors);
	for (uint64_t i = 0; i < a->n_tensors; i++) {
		const struct bn_gguf_tensor *ta = &a->tensors[i], *tb = &b->tensors[i];
		ck_assert_str_eq(ta->name, tb->name);
		ck_assert_uint_eq(ta->n_dims, tb->n_dims);
		for (int d = 0; d < BN_GGUF_MAX_DIMS; d++)
			ck_assert_uint_eq(ta->ne[d], tb->ne[d]);
		ck_assert_uint_eq(ta->type, tb->type);
		ck_assert_msg(ta->offset == tb->offset, "%s: offset %llu vs %llu", ta->name,
		              (unsigned long long)tb->offset, (unsigned long long)ta->offset);
		ck_assert_uint_eq(ta->size, tb->size);
	}
	bn_gguf_close(a);
	bn_gguf_close(b);
}

START_TEST(golden_layout)
{
	/* the generator arguments of tests/golden/cases.tsv */
	struct bn_mkmodel_opts o;
	static const struct { const char *file; uint32_t type; } tiny[4] = {
		{ "tiny-i2_s.gguf", BN_TYPE_I2_S }, { "tiny-tq2_0.gguf", BN_TYPE_TQ2_0 },
		{ "tiny-tq1_0.gguf", BN_TYPE_TQ1_0 }, { "tiny-f16.gguf", BN_TYPE_F16 },
	};
	for (int i = 0; i < 4; i++) {
		bn_mkmodel_defaults(&o);
		ck_assert_int_eq(bn_mkmodel_preset(&o, "tiny"), 0);
		o.wtype = tiny[i].type;
		o.seed = 1;
		compare_layout(tiny[i].file, &o, "golden-like.gguf");
	}
	bn_mkmodel_defaults(&o);
	ck_assert_int_eq(bn_mkmodel_preset(&o, "small"), 0);
	o.gamma_rms = 0.04419417f;
	o.seed = 3;
	compare_layout("small-lowgamma-i2_s.gguf", &o, "golden-lowgamma.gguf");
	bn_mkmodel_defaults(&o);
	o.arch = "bitnet";
	o.scale_tensors = true;
	o.seed = 4;
	compare_layout("tiny-silu-scale-i2_s.gguf", &o, "golden-silu.gguf");

	/* the golden .scale convention this generator follows: I2_S scale 1.0, the real
	 * scale in the F32 [1] tensor */
	char gp[PATH_MAX];
	snprintf(gp, sizeof gp, "%s/golden/tiny-silu-scale-i2_s.gguf", shared_dir());
	struct bn_gguf *g = open_model(gp);
	const struct bn_gguf_tensor *t = bn_gguf_find_tensor(g, "blk.1.ffn_down.weight");
	const struct bn_gguf_tensor *ts = bn_gguf_find_tensor(g, "blk.1.ffn_down.scale");
	ck_assert(bn_i2s_tensor_scale(t->data, t->ne[1], t->ne[0]) == 1.0f);
	float s;
	memcpy(&s, ts->data, 4);
	ck_assert(s * sqrtf(512) >= 0.5f && s * sqrtf(512) <= 1.5f);
	bn_gguf_close(g);
}
END_TEST

static void rm_tmpdir(void)
{
	char cmd[PATH_MAX + 16];
	if (!tmpdir[0])
		return;
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "check_mkmodel: could not remove %s\n", tmpdir);
}

int main(void)
{
	const char *base = getenv("TMPDIR");
	snprintf(tmpdir, sizeof tmpdir, "%s/check_mkmodel.XXXXXX", base && *base ? base : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("check_mkmodel: mkdtemp");
		return 99;
	}
	Suite *s = suite_create("mkmodel");
	TCase *tc = tcase_create("mkmodel");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, validate_options);
	tcase_add_test(tc, presets);
	tcase_add_test(tc, keys_and_tensors);
	tcase_add_test(tc, formats_same_weights);
	tcase_add_test(tc, determinism);
	tcase_add_test(tc, scale_tensors);
	tcase_add_test(tc, llama_layout);
	tcase_add_test(tc, gamma_rms);
	tcase_add_test(tc, tokenizer_json);
	tcase_add_test(tc, progress);
	tcase_add_test(tc, writer);
	tcase_add_test(tc, special_output);
	if (shared_dir())
		tcase_add_test(tc, golden_layout);
	else
		fprintf(stderr, "check_mkmodel: TEST_DATA golden files absent, layout comparison skipped\n");
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	rm_tmpdir();
	return failed ? 1 : 0;
}
