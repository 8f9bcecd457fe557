/* lib/quant.c: the ternary formats bit by bit, round trips, the four golden files that
 * hold the same weights in I2_S, TQ2_0, TQ1_0 and F16 (decoded here and compared), and the
 * Q8_0 rule of the 8-bit LM head (kernel.h bn_q8_0_quantize_block). */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitnet/kernel.h"
#include "gguf.h"
#include "quant.h"

/* ck_assert reports every passed check to the parent process through a pipe in fork
 * mode, far too slow for per-weight checks: hot loops use this instead. */
#define REQUIRE(cond, ...) do { if (!(cond)) ck_abort_msg(__VA_ARGS__); } while (0)

static uint64_t rs = 0x1234567887654321ull;

static uint32_t rnd(void)
{
	rs ^= rs << 13;
	rs ^= rs >> 7;
	rs ^= rs << 17;
	return (uint32_t)(rs >> 32);
}

/* t: [n] random ternary */
static void rand_ternary(int8_t *t, size_t n)
{
	for (size_t i = 0; i < n; i++)
		t[i] = (int8_t)(rnd() % 3) - 1;
}

/* ---- I2_S ----------------------------------------------------------------------------- */

START_TEST(i2s_layout)
{
	int8_t t[256];   /* [256] two blocks */
	uint8_t q[64];   /* [256/4] */
	memset(t, 0, sizeof t);
	/* block 0: element 33 = byte 1, bits 5:4; element 96 = byte 0, bits 1:0 */
	t[33] = 1;
	t[96] = -1;
	/* block 1: element 128 + 64 + 5 = byte 32 + 5, bits 3:2 */
	t[128 + 64 + 5] = 1;
	ck_assert_int_eq(bn_i2s_encode_row(t, 256, q), 0);
	ck_assert_uint_eq(q[0], 0x54);   /* 01 01 01 00 */
	ck_assert_uint_eq(q[1], 0x65);   /* 01 10 01 01 */
	ck_assert_uint_eq(q[37], 0x59);  /* 01 01 10 01 */
	ck_assert_uint_eq(q[2], 0x55);
	ck_assert_uint_eq(q[63], 0x55);
	ck_assert_uint_eq(bn_i2s_row_bytes(256), 64);
	ck_assert_uint_eq(bn_i2s_row_bytes(100), 0);
}
END_TEST

START_TEST(i2s_roundtrip)
{
	static const size_t ks[] = { 128, 256, 640, 2560, 6912 };
	int8_t *t = malloc(6912), *u = malloc(6912);   /* [k] */
	uint8_t *q = malloc(6912 / 4);                  /* [k/4] */
	for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
		size_t k = ks[i];
		for (int rep = 0; rep < 4; rep++) {
			rand_ternary(t, k);
			ck_assert_int_eq(bn_i2s_encode_row(t, k, q), 0);
			for (size_t j = 0; j < k / 4; j++)   /* code 3 never written */
				REQUIRE((q[j] & 3) != 3 && (q[j] >> 6) != 3, "byte %zu", j);
			memset(u, 7, k);
			ck_assert_int_eq(bn_i2s_decode_row(q, k, u), 0);
			ck_assert_mem_eq(t, u, k);
		}
	}
	/* code 3 reads as 0 */
	memset(q, 0xff, 32);
	ck_assert_int_eq(bn_i2s_decode_row(q, 128, u), 0);
	for (int j = 0; j < 128; j++)
		ck_assert_int_eq(u[j], 0);
	/* bad row length and non-ternary input */
	ck_assert_int_eq(bn_i2s_encode_row(t, 192, q), -EINVAL);
	ck_assert_int_eq(bn_i2s_decode_row(q, 64, u), -EINVAL);
	t[5] = 2;
	ck_assert_int_eq(bn_i2s_encode_row(t, 128, q), -EINVAL);
	/* the tensor tail */
	uint8_t tail[8 + BN_I2S_TAIL];   /* [2 rows of k=16: 8 bytes] + tail */
	memset(tail, 0xaa, sizeof tail);
	bn_i2s_write_tail(0.125f, tail + 8);
	ck_assert(bn_i2s_tensor_scale(tail, 2, 16) == 0.125f);
	for (int j = 12; j < (int)sizeof tail; j++)
		ck_assert_uint_eq(tail[j], 0);
	free(t);
	free(u);
	free(q);
}
END_TEST

/* ---- TQ2_0 ---------------------------------------------------------------------------- */

