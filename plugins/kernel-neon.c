/* AArch64 Advanced SIMD kernel plugin; the ternary dot uses SDOT when the CPU has the
 * dot-product extension (variant "neon-dotprod", chosen at open time), else SMULL/SMLAL
 * with pairwise widening (variant "neon"). Same contract as the x86 plugins: integer
 * results, the ternary epilogue, rmsnorm, attention and q8_gemm identical to the scalar
 * plugin; f16_gemm within f32 reordering error.
 * BN_SIMDE: built against SIMDe for tests/check_plugins_simde_neon on x86 hosts. Natively it
 * is built only for aarch64 (Makefile.am, HOST_AARCH64) and cross-tested under qemu by
 * tests/neon-qemu.sh. */
#ifdef BN_SIMDE
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/arm/neon.h>
#else
#include <arm_neon.h>
#endif
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "bitnet/kernel.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE float32x4_t load_h4(const uint16_t *p)   /* 4 f16 -> f32, exact */
{
	return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
}

/* ---- quantize_i8 ------------------------------------------------------------------- */

static void quantize_i8(const float *x, size_t n, int8_t *q, float *scale, int32_t *sum)
{
	/* maxNum ignores a NaN operand, like the scalar `>`; max is order free */
	float32x4_t m0 = vdupq_n_f32(0.0f), m1 = m0;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		m0 = vmaxnmq_f32(m0, vabsq_f32(vld1q_f32(x + i)));
		m1 = vmaxnmq_f32(m1, vabsq_f32(vld1q_f32(x + i + 4)));
	}
	float lanes[4];   /* [4] f32 */
	vst1q_f32(lanes, vmaxnmq_f32(m0, m1));
	float amax = 0.0f;
	for (int l = 0; l < 4; l++)
		if (lanes[l] > amax)
			amax = lanes[l];
	for (size_t t = i; t < n; t++) {
		float a = fabsf(x[t]);
		if (a > amax)
			amax = a;
	}
	if (amax < 1e-5f)
		amax = 1e-5f;
	float s = (float)(127.0 / (double)amax);

	const float32x4_t hi = vdupq_n_f32(127.0f), lo = vdupq_n_f32(-128.0f);
	int32x4_t acc = vdupq_n_s32(0);
	i = 0;
	for (; i + 16 <= n; i += 16) {
		int32x4_t v[4];
		for (int u = 0; u < 4; u++) {
			/* one rounded product x*s, then round half to even (vrndn), as rintf */
			float32x4_t f = vrndnq_f32(vmulq_n_f32(vld1q_f32(x + i + 4 * u), s));
			f = vmaxq_f32(vminq_f32(f, hi), lo);
			v[u] = vcvtq_s32_f32(f);   /* integral already: exact */
			acc = vaddq_s32(acc, v[u]);
		}
		int16x8_t a = vcombine_s16(vmovn_s32(v[0]), vmovn_s32(v[1]));
		int16x8_t b = vcombine_s16(vmovn_s32(v[2]), vmovn_s32(v[3]));
		vst1q_s8(q + i, vcombine_s8(vmovn_s16(a), vmovn_s16(b)));   /* in [-128, 127] */
	}
	int32_t total = vaddvq_s32(acc);
	for (; i < n; i++) {
		float v = rintf(x[i] * s);
		if (v > 127.0f)
			v = 127.0f;
		if (v < -128.0f)
			v = -128.0f;
		q[i] = (int8_t)v;
		total += q[i];
	}
	*scale = s;
	*sum = total;
}

/* ---- ternary_gemm ------------------------------------------------------------------ */

/* Decodes a 32-byte block into codes 0..2 as bytes: c[f][h] is field f (bits 7:6, 5:4,
 * 3:2, 1:0) of bytes 16h..16h+15, which pairs with q[b + 32f + 16h ..]. Code 3 (unused)
 * must act as code 1 (weight 0): v & ~((v & 0x55) << 1) clears a field's high bit when its
 * low bit is set: 3 -> 1, 2 -> 2, 1 -> 1, 0 -> 0. */
