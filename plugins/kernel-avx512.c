/* AVX-512 (F/BW/VL) kernel plugin, with a VPDPBUSD ternary dot chosen at open time when the
 * CPU has AVX512-VNNI (variant "avx512-vnni", else "avx512"), and AMX-INT8 tiles for the
 * prefill GEMM (m >= 16) when the features given to bn_kernel_open have BN_CPU_AMXINT8 and
 * VNNI and the kernel grants tile state (variant "avx512-vnni-amx"). Same contract as the AVX2
 * plugin: integer results, the ternary epilogue, rmsnorm, attention and q8_gemm identical to
 * the scalar plugin; f16_gemm within f32 reordering error.
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

ALWAYS_INLINE __m512 cvt_epi32_ps(__m512i v)   /* int32 -> f32, exact below 2^24 */
{
#ifdef BN_SIMDE
	return cat_ps(_mm256_cvtepi32_ps(_mm512_castsi512_si256(v)),
	              _mm256_cvtepi32_ps(_mm512_extracti64x4_epi64(v, 1)));
#else
	return _mm512_cvtepi32_ps(v);
#endif
}

ALWAYS_INLINE __m512i srav_epi32(__m512i v, __m512i n)
{
#ifdef BN_SIMDE
	return _mm512_inserti64x4(
		_mm512_castsi256_si512(_mm256_srav_epi32(_mm512_castsi512_si256(v),
		                                         _mm512_castsi512_si256(n))),
		_mm256_srav_epi32(_mm512_extracti64x4_epi64(v, 1), _mm512_extracti64x4_epi64(n, 1)), 1);
#else
	return _mm512_srav_epi32(v, n);
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

/* VNNI decode without shifts (port 0 runs VPDPBUSD; the shifts would compete for it): the
 * fields stay in place, so the low half of c01 holds 64 * code of field 0, the high half
 * 16 * code of field 1, c23 4 * code of field 2 and code of field 3 (code 3 -> 1 first, as
 * in decode_block). A lane's products all carry one factor, so its sum is that factor times
 * the true sum, undone exactly by unscale(). A lane adds k / 128 VPDPBUSD results of four
 * products in [-128 * 128, 128 * 127]: at most 512 k in magnitude, -2^31 at worst for
 * k = 2^22, which int32 holds; the callers keep k <= SCALED_KMAX. */
#define SCALED_KMAX ((size_t)1 << 22)

struct tdec_sc {
	__m512i m01, m23, aa, sh01, sh23;
};

ALWAYS_INLINE struct tdec_sc tdec_sc_init(void)
{
	struct tdec_sc d;
	d.m01 = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi8((char)0xc0)),
	                           _mm256_set1_epi8(0x30), 1);
	d.m23 = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi8(0x0c)),
	                           _mm256_set1_epi8(0x03), 1);
	d.aa = _mm512_set1_epi8((char)0xaa);
	d.sh01 = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi32(6)),
	                            _mm256_set1_epi32(4), 1);
	d.sh23 = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi32(2)),
	                            _mm256_set1_epi32(0), 1);
	return d;
}

ALWAYS_INLINE void decode_block_sc(const struct tdec_sc *d, const uint8_t *blk, __m512i *c01,
                                   __m512i *c23)
{
	__m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)blk));
#ifdef BN_SIMDE   /* SIMDe adds int16 lanes in C, where the wrap is undefined */
	v = _mm512_ternarylogic_epi32(v, _mm512_slli_epi16(v, 1), d->aa, 0x70);
#else
	v = _mm512_ternarylogic_epi32(v, _mm512_add_epi16(v, v), d->aa, 0x70);   /* v << 1 */
#endif
	*c01 = _mm512_and_si512(v, d->m01);
	*c23 = _mm512_and_si512(v, d->m23);
}

/* The true sums of the c01 and c23 accumulators, lane by lane (exact: every lane is a
 * multiple of its factor). */
