/* lib/gguf.c: valid files read back exactly; every hostile file is refused with the
 * expected errno and a message naming the key or tensor at fault; nothing crashes. */
#include <check.h>
#include <errno.h>
#include <glob.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"

/* ---------------------------------------------------------------------------------------
 * A tiny GGUF writer. It writes whatever it is told, including nonsense. */

#define TW_MAX_FIELDS 512

struct tw {
	uint8_t *b;                     /* [cap] bytes written so far: [n] */
	size_t n, cap;
	size_t fields[TW_MAX_FIELDS];   /* offsets of the u32/u64 fields, for the fuzzer */
	size_t n_fields;
};

static void tw_put(struct tw *w, const void *p, size_t n)
{
	if (w->n + n > w->cap) {
		size_t cap = w->cap ? w->cap : 256;
		while (cap < w->n + n)
			cap *= 2;
		w->b = realloc(w->b, cap);
		ck_assert_ptr_nonnull(w->b);
		w->cap = cap;
	}
	memcpy(w->b + w->n, p, n);
	w->n += n;
}

static void tw_field(struct tw *w)
{
	if (w->n_fields < TW_MAX_FIELDS)
		w->fields[w->n_fields++] = w->n;
}

static void tw_u8(struct tw *w, uint8_t v)
{
	tw_put(w, &v, 1);
}

static void tw_u32(struct tw *w, uint32_t v)
{
	uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };
	tw_field(w);
	tw_put(w, b, 4);
}

static void tw_u64(struct tw *w, uint64_t v)
{
	uint8_t b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	tw_field(w);
	tw_put(w, b, 8);
}

static void tw_f32(struct tw *w, float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	tw_u32(w, u);
}

static void tw_strn(struct tw *w, const char *s, uint64_t len)
{
	tw_u64(w, len);
	tw_put(w, s, (size_t)len);
}

static void tw_str(struct tw *w, const char *s)
{
	tw_strn(w, s, strlen(s));
}

static void tw_zero(struct tw *w, size_t n)
{
	while (n--)
		tw_u8(w, 0);
}

static void tw_hdr(struct tw *w, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
	tw_put(w, "GGUF", 4);
	tw_u32(w, version);
	tw_u64(w, n_tensors);
	tw_u64(w, n_kv);
}

static void tw_key(struct tw *w, const char *key, uint32_t type)
{
	tw_str(w, key);
	tw_u32(w, type);
}

static void kv_u32(struct tw *w, const char *key, uint32_t v)
{
	tw_key(w, key, BN_GGUF_UINT32);
	tw_u32(w, v);
}

static void kv_str(struct tw *w, const char *key, const char *v)
{
	tw_key(w, key, BN_GGUF_STRING);
	tw_str(w, v);
}

/* Tensor info; ne has min(n_dims, 5) entries (a hostile n_dims writes only 5). */
static void tw_tensor(struct tw *w, const char *name, uint32_t n_dims, const uint64_t *ne,
                      uint32_t type, uint64_t offset)
{
	tw_str(w, name);
	tw_u32(w, n_dims);
	for (uint32_t i = 0; i < n_dims && i < 5; i++)
		tw_u64(w, ne[i]);
	tw_u32(w, type);
	tw_u64(w, offset);
}

static void tw_pad(struct tw *w, size_t align)
{
	while (w->n % align)
		tw_u8(w, 0);
}

static void tw_free(struct tw *w)
{
	free(w->b);
	memset(w, 0, sizeof(*w));
}

/* The reference file: every value type, three arrays, six tensors of every accepted type,
 * the last one ending exactly at the end of the file. */
#define VALID_N_KV 14
#define VALID_N_T 6

static void make_valid(struct tw *w, uint32_t version)
{
	tw_hdr(w, version, VALID_N_T, VALID_N_KV);
	kv_str(w, "general.architecture", "bitnet-b1.58");
	kv_u32(w, "general.alignment", 32);
	tw_key(w, "test.u8", BN_GGUF_UINT8); tw_u8(w, 200);
	tw_key(w, "test.i8", BN_GGUF_INT8); tw_u8(w, (uint8_t)-5);
	tw_key(w, "test.u16", BN_GGUF_UINT16); tw_u8(w, 0xff); tw_u8(w, 0xff);
	tw_key(w, "test.i32", BN_GGUF_INT32); tw_u32(w, (uint32_t)-7);
	tw_key(w, "test.u64", BN_GGUF_UINT64); tw_u64(w, 1ull << 40);
	tw_key(w, "test.i64", BN_GGUF_INT64); tw_u64(w, 123);
	tw_key(w, "test.f32", BN_GGUF_FLOAT32); tw_f32(w, 1e-5f);
	tw_key(w, "test.f64", BN_GGUF_FLOAT64);
	double d = 500000.0;
	uint64_t du;
	memcpy(&du, &d, 8);
	tw_u64(w, du);
	tw_key(w, "test.bool", BN_GGUF_BOOL); tw_u8(w, 1);
	tw_key(w, "test.arr_i32", BN_GGUF_ARRAY); tw_u32(w, BN_GGUF_INT32); tw_u64(w, 3);
	tw_u32(w, 1); tw_u32(w, (uint32_t)-2); tw_u32(w, 3);
	tw_key(w, "test.arr_f32", BN_GGUF_ARRAY); tw_u32(w, BN_GGUF_FLOAT32); tw_u64(w, 2);
	tw_f32(w, 0.5f); tw_f32(w, 1.5f);
	tw_key(w, "tokenizer.ggml.tokens", BN_GGUF_ARRAY); tw_u32(w, BN_GGUF_STRING); tw_u64(w, 4);
	tw_str(w, "a"); tw_str(w, "bc"); tw_str(w, ""); tw_str(w, "<|x|>");

	tw_tensor(w, "token_embd.weight", 2, (uint64_t[]){ 8, 4 }, BN_TYPE_F16, 0);      /* 64 B */
	tw_tensor(w, "norm.weight", 1, (uint64_t[]){ 8 }, BN_TYPE_F32, 64);              /* 32 B */
	tw_tensor(w, "blk.0.attn_q.weight", 2, (uint64_t[]){ 128, 2 }, BN_TYPE_I2_S, 96); /* 96 B */
	tw_tensor(w, "tq2", 1, (uint64_t[]){ 256 }, BN_TYPE_TQ2_0, 192);                 /* 66 B */
	tw_tensor(w, "tq1", 2, (uint64_t[]){ 256, 1 }, BN_TYPE_TQ1_0, 288);              /* 54 B */
	tw_tensor(w, "bf", 4, (uint64_t[]){ 2, 1, 1, 3 }, BN_TYPE_BF16, 352);            /* 12 B */
	tw_pad(w, 32);
	size_t data = w->n;
	for (size_t i = 0; i < 364; i++)
		tw_u8(w, (uint8_t)(i * 7 + 1));
	/* norm.weight holds 0..7 as f32 */
	for (int i = 0; i < 8; i++) {
		float f = (float)i;
		memcpy(w->b + data + 64 + 4 * i, &f, 4);
	}
}

/* Parses an exact-size heap copy so that ASan sees any read past the end. *keep owns the
 * copy when the parse succeeds. */
static int parse_copy(const uint8_t *b, size_t n, struct bn_gguf **g, struct bn_error *err,
                      uint8_t **keep)
{
	uint8_t *c = malloc(n ? n : 1);
	ck_assert_ptr_nonnull(c);
	if (n)
		memcpy(c, b, n);
	memset(err, 0, sizeof(*err));
	int rc = bn_gguf_parse(g, c, n, err);
	if (rc == 0 && keep) {
		*keep = c;
	} else {
		if (rc == 0)
			bn_gguf_close(*g);
		free(c);
	}
	return rc;
}

