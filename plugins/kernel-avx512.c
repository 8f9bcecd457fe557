/* AVX-512 (F/BW/VL) kernel plugin, with a VPDPBUSD ternary dot chosen at open time when the
 * CPU has AVX512-VNNI (variant "avx512-vnni", else "avx512"). Same contract as the AVX2
 * plugin: integer results, the ternary epilogue, rmsnorm and attention identical to the
 * scalar plugin; f16_gemm within f32 reordering error.
 * BN_SIMDE: built against SIMDe for tests/check_plugins_simde_avx512, so this code runs on
 * hosts without AVX-512; the few intrinsics SIMDe lacks go through 256-bit halves. */
#ifdef BN_SIMDE
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#include <simde/x86/f16c.h>
#include <simde/x86/fma.h>
#ifndef _MM_FROUND_NO_EXC
#define _MM_FROUND_NO_EXC SIMDE_MM_FROUND_NO_EXC
#endif
#define madd_epi16(a, b) simde_mm512_madd_epi16(a, b)   /* SIMDe 0.7's alias is wrong */
#else
#define madd_epi16(a, b) _mm512_madd_epi16(a, b)
#include <immintrin.h>
#endif
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "bitnet/kernel.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* ---- helpers: native intrinsics, or 256-bit halves under SIMDe ---------------------- */

ALWAYS_INLINE __m512 cat_ps(__m256 lo, __m256 hi)
{
	return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(lo)),
	                                           _mm256_castps_pd(hi), 1));
}

ALWAYS_INLINE __m256 lo_ps(__m512 v)
{
	return _mm512_castps512_ps256(v);
}

ALWAYS_INLINE __m256 hi_ps(__m512 v)
{
	return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
}

ALWAYS_INLINE __m512 load_h16(const uint16_t *p)   /* 16 f16 -> f32 */
{
#ifdef BN_SIMDE
	return cat_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)),
	              _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 8))));
#else
	return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
#endif
}

ALWAYS_INLINE __m512d cvt_pd(__m256 v)   /* 8 f32 -> f64, exact */
{
#ifdef BN_SIMDE
	return _mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_cvtps_pd(_mm256_castps256_ps128(v))),
	                          _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), 1);
#else
	return _mm512_cvtps_pd(v);
#endif
}

ALWAYS_INLINE __m256 cvt_ps(__m512d v)   /* 8 f64 -> f32, round to nearest */
{
#ifdef BN_SIMDE
	return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(_mm512_castpd512_pd256(v))),
	                            _mm256_cvtpd_ps(_mm512_extractf64x4_pd(v, 1)), 1);
#else
	return _mm512_cvtpd_ps(v);
#endif
}

ALWAYS_INLINE __m512i cvt_epi32(__m512 v)   /* integral f32 -> int32, exact */
{
#ifdef BN_SIMDE
	return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_cvtps_epi32(lo_ps(v))),
	                          _mm256_cvtps_epi32(hi_ps(v)), 1);
#else
	return _mm512_cvtps_epi32(v);
#endif
}

ALWAYS_INLINE int32_t hsum_epi32(__m512i v)
{
	__m256i h = _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
	__m128i s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
	return _mm_cvtsi128_si32(s);
}

ALWAYS_INLINE float hsum_ps(__m512 v)
{
	__m256 h = _mm256_add_ps(lo_ps(v), hi_ps(v));
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

ALWAYS_INLINE double hsum_pd(__m512d v)   /* callers accept any order (see attn_head) */
{
	__m256d h = _mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd(v, 1));
	__m128d s = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
	return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

/* ---- quantize_i8 ------------------------------------------------------------------- */

static void quantize_i8(const float *x, size_t n, int8_t *q, float *scale, int32_t *sum)
{
	__m512 m0 = _mm512_setzero_ps(), m1 = m0;
	size_t i = 0;
	/* max is order free; max_ps(a, acc) keeps acc when a is NaN, like the scalar `>` */
	for (; i + 32 <= n; i += 32) {
		m0 = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i)), m0);
		m1 = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i + 16)), m1);
	}
	m0 = _mm512_max_ps(m0, m1);
	float lanes[16];   /* [16] f32 */
	_mm512_storeu_ps(lanes, m0);
	float amax = 0.0f;
	for (int l = 0; l < 16; l++)
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

	const __m512 vs = _mm512_set1_ps(s);
	const __m512 hi = _mm512_set1_ps(127.0f), lo = _mm512_set1_ps(-128.0f);
	__m512i acc = _mm512_setzero_si512();
	i = 0;
	for (; i + 16 <= n; i += 16) {
		/* x*s is one rounded product, then round half to even, as rintf */
		__m512 f = _mm512_mul_ps(_mm512_loadu_ps(x + i), vs);
		f = _mm512_roundscale_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
		f = _mm512_max_ps(_mm512_min_ps(f, hi), lo);
		__m512i v = cvt_epi32(f);
		acc = _mm512_add_epi32(acc, v);
		_mm_storeu_si128((__m128i *)(q + i), _mm512_cvtsepi32_epi8(v));   /* in range */
	}
	int32_t total = hsum_epi32(acc);
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