ALWAYS_INLINE __m512i unscale(const struct tdec_sc *d, __m512i acc01, __m512i acc23)
{
	return _mm512_add_epi32(srav_epi32(acc01, d->sh01), srav_epi32(acc23, d->sh23));
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

/* One weight row against na (<= 4) activation rows: each decoded block is used na times.
 * pf (or NULL): a later row, fetched line by line meanwhile. */
ALWAYS_INLINE void gemm_row_acts(const uint8_t *wr, size_t k, const int8_t *q, size_t na,
                                 int32_t *out, int vnni, const uint8_t *pf)
{
	const struct tdec d = tdec_init();
	const struct tdec_sc ds = tdec_sc_init();
	/* VNNI: separate accumulators for the two halves of a block (they carry different
	 * factors, and no accumulator waits on the previous VPDPBUSD of the same iteration) */
	__m512i acc[4], acc2[4];
	for (size_t a = 0; a < 4; a++)
		acc[a] = acc2[a] = _mm512_setzero_si512();
	size_t rb = k / 4;
	const int scaled = vnni && k <= SCALED_KMAX;
	for (size_t o = 0; o < rb; o += BN_I2S_BLOCK_BYTES) {
		__m512i c01, c23;
		if (pf && !(o & 32))
			_mm_prefetch((const char *)(pf + o), _MM_HINT_T0);
		if (scaled)
			decode_block_sc(&ds, wr + o, &c01, &c23);
		else
			decode_block(&d, wr + o, &c01, &c23);
#pragma GCC unroll 4
		for (size_t a = 0; a < na; a++) {
			const int8_t *qb = q + a * k + o * 4;
			if (vnni) {
				acc[a] = _mm512_dpbusd_epi32(acc[a], c01, _mm512_loadu_si512((const void *)qb));
				acc2[a] = _mm512_dpbusd_epi32(acc2[a], c23,
				                              _mm512_loadu_si512((const void *)(qb + 64)));
			} else {
				acc[a] = block_dot(acc[a], c01, c23, qb, 0);
			}
		}
	}
#pragma GCC unroll 4
	for (size_t a = 0; a < na; a++)
		out[a] = hsum_epi32(scaled ? unscale(&ds, acc[a], acc2[a])
		                           : _mm512_add_epi32(acc[a], acc2[a]));
}

/* acc += VPDPBUSD(u, s) in place. GCC 12 treats the intrinsic as a three-operand
 * operation and, with many live accumulators, copies each one to a scratch register and
 * back around every VPDPBUSD; the asm form ties the accumulator to its register. */
#ifdef BN_SIMDE
#define DPBUSD(acc, u, s) ((acc) = _mm512_dpbusd_epi32((acc), (u), (s)))
#else
#define DPBUSD(acc, u, s) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u), "v"(s))
#endif

/* Two weight rows against na (<= 4) activation rows, VNNI with scaled decode (k up to
 * SCALED_KMAX): every q load serves both rows, so a block costs 8 VPDPBUSD per row pair and
 * about half a load each. 16 accumulators ([row][act][half]), 4 decoded vectors, q and 3
 * constants fit the 32 registers. pf (or NULL): later rows, fetched meanwhile. */
ALWAYS_INLINE void gemm_rows2_body(const uint8_t *w0, size_t k, const int8_t *q, size_t na,
                                   int32_t out[2][4], const uint8_t *pf)
{
	const struct tdec_sc ds = tdec_sc_init();
	/* named accumulators: sA_B_H = row A, activation B, block half H (GCC keeps these in
	 * registers; an array of them it spilled) */
	__m512i z = _mm512_setzero_si512();
	__m512i s000 = z, s001 = z, s010 = z, s011 = z, s020 = z, s021 = z, s030 = z, s031 = z;
	__m512i s100 = z, s101 = z, s110 = z, s111 = z, s120 = z, s121 = z, s130 = z, s131 = z;
	size_t rb = k / 4;
	const uint8_t *w1 = w0 + rb;
	const int8_t *q0 = q, *q1 = q + k, *q2 = q + 2 * k, *q3 = q + 3 * k;
#define R2_ACT(qa, S0L, S0H, S1L, S1H)                                                \
	do {                                                                          \
		__m512i ql = _mm512_loadu_si512((const void *)((qa) + 4 * o));            \
		__m512i qh = _mm512_loadu_si512((const void *)((qa) + 4 * o + 64));       \
		DPBUSD(S0L, a01, ql);                                                     \
		DPBUSD(S1L, b01, ql);                                                     \
		DPBUSD(S0H, a23, qh);                                                     \
		DPBUSD(S1H, b23, qh);                                                     \
	} while (0)
	for (size_t o = 0; o < rb; o += BN_I2S_BLOCK_BYTES) {
		__m512i a01, a23, b01, b23;   /* rows 0 and 1 decoded */
		if (pf)
			_mm_prefetch((const char *)(pf + 2 * o), _MM_HINT_T0);
		decode_block_sc(&ds, w0 + o, &a01, &a23);
		decode_block_sc(&ds, w1 + o, &b01, &b23);
		R2_ACT(q0, s000, s001, s100, s101);
		R2_ACT(q1, s010, s011, s110, s111);
		if (na > 2)
			R2_ACT(q2, s020, s021, s120, s121);
		if (na > 3)
			R2_ACT(q3, s030, s031, s130, s131);
	}
#undef R2_ACT
	out[0][0] = hsum_epi32(unscale(&ds, s000, s001));
	out[0][1] = hsum_epi32(unscale(&ds, s010, s011));
	out[0][2] = hsum_epi32(unscale(&ds, s020, s021));
	out[0][3] = hsum_epi32(unscale(&ds, s030, s031));
	out[1][0] = hsum_epi32(unscale(&ds, s100, s101));
	out[1][1] = hsum_epi32(unscale(&ds, s110, s111));
	out[1][2] = hsum_epi32(unscale(&ds, s120, s121));
	out[1][3] = hsum_epi32(unscale(&ds, s130, s131));
}

/* One function per activation count: constant counts leave GCC no conditional
 * accumulators to shuffle between registers. */
#define ROWS2_FN(n)                                                                       \
	static __attribute__((noinline)) void gemm_rows2_acts##n(                             \
		const uint8_t *w0, size_t k, const int8_t *q, int32_t out[2][4], const uint8_t *pf) \
	{                                                                                     \
		gemm_rows2_body(w0, k, q, n, out, pf);                                            \
	}
ROWS2_FN(2)
ROWS2_FN(3)
ROWS2_FN(4)
#undef ROWS2_FN

/* m > 1 (prefill): a real GEMM. A panel of four weight rows is decoded once into a small
 * buffer of codes (one byte per weight, element order, 0..2) that stays in L1 while every
 * group of four activation rows passes over it; the 4 x 4 register tile then does one
 * 64-element dot per (row, activation) pair and load: 16 accumulators, 8 loads per 16
 * dots. Integer sums are exact in any order, so the tiling does not change any result; the
 * epilogue is the scalar one per element. */
#define GEMM_NR 4          /* weight rows per panel */
#define GEMM_NA 4          /* activation rows per tile */
#define GEMM_KC 4096       /* k elements per decoded panel chunk: [4][4096] codes = 16 KB */
#define GEMM_MB 256        /* activation rows per pass (bounds the partial-sum array) */

/* codes of rows [r, r + nr), elements [k0, k0 + kc) -> buf [nr][kc] */
ALWAYS_INLINE void decode_panel(const uint8_t *w, size_t k, size_t r, size_t nr, size_t k0,
                                size_t kc, uint8_t *buf)
{
	const struct tdec d = tdec_init();
	size_t rb = k / 4;
	for (size_t t = 0; t < nr; t++) {
		const uint8_t *wr = w + (r + t) * rb + k0 / 4;
		uint8_t *bt = buf + t * kc;
		for (size_t o = 0; o < kc / 4; o += BN_I2S_BLOCK_BYTES) {
			__m512i c01, c23;
			decode_block(&d, wr + o, &c01, &c23);
			_mm512_storeu_si512((void *)(bt + 4 * o), c01);
			_mm512_storeu_si512((void *)(bt + 4 * o + 64), c23);
		}
	}
}

/* One 64-element step of code*q into int32 lanes (see block_dot for the bounds). */
ALWAYS_INLINE __m512i dot64(__m512i acc, __m512i c, __m512i q, int vnni)
{
	if (vnni)
		return _mm512_dpbusd_epi32(acc, c, q);
	return _mm512_add_epi32(acc, madd_epi16(_mm512_maddubs_epi16(c, q), _mm512_set1_epi16(1)));
}

/* Transposing adds of four int32 vectors: 128-bit lane group g of the result holds, in its
 * four lanes, the sums of a, b, c and d over their own lane group g. */
ALWAYS_INLINE __m512i reduce4(__m512i a, __m512i b, __m512i c, __m512i d)
{
	__m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
	__m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
	return _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
}