ALWAYS_INLINE void decode_block(const uint8_t *blk, int8x16_t c[4][2])
{
	const uint8x16_t m3 = vdupq_n_u8(3), m55 = vdupq_n_u8(0x55);
	for (int h = 0; h < 2; h++) {
		uint8x16_t v = vld1q_u8(blk + 16 * h);
		v = vbicq_u8(v, vshlq_n_u8(vandq_u8(v, m55), 1));
		c[0][h] = vreinterpretq_s8_u8(vshrq_n_u8(v, 6));
		c[1][h] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 4), m3));
		c[2][h] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 2), m3));
		c[3][h] = vreinterpretq_s8_u8(vandq_u8(v, m3));
	}
}

/* Plain ASIMD: code*q products are in [-256, 254] as int16; each int16 lane of lo/hi sums
 * eight of them ([-2048, 2032]), then vpadal widens pairs into int32. The int32 total is
 * bounded by 2*128*k < 2^31 for every k < 2^23 (the scalar reference's bound). */
ALWAYS_INLINE int32x4_t block_dot_plain(int32x4_t acc, int8x16_t c[4][2], const int8_t *qb)
{
	int16x8_t lo = vdupq_n_s16(0), hi = lo;
	for (int f = 0; f < 4; f++)
		for (int h = 0; h < 2; h++) {
			int8x16_t qv = vld1q_s8(qb + 32 * f + 16 * h);
			lo = vmlal_s8(lo, vget_low_s8(c[f][h]), vget_low_s8(qv));
			hi = vmlal_s8(hi, vget_high_s8(c[f][h]), vget_high_s8(qv));
		}
	return vpadalq_s16(vpadalq_s16(acc, lo), hi);
}

ALWAYS_INLINE float epilogue(int32_t acc, int32_t qsum, float qscale, float wscale)
{
	return ((float)(acc - qsum) / qscale) * wscale;   /* the scalar plugin's operations */
}

/* The ternary driver, instantiated once per dot: m == 1 runs four weight rows per pass
 * (shared q loads, four independent chains); m > 1 feeds each decoded block to up to four
 * activation rows, over row chunks that stay in cache while the activation groups pass. */