static void expect_fail_(const uint8_t *b, size_t n, int code, const char *s1, const char *s2,
                         int line)
{
	struct bn_gguf *g = (struct bn_gguf *)1;
	struct bn_error err;
	int rc = parse_copy(b, n, &g, &err, NULL);
	ck_assert_msg(rc == code, "line %d: expected %d, got %d (%s)", line, code, rc, err.msg);
	ck_assert_msg(g == NULL, "line %d: out not cleared on failure", line);
	ck_assert_msg(err.code == code, "line %d: err.code %d", line, err.code);
	ck_assert_msg(strstr(err.msg, "gguf buffer"), "line %d: no file name in '%s'", line, err.msg);
	if (s1)
		ck_assert_msg(strstr(err.msg, s1), "line %d: '%s' not in '%s'", line, s1, err.msg);
	if (s2)
		ck_assert_msg(strstr(err.msg, s2), "line %d: '%s' not in '%s'", line, s2, err.msg);
}

#define EXPECT_FAIL(w, code, s1, s2) expect_fail_((w)->b, (w)->n, (code), (s1), (s2), __LINE__)

/* A file with one KV-only body: header (no tensors) then the caller writes n_kv KVs. */
static void kv_file(struct tw *w, uint64_t n_kv)
{
	memset(w, 0, sizeof(*w));
	tw_hdr(w, 3, 0, n_kv);
}

/* ---------------------------------------------------------------------------------------
 * Valid files */

static void check_valid_contents(const struct bn_gguf *g)
{
	uint32_t u;
	float f;
	bool b;
	struct bn_gguf_str s;

	ck_assert_uint_eq(g->n_kv, VALID_N_KV);
	ck_assert_uint_eq(g->n_tensors, VALID_N_T);
	ck_assert_uint_eq(g->alignment, 32);
	ck_assert_uint_eq(g->data_offset % 32, 0);
	ck_assert_uint_ge(g->data_offset, g->header_size);
	ck_assert_uint_lt(g->data_offset - g->header_size, 32);
	ck_assert_uint_eq(g->data_offset + 364, g->size);

	ck_assert_int_eq(bn_gguf_get_str(g, "general.architecture", &s), 0);
	ck_assert(bn_gguf_str_eq(s, "bitnet-b1.58"));
	ck_assert(!bn_gguf_str_eq(s, "bitnet-b1.5"));
	ck_assert(!bn_gguf_str_eq(s, "bitnet-b1.588"));

	ck_assert_int_eq(bn_gguf_get_u32(g, "general.alignment", &u), 0);
	ck_assert_uint_eq(u, 32);
	ck_assert_int_eq(bn_gguf_get_u32(g, "test.u8", &u), 0);
	ck_assert_uint_eq(u, 200);
	ck_assert_int_eq(bn_gguf_get_u32(g, "test.u16", &u), 0);
	ck_assert_uint_eq(u, 65535);
	ck_assert_int_eq(bn_gguf_get_u32(g, "test.i64", &u), 0);
	ck_assert_uint_eq(u, 123);
	ck_assert_int_eq(bn_gguf_get_u32(g, "test.i8", &u), -EINVAL);    /* -5 */
	ck_assert_int_eq(bn_gguf_get_u32(g, "test.i32", &u), -EINVAL);   /* -7 */
	ck_assert_int_eq(bn_gguf_get_u32(g, "test.u64", &u), -EINVAL);   /* 2^40 */
	ck_assert_int_eq(bn_gguf_get_u32(g, "test.f32", &u), -EINVAL);
	ck_assert_int_eq(bn_gguf_get_u32(g, "test.bool", &u), -EINVAL);
	ck_assert_int_eq(bn_gguf_get_u32(g, "nope", &u), -ENOENT);
	ck_assert_int_eq(bn_gguf_get_u32(g, "test", &u), -ENOENT);

	ck_assert_int_eq(bn_gguf_get_f32(g, "test.f32", &f), 0);
	ck_assert(f == 1e-5f);
	ck_assert_int_eq(bn_gguf_get_f32(g, "test.f64", &f), 0);
	ck_assert(f == 500000.0f);
	ck_assert_int_eq(bn_gguf_get_f32(g, "test.u8", &f), -EINVAL);
	ck_assert_int_eq(bn_gguf_get_f32(g, "nope", &f), -ENOENT);

	ck_assert_int_eq(bn_gguf_get_bool(g, "test.bool", &b), 0);
	ck_assert(b);
	ck_assert_int_eq(bn_gguf_get_bool(g, "test.u8", &b), -EINVAL);
	ck_assert_int_eq(bn_gguf_get_str(g, "test.u8", &s), -EINVAL);

	const struct bn_gguf_kv *kv = bn_gguf_find_kv(g, "test.arr_i32");
	ck_assert_ptr_nonnull(kv);
	ck_assert_uint_eq(kv->type, BN_GGUF_ARRAY);
	ck_assert_uint_eq(kv->arr_type, BN_GGUF_INT32);
	ck_assert_uint_eq(kv->arr_n, 3);
	int32_t iv;
	ck_assert_int_eq(bn_gguf_arr_i32(kv, 0, &iv), 0);
	ck_assert_int_eq(iv, 1);
	ck_assert_int_eq(bn_gguf_arr_i32(kv, 1, &iv), 0);
	ck_assert_int_eq(iv, -2);
	ck_assert_int_eq(bn_gguf_arr_i32(kv, 2, &iv), 0);
	ck_assert_int_eq(iv, 3);
	ck_assert_int_eq(bn_gguf_arr_i32(kv, 3, &iv), -EINVAL);
	ck_assert_int_eq(bn_gguf_arr_f32(kv, 0, &f), -EINVAL);

	kv = bn_gguf_find_kv(g, "test.arr_f32");
	ck_assert_ptr_nonnull(kv);
	ck_assert_int_eq(bn_gguf_arr_f32(kv, 1, &f), 0);
	ck_assert(f == 1.5f);
	ck_assert_int_eq(bn_gguf_arr_f32(kv, 2, &f), -EINVAL);
	ck_assert_int_eq(bn_gguf_arr_i32(kv, 0, &iv), -EINVAL);

	kv = bn_gguf_find_kv(g, "tokenizer.ggml.tokens");
	ck_assert_ptr_nonnull(kv);
	ck_assert_uint_eq(kv->arr_n, 4);
	struct bn_gguf_str toks[4];
	ck_assert_int_eq(bn_gguf_arr_strs(kv, toks), 0);
	ck_assert(bn_gguf_str_eq(toks[0], "a"));
	ck_assert(bn_gguf_str_eq(toks[1], "bc"));
	ck_assert(bn_gguf_str_eq(toks[2], ""));
	ck_assert(bn_gguf_str_eq(toks[3], "<|x|>"));
	ck_assert_int_eq(bn_gguf_arr_strs(bn_gguf_find_kv(g, "test.arr_f32"), toks), -EINVAL);
	ck_assert_int_eq(bn_gguf_arr_i32(kv, 0, &iv), -EINVAL);

	const struct bn_gguf_tensor *t = bn_gguf_find_tensor(g, "norm.weight");
	ck_assert_ptr_nonnull(t);
	ck_assert_uint_eq(t->type, BN_TYPE_F32);
	ck_assert_uint_eq(t->n_dims, 1);
	ck_assert_uint_eq(t->ne[0], 8);
	ck_assert_uint_eq(t->ne[1], 1);
	ck_assert_uint_eq(t->ne[3], 1);
	ck_assert_uint_eq(t->size, 32);
	ck_assert_ptr_eq(t->data, g->base + g->data_offset + 64);
	for (int i = 0; i < 8; i++) {
		float x;
		memcpy(&x, (const uint8_t *)t->data + 4 * i, 4);
		ck_assert(x == (float)i);
	}
	t = bn_gguf_find_tensor(g, "blk.0.attn_q.weight");
	ck_assert_ptr_nonnull(t);
	ck_assert_uint_eq(t->type, BN_TYPE_I2_S);
	ck_assert_uint_eq(t->size, 128 * 2 / 4 + 32);
	ck_assert_uint_eq(bn_gguf_find_tensor(g, "tq2")->size, 66);
	ck_assert_uint_eq(bn_gguf_find_tensor(g, "tq1")->size, 54);
	ck_assert_uint_eq(bn_gguf_find_tensor(g, "token_embd.weight")->size, 64);
	t = bn_gguf_find_tensor(g, "bf");
	ck_assert_uint_eq(t->n_dims, 4);
	ck_assert_uint_eq(t->ne[3], 3);
	ck_assert_uint_eq(t->size, 12);
	ck_assert_ptr_eq((const uint8_t *)t->data + t->size, g->base + g->size);
	ck_assert_ptr_null(bn_gguf_find_tensor(g, "tq"));
	ck_assert_ptr_null(bn_gguf_find_tensor(g, "missing"));
}