/* 16 accumulators -> lane 4*a + t = horizontal sum of acc[a][t]. */
ALWAYS_INLINE __m512i reduce16(__m512i acc[GEMM_NA][GEMM_NR])
{
	__m512i u0 = reduce4(acc[0][0], acc[0][1], acc[0][2], acc[0][3]);
	__m512i u1 = reduce4(acc[1][0], acc[1][1], acc[1][2], acc[1][3]);
	__m512i u2 = reduce4(acc[2][0], acc[2][1], acc[2][2], acc[2][3]);
	__m512i u3 = reduce4(acc[3][0], acc[3][1], acc[3][2], acc[3][3]);
	/* 0x88 takes 128-bit lanes 0, 2 of each source, 0xdd lanes 1, 3 */
	__m512i v = _mm512_add_epi32(_mm512_shuffle_i32x4(u0, u1, 0x88),
	                             _mm512_shuffle_i32x4(u0, u1, 0xdd));
	__m512i x = _mm512_add_epi32(_mm512_shuffle_i32x4(u2, u3, 0x88),
	                             _mm512_shuffle_i32x4(u2, u3, 0xdd));
	return _mm512_add_epi32(_mm512_shuffle_i32x4(v, x, 0x88), _mm512_shuffle_i32x4(v, x, 0xdd));
}

/* nr weight rows of buf ([nr][kc] codes) x na activation rows of q ([na] rows, stride k)
 * over kc elements, sums added to part ([na][GEMM_NR] int32). */
ALWAYS_INLINE void gemm_tile(const uint8_t *buf, size_t kc, size_t nr, const int8_t *q,
                             size_t k, size_t na, int32_t *part, int vnni)
{
	__m512i acc[GEMM_NA][GEMM_NR];
#pragma GCC unroll 4
	for (size_t a = 0; a < GEMM_NA; a++)
#pragma GCC unroll 4
		for (size_t t = 0; t < GEMM_NR; t++)
			acc[a][t] = _mm512_setzero_si512();
	for (size_t j = 0; j < kc; j += 64) {
		__m512i c[GEMM_NR];
#pragma GCC unroll 4
		for (size_t t = 0; t < GEMM_NR; t++)   /* rows past nr are never multiplied */
			c[t] = t < nr ? _mm512_loadu_si512((const void *)(buf + t * kc + j))
			              : _mm512_setzero_si512();
#pragma GCC unroll 4
		for (size_t a = 0; a < na; a++) {
			__m512i qa = _mm512_loadu_si512((const void *)(q + a * k + j));
#pragma GCC unroll 4
			for (size_t t = 0; t < nr; t++)
				acc[a][t] = dot64(acc[a][t], c[t], qa, vnni);
		}
	}
	if (nr == GEMM_NR && na == GEMM_NA) {
		__m512i s = _mm512_add_epi32(_mm512_loadu_si512((const void *)part), reduce16(acc));
		_mm512_storeu_si512((void *)part, s);
		return;
	}
	for (size_t a = 0; a < na; a++)
		for (size_t t = 0; t < nr; t++)
			part[a * GEMM_NR + t] += hsum_epi32(acc[a][t]);
}

ALWAYS_INLINE void gemm_panel(const uint8_t *w, size_t k, size_t r, size_t nr, float wscale,
                              const int8_t *q, const float *qscale, const int32_t *qsum,
                              size_t m, float *y, size_t ldy, int vnni)
{
	uint8_t buf[GEMM_NR * GEMM_KC];        /* [nr][kc] decoded codes */
	int32_t part[GEMM_MB * GEMM_NR];       /* [mb][GEMM_NR] int32 sums over k */
	for (size_t i0 = 0; i0 < m; i0 += GEMM_MB) {
		size_t mb = m - i0 < GEMM_MB ? m - i0 : GEMM_MB;
		for (size_t e = 0; e < mb * GEMM_NR; e++)
			part[e] = 0;
		for (size_t k0 = 0; k0 < k; k0 += GEMM_KC) {
			size_t kc = k - k0 < GEMM_KC ? k - k0 : GEMM_KC;
			decode_panel(w, k, r, nr, k0, kc, buf);
			const int8_t *qc = q + i0 * k + k0;   /* [mb][k] from column k0 */
			size_t i = 0;
			for (; i + GEMM_NA <= mb; i += GEMM_NA) {
				if (nr == GEMM_NR)
					gemm_tile(buf, kc, GEMM_NR, qc + i * k, k, GEMM_NA, part + i * GEMM_NR,
					          vnni);
				else
					gemm_tile(buf, kc, nr, qc + i * k, k, GEMM_NA, part + i * GEMM_NR, vnni);
			}
			if (i < mb)
				gemm_tile(buf, kc, nr, qc + i * k, k, mb - i, part + i * GEMM_NR, vnni);
		}
		for (size_t i = 0; i < mb; i++) {
			float *yi = y + (i0 + i) * ldy + r;
			for (size_t t = 0; t < nr; t++)
				yi[t] = epilogue(part[i * GEMM_NR + t], qsum[i0 + i], qscale[i0 + i], wscale);
		}
	}
}

/* ---- m >= 16 with AMX-INT8 ---------------------------------------------------------- */

/* Sapphire Rapids and later: TDPBSUD multiplies a 16 x 64 tile of signed bytes (16
 * activation rows of q, 64 consecutive elements: q as it is in memory) by a 64 x 16 tile
 * of unsigned bytes (codes of 16 weight rows) stored in groups of four elements: B row g
 * holds, for each weight row n, its codes of elements 4g..4g+3 (bytes 4n..4n+3). Sums are
 * exact int32, so the result is the same integers as every other path; the epilogue is the
 * scalar one per element (vectorized: convert, divide, multiply are IEEE operations).
 * The engine reports AMX as BN_CPU_AMXINT8 (CPUID and XCR0); Linux also wants the
 * process's permission (arch_prctl ARCH_REQ_XCOMP_PERM), asked at open time; without the
 * bit or the permission the AVX-512 paths run. Not built under SIMDe (it has no AMX). */
#if !defined(BN_SIMDE) && defined(__x86_64__) && defined(__linux__) && \
	((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11))
#define BN_HAVE_AMX 1
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define AMX_TARGET __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw")))
#define AMX_KC 2048    /* k elements per decoded chunk: [2][512][64] codes = 64 KB */
#define AMX_MB 128     /* activation rows per pass: [128][32] int32 partial sums = 16 KB */

struct amx_tilecfg {   /* the LDTILECFG memory format, palette 1 */
	uint8_t palette, start_row;
	uint8_t reserved[14];
	uint16_t colsb[16];
	uint8_t rows[16];
};