#define TERNARY_DRIVER(NAME, DOT, ATTR)                                                      \
	ALWAYS_INLINE ATTR void NAME##_row_acts(const uint8_t *wr, size_t k, const int8_t *q,        \
	                                   size_t na, int32_t *out)                              \
	{                                                                                        \
		int32x4_t acc[4] = { vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0),                 \
		                     vdupq_n_s32(0) };                                               \
		for (size_t o = 0; o < k / 4; o += BN_I2S_BLOCK_BYTES) {                             \
			int8x16_t c[4][2];                                                               \
			decode_block(wr + o, c);                                                         \
			for (size_t a = 0; a < na; a++)                                                  \
				acc[a] = DOT(acc[a], c, q + a * k + o * 4);                                  \
		}                                                                                    \
		for (size_t a = 0; a < na; a++)                                                      \
			out[a] = vaddvq_s32(acc[a]);                                                     \
	}                                                                                        \
	static ATTR void NAME(const uint8_t *w, size_t k, size_t r0, size_t r1, float wscale,    \
	                 const int8_t *q, const float *qscale, const int32_t *qsum, size_t m,    \
	                 float *y, size_t ldy)                                                   \
	{                                                                                        \
		size_t rb = k / 4;                                                                   \
		if (m == 1) {                                                                        \
			size_t r = r0;                                                                   \
			for (; r + 4 <= r1; r += 4) {                                                    \
				const uint8_t *w0 = w + r * rb;                                              \
				int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0;                    \
				for (size_t o = 0; o < rb; o += BN_I2S_BLOCK_BYTES) {                        \
					int8x16_t c[4][2];                                                       \
					const int8_t *qb = q + o * 4;                                            \
					decode_block(w0 + o, c);                                                 \
					a0 = DOT(a0, c, qb);                                                     \
					decode_block(w0 + rb + o, c);                                            \
					a1 = DOT(a1, c, qb);                                                     \
					decode_block(w0 + 2 * rb + o, c);                                        \
					a2 = DOT(a2, c, qb);                                                     \
					decode_block(w0 + 3 * rb + o, c);                                        \
					a3 = DOT(a3, c, qb);                                                     \
				}                                                                            \
				y[r] = epilogue(vaddvq_s32(a0), qsum[0], qscale[0], wscale);                 \
				y[r + 1] = epilogue(vaddvq_s32(a1), qsum[0], qscale[0], wscale);             \
				y[r + 2] = epilogue(vaddvq_s32(a2), qsum[0], qscale[0], wscale);             \
				y[r + 3] = epilogue(vaddvq_s32(a3), qsum[0], qscale[0], wscale);             \
			}                                                                                \
			for (; r < r1; r++) {                                                            \
				int32_t acc[1];                                                              \
				NAME##_row_acts(w + r * rb, k, q, 1, acc);                                   \
				y[r] = epilogue(acc[0], qsum[0], qscale[0], wscale);                         \
			}                                                                                \
			return;                                                                          \
		}                                                                                    \
		size_t chunk = 16384 / rb ? 16384 / rb : 1;                                          \
		for (size_t c0 = r0; c0 < r1; c0 += chunk) {                                         \
			size_t c1 = c0 + chunk < r1 ? c0 + chunk : r1;                                   \
			for (size_t i = 0; i < m; i += 4) {                                              \
				size_t na = m - i < 4 ? m - i : 4;                                           \
				for (size_t r = c0; r < c1; r++) {                                           \
					int32_t acc[4]; /* [na] */                                               \
					NAME##_row_acts(w + r * rb, k, q + i * k, na, acc);                      \
					for (size_t a = 0; a < na; a++)                                          \
						y[(i + a) * ldy + r] = epilogue(acc[a], qsum[i + a], qscale[i + a],  \
						                                wscale);                             \
				}                                                                            \
			}                                                                                \
		}                                                                                    \
	}

TERNARY_DRIVER(ternary_gemm_plain, block_dot_plain, )

/* The SDOT path is compiled for armv8.2-a+dotprod by function attribute (a pragma after
 * arm_neon.h does not reach its intrinsics in GCC 12) and only runs when the CPU has it. */
#if defined(__aarch64__) && !defined(BN_SIMDE)
#define DOTPROD_TARGET __attribute__((target("arch=armv8.2-a+dotprod")))
#else
#define DOTPROD_TARGET
#endif
/* SDOT adds four int8 products into each int32 lane: no narrow intermediate at all. */
ALWAYS_INLINE DOTPROD_TARGET int32x4_t block_dot_sdot(int32x4_t acc, int8x16_t c[4][2],
                                                      const int8_t *qb)
{
	for (int f = 0; f < 4; f++)
		for (int h = 0; h < 2; h++)
			acc = vdotq_s32(acc, c[f][h], vld1q_s8(qb + 32 * f + 16 * h));
	return acc;
}

TERNARY_DRIVER(ternary_gemm_sdot, block_dot_sdot, DOTPROD_TARGET)

/* ---- f16_gemm ---------------------------------------------------------------------- */

ALWAYS_INLINE float f16_tail(const uint16_t *w, const uint16_t *x, size_t j, size_t k)
{
	float acc = 0.0f;
	for (; j < k; j++)
		acc += bn_f16_to_f32(w[j]) * bn_f16_to_f32(x[j]);
	return acc;
}

