/* lib/safetensors.c: valid files (single and sharded) read back exactly; every hostile file
 * is refused with the expected errno and a message naming the file, the tensor and why;
 * nothing crashes (the files are parsed from exact-size heap copies, so ASan sees any read
 * past the end). */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "safetensors.h"

#define LABEL "st buffer"

/* ---------------------------------------------------------------------------------------
 * Building files: u64 LE header length, the header text as given, then the data bytes. */

struct buf {
	uint8_t *b;   /* [n] */
	size_t n;
};

static struct buf build_n(const char *hdr, uint64_t hdr_len_field, const void *data, size_t dn)
{
	size_t hl = strlen(hdr);
	struct buf r = { malloc(8 + hl + dn + 1), 8 + hl + dn };
	ck_assert_ptr_nonnull(r.b);
	for (int i = 0; i < 8; i++)
		r.b[i] = (uint8_t)(hdr_len_field >> (8 * i));
	memcpy(r.b + 8, hdr, hl);
	if (dn)
		memcpy(r.b + 8 + hl, data, dn);
	return r;
}

static struct buf build(const char *hdr, const void *data, size_t dn)
{
	return build_n(hdr, strlen(hdr), data, dn);
}

/* Parses an exact-size copy; on success *keep owns it. */
static int parse_copy(const uint8_t *b, size_t n, struct bn_st_file **f, struct bn_error *err,
                      uint8_t **keep)
{
	uint8_t *c = malloc(n ? n : 1);
	ck_assert_ptr_nonnull(c);
	if (n)
		memcpy(c, b, n);
	memset(err, 0, sizeof *err);
	int rc = bn_st_parse(f, c, n, LABEL, err);
	if (rc == 0 && keep) {
		*keep = c;
	} else {
		if (rc == 0)
			bn_st_close(*f);
		free(c);
	}
	return rc;
}

static void expect_fail_(const uint8_t *b, size_t n, int code, const char *s1, const char *s2,
                         int line)
{
	struct bn_st_file *f = (struct bn_st_file *)1;
	struct bn_error err;
	int rc = parse_copy(b, n, &f, &err, NULL);
	ck_assert_msg(rc == code, "line %d: expected %d, got %d (%s)", line, code, rc, err.msg);
	ck_assert_msg(f == NULL, "line %d: out not cleared", line);
	ck_assert_msg(err.code == code, "line %d: err.code %d", line, err.code);
	ck_assert_msg(strstr(err.msg, "file " LABEL ": "), "line %d: no file in '%s'", line, err.msg);
	if (s1)
		ck_assert_msg(strstr(err.msg, s1), "line %d: '%s' not in '%s'", line, s1, err.msg);
	if (s2)
		ck_assert_msg(strstr(err.msg, s2), "line %d: '%s' not in '%s'", line, s2, err.msg);
}

#define EXPECT_FAIL(bf, code, s1, s2) expect_fail_((bf).b, (bf).n, (code), (s1), (s2), __LINE__)

/* A header with one tensor "t" of this entry text and dn data bytes, checked to fail. */
static void one_entry_fails_(const char *entry, size_t dn, int code, const char *s1,
                             const char *s2, int line)
{
	char hdr[1024];
	snprintf(hdr, sizeof hdr, "{\"t\":%s}", entry);
	uint8_t data[64] = { 0 };
	ck_assert_uint_le(dn, sizeof data);
	struct buf b = build(hdr, data, dn);
	expect_fail_(b.b, b.n, code, s1, s2, line);
	free(b.b);
}

#define ONE_FAILS(entry, dn, code, s1, s2) one_entry_fails_((entry), (dn), (code), (s1), (s2), \
                                                            __LINE__)

/* ---------------------------------------------------------------------------------------
 * The reference file: four dtypes, a scalar, an empty tensor, metadata, header padded with
 * spaces the way the safetensors library pads it; data not aligned (odd header length). */

static const char valid_hdr[] =
	"{\"__metadata__\":{\"format\":\"pt\"},"
	"\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
	"\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[16,22]},"
	"\"e\":{\"dtype\":\"U8\",\"shape\":[0,5],\"data_offsets\":[22,22]},"
	"\"s\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[22,30]},"
	"\"model.layers.0.self_attn.q_proj.weight\":{\"dtype\":\"U8\",\"shape\":[1,3],"
	"\"data_offsets\":[30,33]}}   ";