/* Codes of weight rows [r, r + 16), elements [k0, k0 + kc), in the B layout:
 * bp [kc/4][16][4]. Dword h of a 32-byte I2_S block holds elements 4h..4h+3 of field 0
 * (bits 7:6), of field 1 (+32, bits 5:4) and so on, so one dword gathered from each of the
 * 16 rows gives, field by field, four complete B rows: groups h, h + 8, h + 16, h + 24. */
AMX_TARGET static void amx_decode16(const uint8_t *w, size_t k, size_t r, size_t k0,
                                    size_t kc, uint8_t *bp)
{
	const struct tdec d = tdec_init();
	size_t rb = k / 4;
	const __m512i vidx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
	                                                          10, 11, 12, 13, 14, 15),
	                                        _mm512_set1_epi32((int)rb));
	const uint8_t *base = w + r * rb + k0 / 4;
	for (size_t b = 0; b < kc / BN_I2S_BLOCK; b++) {
		uint8_t *bb = bp + b * (BN_I2S_BLOCK / 4) * 64;   /* 32 B rows of this block */
		for (int h = 0; h < 8; h++) {
			__m512i v = _mm512_i32gather_epi32(vidx, (const void *)(base + b * 32 + 4 * h), 1);
			v = _mm512_ternarylogic_epi32(v, _mm512_slli_epi16(v, 1), d.aa, 0x70);  /* 3 -> 1 */
			_mm512_storeu_si512((void *)(bb + (0 + h) * 64),
			                    _mm512_and_si512(_mm512_srli_epi16(v, 6), d.m3));
			_mm512_storeu_si512((void *)(bb + (8 + h) * 64),
			                    _mm512_and_si512(_mm512_srli_epi16(v, 4), d.m3));
			_mm512_storeu_si512((void *)(bb + (16 + h) * 64),
			                    _mm512_and_si512(_mm512_srli_epi16(v, 2), d.m3));
			_mm512_storeu_si512((void *)(bb + (24 + h) * 64), _mm512_and_si512(v, d.m3));
		}
	}
}

/* Weight rows [r, r + 16 * np) (np = 1 or 2 panels) x activation rows [0, m16), m16 a
 * multiple of 16. Tiles: 0-3 int32 sums (act block x panel), 4-5 q, 6-7 codes. */
AMX_TARGET static void amx_rows(const uint8_t *w, size_t k, size_t r, int np, float wscale,
                                const int8_t *q, const float *qscale, const int32_t *qsum,
                                size_t m16, float *y, size_t ldy)
{
	uint8_t bp[2][AMX_KC / 4 * 64];     /* [panel][kc/4][16][4] codes */
	int32_t part[AMX_MB][32];           /* [act][weight row in the 32] int32 sums */
	for (size_t i0 = 0; i0 < m16; i0 += AMX_MB) {
		size_t mb = m16 - i0 < AMX_MB ? m16 - i0 : AMX_MB;
		for (size_t k0 = 0; k0 < k; k0 += AMX_KC) {
			size_t kc = k - k0 < AMX_KC ? k - k0 : AMX_KC;
			amx_decode16(w, k, r, k0, kc, bp[0]);
			if (np == 2)
				amx_decode16(w, k, r + 16, k0, kc, bp[1]);
			const int8_t *qc = q + i0 * k + k0;   /* [mb][k] from column k0 */
			size_t a = 0;
			for (; a + 32 <= mb && np == 2; a += 32) {
				if (k0 == 0) {
					_tile_zero(0);
					_tile_zero(1);
					_tile_zero(2);
					_tile_zero(3);
				} else {
					_tile_loadd(0, &part[a][0], 128);
					_tile_loadd(1, &part[a][16], 128);
					_tile_loadd(2, &part[a + 16][0], 128);
					_tile_loadd(3, &part[a + 16][16], 128);
				}
				for (size_t j = 0; j < kc; j += 64) {
					_tile_loadd(4, qc + a * k + j, (long)k);
					_tile_loadd(5, qc + (a + 16) * k + j, (long)k);
					_tile_loadd(6, bp[0] + j * 16, 64);
					_tile_loadd(7, bp[1] + j * 16, 64);
					_tile_dpbsud(0, 4, 6);
					_tile_dpbsud(1, 4, 7);
					_tile_dpbsud(2, 5, 6);
					_tile_dpbsud(3, 5, 7);
				}
				_tile_stored(0, &part[a][0], 128);
				_tile_stored(1, &part[a][16], 128);
				_tile_stored(2, &part[a + 16][0], 128);
				_tile_stored(3, &part[a + 16][16], 128);
			}
			for (; a < mb; a += 16) {   /* one act block, one or two panels */
				if (k0 == 0) {
					_tile_zero(0);
					_tile_zero(1);
				} else {
					_tile_loadd(0, &part[a][0], 128);
					_tile_loadd(1, &part[a][16], 128);
				}
				for (size_t j = 0; j < kc; j += 64) {
					_tile_loadd(4, qc + a * k + j, (long)k);
					_tile_loadd(6, bp[0] + j * 16, 64);
					_tile_dpbsud(0, 4, 6);
					if (np == 2) {
						_tile_loadd(7, bp[1] + j * 16, 64);
						_tile_dpbsud(1, 4, 7);
					}
				}
				_tile_stored(0, &part[a][0], 128);
				_tile_stored(1, &part[a][16], 128);
			}
		}
		const __m512 ws = _mm512_set1_ps(wscale);
		for (size_t a = 0; a < mb; a++) {
			size_t i = i0 + a;
			const __m512i qs = _mm512_set1_epi32(qsum[i]);
			const __m512 sc = _mm512_set1_ps(qscale[i]);
			for (int p = 0; p < np; p++) {
				__m512i s = _mm512_sub_epi32(_mm512_loadu_si512((const void *)&part[a][16 * p]),
				                             qs);
				__m512 v = _mm512_mul_ps(_mm512_div_ps(_mm512_cvtepi32_ps(s), sc), ws);
				_mm512_storeu_ps(y + i * ldy + r + 16 * (size_t)p, v);
			}
		}
	}
}

AMX_TARGET static void amx_gemm(const uint8_t *w, size_t k, size_t r0, size_t r1, float wscale,
                                const int8_t *q, const float *qscale, const int32_t *qsum,
                                size_t m16, float *y, size_t ldy)
{
	struct amx_tilecfg cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.palette = 1;
	for (int t = 0; t < 8; t++) {
		cfg.rows[t] = 16;
		cfg.colsb[t] = 64;
	}
	_tile_loadconfig(&cfg);
	size_t r = r0;
	for (; r + 32 <= r1; r += 32)
		amx_rows(w, k, r, 2, wscale, q, qscale, qsum, m16, y, ldy);
	if (r + 16 <= r1)
		amx_rows(w, k, r, 1, wscale, q, qscale, qsum, m16, y, ldy);
	_tile_release();   /* back to the init state: no tile data to save on a switch */
}