/* nr (<= 4) weight rows x na (<= 2) activation rows, two accumulators per pair. */
ALWAYS_INLINE void f16_tile(const uint16_t *w, size_t k, size_t r, size_t nr,
                            const uint16_t *x, size_t na, float *y, size_t ldy)
{
	float32x4_t acc[4][2][2];   /* [row][act][half] */
	for (size_t t = 0; t < 4; t++)
		for (size_t a = 0; a < 2; a++)
			acc[t][a][0] = acc[t][a][1] = vdupq_n_f32(0.0f);
	size_t j = 0;
	for (; j + 8 <= k; j += 8) {
		float32x4_t xv[2][2];
		for (size_t a = 0; a < na; a++) {
			xv[a][0] = load_h4(x + a * k + j);
			xv[a][1] = load_h4(x + a * k + j + 4);
		}
		for (size_t t = 0; t < nr; t++) {
			float32x4_t w0 = load_h4(w + (r + t) * k + j), w1 = load_h4(w + (r + t) * k + j + 4);
			for (size_t a = 0; a < na; a++) {
				acc[t][a][0] = vfmaq_f32(acc[t][a][0], w0, xv[a][0]);
				acc[t][a][1] = vfmaq_f32(acc[t][a][1], w1, xv[a][1]);
			}
		}
	}
	for (size_t t = 0; t < nr; t++)
		for (size_t a = 0; a < na; a++)
			y[a * ldy + r + t] = vaddvq_f32(vaddq_f32(acc[t][a][0], acc[t][a][1])) +
			                     f16_tail(w + (r + t) * k, x + a * k, j, k);
}

static void f16_gemm(const uint16_t *w, size_t k, size_t r0, size_t r1,
                     const uint16_t *x, size_t m, float *y, size_t ldy)
{
	/* The tile gives every (row, activation) dot product the same accumulation structure
	 * whatever the activation count, so a logit does not depend on how many tokens share the
	 * call (batch invariance, bit for bit). Four weight rows stay in L1 across the pairs. */
	size_t r = r0;
	for (; r + 4 <= r1; r += 4) {
		size_t i = 0;
		for (; i + 2 <= m; i += 2)
			f16_tile(w, k, r, 4, x + i * k, 2, y + i * ldy, ldy);
		if (i < m)
			f16_tile(w, k, r, 4, x + i * k, 1, y + i * ldy, ldy);
	}
	for (; r < r1; r++)
		for (size_t i = 0; i < m; i++)
			f16_tile(w, k, r, 1, x + i * k, 1, y + i * ldy, ldy);
}

/* ---- rmsnorm ----------------------------------------------------------------------- */

static void rmsnorm(const float *x, const float *w, size_t n, float eps, float *y)
{
	/* Squares vectorized; the double sum stays in index order (bit-identical to scalar). */
	double sum = 0.0;
	size_t i = 0;
	for (; i + 4 <= n; i += 4) {
		float32x4_t xv = vld1q_f32(x + i);
		float sq[4];   /* [4] f32 squares */
		vst1q_f32(sq, vmulq_f32(xv, xv));
		sum += (double)sq[0];
		sum += (double)sq[1];
		sum += (double)sq[2];
		sum += (double)sq[3];
	}
	for (; i < n; i++)
		sum += (double)(x[i] * x[i]);
	float mean = (float)(sum / (double)n);
	float scale = 1.0f / sqrtf(mean + eps);
	i = 0;
	for (; i + 4 <= n; i += 4)
		vst1q_f32(y + i, vmulq_f32(vmulq_n_f32(vld1q_f32(x + i), scale), vld1q_f32(w + i)));
	for (; i < n; i++)
		y[i] = (x[i] * scale) * w[i];
}

/* ---- attn_head --------------------------------------------------------------------- */

ALWAYS_INLINE float64x2_t add_lo(float64x2_t acc, float32x4_t p)
{
	return vaddq_f64(acc, vcvt_f64_f32(vget_low_f32(p)));
}

ALWAYS_INLINE float64x2_t add_hi(float64x2_t acc, float32x4_t p)
{
	return vaddq_f64(acc, vcvt_f64_f32(vget_high_f32(p)));
}

/* f16 x f16 products are exact in f32 and widen exactly to double. The q.k sum runs in a
 * different order than the scalar loop and equals it whenever no partial sum rounds (terms
 * spanning less than about 2^45; checked on random data by the tests). The V sum keeps the
 * scalar order exactly: vectorized across d, sequential in t. */