static struct buf make_valid(void)
{
	uint8_t d[33];
	float w[4] = { 1.0f, -2.5f, 3.25f, 1e-20f };
	uint16_t b[3] = { 0x3f80, 0xc000, 0x0001 };   /* 1, -2, a subnormal */
	double s = 0.1;
	memcpy(d, w, 16);
	memcpy(d + 16, b, 6);
	memcpy(d + 22, &s, 8);
	d[30] = 0x00;
	d[31] = 0x55;
	d[32] = 0xaa;
	return build(valid_hdr, d, sizeof d);
}

static void check_valid(const struct bn_st_file *f)
{
	ck_assert_uint_eq(f->n_tensors, 5);
	ck_assert_uint_eq(f->header_len, strlen(valid_hdr));
	for (size_t i = 1; i < f->n_tensors; i++)
		ck_assert_int_lt(strcmp(f->tensors[i - 1].name, f->tensors[i].name), 0);
	const struct bn_st_tensor *t = bn_st_find(f, "w");
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(t->dtype, BN_ST_F32);
	ck_assert_uint_eq(t->n_dims, 2);
	ck_assert_uint_eq(t->shape[0], 2);
	ck_assert_uint_eq(t->shape[1], 2);
	ck_assert_uint_eq(t->n_elems, 4);
	ck_assert_uint_eq(t->size, 16);
	ck_assert_ptr_eq(t->data, f->base + 8 + f->header_len);
	float w[4];
	memcpy(w, t->data, 16);
	ck_assert(w[0] == 1.0f && w[1] == -2.5f && w[2] == 3.25f && w[3] == 1e-20f);
	t = bn_st_find(f, "b");
	ck_assert_int_eq(t->dtype, BN_ST_BF16);
	ck_assert_uint_eq(t->n_elems, 3);
	uint16_t b[3];
	memcpy(b, t->data, 6);
	ck_assert(b[0] == 0x3f80 && b[1] == 0xc000 && b[2] == 0x0001);
	t = bn_st_find(f, "e");
	ck_assert_uint_eq(t->n_elems, 0);
	ck_assert_uint_eq(t->size, 0);
	ck_assert_uint_eq(t->shape[1], 5);
	t = bn_st_find(f, "s");
	ck_assert_uint_eq(t->n_dims, 0);
	ck_assert_uint_eq(t->n_elems, 1);
	double s;
	memcpy(&s, t->data, 8);
	ck_assert(s == 0.1);
	t = bn_st_find(f, "model.layers.0.self_attn.q_proj.weight");
	ck_assert_ptr_nonnull(t);
	ck_assert(t->data[1] == 0x55 && t->data[2] == 0xaa);
	ck_assert_ptr_eq(t->data + t->size, f->base + f->size);
	ck_assert_ptr_null(bn_st_find(f, "__metadata__"));
	ck_assert_ptr_null(bn_st_find(f, "x"));
	ck_assert_str_eq(bn_st_dtype_name(BN_ST_BF16), "BF16");
	ck_assert_uint_eq(bn_st_dtype_size(BN_ST_F64), 8);
}

START_TEST(test_valid)
{
	struct buf v = make_valid();
	struct bn_st_file *f = NULL;
	struct bn_error err;
	uint8_t *keep = NULL;
	int rc = parse_copy(v.b, v.n, &f, &err, &keep);
	ck_assert_msg(rc == 0, "%s", err.msg);
	ck_assert(!f->mapped);
	check_valid(f);
	bn_st_close(f);
	free(keep);
	free(v.b);

	/* no tensors at all is a valid (empty) file */
	struct buf e = build("{}", NULL, 0);
	rc = parse_copy(e.b, e.n, &f, &err, &keep);
	ck_assert_msg(rc == 0, "%s", err.msg);
	ck_assert_uint_eq(f->n_tensors, 0);
	bn_st_close(f);
	free(keep);
	free(e.b);

	/* escapes in names are decoded; UTF-8 names are fine */
	struct buf u = build("{\"a\\u0062\\n\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]},"
	                     "\"\xc3\xa9\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
	                     "xy", 2);
	rc = parse_copy(u.b, u.n, &f, &err, &keep);
	ck_assert_msg(rc == 0, "%s", err.msg);
	ck_assert_ptr_nonnull(bn_st_find(f, "ab\n"));
	ck_assert_ptr_nonnull(bn_st_find(f, "\xc3\xa9"));
	bn_st_close(f);
	free(keep);
	free(u.b);
}
END_TEST