/* A 32-byte block is broadcast to both 256-bit halves of a zmm; variable 16-bit shifts of
 * (6 | 4) and (2 | 0) put fields 0 and 1 (elements b..b+63, one contiguous 64-byte q load)
 * and fields 2 and 3 (b+64..b+127) into the low bits.
 * Code 3 (unused) must act as code 1 (weight 0): (v << 1) within 16-bit lanes moves each
 * field's low bit onto its high bit (bit 7 of a low byte lands on bit 0 of the high byte,
 * an even position the 0xAA mask drops), and v & ~(that & 0xAA) clears the high bit of a
 * field whose low bit is set: 3 -> 1, 2 -> 2, 1 -> 1, 0 -> 0. */
struct tdec {
	__m512i sh01, sh23, m3, aa;
};

ALWAYS_INLINE struct tdec tdec_init(void)
{
	struct tdec d;
	d.sh01 = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(6)),
	                            _mm256_set1_epi16(4), 1);
	d.sh23 = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(2)),
	                            _mm256_set1_epi16(0), 1);
	d.m3 = _mm512_set1_epi8(3);
	d.aa = _mm512_set1_epi8((char)0xaa);
	return d;
}

ALWAYS_INLINE void decode_block(const struct tdec *d, const uint8_t *blk, __m512i *c01,
                                __m512i *c23)
{
	__m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)blk));
	/* ternlog 0x70 = a & ~(b & c) (0xf0 & ~(0xcc & 0xaa)), a = v, b = v << 1, c = 0xAA */
	v = _mm512_ternarylogic_epi32(v, _mm512_slli_epi16(v, 1), d->aa, 0x70);
	*c01 = _mm512_and_si512(_mm512_srlv_epi16(v, d->sh01), d->m3);
	*c23 = _mm512_and_si512(_mm512_srlv_epi16(v, d->sh23), d->m3);
}

/* One block's code*q contribution added to 16 int32 lanes.
 * VNNI: vpdpbusd adds four u8*s8 products to each int32 lane without saturation.
 * Otherwise maddubs: each int16 lane is a pair sum in [-512, 508] (codes 0..2, q -128..127),
 * two of them sum to [-1024, 1016], widened at once by madd(ones): no int16 overflow.
 * The int32 total is bounded by 2*128*k < 2^31 for every k < 2^23 (the scalar bound). */
ALWAYS_INLINE __m512i block_dot(__m512i acc, __m512i c01, __m512i c23, const int8_t *qb,
                                int vnni)
{
	__m512i q01 = _mm512_loadu_si512((const void *)qb);
	__m512i q23 = _mm512_loadu_si512((const void *)(qb + 64));
	if (vnni) {
		acc = _mm512_dpbusd_epi32(acc, c01, q01);
		return _mm512_dpbusd_epi32(acc, c23, q23);
	}
	__m512i s = _mm512_add_epi16(_mm512_maddubs_epi16(c01, q01), _mm512_maddubs_epi16(c23, q23));
	return _mm512_add_epi32(acc, madd_epi16(s, _mm512_set1_epi16(1)));
}

ALWAYS_INLINE float epilogue(int32_t acc, int32_t qsum, float qscale, float wscale)
{
	return ((float)(acc - qsum) / qscale) * wscale;   /* the scalar plugin's operations */
}