/* A score from its two 2-lane f64 chains: lanes added, reduced, then the scalar tail over d
 * in [hd4, hd) in order. q16, kt: [hd] f16 bits. */
ALWAYS_INLINE double score_finish(float64x2_t a0, float64x2_t a1, const uint16_t *q16,
                                  const uint16_t *kt, size_t hd4, size_t hd)
{
	a0 = vaddq_f64(a0, a1);
	double acc = vgetq_lane_f64(a0, 0) + vgetq_lane_f64(a0, 1);
	for (size_t d = hd4; d < hd; d++)
		acc += (double)(bn_f16_to_f32(q16[d]) * bn_f16_to_f32(kt[d]));
	return acc;
}

#include "attn-common.h"

static void attn_head(const uint16_t *q16, const uint16_t *k, const uint16_t *v,
                      size_t stride, size_t n, size_t hd, float scale,
                      float *out, float *scratch)
{
	size_t hd4 = hd & ~(size_t)3;
	float qf[hd4 ? hd4 : 1];   /* [hd4] f32: q16 converted once */
	for (size_t d = 0; d < hd4; d += 4)
		vst1q_f32(qf + d, load_h4(q16 + d));

	float mx = -INFINITY;
	for (size_t t = 0; t < n; t++) {
		const uint16_t *kt = k + t * stride;   /* [hd] */
		float64x2_t a0 = vdupq_n_f64(0.0), a1 = a0;
		for (size_t d = 0; d < hd4; d += 4) {
			float32x4_t p = vmulq_f32(vld1q_f32(qf + d), load_h4(kt + d));
			a0 = add_lo(a0, p);
			a1 = add_hi(a1, p);
		}
		float s = (float)score_finish(a0, a1, q16, kt, hd4, hd) * scale;
		scratch[t] = s;
		if (s > mx)
			mx = s;
	}
	softmax_f16(scratch, n, mx);

	size_t d = 0;
	for (; d + 16 <= hd; d += 16) {
		float64x2_t acc[8];   /* [16] double sums for out[d..d+15] */
		for (int c = 0; c < 8; c++)
			acc[c] = vdupq_n_f64(0.0);
		for (size_t u = 0; u < n; u++) {
			float32x4_t pb = vdupq_n_f32(scratch[u]);
			const uint16_t *vt = v + u * stride + d;
			for (int c = 0; c < 4; c++) {
				float32x4_t pr = vmulq_f32(pb, load_h4(vt + 4 * c));
				acc[2 * c] = add_lo(acc[2 * c], pr);
				acc[2 * c + 1] = add_hi(acc[2 * c + 1], pr);
			}
		}
		for (int c = 0; c < 4; c++)
			vst1q_f32(out + d + 4 * c, vcombine_f32(vcvt_f32_f64(acc[2 * c]),
			                                        vcvt_f32_f64(acc[2 * c + 1])));
	}
	for (; d + 4 <= hd; d += 4) {
		float64x2_t a0 = vdupq_n_f64(0.0), a1 = a0;
		for (size_t u = 0; u < n; u++) {
			float32x4_t pr = vmulq_f32(vdupq_n_f32(scratch[u]), load_h4(v + u * stride + d));
			a0 = add_lo(a0, pr);
			a1 = add_hi(a1, pr);
		}
		vst1q_f32(out + d, vcombine_f32(vcvt_f32_f64(a0), vcvt_f32_f64(a1)));
	}
	for (; d < hd; d++)
		out[d] = value_dot(scratch, v, stride, n, d);
}

/* ---- attn_group -------------------------------------------------------------------- */

#define ATT_G 4          /* queries per pass over the keys and values */
#define ATT_HD_MAX 256   /* longer heads go to attn_head one query at a time */
#define ATT_TB 256       /* positions per block of f64 softmax weights (8 KB) */

