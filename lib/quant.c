/* Ternary weight formats, bit exact per shared/spec/bitnet-format.md section 3, and the
 * Q8_0 rows of an 8-bit LM head. */
#include "quant.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#include "bitnet/kernel.h"

/* 3^n for the TQ1_0 trit extraction: trit n of byte b is ((uint8_t)(b * 3^n) * 3) >> 8 */
static const uint8_t pow3[5] = { 1, 3, 9, 27, 81 };

static int is_ternary(int8_t v)
{
	return v >= -1 && v <= 1;
}

size_t bn_i2s_row_bytes(size_t k)
{
	return (k == 0 || k % BN_I2S_BLOCK) ? 0 : k / 4;
}

size_t bn_tq2_row_bytes(size_t k)
{
	return (k == 0 || k % BN_QK_K) ? 0 : k / BN_QK_K * BN_TQ2_BLOCK_BYTES;
}

size_t bn_tq1_row_bytes(size_t k)
{
	return (k == 0 || k % BN_QK_K) ? 0 : k / BN_QK_K * BN_TQ1_BLOCK_BYTES;
}

/* ---- I2_S ----------------------------------------------------------------------- */

int bn_i2s_encode_row(const int8_t *t, size_t k, uint8_t *out)
{
	if (k == 0 || k % BN_I2S_BLOCK)
		return -EINVAL;
	for (size_t b = 0; b < k; b += BN_I2S_BLOCK) {
		const int8_t *tb = t + b;
		uint8_t *ob = out + b / 4;
		for (size_t j = 0; j < 32; j++) {
			int8_t v0 = tb[j], v1 = tb[j + 32], v2 = tb[j + 64], v3 = tb[j + 96];
			if (!is_ternary(v0) || !is_ternary(v1) || !is_ternary(v2) || !is_ternary(v3))
				return -EINVAL;
			ob[j] = (uint8_t)(((v0 + 1) << 6) | ((v1 + 1) << 4) | ((v2 + 1) << 2) | (v3 + 1));
		}
	}
	return 0;
}

int bn_i2s_decode_row(const uint8_t *src, size_t k, int8_t *t)
{
	/* code -> value; code 3 is never written, and the format spec decodes it as 0 */
	static const int8_t val[4] = { -1, 0, 1, 0 };
	if (k == 0 || k % BN_I2S_BLOCK)
		return -EINVAL;
	for (size_t b = 0; b < k; b += BN_I2S_BLOCK) {
		const uint8_t *sb = src + b / 4;
		int8_t *tb = t + b;
		for (size_t j = 0; j < 32; j++) {
			uint8_t x = sb[j];
			tb[j] = val[(x >> 6) & 3];
			tb[j + 32] = val[(x >> 4) & 3];
			tb[j + 64] = val[(x >> 2) & 3];
			tb[j + 96] = val[x & 3];
		}
	}
	return 0;
}

float bn_i2s_tensor_scale(const void *data, size_t rows, size_t k)
{
	float s;
	/* GGUF is little endian, and so are the hosts this project builds for */
	memcpy(&s, (const uint8_t *)data + rows * (k / 4), sizeof s);
	return s;
}

void bn_i2s_write_tail(float scale, uint8_t *tail)
{
	memset(tail, 0, BN_I2S_TAIL);
	memcpy(tail, &scale, sizeof scale);
}

/* ---- TQ2_0 ---------------------------------------------------------------------- */

static void put_f16(uint8_t *p, uint16_t h)
{
	p[0] = (uint8_t)(h & 0xff);
	p[1] = (uint8_t)(h >> 8);
}

static uint16_t get_f16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