/* m == 1: four weight rows per pass share the q loads; the next four rows are prefetched. */
ALWAYS_INLINE void gemv_rows4(const uint8_t *w, size_t k, size_t r, size_t r1, const int8_t *q,
                              int32_t out[4], int vnni)
{
	const struct tdec d = tdec_init();
	size_t rb = k / 4;
	const uint8_t *w0 = w + r * rb, *w1 = w0 + rb, *w2 = w1 + rb, *w3 = w2 + rb;
	size_t ahead = r + 8 <= r1 ? 4 * rb : 0;   /* never past r1 */
	__m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
	for (size_t o = 0; o < rb; o += BN_I2S_BLOCK_BYTES) {
		const int8_t *qb = q + o * 4;
		__m512i c01, c23;
		if (ahead) {
			_mm_prefetch((const char *)(w0 + ahead + 4 * o), _MM_HINT_T0);
			_mm_prefetch((const char *)(w0 + ahead + 4 * o + 64), _MM_HINT_T0);
		}
		decode_block(&d, w0 + o, &c01, &c23);
		a0 = block_dot(a0, c01, c23, qb, vnni);
		decode_block(&d, w1 + o, &c01, &c23);
		a1 = block_dot(a1, c01, c23, qb, vnni);
		decode_block(&d, w2 + o, &c01, &c23);
		a2 = block_dot(a2, c01, c23, qb, vnni);
		decode_block(&d, w3 + o, &c01, &c23);
		a3 = block_dot(a3, c01, c23, qb, vnni);
	}
	out[0] = hsum_epi32(a0);
	out[1] = hsum_epi32(a1);
	out[2] = hsum_epi32(a2);
	out[3] = hsum_epi32(a3);
}

/* One weight row against na (<= 4) activation rows: each decoded block is used na times. */
ALWAYS_INLINE void gemm_row_acts(const uint8_t *wr, size_t k, const int8_t *q, size_t na,
                                 int32_t *out, int vnni)
{
	const struct tdec d = tdec_init();
	__m512i acc[4] = { _mm512_setzero_si512(), _mm512_setzero_si512(),
	                   _mm512_setzero_si512(), _mm512_setzero_si512() };
	size_t rb = k / 4;
	for (size_t o = 0; o < rb; o += BN_I2S_BLOCK_BYTES) {
		__m512i c01, c23;
		decode_block(&d, wr + o, &c01, &c23);
#pragma GCC unroll 4
		for (size_t a = 0; a < na; a++)
			acc[a] = block_dot(acc[a], c01, c23, q + a * k + o * 4, vnni);
	}
#pragma GCC unroll 4
	for (size_t a = 0; a < na; a++)
		out[a] = hsum_epi32(acc[a]);
}

ALWAYS_INLINE void ternary_body(const uint8_t *w, size_t k, size_t r0, size_t r1, float wscale,
                                const int8_t *q, const float *qscale, const int32_t *qsum,
                                size_t m, float *y, size_t ldy, int vnni)
{
	size_t rb = k / 4;
	if (m == 1) {
		size_t r = r0;
		int32_t acc[4];   /* [4 rows] */
		for (; r + 4 <= r1; r += 4) {
			gemv_rows4(w, k, r, r1, q, acc, vnni);
			for (int t = 0; t < 4; t++)
				y[r + t] = epilogue(acc[t], qsum[0], qscale[0], wscale);
		}
		for (; r < r1; r++) {
			gemm_row_acts(w + r * rb, k, q, 1, acc, vnni);
			y[r] = epilogue(acc[0], qsum[0], qscale[0], wscale);
		}
		return;
	}
	/* Row chunks small enough to stay in L1/L2 while each group of four activation rows
	 * passes over them: weights come from memory once. */
	size_t chunk = 16384 / rb ? 16384 / rb : 1;
	for (size_t c0 = r0; c0 < r1; c0 += chunk) {
		size_t c1 = c0 + chunk < r1 ? c0 + chunk : r1;
		for (size_t i = 0; i < m; i += 4) {
			size_t na = m - i < 4 ? m - i : 4;
			const int8_t *qi = q + i * k;   /* [na][k] */
			for (size_t r = c0; r < c1; r++) {
				int32_t acc[4];   /* [na] */
				const uint8_t *wr = w + r * rb;
				if (na == 4)
					gemm_row_acts(wr, k, qi, 4, acc, vnni);
				else if (na == 3)
					gemm_row_acts(wr, k, qi, 3, acc, vnni);
				else if (na == 2)
					gemm_row_acts(wr, k, qi, 2, acc, vnni);
				else
					gemm_row_acts(wr, k, qi, 1, acc, vnni);
				for (size_t a = 0; a < na; a++)
					y[(i + a) * ldy + r] = epilogue(acc[a], qsum[i + a], qscale[i + a],
					                                wscale);
			}
		}
	}
}