/* gq (1..ATT_G) queries sharing k and v, with attn_head's arithmetic for each, where the
 * conversions of a key or value row to f64 serve all of them: a product f16 x f16 (or f16
 * weight x f16 value) is exact in f32 and so in f64, so an f64 FMA adds exactly what
 * attn_head's f32 product widened to f64 adds, with the same one rounding, in the same
 * order (the same two 2-lane chains over 4-element steps for the scores; t in order for
 * each output). */
ALWAYS_INLINE void attn_g(const uint16_t *q16, size_t gq, const uint16_t *k, const uint16_t *v,
                          size_t stride, size_t n, size_t hd, float scale, float *out,
                          float *scratch)
{
	size_t hd4 = hd & ~(size_t)3;
	double qd[ATT_G][ATT_HD_MAX];   /* [gq][hd4] queries in f64 */
	for (size_t i = 0; i < gq; i++)
		for (size_t d = 0; d < hd4; d += 4) {
			float32x4_t f = load_h4(q16 + i * hd + d);
			vst1q_f64(qd[i] + d, vcvt_f64_f32(vget_low_f32(f)));
			vst1q_f64(qd[i] + d + 2, vcvt_f64_f32(vget_high_f32(f)));
		}

	float mx[ATT_G];
	for (size_t i = 0; i < gq; i++)
		mx[i] = -INFINITY;
	for (size_t t = 0; t < n; t++) {
		const uint16_t *kt = k + t * stride;   /* [hd] */
		float64x2_t a0[ATT_G], a1[ATT_G];
		for (size_t i = 0; i < gq; i++)
			a0[i] = a1[i] = vdupq_n_f64(0.0);
		for (size_t d = 0; d < hd4; d += 4) {
			float32x4_t kf = load_h4(kt + d);
			float64x2_t k0 = vcvt_f64_f32(vget_low_f32(kf));
			float64x2_t k1 = vcvt_f64_f32(vget_high_f32(kf));
			for (size_t i = 0; i < gq; i++) {
				a0[i] = vfmaq_f64(a0[i], vld1q_f64(qd[i] + d), k0);
				a1[i] = vfmaq_f64(a1[i], vld1q_f64(qd[i] + d + 2), k1);
			}
		}
		for (size_t i = 0; i < gq; i++) {
			float sc = (float)score_finish(a0[i], a1[i], q16 + i * hd, kt, hd4, hd) * scale;
			scratch[i * n + t] = sc;
			if (sc > mx[i])
				mx[i] = sc;
		}
	}
	for (size_t i = 0; i < gq; i++)
		softmax_f16(scratch + i * n, n, mx[i]);

	/* out: 8 outputs x gq queries in registers over a block of positions, the sums carried
	 * in acc between blocks */
	double acc[ATT_G][ATT_HD_MAX];   /* [gq][hd8] */
	double pd[ATT_G][ATT_TB];        /* [gq][block] weights in f64 */
	size_t hd8 = hd & ~(size_t)7;
	for (size_t i = 0; i < gq; i++)
		for (size_t d = 0; d < hd8; d++)
			acc[i][d] = 0.0;
	for (size_t t0 = 0; t0 < n; t0 += ATT_TB) {
		size_t tn = n - t0 < ATT_TB ? n - t0 : ATT_TB;
		for (size_t i = 0; i < gq; i++)
			for (size_t u = 0; u < tn; u++)
				pd[i][u] = scratch[i * n + t0 + u];
		for (size_t d = 0; d < hd8; d += 8) {
			float64x2_t a[ATT_G][4];
			for (size_t i = 0; i < gq; i++)
				for (int c = 0; c < 4; c++)
					a[i][c] = vld1q_f64(acc[i] + d + 2 * c);
			const uint16_t *vt = v + t0 * stride + d;
			for (size_t u = 0; u < tn; u++, vt += stride) {
				float32x4_t f0 = load_h4(vt), f1 = load_h4(vt + 4);
				float64x2_t v0 = vcvt_f64_f32(vget_low_f32(f0));
				float64x2_t v1 = vcvt_f64_f32(vget_high_f32(f0));
				float64x2_t v2 = vcvt_f64_f32(vget_low_f32(f1));
				float64x2_t v3 = vcvt_f64_f32(vget_high_f32(f1));
				for (size_t i = 0; i < gq; i++) {
					float64x2_t pb = vdupq_n_f64(pd[i][u]);
					a[i][0] = vfmaq_f64(a[i][0], pb, v0);
					a[i][1] = vfmaq_f64(a[i][1], pb, v1);
					a[i][2] = vfmaq_f64(a[i][2], pb, v2);
					a[i][3] = vfmaq_f64(a[i][3], pb, v3);
				}
			}
			for (size_t i = 0; i < gq; i++)
				for (int c = 0; c < 4; c++)
					vst1q_f64(acc[i] + d + 2 * c, a[i][c]);
		}
	}
	for (size_t i = 0; i < gq; i++) {
		for (size_t d = 0; d < hd8; d += 2)
			vst1_f32(out + i * hd + d, vcvt_f32_f64(vld1q_f64(acc[i] + d)));
		for (size_t d = hd8; d < hd; d++)
			out[i * hd + d] = value_dot(scratch + i * n, v, stride, n, d);
	}
}