START_TEST(tq2_layout)
{
	int8_t t[256];
	uint8_t q[BN_TQ2_BLOCK_BYTES];
	uint16_t d = bn_f32_to_f16(0.0625f), d2;
	memset(t, 0, sizeof t);
	/* element c*128 + l*32 + m: c = 1, l = 2, m = 3 -> byte 32 + 3, bits 5:4 */
	t[128 + 64 + 3] = 1;
	/* c = 0, l = 0, m = 0 -> byte 0 bits 1:0 */
	t[0] = -1;
	ck_assert_int_eq(bn_tq2_encode_row(t, 256, &d, q), 0);
	ck_assert_uint_eq(q[35], 0x65);  /* 01 10 01 01 */
	ck_assert_uint_eq(q[0], 0x54);   /* 01 01 01 00 */
	ck_assert_uint_eq(q[1], 0x55);
	ck_assert_uint_eq(q[64] | (q[65] << 8), d);
	int8_t u[256];
	ck_assert_int_eq(bn_tq2_decode_row(q, 256, u, &d2), 0);
	ck_assert_mem_eq(t, u, 256);
	ck_assert_uint_eq(d2, d);
	/* code 3 is not ternary: decoded as +2 and reported */
	q[7] = 0xff;
	ck_assert_int_eq(bn_tq2_decode_row(q, 256, u, NULL), -ERANGE);
	ck_assert_int_eq(u[7], 2);
	ck_assert_int_eq(bn_tq2_encode_row(t, 128, &d, q), -EINVAL);
}
END_TEST

START_TEST(tq2_roundtrip)
{
	static const size_t ks[] = { 256, 512, 2560, 6912 };
	int8_t *t = malloc(6912), *u = malloc(6912);
	uint8_t *q = malloc(6912 / 256 * BN_TQ2_BLOCK_BYTES);
	uint16_t d[27], e[27];   /* [k/256] */
	for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
		size_t k = ks[i];
		ck_assert_uint_eq(bn_tq2_row_bytes(k), k / 256 * 66);
		for (size_t b = 0; b < k / 256; b++)
			d[b] = (uint16_t)rnd();
		rand_ternary(t, k);
		ck_assert_int_eq(bn_tq2_encode_row(t, k, d, q), 0);
		ck_assert_int_eq(bn_tq2_decode_row(q, k, u, e), 0);
		ck_assert_mem_eq(t, u, k);
		ck_assert_mem_eq(d, e, k / 256 * sizeof d[0]);
	}
	free(t);
	free(u);
	free(q);
}
END_TEST

/* ---- TQ1_0 ---------------------------------------------------------------------------- */

START_TEST(tq1_layout)
{
	int8_t t[256], u[256];
	uint8_t q[BN_TQ1_BLOCK_BYTES];
	uint16_t d = 0x3c00, d2;
	/* all zero -> every 5-trit number is 11111 in base 3 = 121 -> ceil(121*256/243) = 128 */
	memset(t, 0, sizeof t);
	ck_assert_int_eq(bn_tq1_encode_row(t, 256, &d, q), 0);
	for (int j = 0; j < 48; j++)
		ck_assert_uint_eq(q[j], 128);
	/* qh: four trits 1111 = 40, times 3 = 120 -> ceil(120*256/243) = 127 */
	for (int j = 48; j < 52; j++)
		ck_assert_uint_eq(q[j], 127);
	ck_assert_uint_eq(q[52] | (q[53] << 8), 0x3c00);
	/* element m + 32n with n = 0 is the most significant trit of byte m */
	t[3] = 1;                /* byte 3: 21111 = 202 -> ceil(202*256/243) = 213 */
	t[160 + 2 + 16 * 4] = -1;   /* byte 34, least significant trit: 11110 = 120 -> 127 */
	t[240 + 1 + 4 * 0] = 1;  /* qh[1], most significant: 2111 = 67, *3 = 201 -> 212 */
	ck_assert_int_eq(bn_tq1_encode_row(t, 256, &d, q), 0);
	ck_assert_uint_eq(q[3], 213);
	ck_assert_uint_eq(q[34], 127);
	ck_assert_uint_eq(q[49], 212);
	ck_assert_int_eq(bn_tq1_decode_row(q, 256, u, &d2), 0);
	ck_assert_mem_eq(t, u, 256);
	ck_assert_uint_eq(d2, d);
	ck_assert_int_eq(bn_tq1_decode_row(q, 255, u, &d2), -EINVAL);
}
END_TEST