static void ternary_gemm_vnni(const uint8_t *w, size_t k, size_t r0, size_t r1, float wscale,
                              const int8_t *q, const float *qscale, const int32_t *qsum,
                              size_t m, float *y, size_t ldy)
{
	ternary_body(w, k, r0, r1, wscale, q, qscale, qsum, m, y, ldy, 1);
}

static void ternary_gemm_bw(const uint8_t *w, size_t k, size_t r0, size_t r1, float wscale,
                            const int8_t *q, const float *qscale, const int32_t *qsum,
                            size_t m, float *y, size_t ldy)
{
	ternary_body(w, k, r0, r1, wscale, q, qscale, qsum, m, y, ldy, 0);
}

/* ---- f16_gemm ---------------------------------------------------------------------- */

ALWAYS_INLINE float f16_tail(const uint16_t *w, const uint16_t *x, size_t j, size_t k)
{
	float acc = 0.0f;
	for (; j < k; j++)
		acc += bn_f16_to_f32(w[j]) * bn_f16_to_f32(x[j]);
	return acc;
}

/* nr weight rows x na activation rows; with na == 1 each row gets two accumulators so that
 * eight FMA chains hide the FMA latency. */
ALWAYS_INLINE void f16_tile(const uint16_t *w, size_t k, size_t r, size_t nr,
                            const uint16_t *x, size_t na, float *y, size_t ldy)
{
	__m512 acc[4][2];   /* [row][act or half] */
	for (size_t t = 0; t < 4; t++)
		acc[t][0] = acc[t][1] = _mm512_setzero_ps();
	size_t j = 0;
	if (na == 1) {
		for (; j + 32 <= k; j += 32) {
			__m512 x0 = load_h16(x + j), x1 = load_h16(x + j + 16);
#pragma GCC unroll 4
			for (size_t t = 0; t < nr; t++) {
				const uint16_t *wt = w + (r + t) * k + j;
				acc[t][0] = _mm512_fmadd_ps(load_h16(wt), x0, acc[t][0]);
				acc[t][1] = _mm512_fmadd_ps(load_h16(wt + 16), x1, acc[t][1]);
			}
		}
#pragma GCC unroll 4
		for (size_t t = 0; t < nr; t++)
			y[r + t] = hsum_ps(_mm512_add_ps(acc[t][0], acc[t][1])) +
			           f16_tail(w + (r + t) * k, x, j, k);
		return;
	}
	for (; j + 16 <= k; j += 16) {
		__m512 xv[2];
#pragma GCC unroll 2
		for (size_t a = 0; a < na; a++)
			xv[a] = load_h16(x + a * k + j);
#pragma GCC unroll 4
		for (size_t t = 0; t < nr; t++) {
			__m512 wv = load_h16(w + (r + t) * k + j);
#pragma GCC unroll 2
			for (size_t a = 0; a < na; a++)
				acc[t][a] = _mm512_fmadd_ps(wv, xv[a], acc[t][a]);
		}
	}
#pragma GCC unroll 4
	for (size_t t = 0; t < nr; t++)
#pragma GCC unroll 2
		for (size_t a = 0; a < na; a++)
			y[a * ldy + r + t] = hsum_ps(acc[t][a]) +
			                     f16_tail(w + (r + t) * k, x + a * k, j, k);
}