static void write_file(const char *path, const void *b, size_t n)
{
	FILE *fp = fopen(path, "wb");
	ck_assert_ptr_nonnull(fp);
	ck_assert_uint_eq(fwrite(b, 1, n, fp), n);
	fclose(fp);
}

static void write_text(const char *path, const char *s)
{
	write_file(path, s, strlen(s));
}

START_TEST(test_open_file)
{
	char dir[] = "/tmp/check_st.XXXXXX", path[256];
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	struct buf v = make_valid();
	write_file(path, v.b, v.n);

	struct bn_st_file *f = NULL;
	struct bn_error err = { 0 };
	ck_assert_int_eq(bn_st_open(&f, path, &err), 0);
	ck_assert(f->mapped);
	check_valid(f);
	for (size_t i = 0; i < f->n_tensors; i++)
		bn_st_release(f, &f->tensors[i]);
	check_valid(f);   /* released pages come back */
	bn_st_close(f);

	/* the directory form */
	struct bn_st_model *m = NULL;
	ck_assert_int_eq(bn_st_model_open(&m, dir, &err), 0);
	ck_assert(!m->sharded);
	ck_assert_uint_eq(m->n_tensors, 5);
	const struct bn_st_file *in = NULL;
	const struct bn_st_tensor *t = bn_st_model_find(m, "s", &in);
	ck_assert_ptr_nonnull(t);
	ck_assert_ptr_eq(in, m->files[0]);
	ck_assert_ptr_null(bn_st_model_find(m, "nope", &in));
	ck_assert_ptr_null(in);
	bn_st_model_close(m);

	/* missing, empty, short */
	char other[300];
	snprintf(other, sizeof other, "%s/missing.safetensors", dir);
	ck_assert_int_eq(bn_st_open(&f, other, &err), -ENOENT);
	ck_assert_ptr_null(f);
	ck_assert(strstr(err.msg, "missing.safetensors"));
	snprintf(other, sizeof other, "%s/short.safetensors", dir);
	write_file(other, "\x02\0\0", 3);
	ck_assert_int_eq(bn_st_open(&f, other, &err), -EBADMSG);
	ck_assert(strstr(err.msg, "short.safetensors") && strstr(err.msg, "too short"));
	ck_assert_int_eq(bn_st_open(&f, dir, &err), -EINVAL);
	unlink(other);
	unlink(path);
	ck_assert_int_eq(bn_st_model_open(&m, dir, &err), -ENOENT);
	ck_assert_ptr_null(m);
	ck_assert(strstr(err.msg, "model.safetensors"));
	rmdir(dir);
	free(v.b);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Hostile single files */

START_TEST(test_truncation_everywhere)
{
	struct buf v = make_valid();
	for (size_t n = 0; n < v.n; n++) {
		struct bn_st_file *f = (struct bn_st_file *)1;
		struct bn_error err;
		int rc = parse_copy(v.b, n, &f, &err, NULL);
		ck_assert_msg(rc == -EBADMSG, "length %zu: rc %d (%s)", n, rc, err.msg);
		ck_assert_ptr_null(f);
		ck_assert(strstr(err.msg, "file " LABEL));
	}
	/* the data section cut inside the last tensor names that tensor */
	EXPECT_FAIL(((struct buf){ v.b, v.n - 1 }), -EBADMSG,
	            "tensor model.layers.0.self_attn.q_proj.weight", "past the data section");
	free(v.b);
}
END_TEST

START_TEST(test_header_length)
{
	struct buf v = make_valid();
	size_t hl = strlen(valid_hdr);
	static const uint64_t lies[] = { 0, 1 };
	for (size_t i = 0; i < 2; i++) {
		struct buf b = build_n(valid_hdr, lies[i], NULL, 0);
		memcpy(b.b + 8, valid_hdr, hl);
		EXPECT_FAIL(b, -EBADMSG, "no JSON object", NULL);
		free(b.b);
	}
	/* one byte past the file, far past, the largest u64 */
	const uint64_t past[] = { v.n - 8 + 1, 1ull << 40, UINT64_MAX, UINT64_MAX - 7 };
	for (size_t i = 0; i < 4; i++) {
		for (int k = 0; k < 8; k++)
			v.b[k] = (uint8_t)(past[i] >> (8 * k));
		EXPECT_FAIL(v, -EBADMSG, "runs past the end of the file", NULL);
	}
	/* a length shorter than the JSON: the object is cut */
	for (int k = 0; k < 8; k++)
		v.b[k] = (uint8_t)((hl / 2) >> (8 * k));
	EXPECT_FAIL(v, -EBADMSG, "header JSON error", NULL);
	free(v.b);
}
END_TEST

START_TEST(test_bad_json)
{
	static const struct {
		const char *hdr;
		const char *what;
	} cases[] = {
		{ "{  ", "header JSON error" },
		{ "{\"t\":}", "header JSON error" },
		{ "{\"t\":{\"dtype\":\"U8\",}}", "header JSON error" },   /* trailing comma: strict */
		{ "{'t':1}", "header JSON error" },
		{ "{/*c*/}", "header JSON error" },
		{ "[1,2]", "not a JSON object" },
		{ "\"x\"  ", "not a JSON object" },
		{ "null", "header" },   /* json-c: null is no object, or text that may continue */
		{ "{} {}", "bytes after the JSON value" },
		{ "{}x", "bytes after the JSON value" },
		{ "{\"\xff\":1}", "header JSON error" },                   /* not UTF-8 */
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct buf b = build(cases[i].hdr, NULL, 0);
		expect_fail_(b.b, b.n, -EBADMSG, cases[i].what, NULL, (int)(1000 + i));
		free(b.b);
	}
	/* a NUL byte inside the header */
	struct buf b = build("{\"t\" :1}", NULL, 0);
	b.b[8 + 4] = 0;
	EXPECT_FAIL(b, -EBADMSG, "NUL byte", NULL);
	free(b.b);
}
END_TEST

START_TEST(test_bad_entries)
{
	ONE_FAILS("5", 0, -EBADMSG, "tensor t:", "not an object");
	ONE_FAILS("[]", 0, -EBADMSG, "tensor t:", "not an object");
	ONE_FAILS("{\"dtype\":\"U8\",\"shape\":[1]}", 1, -EBADMSG, "tensor t:", "data_offsets");
	ONE_FAILS("{\"shape\":[1],\"data_offsets\":[0,1]}", 1, -EBADMSG, "tensor t:", "dtype");
	ONE_FAILS("{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":1}", 1, -EBADMSG,
	          "tensor t:", "unknown field 'x'");
	/* dtypes */
	ONE_FAILS("{\"dtype\":\"F4\",\"shape\":[1],\"data_offsets\":[0,1]}", 1, -ENOTSUP,
	          "tensor t:", "unknown dtype 'F4'");
	ONE_FAILS("{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, -ENOTSUP,
	          "tensor t:", "unknown dtype");
	ONE_FAILS("{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,1]}", 1, -EBADMSG, "tensor t:",
	          "dtype is not a string");
	/* shapes */
	ONE_FAILS("{\"dtype\":\"U8\",\"shape\":1,\"data_offsets\":[0,1]}", 1, -EBADMSG, "tensor t:",
	          "shape is not an array");
	ONE_FAILS("{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}", 1, -EBADMSG,
	          "tensor t:", "shape[0]");
	ONE_FAILS("{\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,1]}", 1, -EBADMSG,
	          "tensor t:", "shape[0]");
	ONE_FAILS("{\"dtype\":\"U8\",\"shape\":[1,\"2\"],\"data_offsets\":[0,2]}", 2, -EBADMSG,
	          "tensor t:", "shape[1]");
	ONE_FAILS("{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}", 1,
	          -EBADMSG, "tensor t:", "9 dimensions");
	ONE_FAILS("{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,1]}", 1,
	          -EOVERFLOW, "tensor t:", "element count overflows");
	ONE_FAILS("{\"dtype\":\"U8\",\"shape\":[18446744073709551615,2],\"data_offsets\":[0,1]}", 1,
	          -EOVERFLOW, "tensor t:", "overflows");
	ONE_FAILS("{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,8]}", 8,
	          -EOVERFLOW, "tensor t:", "byte size overflows");
	/* offsets */
	ONE_FAILS("{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}", 1, -EBADMSG, "tensor t:",
	          "[begin, end]");
	ONE_FAILS("{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}", 1, -EBADMSG,
	          "tensor t:", "[begin, end]");
	ONE_FAILS("{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}", 1, -EBADMSG,
	          "tensor t:", "[begin, end]");
	ONE_FAILS("{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[2,1]}", 2, -EBADMSG,
	          "tensor t:", "before begin");
	ONE_FAILS("{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}", 3, -EBADMSG,
	          "tensor t:", "past the data section (3 bytes)");
	ONE_FAILS("{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,18446744073709551615]}", 1,
	          -EBADMSG, "tensor t:", "past the data section");
	/* dtype x shape lies */
	ONE_FAILS("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,6]}", 6, -EBADMSG,
	          "tensor t:", "span 6 bytes but F32 x 2 elements is 8 bytes");
	ONE_FAILS("{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,4]}", 4, -EBADMSG,
	          "tensor t:", "is 8 bytes");
	/* metadata */
	struct buf b = build("{\"__metadata__\":[1]}", NULL, 0);
	EXPECT_FAIL(b, -EBADMSG, "__metadata__ is not an object", NULL);
	free(b.b);
	b = build("{\"__metadata__\":{\"format\":1}}", NULL, 0);
	EXPECT_FAIL(b, -EBADMSG, "__metadata__ entry 'format'", NULL);
	free(b.b);
	b = build("{\"\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", "x", 1);
	EXPECT_FAIL(b, -EBADMSG, "empty name", NULL);
	free(b.b);
}
END_TEST