START_TEST(test_valid_v2_v3)
{
	for (uint32_t v = 2; v <= 3; v++) {
		struct tw w = { 0 };
		make_valid(&w, v);
		struct bn_gguf *g = NULL;
		struct bn_error err;
		uint8_t *keep = NULL;
		int rc = parse_copy(w.b, w.n, &g, &err, &keep);
		ck_assert_msg(rc == 0, "v%u: %s", v, err.msg);
		ck_assert_uint_eq(g->version, v);
		ck_assert(!g->mapped);
		check_valid_contents(g);
		bn_gguf_close(g);
		free(keep);
		tw_free(&w);
	}
}
END_TEST

START_TEST(test_open_file)
{
	char dir[] = "/tmp/check_gguf.XXXXXX";
	ck_assert_ptr_nonnull(mkdtemp(dir));
	char path[256], empty[256];
	snprintf(path, sizeof(path), "%s/model.gguf", dir);
	snprintf(empty, sizeof(empty), "%s/empty.gguf", dir);

	struct tw w = { 0 };
	make_valid(&w, 3);
	FILE *f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(w.b, 1, w.n, f), w.n);
	fclose(f);
	f = fopen(empty, "wb");
	ck_assert_ptr_nonnull(f);
	fclose(f);

	struct bn_gguf *g = NULL;
	struct bn_error err = { 0 };
	int rc = bn_gguf_open(&g, path, &err);
	ck_assert_msg(rc == 0, "%s", err.msg);
	ck_assert(g->mapped);
	check_valid_contents(g);
	bn_gguf_close(g);

	ck_assert_int_eq(bn_gguf_open(&g, empty, &err), -EBADMSG);
	ck_assert_ptr_null(g);
	ck_assert(strstr(err.msg, "empty.gguf") && strstr(err.msg, "empty"));
	ck_assert_int_eq(bn_gguf_open(&g, dir, &err), -EINVAL);
	ck_assert(strstr(err.msg, "regular"));
	char missing[300];
	snprintf(missing, sizeof(missing), "%s/none.gguf", dir);
	ck_assert_int_eq(bn_gguf_open(&g, missing, &err), -ENOENT);
	ck_assert(strstr(err.msg, "none.gguf"));

	/* A file with a bad tensor names the file in the message. */
	w.b[w.n - 1] = 0;
	w.n--;
	f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(w.b, 1, w.n, f), w.n);
	fclose(f);
	ck_assert_int_eq(bn_gguf_open(&g, path, &err), -EBADMSG);
	ck_assert_msg(strstr(err.msg, "model.gguf: tensor 'bf'") &&
	              strstr(err.msg, "ends past the end of the file"), "%s", err.msg);
	bn_gguf_close(NULL);

	unlink(path);
	unlink(empty);
	rmdir(dir);
	tw_free(&w);
}
END_TEST

START_TEST(test_type_helpers)
{
	uint64_t ne[4] = { 256, 3, 1, 1 };
	ck_assert_uint_eq(bn_ggml_nbytes(BN_TYPE_F32, ne), 256 * 3 * 4);
	ck_assert_uint_eq(bn_ggml_nbytes(BN_TYPE_F16, ne), 256 * 3 * 2);
	ck_assert_uint_eq(bn_ggml_nbytes(BN_TYPE_BF16, ne), 256 * 3 * 2);
	ck_assert_uint_eq(bn_ggml_nbytes(BN_TYPE_TQ1_0, ne), 3 * 54);
	ck_assert_uint_eq(bn_ggml_nbytes(BN_TYPE_TQ2_0, ne), 3 * 66);
	ck_assert_uint_eq(bn_ggml_nbytes(BN_TYPE_I2_S, ne), 256 * 3 / 4 + 32);
	ck_assert_uint_eq(bn_ggml_nbytes(BN_TYPE_Q8_0, ne), 256 * 3 / 32 * 34);
	ck_assert_uint_eq(bn_ggml_nbytes(2, ne), 0);
	uint64_t ne_odd[4] = { 128, 2, 1, 1 };
	ck_assert_uint_eq(bn_ggml_nbytes(BN_TYPE_TQ2_0, ne_odd), 0);
	ck_assert_uint_eq(bn_ggml_nbytes(BN_TYPE_I2_S, ne_odd), 96);
	uint64_t ne_big[4] = { 1ull << 31, 1ull << 31, 1, 1 };    /* 2^62 elements */
	ck_assert_uint_eq(bn_ggml_nbytes(BN_TYPE_F32, ne_big), 0);
	ck_assert_uint_eq(bn_ggml_nbytes(BN_TYPE_I2_S, ne_big), (1ull << 60) + 32);
	ck_assert_uint_eq(bn_ggml_nbytes(BN_TYPE_Q8_0, ne_big), (1ull << 57) * 34);
	uint64_t ne_q8odd[4] = { 48, 2, 1, 1 };
	ck_assert_uint_eq(bn_ggml_nbytes(BN_TYPE_Q8_0, ne_q8odd), 0);
	uint64_t ne_zero[4] = { 256, 0, 1, 1 };
	ck_assert_uint_eq(bn_ggml_nbytes(BN_TYPE_F32, ne_zero), 0);
	ck_assert_str_eq(bn_ggml_type_name(BN_TYPE_F32), "f32");
	ck_assert_str_eq(bn_ggml_type_name(BN_TYPE_F16), "f16");
	ck_assert_str_eq(bn_ggml_type_name(BN_TYPE_BF16), "bf16");
	ck_assert_str_eq(bn_ggml_type_name(BN_TYPE_TQ1_0), "tq1_0");
	ck_assert_str_eq(bn_ggml_type_name(BN_TYPE_TQ2_0), "tq2_0");
	ck_assert_str_eq(bn_ggml_type_name(BN_TYPE_I2_S), "i2_s");
	ck_assert_str_eq(bn_ggml_type_name(BN_TYPE_Q8_0), "q8_0");
	ck_assert_str_eq(bn_ggml_type_name(2), "unknown");
	ck_assert_uint_eq(bn_ggml_blck_size(BN_TYPE_F32), 1);
	ck_assert_uint_eq(bn_ggml_blck_size(BN_TYPE_TQ1_0), 256);
	ck_assert_uint_eq(bn_ggml_blck_size(BN_TYPE_I2_S), 128);
	ck_assert_uint_eq(bn_ggml_blck_size(BN_TYPE_Q8_0), 32);
	ck_assert_uint_eq(bn_ggml_blck_size(99), 0);
}
END_TEST