static void f16_gemm(const uint16_t *w, size_t k, size_t r0, size_t r1,
                     const uint16_t *x, size_t m, float *y, size_t ldy)
{
	/* Every (row, activation) dot product runs the same one-activation tile, so a logit does
	 * not depend on how many tokens share the call (batch invariance, bit for bit). With
	 * m > 1 the four weight rows of a tile stay in L1 across the activation rows. */
	size_t r = r0;
	for (; r + 4 <= r1; r += 4)
		for (size_t i = 0; i < m; i++)
			f16_tile(w, k, r, 4, x + i * k, 1, y + i * ldy, ldy);
	for (; r < r1; r++)
		for (size_t i = 0; i < m; i++)
			f16_tile(w, k, r, 1, x + i * k, 1, y + i * ldy, ldy);
}

/* ---- rmsnorm ----------------------------------------------------------------------- */

static void rmsnorm(const float *x, const float *w, size_t n, float eps, float *y)
{
	/* The double sum runs in index order, as the scalar plugin's: only the squares are
	 * vectorized, the adds stay one dependent chain (bit-identical results). */
	double sum = 0.0;
	size_t i = 0;
	for (; i + 16 <= n; i += 16) {
		__m512 xv = _mm512_loadu_ps(x + i);
		__m512 sq = _mm512_mul_ps(xv, xv);
		double d[16];   /* [16] squares widened to double */
		_mm512_storeu_pd(d, cvt_pd(lo_ps(sq)));
		_mm512_storeu_pd(d + 8, cvt_pd(hi_ps(sq)));
		for (int l = 0; l < 16; l++)
			sum += d[l];
	}
	for (; i < n; i++)
		sum += (double)(x[i] * x[i]);
	float mean = (float)(sum / (double)n);
	float scale = 1.0f / sqrtf(mean + eps);
	__m512 vs = _mm512_set1_ps(scale);
	i = 0;
	for (; i + 16 <= n; i += 16)
		_mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), vs),
		                                      _mm512_loadu_ps(w + i)));
	for (; i < n; i++)
		y[i] = (x[i] * scale) * w[i];
}

/* ---- attn_head --------------------------------------------------------------------- */

/* f16 x f16 products are exact in f32 and widen exactly to double. The q.k sum runs in a
 * different order than the scalar loop and equals it whenever no partial sum rounds (terms
 * spanning less than about 2^45; checked on random data by tests/check_plugins). The V sum
 * keeps the scalar order exactly: vectorized across d, sequential in t. */