/* CPU and OS support come with BN_CPU_AMXINT8; what is left is the kernel's per-process
 * permission for the tile data. ARCH_REQ_XCOMP_PERM (0x1023), XFEATURE_XTILEDATA (18):
 * process-wide and idempotent; it fails where the kernel does not support tile state. */
static int amx_permitted(void)
{
	return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
}
#endif

ALWAYS_INLINE void ternary_body(const uint8_t *w, size_t k, size_t r0, size_t r1, float wscale,
                                const int8_t *q, const float *qscale, const int32_t *qsum,
                                size_t m, float *y, size_t ldy, int vnni, int amx)
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
			gemm_row_acts(w + r * rb, k, q, 1, acc, vnni, NULL);
			y[r] = epilogue(acc[0], qsum[0], qscale[0], wscale);
		}
		return;
	}
	if (m <= 4) {
		/* a few sequences decoding together: decode each block in registers once and use it
		 * for every activation row (a panel would be reused too little) */
		int32_t acc[4];   /* [m] */
		size_t r = r0;
		if (vnni && k <= SCALED_KMAX)
			for (; r + 2 <= r1; r += 2) {
				int32_t acc2[2][4];   /* [row][m] */
				/* the next pair streams in meanwhile (never past r1) */
				const uint8_t *pf = r + 4 <= r1 ? w + (r + 2) * rb : NULL;
				if (m == 4)
					gemm_rows2_acts4(w + r * rb, k, q, acc2, pf);
				else if (m == 3)
					gemm_rows2_acts3(w + r * rb, k, q, acc2, pf);
				else
					gemm_rows2_acts2(w + r * rb, k, q, acc2, pf);
				for (size_t t = 0; t < 2; t++)
					for (size_t a = 0; a < m; a++)
						y[a * ldy + r + t] = epilogue(acc2[t][a], qsum[a], qscale[a], wscale);
			}
		for (; r < r1; r++) {
			/* the row after next streams in meanwhile (never past r1) */
			const uint8_t *pf = r + 2 < r1 ? w + (r + 2) * rb : NULL;
			/* a constant row count per call keeps the accumulators in registers */
			if (m == 4)
				gemm_row_acts(w + r * rb, k, q, 4, acc, vnni, pf);
			else if (m == 3)
				gemm_row_acts(w + r * rb, k, q, 3, acc, vnni, pf);
			else
				gemm_row_acts(w + r * rb, k, q, 2, acc, vnni, pf);
			for (size_t a = 0; a < m; a++)
				y[a * ldy + r] = epilogue(acc[a], qsum[a], qscale[a], wscale);
		}
		return;
	}
#ifdef BN_HAVE_AMX
	if (amx && m >= 16 && r1 - r0 >= 16) {
		/* AMX takes whole 16 x 16 blocks; the rest of the rows and activations go below */
		size_t m16 = m & ~(size_t)15, re = r0 + ((r1 - r0) & ~(size_t)15);
		amx_gemm(w, k, r0, re, wscale, q, qscale, qsum, m16, y, ldy);
		if (m16 < m) {
			size_t r = r0;
			for (; r + GEMM_NR <= re; r += GEMM_NR)
				gemm_panel(w, k, r, GEMM_NR, wscale, q + m16 * k, qscale + m16, qsum + m16,
				           m - m16, y + m16 * ldy, ldy, vnni);
		}
		r0 = re;
	}
#else
	(void)amx;
#endif
	size_t r = r0;
	for (; r + GEMM_NR <= r1; r += GEMM_NR)
		gemm_panel(w, k, r, GEMM_NR, wscale, q, qscale, qsum, m, y, ldy, vnni);
	if (r < r1)
		gemm_panel(w, k, r, r1 - r, wscale, q, qscale, qsum, m, y, ldy, vnni);
}

#ifdef BN_HAVE_AMX
static void ternary_gemm_amx(const uint8_t *w, size_t k, size_t r0, size_t r1, float wscale,
                             const int8_t *q, const float *qscale, const int32_t *qsum,
                             size_t m, float *y, size_t ldy)
{
	ternary_body(w, k, r0, r1, wscale, q, qscale, qsum, m, y, ldy, 1, 1);
}
#endif

static void ternary_gemm_vnni(const uint8_t *w, size_t k, size_t r0, size_t r1, float wscale,
                              const int8_t *q, const float *qscale, const int32_t *qsum,
                              size_t m, float *y, size_t ldy)
{
	ternary_body(w, k, r0, r1, wscale, q, qscale, qsum, m, y, ldy, 1, 0);
}

static void ternary_gemm_bw(const uint8_t *w, size_t k, size_t r0, size_t r1, float wscale,
                            const int8_t *q, const float *qscale, const int32_t *qsum,
                            size_t m, float *y, size_t ldy)
{
	ternary_body(w, k, r0, r1, wscale, q, qscale, qsum, m, y, ldy, 0, 0);
}

/* ---- f16_gemm ---------------------------------------------------------------------- */

ALWAYS_INLINE float f16_tail(const uint16_t *w, const uint16_t *x, size_t j, size_t k)
{
	float acc = 0.0f;
	for (; j < k; j++)
		acc += bn_f16_to_f32(w[j]) * bn_f16_to_f32(x[j]);
	return acc;
}

/* NR (<= 4) weight rows x NA (<= 2) activation rows. Every dot product has the same
 * structure whatever NR and NA: two accumulators over the halves of each 32-element step,
 * added and reduced at the end, then the scalar tail. So a logit is the same bit for bit
 * however many activation rows share the call (batch invariance), while a weight row's f16
 * conversion serves NA activations. */