#include "attn-group.h"

/* ---- q8_gemm ----------------------------------------------------------------------- */

/* The contract fixes each logit's float steps (block order), so the lanes run across weight
 * rows: four at a time, one f32 lane each, the scalar plugin's operations per lane. */
#define Q8_ROWS 4

/* One block's integer dot as int32x4 partial sums. Plain: SMULL/SMLAL pair products in
 * int16 lanes, at most 2 * 128 * 127 = 32512 in magnitude (x is never -128), then widened. */
ALWAYS_INLINE int32x4_t q8_dot_plain(const int8_t *w, const int8_t *x)
{
	int8x16_t w0 = vld1q_s8(w), w1 = vld1q_s8(w + 16);
	int8x16_t x0 = vld1q_s8(x), x1 = vld1q_s8(x + 16);
	int16x8_t lo = vmlal_s8(vmull_s8(vget_low_s8(w0), vget_low_s8(x0)), vget_low_s8(w1),
	                        vget_low_s8(x1));
	int16x8_t hi = vmlal_s8(vmull_s8(vget_high_s8(w0), vget_high_s8(x0)), vget_high_s8(w1),
	                        vget_high_s8(x1));
	return vpadalq_s16(vpaddlq_s16(lo), hi);
}

ALWAYS_INLINE DOTPROD_TARGET int32x4_t q8_dot_sdot(const int8_t *w, const int8_t *x)
{
	int32x4_t acc = vdotq_s32(vdupq_n_s32(0), vld1q_s8(w), vld1q_s8(x));
	return vdotq_s32(acc, vld1q_s8(w + 16), vld1q_s8(x + 16));
}

/* Four weight rows (wr[t], rows may repeat at a range's end) against one activation:
 * out[t] = the row's logit. pf (or NULL): the next four rows, fetched meanwhile. */