START_TEST(tq1_roundtrip)
{
	static const size_t ks[] = { 256, 768, 2560, 6912 };
	int8_t *t = malloc(6912), *u = malloc(6912);
	uint8_t *q = malloc(6912 / 256 * BN_TQ1_BLOCK_BYTES);
	uint16_t d[27], e[27];
	for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
		size_t k = ks[i];
		ck_assert_uint_eq(bn_tq1_row_bytes(k), k / 256 * 54);
		for (int rep = 0; rep < 8; rep++) {
			for (size_t b = 0; b < k / 256; b++)
				d[b] = (uint16_t)rnd();
			rand_ternary(t, k);
			ck_assert_int_eq(bn_tq1_encode_row(t, k, d, q), 0);
			ck_assert_int_eq(bn_tq1_decode_row(q, k, u, e), 0);
			ck_assert_mem_eq(t, u, k);
			ck_assert_mem_eq(d, e, k / 256 * sizeof d[0]);
		}
	}
	/* every byte value decodes to ternary */
	memset(q, 0, BN_TQ1_BLOCK_BYTES);
	for (int v = 0; v < 256; v++) {
		memset(q, v, 52);
		ck_assert_int_eq(bn_tq1_decode_row(q, 256, u, NULL), 0);
		for (int j = 0; j < 256; j++)
			REQUIRE(u[j] >= -1 && u[j] <= 1, "byte %d element %d: %d", v, j, u[j]);
	}
	free(t);
	free(u);
	free(q);
}
END_TEST

/* ---- f16 / bf16 ----------------------------------------------------------------------- */