ALWAYS_INLINE void f16_tile(const uint16_t *w, size_t k, size_t r, size_t nr,
                            const uint16_t *x, size_t na, float *y, size_t ldy)
{
	__m512 acc[4][2][2];   /* [row][act][half] */
	for (size_t t = 0; t < 4; t++)
		for (size_t a = 0; a < 2; a++)
			acc[t][a][0] = acc[t][a][1] = _mm512_setzero_ps();
	size_t j = 0;
	for (; j + 32 <= k; j += 32) {
		__m512 x0[2], x1[2];
#pragma GCC unroll 2
		for (size_t a = 0; a < na; a++) {
			x0[a] = load_h16(x + a * k + j);
			x1[a] = load_h16(x + a * k + j + 16);
		}
#pragma GCC unroll 4
		for (size_t t = 0; t < nr; t++) {
			const uint16_t *wt = w + (r + t) * k + j;
			__m512 w0 = load_h16(wt), w1 = load_h16(wt + 16);
#pragma GCC unroll 2
			for (size_t a = 0; a < na; a++) {
				acc[t][a][0] = _mm512_fmadd_ps(w0, x0[a], acc[t][a][0]);
				acc[t][a][1] = _mm512_fmadd_ps(w1, x1[a], acc[t][a][1]);
			}
		}
	}
#pragma GCC unroll 4
	for (size_t t = 0; t < nr; t++)
#pragma GCC unroll 2
		for (size_t a = 0; a < na; a++)
			y[a * ldy + r + t] = hsum_ps(_mm512_add_ps(acc[t][a][0], acc[t][a][1])) +
			                     f16_tail(w + (r + t) * k, x + a * k, j, k);
}

/* 2 weight rows x 4 activation rows, the activations already in f32 (xf [4][k]): each
 * weight conversion serves four activations and each activation load two rows. The dot
 * products have f16_tile's structure exactly (two accumulators over the halves of each
 * 32-element step, added, reduced, then the scalar tail), so the logits are the same bits.
 * 16 accumulators and 4 converted weight vectors stay in registers. */
ALWAYS_INLINE void f16_tile2x4(const uint16_t *w, size_t k, size_t r, const float *xf,
                               const uint16_t *x, float *y, size_t ldy, const uint16_t *pf)
{
	__m512 z = _mm512_setzero_ps();
	__m512 a00 = z, a01 = z, a10 = z, a11 = z, a20 = z, a21 = z, a30 = z, a31 = z;   /* row 0 */
	__m512 b00 = z, b01 = z, b10 = z, b11 = z, b20 = z, b21 = z, b30 = z, b31 = z;   /* row 1 */
	const uint16_t *w0 = w + r * k, *w1 = w0 + k;
	const float *x0 = xf, *x1 = xf + k, *x2 = xf + 2 * k, *x3 = xf + 3 * k;
	size_t j = 0;
	for (; j + 32 <= k; j += 32) {
		if (pf) {   /* the next two rows (2k elements) at twice this pace */
			_mm_prefetch((const char *)(pf + 2 * j), _MM_HINT_T0);
			_mm_prefetch((const char *)(pf + 2 * j + 32), _MM_HINT_T0);
		}
		__m512 u0 = load_h16(w0 + j), u1 = load_h16(w0 + j + 16);
		__m512 v0 = load_h16(w1 + j), v1 = load_h16(w1 + j + 16);
		__m512 p, q;
#define F16_ACT(xa, A0, A1, B0, B1)                          \
		p = _mm512_loadu_ps((xa) + j);                        \
		q = _mm512_loadu_ps((xa) + j + 16);                   \
		A0 = _mm512_fmadd_ps(u0, p, A0);                      \
		A1 = _mm512_fmadd_ps(u1, q, A1);                      \
		B0 = _mm512_fmadd_ps(v0, p, B0);                      \
		B1 = _mm512_fmadd_ps(v1, q, B1);
		F16_ACT(x0, a00, a01, b00, b01)
		F16_ACT(x1, a10, a11, b10, b11)
		F16_ACT(x2, a20, a21, b20, b21)
		F16_ACT(x3, a30, a31, b30, b31)
#undef F16_ACT
	}
	const __m512 acc[2][4][2] = { { { a00, a01 }, { a10, a11 }, { a20, a21 }, { a30, a31 } },
	                              { { b00, b01 }, { b10, b11 }, { b20, b21 }, { b30, b31 } } };
	for (size_t t = 0; t < 2; t++)
		for (size_t a = 0; a < 4; a++)
			y[a * ldy + r + t] = hsum_ps(_mm512_add_ps(acc[t][a][0], acc[t][a][1])) +
			                     f16_tail(w + (r + t) * k, x + a * k, j, k);
}

#define F16_XF_MAX 8192   /* longest row whose four activations are converted up front */

/* x [n] f16 -> out [n] f32 with the conversion f16_tile applies to activations (a last
 * few elements portably: the tiles read only whole steps). Once per call, i.e. per head chunk. */
ALWAYS_INLINE void f16_to_f32_row(const uint16_t *x, size_t n, float *out)
{
	size_t e = 0;
	for (; e + 16 <= n; e += 16)
		_mm512_storeu_ps(out + e, load_h16(x + e));
	for (; e < n; e++)
		out[e] = bn_f16_to_f32(x[e]);
}

static void f16_gemm(const uint16_t *w, size_t k, size_t r0, size_t r1,
                     const uint16_t *x, size_t m, float *y, size_t ldy)
{
	size_t i0 = 0;
	if (m >= 4 && k <= F16_XF_MAX && r1 - r0 >= 2) {
		/* four activations at a time, converted once per call */
		float xf[4 * F16_XF_MAX];   /* [4][k] */
		size_t re = r0 + ((r1 - r0) & ~(size_t)1);
		for (; i0 + 4 <= m; i0 += 4) {
			f16_to_f32_row(x + i0 * k, 4 * k, xf);
			for (size_t r = r0; r < re; r += 2)
				f16_tile2x4(w, k, r, xf, x + i0 * k, y + i0 * ldy, ldy,
				            r + 4 <= r1 ? w + (r + 2) * k : NULL);
			if (re < r1)
				for (size_t i = i0; i < i0 + 4; i++)
					f16_tile(w, k, re, 1, x + i * k, 1, y + i * ldy, ldy);
		}
		if (i0 == m)
			return;
		x += i0 * k;
		y += i0 * ldy;
		m -= i0;
	}
	/* Four weight rows at a time against activation pairs: the rows stay in L1 across the
	 * pairs (weights stream from memory once). */
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
/* A score from its two 8-lane f64 chains: lanes added, reduced, then the scalar tail over d
 * in [hd16, hd) in order. q16, kt: [hd] f16 bits. */
ALWAYS_INLINE double score_finish(__m512d a0, __m512d a1, const uint16_t *q16,
                                  const uint16_t *kt, size_t hd16, size_t hd)
{
	double acc = hsum_pd(_mm512_add_pd(a0, a1));
	for (size_t d = hd16; d < hd; d++)
		acc += (double)(bn_f16_to_f32(q16[d]) * bn_f16_to_f32(kt[d]));
	return acc;
}

#define BN_ATTN_F16C
#include "attn-common.h"

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
		float s = (float)score_finish(a0, a1, q16, kt, hd16, hd) * scale;
		scratch[t] = s;
		if (s > mx)
			mx = s;
	}
	softmax_f16(scratch, n, mx);

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
 * order (the same two 8-lane chains over 16-element steps for the scores; t in order for
 * each output). */