#define Q8_DRIVER(NAME, DOT, ATTR)                                                           \
	static ATTR void NAME(const uint8_t *w, size_t k, size_t r0, size_t r1, const int8_t *xq,   \
	                      const uint16_t *xd, size_t m, float *y, size_t ldy)                   \
	{                                                                                        \
		size_t nb = k / BN_Q8_0_BLOCK, rb = nb * BN_Q8_0_BLOCK_BYTES;                        \
		for (size_t r = r0; r < r1; r += Q8_ROWS) {                                          \
			size_t nr = r1 - r < Q8_ROWS ? r1 - r : Q8_ROWS;                                 \
			const uint8_t *wr[Q8_ROWS];                                                      \
			for (size_t t = 0; t < Q8_ROWS; t++)                                             \
				wr[t] = w + (r + (t < nr ? t : nr - 1)) * rb;                                \
			const uint8_t *pf = r + 2 * Q8_ROWS <= r1 ? w + (r + Q8_ROWS) * rb : NULL;       \
			for (size_t i = 0; i < m; i++) {                                                 \
				const int8_t *x = xq + i * k;                                                \
				float32x4_t acc = vdupq_n_f32(0.0f);                                         \
				for (size_t b = 0; b < nb; b++) {                                            \
					size_t off = b * BN_Q8_0_BLOCK_BYTES;                                    \
					if (pf && !i)                                                            \
						__builtin_prefetch(pf + b * Q8_ROWS * BN_Q8_0_BLOCK_BYTES);          \
					int32x4_t v0 = DOT((const int8_t *)wr[0] + off + 2, x + b * 32);         \
					int32x4_t v1 = DOT((const int8_t *)wr[1] + off + 2, x + b * 32);         \
					int32x4_t v2 = DOT((const int8_t *)wr[2] + off + 2, x + b * 32);         \
					int32x4_t v3 = DOT((const int8_t *)wr[3] + off + 2, x + b * 32);         \
					int32x4_t tot = vpaddq_s32(vpaddq_s32(v0, v1), vpaddq_s32(v2, v3));      \
					uint16_t dh[Q8_ROWS];   /* [4] f16 */                                    \
					for (int t = 0; t < Q8_ROWS; t++)                                        \
						dh[t] = (uint16_t)(wr[t][off] | wr[t][off + 1] << 8);                \
					/* exact conversion and dw * dx; one rounding per mul and add */          \
					float32x4_t sc = vmulq_f32(load_h4(dh),                                  \
					                           vdupq_n_f32(bn_f16_to_f32(xd[i * nb + b])));  \
					acc = vaddq_f32(acc, vmulq_f32(vcvtq_f32_s32(tot), sc));                 \
				}                                                                            \
				float out[Q8_ROWS];   /* [4] */                                              \
				vst1q_f32(out, acc);                                                         \
				for (size_t t = 0; t < nr; t++)                                              \
					y[i * ldy + r + t] = out[t];                                             \
			}                                                                                \
		}                                                                                    \
	}

Q8_DRIVER(q8_gemm_plain, q8_dot_plain, )
Q8_DRIVER(q8_gemm_sdot, q8_dot_sdot, DOTPROD_TARGET)

/* ---- plugin entry points ----------------------------------------------------------- */

static const struct bn_kernel_ops neon_dotprod_ops = {
	.size = sizeof(struct bn_kernel_ops),
	.minor = BN_KERNEL_ABI_MINOR,
	.variant = "neon-dotprod",
	.quantize_i8 = quantize_i8,
	.ternary_gemm = ternary_gemm_sdot,
	.f16_gemm = f16_gemm,
	.rmsnorm = rmsnorm,
	.attn_head = attn_head,
	.attn_group = attn_group,
	.q8_gemm = q8_gemm_sdot,
};

static const struct bn_kernel_ops neon_ops = {
	.size = sizeof(struct bn_kernel_ops),
	.minor = BN_KERNEL_ABI_MINOR,
	.variant = "neon",
	.quantize_i8 = quantize_i8,
	.ternary_gemm = ternary_gemm_plain,
	.f16_gemm = f16_gemm,
	.rmsnorm = rmsnorm,
	.attn_head = attn_head,
	.attn_group = attn_group,
	.q8_gemm = q8_gemm_plain,
};

BN_KERNEL_EXPORT const struct bn_kernel_desc bn_kernel_desc = {
	.abi_major = BN_KERNEL_ABI_MAJOR,
	.abi_minor = BN_KERNEL_ABI_MINOR,
	.name = "neon",
	.description = "AArch64 ASIMD (+SDOT when present)",
	.required = BN_CPU_ASIMD,
	.priority = 20,
};

BN_KERNEL_EXPORT const struct bn_kernel_ops *bn_kernel_open(uint64_t cpu_features);
BN_KERNEL_EXPORT const struct bn_kernel_ops *bn_kernel_open(uint64_t cpu_features)
{
	if (!(cpu_features & BN_CPU_ASIMD))
		return NULL;
	return (cpu_features & BN_CPU_ASIMDDP) ? &neon_dotprod_ops : &neon_ops;
}