START_TEST(test_layout)
{
	uint8_t d[16] = { 0 };
	/* overlapping */
	struct buf b = build("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
	                     "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]}}", d, 12);
	EXPECT_FAIL(b, -EBADMSG, "tensor b: bytes [4, 12) overlap tensor a", NULL);
	free(b.b);
	/* the same bytes twice */
	b = build("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
	          "\"b\":{\"dtype\":\"I8\",\"shape\":[8],\"data_offsets\":[0,8]}}", d, 8);
	EXPECT_FAIL(b, -EBADMSG, "overlap tensor a", NULL);
	free(b.b);
	/* one inside another */
	b = build("{\"a\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]},"
	          "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", d, 16);
	EXPECT_FAIL(b, -EBADMSG, "tensor b", "overlap tensor a");
	free(b.b);
	/* a hole */
	b = build("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
	          "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[8,12]}}", d, 12);
	EXPECT_FAIL(b, -EBADMSG, "tensor b: 4 unused bytes before it", NULL);
	free(b.b);
	/* a hole at the start */
	b = build("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", d, 8);
	EXPECT_FAIL(b, -EBADMSG, "tensor a: 4 unused bytes", NULL);
	free(b.b);
	/* bytes after the last tensor (a polyglot tail) */
	b = build("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", d, 9);
	EXPECT_FAIL(b, -EBADMSG, "5 bytes after the last tensor", NULL);
	free(b.b);
	b = build("{}", d, 1);
	EXPECT_FAIL(b, -EBADMSG, "1 bytes after the last tensor", NULL);
	free(b.b);
}
END_TEST