int bn_tq2_encode_row(const int8_t *t, size_t k, const uint16_t *d, void *dst)
{
	if (k == 0 || k % BN_QK_K)
		return -EINVAL;
	uint8_t *blk = dst;
	for (size_t b = 0; b < k / BN_QK_K; b++, blk += BN_TQ2_BLOCK_BYTES) {
		const int8_t *tb = t + b * BN_QK_K;
		for (size_t c = 0; c < 2; c++) {
			for (size_t m = 0; m < 32; m++) {
				uint8_t q = 0;
				for (size_t l = 0; l < 4; l++) {
					int8_t v = tb[c * 128 + l * 32 + m];
					if (!is_ternary(v))
						return -EINVAL;
					q |= (uint8_t)((v + 1) << (2 * l));
				}
				blk[c * 32 + m] = q;
			}
		}
		put_f16(blk + 64, d[b]);
	}
	return 0;
}

int bn_tq2_decode_row(const void *src, size_t k, int8_t *t, uint16_t *d)
{
	if (k == 0 || k % BN_QK_K)
		return -EINVAL;
	const uint8_t *blk = src;
	int bad = 0;
	for (size_t b = 0; b < k / BN_QK_K; b++, blk += BN_TQ2_BLOCK_BYTES) {
		int8_t *tb = t + b * BN_QK_K;
		for (size_t c = 0; c < 2; c++) {
			for (size_t m = 0; m < 32; m++) {
				uint8_t q = blk[c * 32 + m];
				for (size_t l = 0; l < 4; l++) {
					int code = (q >> (2 * l)) & 3;
					bad |= code == 3;
					tb[c * 128 + l * 32 + m] = (int8_t)(code - 1);
				}
			}
		}
		if (d)
			d[b] = get_f16(blk + 64);
	}
	return bad ? -ERANGE : 0;
}

/* ---- TQ1_0 ---------------------------------------------------------------------- */

/* A base-3 number v (0..242) stored so that the multiply-shift trit extraction works:
 * ceil(v * 256 / 243). */
static uint8_t tq1_pack(unsigned v)
{
	return (uint8_t)((v * 256 + 242) / 243);
}

static int8_t tq1_trit(uint8_t b, unsigned n)
{
	uint8_t x = (uint8_t)(b * pow3[n]);
	return (int8_t)(((unsigned)x * 3) >> 8);
}

int bn_tq1_encode_row(const int8_t *t, size_t k, const uint16_t *d, void *dst)
{
	if (k == 0 || k % BN_QK_K)
		return -EINVAL;
	for (size_t i = 0; i < k; i++)
		if (!is_ternary(t[i]))
			return -EINVAL;
	uint8_t *blk = dst;
	for (size_t b = 0; b < k / BN_QK_K; b++, blk += BN_TQ1_BLOCK_BYTES) {
		const int8_t *tb = t + b * BN_QK_K;
		/* qs[0..31]: elements m + 32n, n = 0..4, first element most significant */
		for (size_t m = 0; m < 32; m++) {
			unsigned v = 0;
			for (size_t n = 0; n < 5; n++)
				v = v * 3 + (unsigned)(tb[m + 32 * n] + 1);
			blk[m] = tq1_pack(v);
		}
		/* qs[32..47]: elements 160 + m + 16n */
		for (size_t m = 0; m < 16; m++) {
			unsigned v = 0;
			for (size_t n = 0; n < 5; n++)
				v = v * 3 + (unsigned)(tb[160 + m + 16 * n] + 1);
			blk[32 + m] = tq1_pack(v);
		}
		/* qh[j]: elements 240 + j + 4m as four trits, the fifth (least significant) 0 */
		for (size_t j = 0; j < 4; j++) {
			unsigned v = 0;
			for (size_t m = 0; m < 4; m++)
				v = v * 3 + (unsigned)(tb[240 + j + 4 * m] + 1);
			blk[48 + j] = tq1_pack(v * 3);
		}
		put_f16(blk + 52, d[b]);
	}
	return 0;
}