static void attn_head(const uint16_t *q16, const uint16_t *k, const uint16_t *v,
                      size_t stride, size_t n, size_t hd, float scale,
                      float *out, float *scratch)
{
	size_t hd16 = hd & ~(size_t)15;
	float qf[hd16 ? hd16 : 1];   /* [hd16] f32: q16 converted once */
	for (size_t d = 0; d < hd16; d += 16)
		_mm512_storeu_ps(qf + d, load_h16(q16 + d));

	float mx = -INFINITY;
	for (size_t t = 0; t < n; t++) {
		const uint16_t *kt = k + t * stride;   /* [hd] */
		__m512d a0 = _mm512_setzero_pd(), a1 = a0;
		for (size_t d = 0; d < hd16; d += 16) {
			__m512 p = _mm512_mul_ps(_mm512_loadu_ps(qf + d), load_h16(kt + d));
			a0 = _mm512_add_pd(a0, cvt_pd(lo_ps(p)));
			a1 = _mm512_add_pd(a1, cvt_pd(hi_ps(p)));
		}
		double acc = hsum_pd(_mm512_add_pd(a0, a1));
		for (size_t d = hd16; d < hd; d++)
			acc += (double)(bn_f16_to_f32(q16[d]) * bn_f16_to_f32(kt[d]));
		float s = (float)acc * scale;
		scratch[t] = s;
		if (s > mx)
			mx = s;
	}
	/* expf from libm, element by element: the logits must not depend on the plugin */
	double sum = 0.0;
	for (size_t t = 0; t < n; t++) {
		float e = expf(scratch[t] - mx);
		scratch[t] = e;
		sum += (double)e;
	}
	float inv = (float)(1.0 / sum);
	__m256 vinv = _mm256_set1_ps(inv);
	size_t t = 0;
	for (; t + 8 <= n; t += 8) {   /* F16C rounds to nearest even, as bn_f32_to_f16 */
		__m128i h = _mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(scratch + t), vinv),
		                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
		_mm256_storeu_ps(scratch + t, _mm256_cvtph_ps(h));
	}
	for (; t < n; t++)
		scratch[t] = bn_f16_to_f32(bn_f32_to_f16(scratch[t] * inv));

	size_t d = 0;
	for (; d + 64 <= hd; d += 64) {
		__m512d acc[8];   /* [64] double sums for out[d..d+63] */
		for (int c = 0; c < 8; c++)
			acc[c] = _mm512_setzero_pd();
		for (size_t u = 0; u < n; u++) {
			__m512 pb = _mm512_set1_ps(scratch[u]);
			const uint16_t *vt = v + u * stride + d;
#pragma GCC unroll 4
			for (int c = 0; c < 4; c++) {
				__m512 pr = _mm512_mul_ps(pb, load_h16(vt + 16 * c));
				acc[2 * c] = _mm512_add_pd(acc[2 * c], cvt_pd(lo_ps(pr)));
				acc[2 * c + 1] = _mm512_add_pd(acc[2 * c + 1], cvt_pd(hi_ps(pr)));
			}
		}
		for (int c = 0; c < 8; c++)
			_mm256_storeu_ps(out + d + 8 * c, cvt_ps(acc[c]));
	}
	for (; d + 16 <= hd; d += 16) {
		__m512d a0 = _mm512_setzero_pd(), a1 = a0;
		for (size_t u = 0; u < n; u++) {
			__m512 pr = _mm512_mul_ps(_mm512_set1_ps(scratch[u]), load_h16(v + u * stride + d));
			a0 = _mm512_add_pd(a0, cvt_pd(lo_ps(pr)));
			a1 = _mm512_add_pd(a1, cvt_pd(hi_ps(pr)));
		}
		_mm256_storeu_ps(out + d, cvt_ps(a0));
		_mm256_storeu_ps(out + d + 8, cvt_ps(a1));
	}
	for (; d < hd; d++) {
		double acc = 0.0;
		for (size_t u = 0; u < n; u++)
			acc += (double)(scratch[u] * bn_f16_to_f32(v[u * stride + d]));
		out[d] = (float)acc;
	}
}

/* ---- plugin entry points ----------------------------------------------------------- */

static const struct bn_kernel_ops avx512_vnni_ops = {
	.size = sizeof(struct bn_kernel_ops),
	.minor = BN_KERNEL_ABI_MINOR,
	.variant = "avx512-vnni",
	.quantize_i8 = quantize_i8,
	.ternary_gemm = ternary_gemm_vnni,
	.f16_gemm = f16_gemm,
	.rmsnorm = rmsnorm,
	.attn_head = attn_head,
};

static const struct bn_kernel_ops avx512_ops = {
	.size = sizeof(struct bn_kernel_ops),
	.minor = BN_KERNEL_ABI_MINOR,
	.variant = "avx512",
	.quantize_i8 = quantize_i8,
	.ternary_gemm = ternary_gemm_bw,
	.f16_gemm = f16_gemm,
	.rmsnorm = rmsnorm,
	.attn_head = attn_head,
};

BN_KERNEL_EXPORT const struct bn_kernel_desc bn_kernel_desc = {
	.abi_major = BN_KERNEL_ABI_MAJOR,
	.abi_minor = BN_KERNEL_ABI_MINOR,
	.name = "avx512",
	.description = "AVX-512 F/BW/VL (+VNNI vpdpbusd when present), F16C LM head",
	/* F16C and FMA: every AVX-512 CPU has them; the attention code uses 256-bit F16C */
	.required = BN_CPU_AVX512F | BN_CPU_AVX512BW | BN_CPU_AVX512VL,
	.priority = 30,
};

BN_KERNEL_EXPORT const struct bn_kernel_ops *bn_kernel_open(uint64_t cpu_features);
BN_KERNEL_EXPORT const struct bn_kernel_ops *bn_kernel_open(uint64_t cpu_features)
{
	if ((cpu_features & bn_kernel_desc.required) != bn_kernel_desc.required)
		return NULL;
	return (cpu_features & BN_CPU_AVX512VNNI) ? &avx512_vnni_ops : &avx512_ops;
}