/* Many keys and tensors: the hash index finds every one and catches a late duplicate. */
START_TEST(test_many_entries)
{
	enum { NK = 3000, NT = 2000 };
	for (int dup = 0; dup <= 1; dup++) {
		struct tw w = { 0 };
		char name[64];
		tw_hdr(&w, 3, NT, NK);
		for (int i = 0; i < NK; i++) {
			snprintf(name, sizeof(name), "k.%d", (dup && i == NK - 1) ? 17 : i);
			kv_u32(&w, name, (uint32_t)i);
		}
		for (int i = 0; i < NT; i++) {
			snprintf(name, sizeof(name), "t.%d", i);
			tw_tensor(&w, name, 1, (uint64_t[]){ 8 }, BN_TYPE_F32, 32ull * (uint64_t)i);
		}
		tw_pad(&w, 32);
		tw_zero(&w, 32 * NT);
		if (dup) {
			EXPECT_FAIL(&w, -EBADMSG, "duplicate key 'k.17'", NULL);
			tw_free(&w);
			continue;
		}
		struct bn_gguf *g = NULL;
		struct bn_error err;
		uint8_t *keep = NULL;
		ck_assert_msg(parse_copy(w.b, w.n, &g, &err, &keep) == 0, "%s", err.msg);
		for (int i = 0; i < NK; i++) {
			uint32_t u;
			snprintf(name, sizeof(name), "k.%d", i);
			ck_assert_int_eq(bn_gguf_get_u32(g, name, &u), 0);
			ck_assert_uint_eq(u, (uint32_t)i);
		}
		for (int i = 0; i < NT; i++) {
			snprintf(name, sizeof(name), "t.%d", i);
			const struct bn_gguf_tensor *t = bn_gguf_find_tensor(g, name);
			ck_assert_ptr_eq(t, &g->tensors[i]);
		}
		/* The linear fallback gives the same answers. */
		struct bn_gguf copy = *g;
		copy.index = NULL;
		ck_assert_ptr_eq(bn_gguf_find_kv(&copy, "k.2999"), &g->kv[2999]);
		ck_assert_ptr_eq(bn_gguf_find_tensor(&copy, "t.1999"), &g->tensors[1999]);
		ck_assert_ptr_null(bn_gguf_find_kv(&copy, "k.3000"));
		bn_gguf_close(g);
		free(keep);
		tw_free(&w);
	}
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Hostile headers and KVs */

START_TEST(test_truncation_everywhere)
{
	struct tw w = { 0 };
	make_valid(&w, 3);
	for (size_t n = 0; n < w.n; n++) {
		struct bn_gguf *g = NULL;
		struct bn_error err;
		int rc = parse_copy(w.b, n, &g, &err, NULL);
		ck_assert_msg(rc < 0, "truncated at %zu of %zu: accepted", n, w.n);
		ck_assert_ptr_null(g);
		ck_assert_int_eq(err.code, rc);
		ck_assert_msg(rc == -EBADMSG, "truncated at %zu: rc %d (%s)", n, rc, err.msg);
		ck_assert(err.msg[0] != '\0');
	}
	tw_free(&w);
}
END_TEST

START_TEST(test_magic_version)
{
	struct tw w = { 0 };
	make_valid(&w, 3);
	w.b[3] = 'X';
	EXPECT_FAIL(&w, -EBADMSG, "magic", NULL);
	tw_free(&w);

	make_valid(&w, 1);
	EXPECT_FAIL(&w, -ENOTSUP, "version 1", NULL);
	tw_free(&w);
	make_valid(&w, 4);
	EXPECT_FAIL(&w, -ENOTSUP, "version 4", NULL);
	tw_free(&w);
	make_valid(&w, 0);
	EXPECT_FAIL(&w, -ENOTSUP, "version 0", NULL);
	tw_free(&w);
	make_valid(&w, 0x03000000u);
	EXPECT_FAIL(&w, -ENOTSUP, "big-endian", NULL);
	tw_free(&w);

	uint8_t tiny[] = { 'G', 'G', 'U', 'F', 3, 0, 0 };
	expect_fail_(tiny, sizeof(tiny), -EBADMSG, "truncated", NULL, __LINE__);
	expect_fail_(tiny, 0, -EBADMSG, "truncated", NULL, __LINE__);
}
END_TEST

START_TEST(test_huge_counts)
{
	static const uint64_t counts[] = {
		UINT64_MAX, UINT64_MAX / 13 + 1, UINT64_MAX / 37 + 1, 1ull << 40, 1ull << 62, 100,
	};
	for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
		struct tw w = { 0 };
		tw_hdr(&w, 3, 0, counts[i]);
		kv_u32(&w, "a.b", 1);
		EXPECT_FAIL(&w, -EBADMSG, "KVs", NULL);
		tw_free(&w);

		tw_hdr(&w, 3, counts[i], 0);
		tw_tensor(&w, "t", 1, (uint64_t[]){ 8 }, BN_TYPE_F32, 0);
		EXPECT_FAIL(&w, -EBADMSG, "tensors", NULL);
		tw_free(&w);
	}
	/* Each count fits on its own but not both together. */
	struct tw w = { 0 };
	tw_hdr(&w, 3, 3, 3);
	tw_zero(&w, 3 * 33 + 2 * 13);
	EXPECT_FAIL(&w, -EBADMSG, "3 KVs and 3 tensors", NULL);
	tw_free(&w);
}
END_TEST

START_TEST(test_huge_strings)
{
	struct tw w;
	/* key lengths */
	kv_file(&w, 1);
	tw_u64(&w, UINT64_MAX);
	tw_zero(&w, 16);
	EXPECT_FAIL(&w, -EBADMSG, "KV 0", "key length");
	tw_free(&w);

	kv_file(&w, 1);
	tw_u64(&w, 1000);
	tw_put(&w, "general.name", 12);
	tw_zero(&w, 4);
	EXPECT_FAIL(&w, -EBADMSG, "truncated in KV 0", "key of 1000 bytes");
	tw_free(&w);

	kv_file(&w, 1);
	tw_u64(&w, 70000);
	for (int i = 0; i < 70000; i++)
		tw_u8(&w, 'k');
	tw_u32(&w, BN_GGUF_UINT8);
	tw_u8(&w, 1);
	EXPECT_FAIL(&w, -EBADMSG, "key length 70000 exceeds 65535", NULL);
	tw_free(&w);

	kv_file(&w, 1);
	tw_u64(&w, 0);
	tw_u32(&w, BN_GGUF_UINT8);
	tw_u8(&w, 1);
	tw_zero(&w, 8);
	EXPECT_FAIL(&w, -EBADMSG, "KV 0: empty key", NULL);
	tw_free(&w);

	kv_file(&w, 1);
	tw_strn(&w, "bad\0key", 7);
	tw_u32(&w, BN_GGUF_UINT8);
	tw_u8(&w, 1);
	EXPECT_FAIL(&w, -EBADMSG, "'bad\\x00key' contains a NUL", NULL);
	tw_free(&w);

	/* string values */
	static const uint64_t lens[] = { UINT64_MAX, 1ull << 63, 1000, 9 };
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		kv_file(&w, 2);
		kv_u32(&w, "general.alignment", 32);
		tw_key(&w, "general.name", BN_GGUF_STRING);
		tw_u64(&w, lens[i]);
		tw_put(&w, "12345678", 8);
		EXPECT_FAIL(&w, -EBADMSG, "truncated in KV 1 ('general.name')", "string of");
		tw_free(&w);
	}
}
END_TEST