int bn_tq1_decode_row(const void *src, size_t k, int8_t *t, uint16_t *d)
{
	if (k == 0 || k % BN_QK_K)
		return -EINVAL;
	const uint8_t *blk = src;
	for (size_t b = 0; b < k / BN_QK_K; b++, blk += BN_TQ1_BLOCK_BYTES) {
		int8_t *tb = t + b * BN_QK_K;
		for (size_t m = 0; m < 32; m++)
			for (unsigned n = 0; n < 5; n++)
				tb[m + 32 * n] = (int8_t)(tq1_trit(blk[m], n) - 1);
		for (size_t m = 0; m < 16; m++)
			for (unsigned n = 0; n < 5; n++)
				tb[160 + m + 16 * n] = (int8_t)(tq1_trit(blk[32 + m], n) - 1);
		for (size_t j = 0; j < 4; j++)
			for (unsigned m = 0; m < 4; m++)
				tb[240 + j + 4 * m] = (int8_t)(tq1_trit(blk[48 + j], m) - 1);
		if (d)
			d[b] = get_f16(blk + 52);
	}
	return 0;
}

/* ---- f16 / bf16 ------------------------------------------------------------------- */

uint16_t bn_f32_to_bf16(float f)
{
	union { float f; uint32_t u; } v = { f };
	if ((v.u & 0x7fffffffu) > 0x7f800000u)      /* NaN: keep the sign, force quiet */
		return (uint16_t)((v.u >> 16) | 0x40);
	uint32_t lsb = (v.u >> 16) & 1;
	return (uint16_t)((v.u + 0x7fffu + lsb) >> 16);
}

void bn_f16_encode_row(const float *src, size_t n, uint16_t *dst)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = bn_f32_to_f16(src[i]);
}

void bn_f16_decode_row(const uint16_t *src, size_t n, float *dst)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = bn_f16_to_f32(src[i]);
}

void bn_bf16_encode_row(const float *src, size_t n, uint16_t *dst)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = bn_f32_to_bf16(src[i]);
}

void bn_bf16_decode_row(const uint16_t *src, size_t n, float *dst)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = bn_bf16_to_f32(src[i]);
}

size_t bn_q8_0_row_bytes(size_t k)
{
	return (k == 0 || k % BN_Q8_0_BLOCK) ? 0 : k / BN_Q8_0_BLOCK * BN_Q8_0_BLOCK_BYTES;
}

int bn_q8_0_encode_row(const float *x, size_t k, void *dst)
{
	if (!bn_q8_0_row_bytes(k))
		return -EINVAL;
	uint8_t *o = dst;
	for (size_t b = 0; b < k; b += BN_Q8_0_BLOCK) {
		for (size_t j = 0; j < BN_Q8_0_BLOCK; j++)
			if (!isfinite(x[b + j]))
				return -ERANGE;
		int8_t q[BN_Q8_0_BLOCK];   /* [32] */
		uint16_t d = bn_q8_0_quantize_block(x + b, q);
		if ((d & 0x7c00) == 0x7c00)   /* amax / 127 beyond f16: the block cannot be stored */
			return -ERANGE;
		o[0] = (uint8_t)d;            /* little endian, as ggml writes it */
		o[1] = (uint8_t)(d >> 8);
		memcpy(o + 2, q, sizeof q);
		o += BN_Q8_0_BLOCK_BYTES;
	}
	return 0;
}

int bn_q8_0_decode_row(const void *src, size_t k, float *x)
{
	if (!bn_q8_0_row_bytes(k))
		return -EINVAL;
	const uint8_t *s = src;
	for (size_t b = 0; b < k; b += BN_Q8_0_BLOCK, s += BN_Q8_0_BLOCK_BYTES) {
		float d = bn_f16_to_f32((uint16_t)(s[0] | s[1] << 8));
		for (size_t j = 0; j < BN_Q8_0_BLOCK; j++)
			x[b + j] = d * (float)(int8_t)s[2 + j];
	}
	return 0;
}