START_TEST(half_helpers)
{
	ck_assert_uint_eq(bn_f32_to_bf16(1.0f), 0x3f80);
	ck_assert_uint_eq(bn_f32_to_bf16(-2.0f), 0xc000);
	ck_assert_uint_eq(bn_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);       /* tie -> even */
	ck_assert_uint_eq(bn_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);   /* tie -> even (up) */
	ck_assert_uint_eq(bn_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
	ck_assert(isnan(bn_bf16_to_f32(bn_f32_to_bf16(NAN))));
	ck_assert(isinf(bn_bf16_to_f32(bn_f32_to_bf16(INFINITY))));
	float x[5] = { 0.5f, -0.0703125f, 3.0f, 65504.0f, 0x1p-24f }, y[5];
	uint16_t h[5];
	bn_f16_encode_row(x, 5, h);
	bn_f16_decode_row(h, 5, y);
	ck_assert_mem_eq(x, y, sizeof x);   /* all exact in f16 */
	bn_bf16_encode_row(x, 3, h);
	bn_bf16_decode_row(h, 3, y);
	ck_assert_mem_eq(x, y, 3 * sizeof x[0]);   /* 8 significant bits: exact in bf16 */
}
END_TEST

/* ---- Q8_0 (the 8-bit LM head) ---------------------------------------------------------- */

START_TEST(q8_0_rule)
{
	int8_t q[32];
	float x[32];
	/* values on the grid of an exact d: d = 63.5 / 127 = 0.5, q = x / d exactly */
	for (int j = 0; j < 32; j++)
		x[j] = 0.5f * (float)(j * 8 - 127 + (j == 31 ? 6 : 0));   /* -127 .. 127 */
	ck_assert_uint_eq(bn_q8_0_quantize_block(x, q), 0x3800);      /* 0.5 */
	for (int j = 0; j < 32; j++)
		ck_assert_int_eq(q[j], (int)(x[j] * 2.0f));
	/* d = 1 (amax 127): halves tie and round to even, both signs */
	for (int j = 0; j < 32; j++)
		x[j] = 0.0f;
	x[0] = 127.0f;
	x[1] = 2.5f;
	x[2] = 3.5f;
	x[3] = -2.5f;
	x[4] = -0.5f;
	x[5] = 126.5f;
	ck_assert_uint_eq(bn_q8_0_quantize_block(x, q), 0x3c00);
	ck_assert_int_eq(q[0], 127);
	ck_assert_int_eq(q[1], 2);
	ck_assert_int_eq(q[2], 4);
	ck_assert_int_eq(q[3], -2);
	ck_assert_int_eq(q[4], 0);
	ck_assert_int_eq(q[5], 126);
	/* d rounds to f16 first, and q divides by the rounded d (never -128) */
	for (int j = 0; j < 32; j++)
		x[j] = (j & 1) ? -1.0f : 0.3f;
	uint16_t d = bn_q8_0_quantize_block(x, q);
	ck_assert_uint_eq(d, bn_f32_to_f16(1.0f / 127.0f));
	float df = bn_f16_to_f32(d);
	ck_assert_int_eq(q[1], (int)rintf(-1.0f / df) < -127 ? -127 : (int)rintf(-1.0f / df));
	ck_assert_int_eq(q[0], (int)rintf(0.3f / df));
	/* all zero; NaN gives q = 0 */
	for (int j = 0; j < 32; j++)
		x[j] = 0.0f;
	x[7] = NAN;
	ck_assert_uint_eq(bn_q8_0_quantize_block(x, q), 0);
	for (int j = 0; j < 32; j++)
		ck_assert_int_eq(q[j], 0);
}
END_TEST

START_TEST(q8_0_rows)
{
	enum { K = 256 };
	float x[K], y[K];
	uint8_t row[K / 32 * 34];
	ck_assert_uint_eq(bn_q8_0_row_bytes(K), sizeof row);
	ck_assert_uint_eq(bn_q8_0_row_bytes(48), 0);
	ck_assert_int_eq(bn_q8_0_encode_row(x, 48, row), -EINVAL);
	for (int rep = 0; rep < 200; rep++) {
		float mag = ldexpf(1.0f, (int)(rnd() % 16) - 6);   /* d a normal f16 */
		for (int j = 0; j < K; j++)
			x[j] = mag * ((float)(rnd() % 20001) / 10000.0f - 1.0f);
		ck_assert_int_eq(bn_q8_0_encode_row(x, K, row), 0);
		ck_assert_int_eq(bn_q8_0_decode_row(row, K, y), 0);
		for (int b = 0; b < K / 32; b++) {
			uint16_t d = (uint16_t)(row[b * 34] | row[b * 34 + 1] << 8);   /* little endian */
			int8_t q[32];
			ck_assert_uint_eq(bn_q8_0_quantize_block(x + b * 32, q), d);
			ck_assert_mem_eq(q, row + b * 34 + 2, 32);
			float df = bn_f16_to_f32(d);
			for (int j = 0; j < 32; j++)   /* the nearest grid point, up to the clamp */
				REQUIRE(fabsf(y[b * 32 + j] - x[b * 32 + j]) <= 0.5f * df * 1.002f + 1e-30f,
				        "block %d elem %d: %g -> %g (d %g)", b, j, x[b * 32 + j], y[b * 32 + j], df);
		}
	}
	x[100] = INFINITY;
	ck_assert_int_eq(bn_q8_0_encode_row(x, K, row), -ERANGE);
	x[100] = NAN;
	ck_assert_int_eq(bn_q8_0_encode_row(x, K, row), -ERANGE);
	x[100] = 1e7f;   /* d = 1e7 / 127 overflows f16 */
	ck_assert_int_eq(bn_q8_0_encode_row(x, K, row), -ERANGE);
	x[100] = 65504.0f;   /* the largest f16 head value still fits */
	ck_assert_int_eq(bn_q8_0_encode_row(x, K, row), 0);
}
END_TEST

/* ---- golden files ------------------------------------------------------------------- */

static const char *shared_dir(void)
{
	const char *s = getenv("TEST_DATA");
	if (!s || !*s)
		return NULL;
	char p[4096];
	snprintf(p, sizeof p, "%s/golden/tiny-i2_s.gguf", s);
	FILE *f = fopen(p, "rb");
	if (!f)
		return NULL;
	fclose(f);
	return s;
}

START_TEST(golden_same_weights)
{
	static const char *const files[4] = { "tiny-i2_s", "tiny-tq2_0", "tiny-tq1_0", "tiny-f16" };
	static const uint32_t want_type[4] = { BN_TYPE_I2_S, BN_TYPE_TQ2_0, BN_TYPE_TQ1_0, BN_TYPE_F16 };
	struct bn_gguf *g[4];
	struct bn_error err = { 0 };
	for (int f = 0; f < 4; f++) {
		char p[4096];
		snprintf(p, sizeof p, "%s/golden/%s.gguf", shared_dir(), files[f]);
		int rc = bn_gguf_open(&g[f], p, &err);
		ck_assert_msg(rc == 0, "%s", err.msg);
	}
	int8_t t[4][512];     /* [format][k] one decoded row */
	uint16_t d[2];        /* [k/256] */
	long count[3] = { 0 };
	int n_proj = 0;
	for (uint64_t i = 0; i < g[0]->n_tensors; i++) {
		const struct bn_gguf_tensor *t0 = &g[0]->tensors[i];
		if (t0->type != BN_TYPE_I2_S)
			continue;
		n_proj++;
		size_t k = t0->ne[0], rows = t0->ne[1];
		ck_assert_uint_le(k, 512);
		const struct bn_gguf_tensor *tf[4] = { t0 };
		for (int f = 1; f < 4; f++) {
			tf[f] = bn_gguf_find_tensor(g[f], t0->name);
			ck_assert_msg(tf[f] != NULL, "%s: no %s", files[f], t0->name);
			ck_assert_uint_eq(tf[f]->type, want_type[f]);
			ck_assert_uint_eq(tf[f]->ne[0], k);
			ck_assert_uint_eq(tf[f]->ne[1], rows);
		}
		ck_assert_uint_eq(t0->size, rows * k / 4 + 32);
		float scale = bn_i2s_tensor_scale(t0->data, rows, k);
		ck_assert(scale > 0.0f && isfinite(scale));
		uint16_t scale16 = bn_f32_to_f16(scale);
		ck_assert(bn_f16_to_f32(scale16) == scale);   /* the golden scales are f16-exact */
		for (size_t r = 0; r < rows; r++) {
			const uint8_t *p0 = t0->data, *p1 = tf[1]->data, *p2 = tf[2]->data;
			REQUIRE(bn_i2s_decode_row(p0 + r * (k / 4), k, t[0]) == 0, "%s", t0->name);
			REQUIRE(bn_tq2_decode_row(p1 + r * bn_tq2_row_bytes(k), k, t[1], d) == 0,
			        "%s row %zu: tq2_0 holds code 3", t0->name, r);
			for (size_t b = 0; b < k / 256; b++)
				REQUIRE(d[b] == scale16, "%s row %zu: tq2_0 d %04x, want %04x", t0->name, r,
				        d[b], scale16);
			REQUIRE(bn_tq1_decode_row(p2 + r * bn_tq1_row_bytes(k), k, t[2], d) == 0, "%s",
			        t0->name);
			for (size_t b = 0; b < k / 256; b++)
				REQUIRE(d[b] == scale16, "%s row %zu: tq1_0 d %04x, want %04x", t0->name, r,
				        d[b], scale16);
			const uint16_t *h = (const uint16_t *)tf[3]->data + r * k;
			for (size_t j = 0; j < k; j++) {
				float v = bn_f16_to_f32(h[j]);
				REQUIRE(v == 0.0f || fabsf(v) == scale, "%s row %zu col %zu: f16 %g, scale %g",
				        t0->name, r, j, v, scale);
				t[3][j] = (int8_t)(v > 0 ? 1 : v < 0 ? -1 : 0);
				count[t[0][j] + 1]++;
			}
			for (int f = 1; f < 4; f++)
				REQUIRE(!memcmp(t[0], t[f], k), "%s row %zu: %s differs from i2_s", t0->name, r,
				        files[f]);
		}
	}
	ck_assert_int_eq(n_proj, 14);
	/* uniform ternary weights: each value near a third of the total */
	long total = count[0] + count[1] + count[2];
	for (int v = 0; v < 3; v++)
		ck_assert(count[v] > total / 4 && count[v] < total / 2);
	for (int f = 0; f < 4; f++)
		bn_gguf_close(g[f]);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("quant");
	TCase *tc = tcase_create("formats");
	tcase_add_test(tc, i2s_layout);
	tcase_add_test(tc, i2s_roundtrip);
	tcase_add_test(tc, tq2_layout);
	tcase_add_test(tc, tq2_roundtrip);
	tcase_add_test(tc, tq1_layout);
	tcase_add_test(tc, tq1_roundtrip);
	tcase_add_test(tc, half_helpers);
	tcase_add_test(tc, q8_0_rule);
	tcase_add_test(tc, q8_0_rows);
	suite_add_tcase(s, tc);
	if (shared_dir()) {
		TCase *tg = tcase_create("golden");
		tcase_set_timeout(tg, 60);
		tcase_add_test(tg, golden_same_weights);
		suite_add_tcase(s, tg);
	} else {
		fprintf(stderr, "check_quant: TEST_DATA golden files absent, golden comparison skipped\n");
	}
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