START_TEST(test_huge_arrays)
{
	struct tw w;
	/* the count times the element size wraps u64 */
	static const uint32_t et[] = { BN_GGUF_UINT16, BN_GGUF_INT32, BN_GGUF_FLOAT64, BN_GGUF_UINT64 };
	for (size_t i = 0; i < 4; i++) {
		kv_file(&w, 1);
		tw_key(&w, "tokenizer.ggml.token_type", BN_GGUF_ARRAY);
		tw_u32(&w, et[i]);
		tw_u64(&w, (1ull << 63) + 1);
		tw_zero(&w, 64);
		EXPECT_FAIL(&w, -EOVERFLOW, "'tokenizer.ggml.token_type'", "overflows");
		tw_free(&w);
	}
	/* large but not overflowing */
	static const uint64_t n[] = { UINT64_MAX, 1ull << 40, 17 };
	for (size_t i = 0; i < 3; i++) {
		kv_file(&w, 1);
		tw_key(&w, "tokenizer.ggml.scores", BN_GGUF_ARRAY);
		tw_u32(&w, BN_GGUF_UINT8);
		tw_u64(&w, n[i]);
		tw_zero(&w, 16);
		EXPECT_FAIL(&w, -EBADMSG, "truncated in KV 0 ('tokenizer.ggml.scores')", "array of");
		tw_free(&w);
	}
	/* string arrays: the count alone is too large, then one string's length is */
	kv_file(&w, 2);
	kv_str(&w, "general.architecture", "bitnet");
	tw_key(&w, "tokenizer.ggml.tokens", BN_GGUF_ARRAY);
	tw_u32(&w, BN_GGUF_STRING);
	tw_u64(&w, 128256);
	tw_str(&w, "a");
	tw_str(&w, "b");
	EXPECT_FAIL(&w, -EBADMSG,
	            "truncated in KV 1 ('tokenizer.ggml.tokens'): array of 128256 strings needs more bytes than the",
	            NULL);
	tw_free(&w);

	kv_file(&w, 1);
	tw_key(&w, "tokenizer.ggml.merges", BN_GGUF_ARRAY);
	tw_u32(&w, BN_GGUF_STRING);
	tw_u64(&w, 3);
	tw_str(&w, "a b");
	tw_u64(&w, UINT64_MAX);
	tw_str(&w, "c d");
	EXPECT_FAIL(&w, -EBADMSG, "'tokenizer.ggml.merges'", "string 1 of 3");
	tw_free(&w);

	/* a bool array element that is neither 0 nor 1 */
	kv_file(&w, 1);
	tw_key(&w, "x.flags", BN_GGUF_ARRAY);
	tw_u32(&w, BN_GGUF_BOOL);
	tw_u64(&w, 3);
	tw_u8(&w, 0); tw_u8(&w, 1); tw_u8(&w, 2);
	EXPECT_FAIL(&w, -EBADMSG, "'x.flags'", "element 2");
	tw_free(&w);
}
END_TEST

START_TEST(test_bad_value_types)
{
	struct tw w;
	static const uint32_t bad[] = { 13, 255, 0xffffffffu };
	for (size_t i = 0; i < 3; i++) {
		kv_file(&w, 1);
		tw_key(&w, "general.file_type", bad[i]);
		tw_zero(&w, 16);
		EXPECT_FAIL(&w, -EBADMSG, "'general.file_type'", "unknown value type");
		tw_free(&w);

		kv_file(&w, 1);
		tw_key(&w, "general.file_type", BN_GGUF_ARRAY);
		tw_u32(&w, bad[i]);
		tw_u64(&w, 1);
		tw_zero(&w, 16);
		EXPECT_FAIL(&w, -EBADMSG, "'general.file_type'", "unknown element type");
		tw_free(&w);
	}
	kv_file(&w, 1);
	tw_key(&w, "a.nested", BN_GGUF_ARRAY);
	tw_u32(&w, BN_GGUF_ARRAY);
	tw_u64(&w, 1);
	tw_u32(&w, BN_GGUF_UINT8);
	tw_u64(&w, 1);
	tw_u8(&w, 0);
	EXPECT_FAIL(&w, -EBADMSG, "'a.nested'", "arrays of arrays");
	tw_free(&w);

	kv_file(&w, 1);
	tw_key(&w, "tokenizer.ggml.add_bos_token", BN_GGUF_BOOL);
	tw_u8(&w, 2);
	EXPECT_FAIL(&w, -EBADMSG, "'tokenizer.ggml.add_bos_token'", "bool value is 2");
	tw_free(&w);

	/* an unprintable key is escaped in the message */
	kv_file(&w, 1);
	tw_key(&w, "k\x01\xff'", 13);
	tw_zero(&w, 8);
	EXPECT_FAIL(&w, -EBADMSG, "'k\\x01\\xff\\x27'", "unknown value type 13");
	tw_free(&w);
}
END_TEST

START_TEST(test_duplicate_keys)
{
	struct tw w;
	kv_file(&w, 3);
	kv_str(&w, "general.name", "a");
	kv_u32(&w, "general.alignment", 32);
	kv_str(&w, "general.name", "b");
	EXPECT_FAIL(&w, -EBADMSG, "duplicate key 'general.name'", "KV 0 and KV 2");
	tw_free(&w);
}
END_TEST

/* One F32 tensor {8} at offset 0 after a general.alignment KV of the given type. */
static void align_file(struct tw *w, uint32_t type, uint64_t value)
{
	memset(w, 0, sizeof(*w));
	tw_hdr(w, 3, 1, 1);
	tw_key(w, "general.alignment", type);
	switch (type) {
	case BN_GGUF_UINT8: case BN_GGUF_INT8: tw_u8(w, (uint8_t)value); break;
	case BN_GGUF_UINT16: tw_u8(w, (uint8_t)value); tw_u8(w, (uint8_t)(value >> 8)); break;
	case BN_GGUF_UINT64: case BN_GGUF_INT64: case BN_GGUF_FLOAT64: tw_u64(w, value); break;
	case BN_GGUF_STRING: tw_str(w, "32"); break;
	default: tw_u32(w, (uint32_t)value); break;
	}
	tw_tensor(w, "t", 1, (uint64_t[]){ 8 }, BN_TYPE_F32, 0);
	tw_pad(w, value && value <= 4096 && !(value & (value - 1)) ? (size_t)value : 32);
	tw_zero(w, 32);
}