START_TEST(test_duplicate_names)
{
	const char *e = "{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}";
	const char *e2 = "{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}";
	char hdr[512];
	snprintf(hdr, sizeof hdr, "{\"a\":%s,\"a\":%s}", e, e2);
	struct buf b = build(hdr, "xy", 2);
	EXPECT_FAIL(b, -EBADMSG, "tensor a: name appears twice", NULL);
	free(b.b);
	/* the same name spelled with an escape */
	snprintf(hdr, sizeof hdr, "{\"w.b\":%s,\"w\\u002eb\":%s}", e, e2);
	b = build(hdr, "xy", 2);
	EXPECT_FAIL(b, -EBADMSG, "tensor w.b: name appears twice", NULL);
	free(b.b);
	/* a nested object's keys do not count; a duplicate __metadata__ does */
	snprintf(hdr, sizeof hdr, "{\"__metadata__\":{\"a\":\"1\"},\"__metadata__\":{},\"a\":%s}", e);
	b = build(hdr, "x", 1);
	EXPECT_FAIL(b, -EBADMSG, "tensor __metadata__: name appears twice", NULL);
	free(b.b);
	/* braces and quotes inside strings do not confuse the scan */
	snprintf(hdr, sizeof hdr, "{\"__metadata__\":{\"k\":\"}{\\\",\\\"a\\\":\"},\"a\":%s}", e);
	b = build(hdr, "x", 1);
	struct bn_st_file *f;
	struct bn_error err;
	uint8_t *keep;
	ck_assert_msg(parse_copy(b.b, b.n, &f, &err, &keep) == 0, "%s", err.msg);
	bn_st_close(f);
	free(keep);
	free(b.b);
	/* a NUL byte in a name */
	snprintf(hdr, sizeof hdr, "{\"a\\u0000b\":%s}", e);
	b = build(hdr, "x", 1);
	EXPECT_FAIL(b, -EBADMSG, "NUL byte", NULL);
	free(b.b);
}
END_TEST

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