ALWAYS_INLINE void attn_g(const uint16_t *q16, size_t gq, const uint16_t *k, const uint16_t *v,
                          size_t stride, size_t n, size_t hd, float scale, float *out,
                          float *scratch)
{
	size_t hd16 = hd & ~(size_t)15;
	double qd[ATT_G][ATT_HD_MAX];   /* [gq][hd16] queries in f64 */
	for (size_t i = 0; i < gq; i++)
		for (size_t d = 0; d < hd16; d += 16) {
			__m512 f = load_h16(q16 + i * hd + d);
			_mm512_storeu_pd(qd[i] + d, cvt_pd(lo_ps(f)));
			_mm512_storeu_pd(qd[i] + d + 8, cvt_pd(hi_ps(f)));
		}

	float mx[ATT_G];
	for (size_t i = 0; i < gq; i++)
		mx[i] = -INFINITY;
	for (size_t t = 0; t < n; t++) {
		const uint16_t *kt = k + t * stride;   /* [hd] */
		__m512d a0[ATT_G], a1[ATT_G];
#pragma GCC unroll 4
		for (size_t i = 0; i < gq; i++)
			a0[i] = a1[i] = _mm512_setzero_pd();
		for (size_t d = 0; d < hd16; d += 16) {
			__m512 kf = load_h16(kt + d);
			__m512d k0 = cvt_pd(lo_ps(kf)), k1 = cvt_pd(hi_ps(kf));
#pragma GCC unroll 4
			for (size_t i = 0; i < gq; i++) {
				a0[i] = _mm512_fmadd_pd(_mm512_loadu_pd(qd[i] + d), k0, a0[i]);
				a1[i] = _mm512_fmadd_pd(_mm512_loadu_pd(qd[i] + d + 8), k1, a1[i]);
			}
		}
#pragma GCC unroll 4
		for (size_t i = 0; i < gq; i++) {
			float sc = (float)score_finish(a0[i], a1[i], q16 + i * hd, kt, hd16, hd) * scale;
			scratch[i * n + t] = sc;
			if (sc > mx[i])
				mx[i] = sc;
		}
	}
	for (size_t i = 0; i < gq; i++)
		softmax_f16(scratch + i * n, n, mx[i]);

	/* out: 16 outputs x gq queries in registers over a block of positions, the sums carried
	 * in acc between blocks */
	double acc[ATT_G][ATT_HD_MAX];   /* [gq][hd16] */
	double pd[ATT_G][ATT_TB];        /* [gq][block] weights in f64 */
	for (size_t i = 0; i < gq; i++)
		for (size_t d = 0; d < hd16; d++)
			acc[i][d] = 0.0;
	for (size_t t0 = 0; t0 < n; t0 += ATT_TB) {
		size_t tn = n - t0 < ATT_TB ? n - t0 : ATT_TB;
		for (size_t i = 0; i < gq; i++)
			for (size_t u = 0; u < tn; u++)
				pd[i][u] = scratch[i * n + t0 + u];
		for (size_t d = 0; d < hd16; d += 16) {
			__m512d a0[ATT_G], a1[ATT_G];
#pragma GCC unroll 4
			for (size_t i = 0; i < gq; i++) {
				a0[i] = _mm512_loadu_pd(acc[i] + d);
				a1[i] = _mm512_loadu_pd(acc[i] + d + 8);
			}
			const uint16_t *vt = v + t0 * stride + d;
			for (size_t u = 0; u < tn; u++, vt += stride) {
				__m512 vf = load_h16(vt);
				__m512d v0 = cvt_pd(lo_ps(vf)), v1 = cvt_pd(hi_ps(vf));
#pragma GCC unroll 4
				for (size_t i = 0; i < gq; i++) {
					__m512d pb = _mm512_set1_pd(pd[i][u]);
					a0[i] = _mm512_fmadd_pd(pb, v0, a0[i]);
					a1[i] = _mm512_fmadd_pd(pb, v1, a1[i]);
				}
			}
#pragma GCC unroll 4
			for (size_t i = 0; i < gq; i++) {
				_mm512_storeu_pd(acc[i] + d, a0[i]);
				_mm512_storeu_pd(acc[i] + d + 8, a1[i]);
			}
		}
	}
	for (size_t i = 0; i < gq; i++) {
		for (size_t d = 0; d < hd16; d += 8)
			_mm256_storeu_ps(out + i * hd + d, cvt_ps(_mm512_loadu_pd(acc[i] + d)));
		for (size_t d = hd16; d < hd; d++)
			out[i * hd + d] = value_dot(scratch + i * n, v, stride, n, d);
	}
}

#include "attn-group.h"

/* ---- q8_gemm ----------------------------------------------------------------------- */

/* As in the AVX2 plugin: the contract fixes each logit's float steps (block order), so the
 * lanes run across weight rows, 16 at a time, one f32 lane each. A block's integer dot is
 * |w| (u8; -128 becomes 128) times x with w's sign (x is in [-127, 127], negating it never
 * wraps): maddubs + madd, or one vpdpbusd with VNNI. Two rows share a 512-bit register. */
#define Q8_ROWS 16

ALWAYS_INLINE __m512i q8_dot2(const uint8_t *lo, const uint8_t *hi, __m512i x, int vnni)
{
	__m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)lo)),
	                               _mm256_loadu_si256((const __m256i *)hi), 1);
	__m512i xs = _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), _mm512_setzero_si512(), x);
	__m512i aw = _mm512_abs_epi8(w);
	if (vnni) {
		__m512i acc = _mm512_setzero_si512();
		DPBUSD(acc, aw, xs);
		return acc;
	}
	return madd_epi16(_mm512_maddubs_epi16(aw, xs), _mm512_set1_epi16(1));
}

/* hadd_epi32 per 128-bit lane: [a0+a1, a2+a3, b0+b1, b2+b3]. */
ALWAYS_INLINE __m512i q8_hadd(__m512i a, __m512i b)
{
	__m512 fa = _mm512_castsi512_ps(a), fb = _mm512_castsi512_ps(b);
	__m512i e = _mm512_castps_si512(_mm512_shuffle_ps(fa, fb, _MM_SHUFFLE(2, 0, 2, 0)));
	__m512i o = _mm512_castps_si512(_mm512_shuffle_ps(fa, fb, _MM_SHUFFLE(3, 1, 3, 1)));
	return _mm512_add_epi32(e, o);
}