START_TEST(test_alignment)
{
	struct tw w;
	static const struct { uint32_t type; uint64_t v; const char *msg; } bad[] = {
		{ BN_GGUF_UINT32, 48, "48 is not a power of two" },
		{ BN_GGUF_UINT32, 0, "0 is not a valid alignment" },
		{ BN_GGUF_UINT32, 2u << 20, "2097152 exceeds" },
		{ BN_GGUF_UINT64, 1ull << 40, "exceeds" },
		{ BN_GGUF_UINT64, (1ull << 32) + 32, "not a power of two" },
		{ BN_GGUF_INT32, 32, "not i32" },
		{ BN_GGUF_FLOAT32, 32, "not f32" },
		{ BN_GGUF_STRING, 0, "not string" },
		{ BN_GGUF_BOOL, 1, "not bool" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		align_file(&w, bad[i].type, bad[i].v);
		EXPECT_FAIL(&w, -EBADMSG, "key 'general.alignment'", bad[i].msg);
		tw_free(&w);
	}
	static const struct { uint32_t type; uint64_t v; } good[] = {
		{ BN_GGUF_UINT32, 32 }, { BN_GGUF_UINT8, 1 }, { BN_GGUF_UINT16, 64 },
		{ BN_GGUF_UINT64, 4096 }, { BN_GGUF_UINT32, 8 },
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		align_file(&w, good[i].type, good[i].v);
		struct bn_gguf *g = NULL;
		struct bn_error err;
		uint8_t *keep = NULL;
		ck_assert_msg(parse_copy(w.b, w.n, &g, &err, &keep) == 0, "%u: %s", (unsigned)i, err.msg);
		ck_assert_uint_eq(g->alignment, good[i].v);
		ck_assert_uint_eq(g->data_offset % good[i].v, 0);
		ck_assert_uint_eq(g->data_offset + 32, g->size);
		bn_gguf_close(g);
		free(keep);
		tw_free(&w);
	}
	/* Without the key the default is 32. */
	memset(&w, 0, sizeof(w));
	tw_hdr(&w, 3, 1, 0);
	tw_tensor(&w, "t", 1, (uint64_t[]){ 8 }, BN_TYPE_F32, 0);
	tw_pad(&w, 32);
	tw_zero(&w, 32);
	struct bn_gguf *g = NULL;
	struct bn_error err;
	uint8_t *keep = NULL;
	ck_assert_msg(parse_copy(w.b, w.n, &g, &err, &keep) == 0, "%s", err.msg);
	ck_assert_uint_eq(g->alignment, 32);
	ck_assert_uint_eq(g->header_size, w.n - 32 - (g->data_offset - g->header_size));
	bn_gguf_close(g);
	free(keep);
	tw_free(&w);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Hostile tensor tables */

struct tspec {
	const char *name;
	uint32_t n_dims;
	uint64_t ne[6];
	uint32_t type;
	uint64_t offset;
};

/* general.alignment = 32, the tensors, padding, then data bytes of zeros. */
static void tensor_file(struct tw *w, const struct tspec *t, size_t nt, size_t data)
{
	memset(w, 0, sizeof(*w));
	tw_hdr(w, 3, nt, 1);
	kv_u32(w, "general.alignment", 32);
	for (size_t i = 0; i < nt; i++)
		tw_tensor(w, t[i].name, t[i].n_dims, t[i].ne, t[i].type, t[i].offset);
	tw_pad(w, 32);
	tw_zero(w, data);
}

#define TFAIL(code, s1, s2, data, ...)                                                    \
	do {                                                                                  \
		const struct tspec ts_[] = { __VA_ARGS__ };                                   \
		struct tw w_;                                                                 \
		tensor_file(&w_, ts_, sizeof(ts_) / sizeof(ts_[0]), (data));                  \
		EXPECT_FAIL(&w_, (code), (s1), (s2));                                         \
		tw_free(&w_);                                                                 \
	} while (0)

START_TEST(test_tensor_names)
{
	TFAIL(-EBADMSG, "duplicate tensor name 'blk.0.attn_q.weight'", "tensors 0 and 2", 256,
	      { "blk.0.attn_q.weight", 1, { 8 }, BN_TYPE_F32, 0 },
	      { "blk.0.attn_k.weight", 1, { 8 }, BN_TYPE_F32, 32 },
	      { "blk.0.attn_q.weight", 1, { 8 }, BN_TYPE_F32, 64 });
	TFAIL(-EBADMSG, "tensor 1: empty name", NULL, 256,
	      { "a", 1, { 8 }, BN_TYPE_F32, 0 }, { "", 1, { 8 }, BN_TYPE_F32, 32 });

	char longname[300];
	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	TFAIL(-EBADMSG, "name of 299 bytes exceeds 255", "'nnnn", 256,
	      { longname, 1, { 8 }, BN_TYPE_F32, 0 });
	longname[255] = '\0';
	{
		const struct tspec ok[] = { { longname, 1, { 8 }, BN_TYPE_F32, 0 } };
		struct tw w;
		tensor_file(&w, ok, 1, 32);
		struct bn_gguf *g = NULL;
		struct bn_error err;
		uint8_t *keep = NULL;
		ck_assert_msg(parse_copy(w.b, w.n, &g, &err, &keep) == 0, "%s", err.msg);
		ck_assert_ptr_nonnull(bn_gguf_find_tensor(g, longname));
		bn_gguf_close(g);
		free(keep);
		tw_free(&w);
	}

	struct tw w = { 0 };
	tw_hdr(&w, 3, 1, 0);
	tw_strn(&w, "x\0y", 3);
	tw_u32(&w, 1);
	tw_u64(&w, 8);
	tw_u32(&w, BN_TYPE_F32);
	tw_u64(&w, 0);
	tw_pad(&w, 32);
	tw_zero(&w, 32);
	EXPECT_FAIL(&w, -EBADMSG, "'x\\x00y'", "NUL");
	tw_free(&w);

	/* a name length far past the end */
	tw_hdr(&w, 3, 1, 0);
	tw_u64(&w, UINT64_MAX);
	tw_zero(&w, 40);
	EXPECT_FAIL(&w, -EBADMSG, "truncated in tensor 0", "name of");
	tw_free(&w);
}
END_TEST

START_TEST(test_tensor_dims)
{
	TFAIL(-EBADMSG, "tensor 'w': 0 dimensions", NULL, 64, { "w", 0, { 0 }, BN_TYPE_F32, 0 });
	TFAIL(-EBADMSG, "tensor 'w': 5 dimensions", NULL, 64,
	      { "w", 5, { 1, 1, 1, 1, 1 }, BN_TYPE_F32, 0 });
	TFAIL(-EBADMSG, "tensor 'w': 4294967295 dimensions", NULL, 64,
	      { "w", 0xffffffffu, { 1 }, BN_TYPE_F32, 0 });
	TFAIL(-EBADMSG, "tensor 'w': dimension 1 is 0", NULL, 64,
	      { "w", 2, { 8, 0 }, BN_TYPE_F32, 0 });
	TFAIL(-EBADMSG, "tensor 'w': dimension 0 is 0", NULL, 64,
	      { "w", 1, { 0 }, BN_TYPE_F32, 0 });
	TFAIL(-EOVERFLOW, "tensor 'w'", "element count overflows at dimension 2", 64,
	      { "w", 3, { 1ull << 32, 1ull << 30, 4 }, BN_TYPE_F32, 0 });
	TFAIL(-EOVERFLOW, "tensor 'w'", "element count overflows at dimension 0", 64,
	      { "w", 1, { UINT64_MAX }, BN_TYPE_F32, 0 });
	TFAIL(-EOVERFLOW, "tensor 'w'", "element count overflows at dimension 3", 64,
	      { "w", 4, { 1ull << 16, 1ull << 16, 1ull << 16, 1ull << 16 }, BN_TYPE_F32, 0 });
	/* fits in elements, not in bytes */
	TFAIL(-EOVERFLOW, "tensor 'w'", "byte size overflows", 64,
	      { "w", 2, { 1ull << 31, 1ull << 31 }, BN_TYPE_F32, 0 });
	/* fits in bytes, not in the file */
	TFAIL(-EBADMSG, "tensor 'w': extent", "ends past the end of the file", 64,
	      { "w", 2, { 1ull << 30, 1ull << 30 }, BN_TYPE_I2_S, 0 });
}
END_TEST

START_TEST(test_tensor_types)
{
	TFAIL(-ENOTSUP, "tensor 'blk.0.ffn_up.weight'", "unsupported tensor type 2", 64,
	      { "blk.0.ffn_up.weight", 1, { 32 }, 2, 0 });
	TFAIL(-ENOTSUP, "tensor 'w'", "unsupported tensor type 4294967295", 64,
	      { "w", 1, { 32 }, 0xffffffffu, 0 });
	TFAIL(-ENOTSUP, "tensor 'w'", "type 37", 64, { "w", 1, { 32 }, 37, 0 });
	TFAIL(-EBADMSG, "tensor 'blk.1.attn_k.weight'", "row length 64 is not a multiple of 128 (type i2_s)",
	      256, { "blk.1.attn_k.weight", 2, { 64, 4 }, BN_TYPE_I2_S, 0 });
	TFAIL(-EBADMSG, "tensor 'w'", "row length 384 is not a multiple of 256 (type tq2_0)", 1024,
	      { "w", 1, { 384 }, BN_TYPE_TQ2_0, 0 });
	TFAIL(-EBADMSG, "tensor 'w'", "not a multiple of 256 (type tq1_0)", 1024,
	      { "w", 1, { 128 }, BN_TYPE_TQ1_0, 0 });
	TFAIL(-EBADMSG, "tensor 'output.weight'", "row length 80 is not a multiple of 32 (type q8_0)",
	      1024, { "output.weight", 2, { 80, 2 }, BN_TYPE_Q8_0, 0 });
	/* 64 x 2 q8_0 = 4 blocks of 34 bytes: 8 bytes short of that */
	TFAIL(-EBADMSG, "tensor 'output.weight': extent", "ends past the end of the file", 128,
	      { "output.weight", 2, { 64, 2 }, BN_TYPE_Q8_0, 0 });
}
END_TEST

START_TEST(test_tensor_placement)
{
	TFAIL(-EBADMSG, "tensor 'b'", "offset 48 is not a multiple of the alignment 32", 256,
	      { "a", 1, { 8 }, BN_TYPE_F32, 0 }, { "b", 1, { 8 }, BN_TYPE_F32, 48 });
	TFAIL(-EBADMSG, "tensors 'a' (offset 0, 64 bytes) and 'b' (offset 32) overlap", NULL, 256,
	      { "a", 1, { 16 }, BN_TYPE_F32, 0 }, { "b", 1, { 8 }, BN_TYPE_F32, 32 });
	/* the overlap is found whatever the order in the table */
	TFAIL(-EBADMSG, "'big'", "overlap", 512,
	      { "c", 1, { 8 }, BN_TYPE_F32, 256 }, { "d", 1, { 8 }, BN_TYPE_F32, 64 },
	      { "big", 1, { 80 }, BN_TYPE_F32, 0 });
	TFAIL(-EBADMSG, "'s'", "overlap", 512,
	      { "s", 1, { 8 }, BN_TYPE_F32, 64 }, { "t", 1, { 8 }, BN_TYPE_F32, 64 });
	TFAIL(-EBADMSG, "tensor 'blk.0.attn_q.weight': extent", "ends past the end of the file", 100,
	      { "blk.0.attn_q.weight", 2, { 128, 4 }, BN_TYPE_I2_S, 0 });
	TFAIL(-EBADMSG, "tensor 'w'", "ends past the end of the file", 64,
	      { "w", 1, { 8 }, BN_TYPE_F32, 64 });
	TFAIL(-EBADMSG, "tensor 'w'", "ends past the end of the file", 64,
	      { "w", 1, { 8 }, BN_TYPE_F32, 1ull << 62 });
	TFAIL(-EOVERFLOW, "tensor 'w'", "overflows", 64,
	      { "w", 1, { 8 }, BN_TYPE_F32, UINT64_MAX - 31 });
	/* adjacent tensors are fine */
	const struct tspec ok[] = {
		{ "a", 1, { 8 }, BN_TYPE_F32, 32 }, { "b", 1, { 8 }, BN_TYPE_F32, 0 },
	};
	struct tw w;
	tensor_file(&w, ok, 2, 64);
	struct bn_gguf *g = NULL;
	struct bn_error err;
	uint8_t *keep = NULL;
	ck_assert_msg(parse_copy(w.b, w.n, &g, &err, &keep) == 0, "%s", err.msg);
	ck_assert_ptr_eq(bn_gguf_find_tensor(g, "a")->data, g->base + g->data_offset + 32);
	bn_gguf_close(g);
	free(keep);
	tw_free(&w);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Golden models */

START_TEST(test_golden)
{
	const char *shared = getenv("TEST_DATA");
	char pat[4096];
	struct stat st;
	if (!shared || snprintf(pat, sizeof(pat), "%s/golden", shared) >= (int)sizeof(pat) ||
	    stat(pat, &st) != 0) {
		fprintf(stderr, "check_gguf: TEST_DATA/golden absent, golden models not checked\n");
		return;
	}
	snprintf(pat, sizeof(pat), "%s/golden/*.gguf", shared);
	glob_t gl;
	ck_assert_int_eq(glob(pat, 0, NULL, &gl), 0);
	ck_assert_uint_ge(gl.gl_pathc, 1);
	for (size_t i = 0; i < gl.gl_pathc; i++) {
		struct bn_gguf *g = NULL;
		struct bn_error err = { 0 };
		int rc = bn_gguf_open(&g, gl.gl_pathv[i], &err);
		ck_assert_msg(rc == 0, "%s: %s", gl.gl_pathv[i], err.msg);
		ck_assert_ptr_nonnull(bn_gguf_find_tensor(g, "token_embd.weight"));
		struct bn_gguf_str arch;
		ck_assert_int_eq(bn_gguf_get_str(g, "general.architecture", &arch), 0);
		const struct bn_gguf_kv *toks = bn_gguf_find_kv(g, "tokenizer.ggml.tokens");
		ck_assert_ptr_nonnull(toks);
		struct bn_gguf_str *s = calloc((size_t)toks->arr_n, sizeof(*s));
		ck_assert_ptr_nonnull(s);
		ck_assert_int_eq(bn_gguf_arr_strs(toks, s), 0);
		ck_assert(bn_gguf_str_eq(s[toks->arr_n - 4], "<|begin_of_text|>"));
		free(s);

		if (strstr(gl.gl_pathv[i], "/tiny-i2_s.gguf")) {
			ck_assert_uint_eq(g->version, 3);
			ck_assert_uint_eq(g->n_tensors, 24);   /* 2 layers x 11 + token_embd + output_norm */
			ck_assert_uint_eq(g->n_kv, 26);
			ck_assert(bn_gguf_str_eq(arch, "bitnet-b1.58"));
			const struct bn_gguf_tensor *t = bn_gguf_find_tensor(g, "blk.0.attn_q.weight");
			ck_assert_ptr_nonnull(t);
			ck_assert_uint_eq(t->type, BN_TYPE_I2_S);
			ck_assert_uint_eq(t->n_dims, 2);
			ck_assert_uint_eq(t->ne[0], 256);
			ck_assert_uint_eq(t->ne[1], 256);
			ck_assert_uint_eq(t->size, 16416);
			t = bn_gguf_find_tensor(g, "token_embd.weight");
			ck_assert_uint_eq(t->type, BN_TYPE_F16);
			ck_assert_uint_eq(t->ne[1], 512);
			uint32_t u;
			ck_assert_int_eq(bn_gguf_get_u32(g, "bitnet-b1.58.embedding_length", &u), 0);
			ck_assert_uint_eq(u, 256);
			ck_assert_int_eq(bn_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &u), 0);
			ck_assert_uint_eq(u, 508);
			float eps;
			ck_assert_int_eq(bn_gguf_get_f32(g, "bitnet-b1.58.attention.layer_norm_rms_epsilon", &eps), 0);
			ck_assert(fabsf(eps - 1e-5f) < 1e-9f);
			bool bos;
			ck_assert_int_eq(bn_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &bos), 0);
			ck_assert(bos);
		}
		bn_gguf_close(g);
	}
	globfree(&gl);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Random mutations of the valid file */

static uint64_t rng_next(uint64_t *s)
{
	/* xorshift64*: fixed seed, reproducible across platforms */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Everything an accepted file promises must hold: lookups find every entry and every
 * pointer stays inside the buffer. */
static void check_accepted(const struct bn_gguf *g)
{
	const uint8_t *end = g->base + g->size;
	char key[65536];
	ck_assert_uint_le(g->header_size, g->size);
	for (uint64_t i = 0; i < g->n_kv; i++) {
		const struct bn_gguf_kv *kv = &g->kv[i];
		ck_assert(kv->key.len >= 1 && kv->key.len < sizeof(key));
		ck_assert((const uint8_t *)kv->key.ptr + kv->key.len <= end);
		memcpy(key, kv->key.ptr, (size_t)kv->key.len);
		key[kv->key.len] = '\0';
		ck_assert_ptr_eq(bn_gguf_find_kv(g, key), kv);
		if (kv->type == BN_GGUF_STRING)
			ck_assert((const uint8_t *)kv->v.str.ptr + kv->v.str.len <= end);
		if (kv->type == BN_GGUF_ARRAY && kv->arr_type == BN_GGUF_STRING) {
			ck_assert_uint_le(kv->arr_n, g->size / 8);
			struct bn_gguf_str *s = calloc((size_t)kv->arr_n + 1, sizeof(*s));
			ck_assert_ptr_nonnull(s);
			ck_assert_int_eq(bn_gguf_arr_strs(kv, s), 0);
			for (uint64_t j = 0; j < kv->arr_n; j++)
				ck_assert((const uint8_t *)s[j].ptr + s[j].len <= end);
			free(s);
		} else if (kv->type == BN_GGUF_ARRAY && kv->arr_n > 0) {
			int32_t iv;
			float fv;
			(void)bn_gguf_arr_i32(kv, kv->arr_n - 1, &iv);
			(void)bn_gguf_arr_f32(kv, kv->arr_n - 1, &fv);
		}
	}
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		const struct bn_gguf_tensor *t = &g->tensors[i];
		ck_assert_ptr_eq(bn_gguf_find_tensor(g, t->name), t);
		ck_assert_uint_eq(t->size, bn_ggml_nbytes(t->type, t->ne));
		ck_assert((const uint8_t *)t->data >= g->base + g->data_offset);
		ck_assert((const uint8_t *)t->data + t->size <= end);
	}
}

START_TEST(test_fuzz_mutations)
{
	static const uint64_t interesting[] = {
		0, 1, 2, 3, 4, 5, 8, 9, 12, 13, 31, 32, 33, 36, 64, 128, 255, 256, 65535, 65536,
		0x7fffffffu, 0x80000000u, 0xffffffffu, 1ull << 32, 1ull << 40, 1ull << 62,
		INT64_MAX, 1ull << 63, UINT64_MAX, UINT64_MAX - 31,
	};
	const size_t n_int = sizeof(interesting) / sizeof(interesting[0]);
	struct tw w = { 0 };
	make_valid(&w, 3);
	uint8_t *m = malloc(w.n);
	ck_assert_ptr_nonnull(m);
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	unsigned accepted = 0, rejected = 0;

	for (int iter = 0; iter < 20000; iter++) {
		memcpy(m, w.b, w.n);
		size_t len = w.n;
		int n_mut = 1 + (int)(rng_next(&seed) % 3);
		for (int k = 0; k < n_mut; k++) {
			uint64_t r = rng_next(&seed);
			size_t field = w.fields[(r >> 8) % w.n_fields];
			switch (r % 6) {
			case 0:         /* random byte */
				m[(r >> 16) % len] = (uint8_t)(r >> 40);
				break;
			case 1:         /* bit flip */
				m[(r >> 16) % len] ^= (uint8_t)(1u << ((r >> 40) & 7));
				break;
			case 2:         /* truncation */
				len = (size_t)((r >> 16) % len) + 1;
				break;
			case 3:         /* a known u64/u32 field gets an interesting u64 */
				if (field + 8 <= len)
					put_le(m + field, interesting[(r >> 24) % n_int], 8);
				break;
			case 4:         /* a known field gets an interesting u32 */
				if (field + 4 <= len)
					put_le(m + field, interesting[(r >> 24) % n_int], 4);
				break;
			default: {      /* a u64 anywhere */
				size_t at = (size_t)((r >> 16) % len);
				if (at + 8 <= len)
					put_le(m + at, interesting[(r >> 24) % n_int], 8);
				break;
			}
			}
		}
		struct bn_gguf *g = (struct bn_gguf *)1;
		struct bn_error err;
		uint8_t *keep = NULL;
		int rc = parse_copy(m, len, &g, &err, &keep);
		if (rc == 0) {
			accepted++;
			check_accepted(g);
			bn_gguf_close(g);
			free(keep);
		} else {
			rejected++;
			ck_assert_msg(rc == -EBADMSG || rc == -EOVERFLOW || rc == -ENOTSUP,
			              "iteration %d: rc %d (%s)", iter, rc, err.msg);
			ck_assert_ptr_null(g);
			ck_assert_int_eq(err.code, rc);
			ck_assert_msg(strstr(err.msg, "gguf buffer: "), "iteration %d: '%s'", iter, err.msg);
		}
	}
	/* the mutations must reach both outcomes, or the test is not testing much */
	ck_assert_uint_gt(accepted, 500);
	ck_assert_uint_gt(rejected, 5000);
	free(m);
	tw_free(&w);
}
END_TEST

static Suite *gguf_suite(void)
{
	Suite *s = suite_create("gguf");
	TCase *tc = tcase_create("valid");
	tcase_add_test(tc, test_valid_v2_v3);
	tcase_add_test(tc, test_open_file);
	tcase_add_test(tc, test_type_helpers);
	tcase_add_test(tc, test_many_entries);
	tcase_add_test(tc, test_golden);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);

	tc = tcase_create("hostile");
	tcase_add_test(tc, test_truncation_everywhere);
	tcase_add_test(tc, test_magic_version);
	tcase_add_test(tc, test_huge_counts);
	tcase_add_test(tc, test_huge_strings);
	tcase_add_test(tc, test_huge_arrays);
	tcase_add_test(tc, test_bad_value_types);
	tcase_add_test(tc, test_duplicate_keys);
	tcase_add_test(tc, test_alignment);
	tcase_add_test(tc, test_tensor_names);
	tcase_add_test(tc, test_tensor_dims);
	tcase_add_test(tc, test_tensor_types);
	tcase_add_test(tc, test_tensor_placement);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);

	tc = tcase_create("fuzz");
	tcase_add_test(tc, test_fuzz_mutations);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(gguf_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