START_TEST(test_fuzz_mutations)
{
	struct buf v = make_valid();
	uint8_t *m = malloc(v.n);
	ck_assert_ptr_nonnull(m);
	uint64_t seed = 7;
	unsigned accepted = 0, rejected = 0;
	static const char digits[] = "0123456789\"{}[],:-.eE \\";
	for (int iter = 0; iter < 20000; iter++) {
		memcpy(m, v.b, v.n);
		size_t len = v.n;
		int n_mut = 1 + (int)(rng_next(&seed) % 3);
		for (int k = 0; k < n_mut; k++) {
			uint64_t r = rng_next(&seed);
			switch (r % 4) {
			case 0:
				m[(r >> 16) % len] = (uint8_t)(r >> 40);
				break;
			case 1:   /* JSON-ish characters inside the header */
				if (len > 8)
					m[8 + (r >> 16) % (len - 8)] = (uint8_t)digits[(r >> 40) % (sizeof digits - 1)];
				break;
			case 2:
				len = (size_t)((r >> 16) % len) + 1;
				break;
			default:  /* a digit of an offset or shape changes */
				for (size_t at = len > 8 ? 8 + (r >> 16) % (len - 8) : len; at < len; at++)
					if (m[at] >= '0' && m[at] <= '9') {
						m[at] = (uint8_t)('0' + (r >> 40) % 10);
						break;
					}
				break;
			}
		}
		struct bn_st_file *f = (struct bn_st_file *)1;
		struct bn_error err;
		uint8_t *keep = NULL;
		int rc = parse_copy(m, len, &f, &err, &keep);
		if (rc == 0) {
			accepted++;
			for (size_t i = 0; i < f->n_tensors; i++) {
				const struct bn_st_tensor *t = &f->tensors[i];
				ck_assert_ptr_eq(bn_st_find(f, t->name), t);
				ck_assert(t->data >= f->base + 8 + f->header_len);
				ck_assert(t->data + t->size <= f->base + f->size);
				ck_assert_uint_eq(t->size, t->n_elems * bn_st_dtype_size(t->dtype));
			}
			bn_st_close(f);
			free(keep);
		} else {
			rejected++;
			ck_assert_msg(rc == -EBADMSG || rc == -EOVERFLOW || rc == -ENOTSUP,
			              "iteration %d: rc %d (%s)", iter, rc, err.msg);
			ck_assert_ptr_null(f);
			ck_assert_msg(strstr(err.msg, "file " LABEL ": "), "'%s'", err.msg);
		}
	}
	ck_assert_uint_gt(accepted, 100);
	ck_assert_uint_gt(rejected, 5000);
	free(m);
	free(v.b);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Sharded checkpoints */

struct shard_dir {
	char dir[64];
};

static void shard_files(struct shard_dir *sd)
{
	snprintf(sd->dir, sizeof sd->dir, "/tmp/check_st_shard.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(sd->dir));
	char p[128];
	struct buf a = build("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
	                     "\"y\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]}}",
	                     "\0\0\x80\x3f\x01\x02", 6);
	struct buf b = build("{\"z\":{\"dtype\":\"I16\",\"shape\":[1],\"data_offsets\":[0,2]}}",
	                     "\x07\x00", 2);
	snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", sd->dir);
	write_file(p, a.b, a.n);
	snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", sd->dir);
	write_file(p, b.b, b.n);
	free(a.b);
	free(b.b);
}

static void shard_index(const struct shard_dir *sd, const char *json)
{
	char p[128];
	snprintf(p, sizeof p, "%s/model.safetensors.index.json", sd->dir);
	write_text(p, json);
}

static void shard_cleanup(const struct shard_dir *sd)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", sd->dir);
	ck_assert_int_eq(system(cmd), 0);
}

static void model_fails_(const struct shard_dir *sd, int code, const char *s1, const char *s2,
                         int line)
{
	struct bn_st_model *m = (struct bn_st_model *)1;
	struct bn_error err = { 0 };
	int rc = bn_st_model_open(&m, sd->dir, &err);
	ck_assert_msg(rc == code, "line %d: expected %d, got %d (%s)", line, code, rc, err.msg);
	ck_assert_ptr_null(m);
	if (s1)
		ck_assert_msg(strstr(err.msg, s1), "line %d: '%s' not in '%s'", line, s1, err.msg);
	if (s2)
		ck_assert_msg(strstr(err.msg, s2), "line %d: '%s' not in '%s'", line, s2, err.msg);
}

#define MODEL_FAILS(sd, code, s1, s2) model_fails_((sd), (code), (s1), (s2), __LINE__)

#define S1 "model-00001-of-00002.safetensors"
#define S2 "model-00002-of-00002.safetensors"

START_TEST(test_sharded)
{
	struct shard_dir sd;
	shard_files(&sd);
	shard_index(&sd, "{\"metadata\":{\"total_size\":8},\"weight_map\":{\"x\":\"" S1 "\","
	                 "\"y\":\"" S1 "\",\"z\":\"" S2 "\"}}");
	struct bn_st_model *m = NULL;
	struct bn_error err = { 0 };
	ck_assert_msg(bn_st_model_open(&m, sd.dir, &err) == 0, "%s", err.msg);
	ck_assert(m->sharded);
	ck_assert_uint_eq(m->n_files, 2);
	ck_assert_uint_eq(m->n_tensors, 3);
	const struct bn_st_file *in;
	const struct bn_st_tensor *t = bn_st_model_find(m, "z", &in);
	ck_assert_ptr_nonnull(t);
	ck_assert(strstr(in->path, S2));
	int16_t z;
	memcpy(&z, t->data, 2);
	ck_assert_int_eq(z, 7);
	t = bn_st_model_find(m, "x", &in);
	float x;
	memcpy(&x, t->data, 4);
	ck_assert(x == 1.0f && strstr(in->path, S1));
	bn_st_model_close(m);

	/* the map names the wrong shard */
	shard_index(&sd, "{\"weight_map\":{\"x\":\"" S1 "\",\"y\":\"" S2 "\",\"z\":\"" S2 "\"}}");
	MODEL_FAILS(&sd, -EBADMSG, "tensor y: listed in shard " S2 " but found in", S1);
	/* a tensor the map leaves out */
	shard_index(&sd, "{\"weight_map\":{\"x\":\"" S1 "\",\"z\":\"" S2 "\"}}");
	MODEL_FAILS(&sd, -EBADMSG, "tensor y is not in the weight_map", NULL);
	/* a tensor no shard holds */
	shard_index(&sd, "{\"weight_map\":{\"x\":\"" S1 "\",\"y\":\"" S1 "\",\"z\":\"" S2 "\","
	                 "\"w\":\"" S2 "\"}}");
	MODEL_FAILS(&sd, -EBADMSG, "tensor w: listed in shard " S2 ", which does not hold it", NULL);
	/* shard names must stay in the directory */
	shard_index(&sd, "{\"weight_map\":{\"x\":\"../" S1 "\"}}");
	MODEL_FAILS(&sd, -EBADMSG, "weight_map[\"x\"] is not a plain file name", NULL);
	shard_index(&sd, "{\"weight_map\":{\"x\":\"..\"}}");
	MODEL_FAILS(&sd, -EBADMSG, "plain file name", NULL);
	shard_index(&sd, "{\"weight_map\":{\"x\":7}}");
	MODEL_FAILS(&sd, -EBADMSG, "plain file name", NULL);
	shard_index(&sd, "{\"weight_map\":[]}");
	MODEL_FAILS(&sd, -EBADMSG, "no \"weight_map\" object", NULL);
	shard_index(&sd, "{\"weight_map\":{}}");
	MODEL_FAILS(&sd, -EBADMSG, "0 shard files", NULL);
	shard_index(&sd, "{\"weight_map\":{\"x\":\"" S1 "\",}}");
	MODEL_FAILS(&sd, -EBADMSG, "model.safetensors.index.json: JSON error", NULL);
	shard_index(&sd, "{\"weight_map\":{\"x\":\"nothere.safetensors\"}}");
	MODEL_FAILS(&sd, -ENOENT, "nothere.safetensors", NULL);

	/* the same tensor in two shards */
	char p[128];
	struct buf c = build("{\"z\":{\"dtype\":\"I16\",\"shape\":[1],\"data_offsets\":[0,2]}}",
	                     "\x07\x00", 2);
	snprintf(p, sizeof p, "%s/extra.safetensors", sd.dir);
	write_file(p, c.b, c.n);
	free(c.b);
	shard_index(&sd, "{\"weight_map\":{\"x\":\"" S1 "\",\"y\":\"" S1 "\",\"z\":\"" S2 "\","
	                 "\"q\":\"extra.safetensors\"}}");
	MODEL_FAILS(&sd, -EBADMSG, "tensor z is in both", NULL);
	/* a hostile shard is named */
	write_file(p, "\xff\xff\xff\xff\xff\xff\xff\xff{}", 10);
	MODEL_FAILS(&sd, -EBADMSG, "extra.safetensors", "runs past the end");
	shard_cleanup(&sd);
}
END_TEST

START_TEST(test_json_load)
{
	char dir[] = "/tmp/check_st_json.XXXXXX", p[128];
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(p, sizeof p, "%s/config.json", dir);
	void *o = NULL;
	struct bn_error err = { 0 };
	write_text(p, "{\"a\": 1}\n");
	ck_assert_int_eq(bn_st_json_load(p, 100, &o, &err), 0);
	ck_assert_ptr_nonnull(o);
	ck_assert(json_object_is_type(o, json_type_object));
	json_object_put(o);
	ck_assert_int_eq(bn_st_json_load(p, 4, &o, &err), -EBADMSG);   /* too big */
	ck_assert(strstr(err.msg, "config.json") && strstr(err.msg, "outside 1..4 bytes"));
	write_text(p, "{\"a\": }");
	ck_assert_int_eq(bn_st_json_load(p, 100, &o, &err), -EBADMSG);
	ck_assert(strstr(err.msg, "JSON error"));
	unlink(p);
	ck_assert_int_eq(bn_st_json_load(p, 100, &o, &err), -ENOENT);
	rmdir(dir);
}
END_TEST

static Suite *st_suite(void)
{
	Suite *s = suite_create("safetensors");
	TCase *tc = tcase_create("valid");
	tcase_add_test(tc, test_valid);
	tcase_add_test(tc, test_open_file);
	tcase_add_test(tc, test_sharded);
	tcase_add_test(tc, test_json_load);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);
	tc = tcase_create("hostile");
	tcase_add_test(tc, test_truncation_everywhere);
	tcase_add_test(tc, test_header_length);
	tcase_add_test(tc, test_bad_json);
	tcase_add_test(tc, test_bad_entries);
	tcase_add_test(tc, test_layout);
	tcase_add_test(tc, test_duplicate_names);
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
	SRunner *sr = srunner_create(st_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