ALWAYS_INLINE uint16_t q8_d(const uint8_t *blk)   /* the block's f16 scale (unaligned) */
{
	return (uint16_t)(blk[0] | blk[1] << 8);
}

/* Sixteen weight rows (wr[t], rows may repeat at a range's end) against one activation row.
 * Register z (0..7) holds rows zrow[z] (low half) and zrow[z] + 4 (high half) with zrow =
 * 0, 1, 2, 3, 8, 9, 10, 11: then the hadd tree below leaves row t's total in lane t.
 * pf (or NULL): the next 16 rows, contiguous, swept into the cache meanwhile. */
ALWAYS_INLINE void q8_rows16(const uint8_t *const wr[Q8_ROWS], size_t nb, const int8_t *x,
                             const uint16_t *xd, float out[Q8_ROWS], const uint8_t *pf, int vnni)
{
	static const int zrow[8] = { 0, 1, 2, 3, 8, 9, 10, 11 };
	__m512 acc = _mm512_setzero_ps();
	for (size_t b = 0; b < nb; b++) {
		size_t off = b * BN_Q8_0_BLOCK_BYTES;
		if (pf) {
			const char *p = (const char *)pf + b * Q8_ROWS * BN_Q8_0_BLOCK_BYTES;
#pragma GCC unroll 9
			for (int l = 0; l < 9; l++)
				_mm_prefetch(p + 64 * l, _MM_HINT_T0);
		}
		__m512i xv = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(x + b * BN_Q8_0_BLOCK)));
		__m512i z[8];
#pragma GCC unroll 8
		for (int t = 0; t < 8; t++)
			z[t] = q8_dot2(wr[zrow[t]] + off + 2, wr[zrow[t] + 4] + off + 2, xv, vnni);
		__m512i h0 = q8_hadd(q8_hadd(z[0], z[1]), q8_hadd(z[2], z[3]));
		__m512i h1 = q8_hadd(q8_hadd(z[4], z[5]), q8_hadd(z[6], z[7]));
		/* 128-bit lanes of h0: rows 0-3 over elements 0-3, 0-3 over 4-7, 4-7 over 0-3, 4-7
		 * over 4-7; h1 the same for rows 8-15 */
		__m512i tot = _mm512_add_epi32(_mm512_shuffle_i32x4(h0, h1, _MM_SHUFFLE(2, 0, 2, 0)),
		                               _mm512_shuffle_i32x4(h0, h1, _MM_SHUFFLE(3, 1, 3, 1)));
		uint16_t dh[Q8_ROWS];   /* [16] f16 */
#pragma GCC unroll 16
		for (int t = 0; t < Q8_ROWS; t++)
			dh[t] = q8_d(wr[t] + off);
		/* |isum| < 2^24 converts exactly; dw * dx is exact; one rounding per mul and add */
		__m512 s = _mm512_mul_ps(load_h16(dh), _mm512_set1_ps(bn_f16_to_f32(xd[b])));
		acc = _mm512_add_ps(acc, _mm512_mul_ps(cvt_epi32_ps(tot), s));
	}
	_mm512_storeu_ps(out, acc);
}

ALWAYS_INLINE void q8_body(const uint8_t *w, size_t k, size_t r0, size_t r1, const int8_t *xq,
                           const uint16_t *xd, size_t m, float *y, size_t ldy, int vnni)
{
	size_t nb = k / BN_Q8_0_BLOCK, rb = nb * BN_Q8_0_BLOCK_BYTES;
	for (size_t r = r0; r < r1; r += Q8_ROWS) {
		size_t nr = r1 - r < Q8_ROWS ? r1 - r : Q8_ROWS;
		const uint8_t *wr[Q8_ROWS];   /* a short group repeats its last row */
		for (size_t t = 0; t < Q8_ROWS; t++)
			wr[t] = w + (r + (t < nr ? t : nr - 1)) * rb;
		const uint8_t *pf = r + 2 * Q8_ROWS <= r1 ? w + (r + Q8_ROWS) * rb : NULL;
		for (size_t i = 0; i < m; i++) {   /* the group's rows stay in L1/L2 meanwhile */
			float out[Q8_ROWS];   /* [16] */
			q8_rows16(wr, nb, xq + i * k, xd + i * nb, out, i ? NULL : pf, vnni);
			for (size_t t = 0; t < nr; t++)
				y[i * ldy + r + t] = out[t];
		}
	}
}

static void q8_gemm_bw(const uint8_t *w, size_t k, size_t r0, size_t r1, const int8_t *xq,
                       const uint16_t *xd, size_t m, float *y, size_t ldy)
{
	q8_body(w, k, r0, r1, xq, xd, m, y, ldy, 0);
}

static void q8_gemm_vnni(const uint8_t *w, size_t k, size_t r0, size_t r1, const int8_t *xq,
                         const uint16_t *xd, size_t m, float *y, size_t ldy)
{
	q8_body(w, k, r0, r1, xq, xd, m, y, ldy, 1);
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
	.attn_group = attn_group,
	.q8_gemm = q8_gemm_vnni,
};

#ifdef BN_HAVE_AMX
static const struct bn_kernel_ops avx512_amx_ops = {
	.size = sizeof(struct bn_kernel_ops),
	.minor = BN_KERNEL_ABI_MINOR,
	.variant = "avx512-vnni-amx",
	.quantize_i8 = quantize_i8,
	.ternary_gemm = ternary_gemm_amx,
	.f16_gemm = f16_gemm,
	.rmsnorm = rmsnorm,
	.attn_head = attn_head,
	.attn_group = attn_group,
	.q8_gemm = q8_gemm_vnni,
};
#endif

static const struct bn_kernel_ops avx512_ops = {
	.size = sizeof(struct bn_kernel_ops),
	.minor = BN_KERNEL_ABI_MINOR,
	.variant = "avx512",
	.quantize_i8 = quantize_i8,
	.ternary_gemm = ternary_gemm_bw,
	.f16_gemm = f16_gemm,
	.rmsnorm = rmsnorm,
	.attn_head = attn_head,
	.attn_group = attn_group,
	.q8_gemm = q8_gemm_bw,
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
	if (!(cpu_features & BN_CPU_AVX512VNNI))
		return &avx512_ops;
#ifdef BN_HAVE_AMX
	/* the AMX variant does its edge rows and activations with vpdpbusd: it needs VNNI too
	 * (every AMX CPU has it) */
	if ((cpu_features & BN_CPU_AMXINT8) && amx_permitted())
		return &avx512_amx_ops;
#endif
	return &avx512_vnni_ops;
}
