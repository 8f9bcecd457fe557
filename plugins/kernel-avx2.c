/* AVX2 + FMA + F16C kernel plugin; variant "avx2-vnni" (chosen at open time on CPUs with
 * AVX-VNNI) does the ternary dots with VEX vpdpbusd. Every op reproduces
 * plugins/kernel-scalar.c: integer results and the ternary epilogue bit for bit, rmsnorm and
 * attention bit for bit (same double accumulations), f16_gemm within f32 reordering error,
 * q8_gemm bit for bit (the contract fixes its float order).
 * Compiled with $(AVX2_CFLAGS) and -ffp-contract=off: every FMA below is written out. */
#include <immintrin.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "bitnet/kernel.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* ---- quantize_i8 ------------------------------------------------------------------- */

static void quantize_i8(const float *x, size_t n, int8_t *q, float *scale, int32_t *sum)
{
	const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
	__m256 m0 = _mm256_setzero_ps(), m1 = m0, m2 = m0, m3 = m0;
	size_t i = 0;
	/* max is order free; max_ps(a, acc) keeps acc when a is NaN, like the scalar `>` */
	for (; i + 32 <= n; i += 32) {
		m0 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i), absmask), m0);
		m1 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i + 8), absmask), m1);
		m2 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i + 16), absmask), m2);
		m3 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i + 24), absmask), m3);
	}
	m0 = _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3));
	float lanes[8];   /* [8] f32 */
	_mm256_storeu_ps(lanes, m0);
	float amax = 0.0f;
	for (int l = 0; l < 8; l++)
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

	const __m256 vs = _mm256_set1_ps(s);
	const __m256 hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-128.0f);
	const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
	__m256i acc = _mm256_setzero_si256();
	i = 0;
	for (; i + 32 <= n; i += 32) {
		__m256i v[4];
		for (int u = 0; u < 4; u++) {
			/* x*s is one rounded product, then round half to even, as rintf */
			__m256 f = _mm256_mul_ps(_mm256_loadu_ps(x + i + 8 * u), vs);
			f = _mm256_round_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
			f = _mm256_max_ps(_mm256_min_ps(f, hi), lo);
			v[u] = _mm256_cvtps_epi32(f);   /* integral already: exact */
			acc = _mm256_add_epi32(acc, v[u]);
		}
		/* values are in [-128, 127], so the saturating packs are plain narrowing */
		__m256i w16a = _mm256_packs_epi32(v[0], v[1]);
		__m256i w16b = _mm256_packs_epi32(v[2], v[3]);
		__m256i b8 = _mm256_packs_epi16(w16a, w16b);
		_mm256_storeu_si256((__m256i *)(q + i), _mm256_permutevar8x32_epi32(b8, perm));
	}
	int32_t al[8];   /* [8] int32 */
	_mm256_storeu_si256((__m256i *)al, acc);
	int32_t total = al[0] + al[1] + al[2] + al[3] + al[4] + al[5] + al[6] + al[7];
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

/* Decode by nibble lookup: each nibble holds two 2-bit fields, and one pshufb per field
 * maps the nibble to that field's code with the unused code 3 turned into code 1 (weight 0,
 * as the scalar plugin decodes it): lut_lo[n] = fix(n & 3), lut_hi[n] = fix(n >> 2).
 * c[0] pairs with q[b..b+31], c[1] with q[b+32..], c[2] with q[b+64..], c[3] with q[b+96..].
 * decode_block and the asm loops below (rows4_blocks, row_acts16) share these tables. */
struct nib {
	__m256i lut_lo, lut_hi, m4;
};

ALWAYS_INLINE struct nib nib_init(void)
{
	struct nib d;
	d.lut_lo = _mm256_setr_epi8(0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1,
	                            0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1);
	d.lut_hi = _mm256_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 1, 1, 1, 1,
	                            0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 1, 1, 1, 1);
	d.m4 = _mm256_set1_epi8(0x0f);
	return d;
}

ALWAYS_INLINE void decode_block(const uint8_t *blk, __m256i c[4])
{
	const struct nib d = nib_init();
	__m256i v = _mm256_loadu_si256((const __m256i *)blk);
	__m256i lo = _mm256_and_si256(v, d.m4);
	__m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), d.m4);
	c[0] = _mm256_shuffle_epi8(d.lut_hi, hi);
	c[1] = _mm256_shuffle_epi8(d.lut_lo, hi);
	c[2] = _mm256_shuffle_epi8(d.lut_hi, lo);
	c[3] = _mm256_shuffle_epi8(d.lut_lo, lo);
}

/* Without VNNI a block's code*q goes into 16 int16 lanes. Overflow bound: maddubs multiplies
 * u8 codes (0..2) by s8 q (-128..127) and adds adjacent pairs, so each int16 lane is in
 * [-512, 508] and never saturates; the four fields of a block add [-2048, 2032]. Callers
 * add at most BLOCKS16 = 16 blocks in int16 ([-32768, 32512]) before widening with
 * madd(ones) into int32 lanes. The int32 row total is bounded by 2*128*k, below 2^31 for
 * every k < 2^23, far beyond any model row (the scalar reference has the same int32 bound). */
#define BLOCKS16 16

ALWAYS_INLINE __m256i widen_add(__m256i acc32, __m256i s16)
{
	return _mm256_add_epi32(acc32, _mm256_madd_epi16(s16, _mm256_set1_epi16(1)));
}

ALWAYS_INLINE int32_t hsum_epi32(__m256i v)
{
	__m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
	return _mm_cvtsi128_si32(s);
}

/* The scalar plugin's epilogue, same operations in the same order. */
ALWAYS_INLINE float epilogue(int32_t acc, int32_t qsum, float qscale, float wscale)
{
	return ((float)(acc - qsum) / qscale) * wscale;
}

/* epilogue's operations on four lanes at once (one divps for four divss): the same bits. */
ALWAYS_INLINE __m128 epilogue4(__m128i acc, __m128i qsum, __m128 qscale, float wscale)
{
	__m128 f = _mm_cvtepi32_ps(_mm_sub_epi32(acc, qsum));
	return _mm_mul_ps(_mm_div_ps(f, qscale), _mm_set1_ps(wscale));
}

/* AVX-VNNI vpdpbusd (VEX form): acc += four u8 codes x s8 q per int32 lane, exact. Written
 * as asm so that the plugin needs no -mavxvnni: it only runs when the CPU has the feature
 * (chosen at open time) and the build still runs on AVX2-only CPUs. */
ALWAYS_INLINE __m256i dpbusd_vex(__m256i acc, __m256i c, __m256i q)
{
	__asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(c), "xm"(q));
	return acc;
}

/* One block's code*q added to int32 lanes with vpdpbusd (no int16 stage), over two
 * accumulators: fields 0 and 1 into a, 2 and 3 into *b. */
ALWAYS_INLINE __m256i block_dot_vnni2(__m256i a, __m256i *b, const __m256i c[4],
                                      const int8_t *qb)
{
	a = dpbusd_vex(a, c[0], _mm256_loadu_si256((const __m256i *)qb));
	*b = dpbusd_vex(*b, c[2], _mm256_loadu_si256((const __m256i *)(qb + 64)));
	a = dpbusd_vex(a, c[1], _mm256_loadu_si256((const __m256i *)(qb + 32)));
	*b = dpbusd_vex(*b, c[3], _mm256_loadu_si256((const __m256i *)(qb + 96)));
	return a;
}

/* m == 1 without VNNI: four weight rows (stride rb) against one activation row over nb
 * (1..BLOCKS16) blocks in int16 lanes, s[t] += code*q of row t over the blocks. Each block
 * is decoded as decode_block does and multiplied with q straight from memory: 15 vector
 * operations per block and row. asm because GCC 12 kept two of the four accumulators
 * on the stack (a store and a reload per block on their chains) and reloaded a weight
 * vector through memory: the loop ran at about half the rate of these instructions.
 * dopf: fetch 2 lines per block of pf, which walks the next group of rows (4 rb bytes). */
#define ROWS4_ROW(addr, s)                                                                    \
	"vmovdqu " addr ", %[v]\n\t"                                                              \
	"vpsrlw $4, %[v], %[h]\n\t"                                                               \
	"vpand %[m4], %[v], %[v]\n\t"                                                             \
	"vpand %[m4], %[h], %[h]\n\t"                                                             \
	"vpshufb %[h], %[lut_hi], %[c]\n\t"                                                       \
	"vpmaddubsw (%[q]), %[c], %[c]\n\t"                                                       \
	"vpaddw %[c], " s ", " s "\n\t"                                                           \
	"vpshufb %[h], %[lut_lo], %[h]\n\t"                                                       \
	"vpmaddubsw 32(%[q]), %[h], %[h]\n\t"                                                     \
	"vpaddw %[h], " s ", " s "\n\t"                                                           \
	"vpshufb %[v], %[lut_hi], %[c]\n\t"                                                       \
	"vpmaddubsw 64(%[q]), %[c], %[c]\n\t"                                                     \
	"vpaddw %[c], " s ", " s "\n\t"                                                           \
	"vpshufb %[v], %[lut_lo], %[v]\n\t"                                                       \
	"vpmaddubsw 96(%[q]), %[v], %[v]\n\t"                                                     \
	"vpaddw %[v], " s ", " s "\n\t"
ALWAYS_INLINE void rows4_blocks(const uint8_t *w, size_t rb, size_t nb, const int8_t *q,
                                const uint8_t *pf, int dopf, __m256i s[4])
{
	const struct nib d = nib_init();
	__m256i s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3], v, h, c;
	const uint8_t *end = w + nb * BN_I2S_BLOCK_BYTES;
	size_t rb3 = 3 * rb;
	__asm__("1:\n\t"
	        ".if %c[dopf]\n\t"
	        "prefetcht0 (%[pf])\n\t"
	        "prefetcht0 64(%[pf])\n\t"
	        "sub $-128, %[pf]\n\t"
	        ".endif\n\t"
	        ROWS4_ROW("(%[w])", "%[s0]")
	        ROWS4_ROW("(%[w],%[rb])", "%[s1]")
	        ROWS4_ROW("(%[w],%[rb],2)", "%[s2]")
	        ROWS4_ROW("(%[w],%[rb3])", "%[s3]")
	        "add $32, %[w]\n\t"
	        "sub $-128, %[q]\n\t"
	        "cmp %[end], %[w]\n\t"
	        "jb 1b"
	        : [s0] "+x"(s0), [s1] "+x"(s1), [s2] "+x"(s2), [s3] "+x"(s3), [v] "=&x"(v),
	          [h] "=&x"(h), [c] "=&x"(c), [w] "+r"(w), [q] "+r"(q), [pf] "+r"(pf)
	        : [rb] "r"(rb), [rb3] "r"(rb3), [end] "r"(end), [m4] "x"(d.m4),
	          [lut_lo] "x"(d.lut_lo), [lut_hi] "x"(d.lut_hi), [dopf] "i"(dopf)
	        : "cc", "memory");
	s[0] = s0;
	s[1] = s1;
	s[2] = s2;
	s[3] = s3;
}
#undef ROWS4_ROW

/* m == 1 (decode): four weight rows per pass share the q loads and give four independent
 * accumulation chains; the weight stream is the bottleneck, so the next group of rows is
 * prefetched while this one is decoded (ahead: its offset from row r, 0 at the range's end:
 * the rows after r1 may not exist). Without VNNI, rows4_blocks in int16 stages of BLOCKS16
 * blocks; with VNNI each block is 4 vpdpbusd on two chains per row. */
ALWAYS_INLINE size_t gemv_ahead(size_t r, size_t r1, size_t rb)
{
	return r + 8 <= r1 ? 4 * rb : 0;
}

ALWAYS_INLINE void gemv_rows4(const uint8_t *w, size_t k, size_t r, size_t r1, const int8_t *q,
                              int32_t out[4])
{
	size_t rb = k / 4, nblk = rb / BN_I2S_BLOCK_BYTES, ahead = gemv_ahead(r, r1, rb);
	const uint8_t *w0 = w + r * rb;
	/* four named accumulators: as an array GCC kept them in memory (5 % slower in L2) */
	__m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
	for (size_t b = 0; b < nblk; b += BLOCKS16) {
		size_t nb = nblk - b < BLOCKS16 ? nblk - b : BLOCKS16;
		size_t o = b * BN_I2S_BLOCK_BYTES;
		__m256i s[4] = { _mm256_setzero_si256(), _mm256_setzero_si256(),
		                 _mm256_setzero_si256(), _mm256_setzero_si256() };
		if (ahead)
			rows4_blocks(w0 + o, rb, nb, q + 4 * o, w0 + ahead + 4 * o, 1, s);
		else
			rows4_blocks(w0 + o, rb, nb, q + 4 * o, w0, 0, s);
		a0 = widen_add(a0, s[0]);
		a1 = widen_add(a1, s[1]);
		a2 = widen_add(a2, s[2]);
		a3 = widen_add(a3, s[3]);
	}
	out[0] = hsum_epi32(a0);
	out[1] = hsum_epi32(a1);
	out[2] = hsum_epi32(a2);
	out[3] = hsum_epi32(a3);
}

ALWAYS_INLINE void gemv_rows4_vnni(const uint8_t *w, size_t k, size_t r, size_t r1,
                                   const int8_t *q, int32_t out[4])
{
	size_t rb = k / 4, ahead = gemv_ahead(r, r1, rb);
	const uint8_t *w0 = w + r * rb, *w1 = w0 + rb, *w2 = w1 + rb, *w3 = w2 + rb;
	__m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
	__m256i b0 = a0, b1 = a0, b2 = a0, b3 = a0;   /* second chains */
	for (size_t o = 0; o < rb; o += BN_I2S_BLOCK_BYTES) {
		const int8_t *qb = q + o * 4;
		__m256i c[4];
		if (ahead) {
			_mm_prefetch((const char *)(w0 + ahead + 4 * o), _MM_HINT_T0);
			_mm_prefetch((const char *)(w0 + ahead + 4 * o + 64), _MM_HINT_T0);
		}
		/* two chains per row (fields 0-1 and 2-3): vpdpbusd's latency would otherwise
		 * bound a row's four dependent dots per block */
		decode_block(w0 + o, c);
		a0 = block_dot_vnni2(a0, &b0, c, qb);
		decode_block(w1 + o, c);
		a1 = block_dot_vnni2(a1, &b1, c, qb);
		decode_block(w2 + o, c);
		a2 = block_dot_vnni2(a2, &b2, c, qb);
		decode_block(w3 + o, c);
		a3 = block_dot_vnni2(a3, &b3, c, qb);
	}
	out[0] = hsum_epi32(_mm256_add_epi32(a0, b0));
	out[1] = hsum_epi32(_mm256_add_epi32(a1, b1));
	out[2] = hsum_epi32(_mm256_add_epi32(a2, b2));
	out[3] = hsum_epi32(_mm256_add_epi32(a3, b3));
}

/* One weight row against na (<= 4) activation rows over nb (1..BLOCKS16) blocks, in int16
 * lanes: s[a] += sum over the blocks of code*q. Each block is decoded in registers as
 * decode_block does and multiplied by the activations straight from memory: 7 + 8 * na
 * vector operations per block. asm because GCC 12 spilled and re-decoded here (the int16
 * stage in C "changed nothing"), at about 1.7x these instructions. */
/* bytes ahead of a row's block that row_acts16 fetches: past the next row at k = 2560.
 * Without it a fifth of the four-sequence decode's samples sat on the weight load (perf). */
#define ROW_PF "1024"
#define ROW_ACT(a, qa)                                                                        \
	".if %c[na] > " #a "\n\t"                                                                 \
	"vpmaddubsw " qa ", %[c0], %[t]\n\t"                                                      \
	"vpaddw %[t], %[s" #a "], %[s" #a "]\n\t"                                                 \
	".endif\n\t"
#define ROW_FIELD(f, off)                                                                     \
	ROW_ACT(0, #off "(%[q])") ROW_ACT(1, #off "(%[q],%[k])")                                  \
	ROW_ACT(2, #off "(%[q],%[k],2)") ROW_ACT(3, #off "(%[q],%[k3])")
ALWAYS_INLINE void row_acts16(const uint8_t *wr, size_t nb, const int8_t *q, size_t k,
                              size_t na, __m256i s[4])
{
	const struct nib d = nib_init();
	__m256i s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3], c0, c1, c2, c3, t;
	const uint8_t *end = wr + nb * BN_I2S_BLOCK_BYTES;
	size_t k3 = 3 * k;
	/* c0..c3 pair with q[0..31], [32..63], [64..95], [96..127] of the block (decode_block);
	 * each field is moved into c0 in turn so that ROW_ACT names one register */
	__asm__("1:\n\t"
	        "prefetcht0 " ROW_PF "(%[w])\n\t"
	        "vmovdqu (%[w]), %[c3]\n\t"
	        "vpsrlw $4, %[c3], %[c1]\n\t"
	        "vpand %[m4], %[c3], %[c3]\n\t"
	        "vpand %[m4], %[c1], %[c1]\n\t"
	        "vpshufb %[c1], %[lut_hi], %[c0]\n\t"
	        "vpshufb %[c1], %[lut_lo], %[c1]\n\t"
	        "vpshufb %[c3], %[lut_hi], %[c2]\n\t"
	        "vpshufb %[c3], %[lut_lo], %[c3]\n\t"
	        ROW_FIELD(0, 0)
	        "vmovdqa %[c1], %[c0]\n\t"
	        ROW_FIELD(1, 32)
	        "vmovdqa %[c2], %[c0]\n\t"
	        ROW_FIELD(2, 64)
	        "vmovdqa %[c3], %[c0]\n\t"
	        ROW_FIELD(3, 96)
	        "add $32, %[w]\n\t"
	        "add $128, %[q]\n\t"
	        "cmp %[end], %[w]\n\t"
	        "jb 1b"
	        : [s0] "+x"(s0), [s1] "+x"(s1), [s2] "+x"(s2), [s3] "+x"(s3), [c0] "=&x"(c0),
	          [c1] "=&x"(c1), [c2] "=&x"(c2), [c3] "=&x"(c3), [t] "=&x"(t), [w] "+r"(wr),
	          [q] "+r"(q)
	        : [k] "r"(k), [k3] "r"(k3), [end] "r"(end), [m4] "x"(d.m4), [lut_lo] "x"(d.lut_lo),
	          [lut_hi] "x"(d.lut_hi), [na] "i"(na)
	        : "cc", "memory");
	s[0] = s0;
	s[1] = s1;
	s[2] = s2;
	s[3] = s3;
}
#undef ROW_FIELD
#undef ROW_ACT

/* One weight row against na (<= 4) activation rows: m < GEMM_MIN_M and the m == 1 tail. */
ALWAYS_INLINE void gemm_row_acts(const uint8_t *wr, size_t k, const int8_t *q, size_t na,
                                 int32_t *out)
{
	__m256i acc[4] = { _mm256_setzero_si256(), _mm256_setzero_si256(),
	                   _mm256_setzero_si256(), _mm256_setzero_si256() };
	size_t nblk = k / BN_I2S_BLOCK;
	for (size_t b = 0; b < nblk; b += BLOCKS16) {
		size_t nb = nblk - b < BLOCKS16 ? nblk - b : BLOCKS16;
		__m256i s16[4] = { _mm256_setzero_si256(), _mm256_setzero_si256(),
		                   _mm256_setzero_si256(), _mm256_setzero_si256() };
		row_acts16(wr + b * BN_I2S_BLOCK_BYTES, nb, q + b * BN_I2S_BLOCK, k, na, s16);
#pragma GCC unroll 4
		for (size_t a = 0; a < na; a++)
			acc[a] = widen_add(acc[a], s16[a]);
	}
#pragma GCC unroll 4
	for (size_t a = 0; a < na; a++)
		out[a] = hsum_epi32(acc[a]);
}

/* AVX-VNNI, two weight rows against na (<= 4) activation rows: each 32-element q load
 * serves both rows, and a field is one vpdpbusd per (row, activation) instead of maddubs,
 * two adds and a widening. Fields are decoded one at a time (shift and mask, after the
 * code-3 fix on the whole block) so that the 8 accumulators, 2 rows' blocks, 2 fields, q
 * and the mask fit the 16 registers. pf (or NULL): later rows, fetched meanwhile. */
ALWAYS_INLINE void gemm_rows2_vnni_body(const uint8_t *w0, size_t k, const int8_t *q, size_t na,
                                        int32_t out[2][4], const uint8_t *pf)
{
	const __m256i m3 = _mm256_set1_epi8(3);
	__m256i z = _mm256_setzero_si256();
	__m256i s00 = z, s01 = z, s02 = z, s03 = z, s10 = z, s11 = z, s12 = z, s13 = z;
	size_t rb = k / 4;
	const uint8_t *w1 = w0 + rb;
	const int8_t *q0 = q, *q1 = q + k, *q2 = q + 2 * k, *q3 = q + 3 * k;
	for (size_t o = 0; o < rb; o += BN_I2S_BLOCK_BYTES) {
		if (pf)
			_mm_prefetch((const char *)(pf + 2 * o), _MM_HINT_T0);
		__m256i v0 = _mm256_loadu_si256((const __m256i *)(w0 + o));
		__m256i v1 = _mm256_loadu_si256((const __m256i *)(w1 + o));
		const __m256i aa = _mm256_set1_epi8((char)0xaa);   /* code 3 -> 1: see decode_block */
		v0 = _mm256_andnot_si256(_mm256_and_si256(_mm256_add_epi16(v0, v0), aa), v0);
		v1 = _mm256_andnot_si256(_mm256_and_si256(_mm256_add_epi16(v1, v1), aa), v1);
#define R2F(sh, off)                                                                        \
		do {                                                                                \
			__m256i c0 = _mm256_and_si256(_mm256_srli_epi16(v0, sh), m3);                   \
			__m256i c1 = _mm256_and_si256(_mm256_srli_epi16(v1, sh), m3);                   \
			__m256i qa = _mm256_loadu_si256((const __m256i *)(q0 + 4 * o + (off)));         \
			s00 = dpbusd_vex(s00, c0, qa);                                                  \
			s10 = dpbusd_vex(s10, c1, qa);                                                  \
			qa = _mm256_loadu_si256((const __m256i *)(q1 + 4 * o + (off)));                 \
			s01 = dpbusd_vex(s01, c0, qa);                                                  \
			s11 = dpbusd_vex(s11, c1, qa);                                                  \
			if (na > 2) {                                                                   \
				qa = _mm256_loadu_si256((const __m256i *)(q2 + 4 * o + (off)));             \
				s02 = dpbusd_vex(s02, c0, qa);                                              \
				s12 = dpbusd_vex(s12, c1, qa);                                              \
			}                                                                               \
			if (na > 3) {                                                                   \
				qa = _mm256_loadu_si256((const __m256i *)(q3 + 4 * o + (off)));             \
				s03 = dpbusd_vex(s03, c0, qa);                                              \
				s13 = dpbusd_vex(s13, c1, qa);                                              \
			}                                                                               \
		} while (0)
		R2F(6, 0);
		R2F(4, 32);
		R2F(2, 64);
		R2F(0, 96);
#undef R2F
	}
	out[0][0] = hsum_epi32(s00);
	out[0][1] = hsum_epi32(s01);
	out[0][2] = hsum_epi32(s02);
	out[0][3] = hsum_epi32(s03);
	out[1][0] = hsum_epi32(s10);
	out[1][1] = hsum_epi32(s11);
	out[1][2] = hsum_epi32(s12);
	out[1][3] = hsum_epi32(s13);
}

/* One function per activation count (constant counts keep the accumulators in registers). */
#define ROWS2_FN(n)                                                                       \
	static __attribute__((noinline)) void gemm_rows2_vnni##n(                             \
		const uint8_t *w0, size_t k, const int8_t *q, int32_t out[2][4], const uint8_t *pf) \
	{                                                                                     \
		gemm_rows2_vnni_body(w0, k, q, n, out, pf);                                       \
	}
ROWS2_FN(2)
ROWS2_FN(3)
ROWS2_FN(4)
#undef ROWS2_FN

/* m > 1 (prefill): a real GEMM. A panel of four weight rows is decoded once into a small
 * buffer of codes (one byte per weight, element order, 0..2) that stays in L1 while every
 * pair of activation rows passes over it; the 4 x 2 register tile then does one 32-element
 * dot per (row, activation) pair and load: 8 accumulators, 6 loads per 8 dots. With
 * AVX-VNNI the dot is one vpdpbusd into int32 lanes; without, maddubs into int16 lanes
 * (each in [-512, 508], see BLOCKS16) summed over at most GEMM_SEG elements = 64 steps
 * ([-32768, 32512], exactly int16's range at the low end; 32 steps flushed twice as often
 * for ~3 % more time) before madd(ones) widens them into int32. Integer sums are exact in
 * any order, so the tiling changes no result; the epilogue is the scalar one's operations
 * per element, four lanes at a time (one divps for four divss: ~8 % of the GEMM). */
#define GEMM_NR 4          /* weight rows per panel */
#define GEMM_NA 2          /* activation rows per tile */
#define GEMM_KC 4096       /* k elements per decoded panel chunk: [4][4096] codes = 16 KB */
#define GEMM_MB 256        /* activation rows per pass (bounds the partial-sum array) */
#define GEMM_SEG 2048      /* elements summed in int16 lanes before widening (no VNNI) */
#define GEMM_MIN_M 8       /* fewer activation rows take the register-decode path below */

/* codes of rows [r, r + nr), elements [k0, k0 + kc) -> buf [nr][kc] */
ALWAYS_INLINE void decode_panel(const uint8_t *w, size_t k, size_t r, size_t nr, size_t k0,
                                size_t kc, uint8_t *buf)
{
	size_t rb = k / 4;
	for (size_t t = 0; t < nr; t++) {
		const uint8_t *wr = w + (r + t) * rb + k0 / 4;
		uint8_t *bt = buf + t * kc;
		for (size_t o = 0; o < kc / 4; o += BN_I2S_BLOCK_BYTES) {
			__m256i c[4];
			decode_block(wr + o, c);
			for (int f = 0; f < 4; f++)
				_mm256_storeu_si256((__m256i *)(bt + 4 * o + 32 * f), c[f]);
		}
	}
}

/* Four int32 vectors -> their four horizontal sums, in order. */
ALWAYS_INLINE __m128i reduce4(__m256i a, __m256i b, __m256i c, __m256i d)
{
	__m256i s = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
	return _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
}

/* acc[a][t] lane sums added to part[a * GEMM_NR + t]; int16 lanes widen by madd(ones). */
ALWAYS_INLINE void gemm_flush(__m256i acc[GEMM_NA][GEMM_NR], size_t nr, size_t na, int32_t *part)
{
	const __m256i ones = _mm256_set1_epi16(1);
	if (nr == GEMM_NR) {
#pragma GCC unroll 2
		for (size_t a = 0; a < na; a++) {
			__m128i *p = (__m128i *)(part + a * GEMM_NR);
			__m128i s = reduce4(_mm256_madd_epi16(acc[a][0], ones), _mm256_madd_epi16(acc[a][1], ones),
			                    _mm256_madd_epi16(acc[a][2], ones), _mm256_madd_epi16(acc[a][3], ones));
			_mm_storeu_si128(p, _mm_add_epi32(_mm_loadu_si128(p), s));
		}
		return;
	}
	for (size_t a = 0; a < na; a++)
		for (size_t t = 0; t < nr; t++)
			part[a * GEMM_NR + t] += hsum_epi32(_mm256_madd_epi16(acc[a][t], ones));
}

/* The full 4 x 2 tile without VNNI, in int16 lanes over one segment: 4 decoded code rows
 * (stride kc) x 2 activation rows (stride k), n elements (n > 0, a multiple of 32):
 * s[a * GEMM_NR + t] += maddubs(codes of row t, q of activation a). Written as asm because
 * GCC 12 does not keep this tile in registers: it reloads the codes for the second
 * activation and spills an accumulator, ~1.5x the instructions of the loop below. */
ALWAYS_INLINE void tile42_seg(const uint8_t *b, size_t kc, const int8_t *q, size_t k, size_t n,
                              __m256i s[GEMM_NA][GEMM_NR])
{
	__m256i s0 = s[0][0], s1 = s[0][1], s2 = s[0][2], s3 = s[0][3], s4 = s[1][0], s5 = s[1][1],
	        s6 = s[1][2], s7 = s[1][3], w0, w1, w2, w3, x, t;
	const uint8_t *end = b + n;
	size_t kc3 = 3 * kc;
	__asm__("1:\n\t"
	        "vmovdqu (%[b]), %[w0]\n\t"
	        "vmovdqu (%[b],%[kc]), %[w1]\n\t"
	        "vmovdqu (%[b],%[kc],2), %[w2]\n\t"
	        "vmovdqu (%[b],%[kc3]), %[w3]\n\t"
	        "vmovdqu (%[q]), %[x]\n\t"
	        "vpmaddubsw %[x], %[w0], %[t]\n\t"
	        "vpaddw %[t], %[s0], %[s0]\n\t"
	        "vpmaddubsw %[x], %[w1], %[t]\n\t"
	        "vpaddw %[t], %[s1], %[s1]\n\t"
	        "vpmaddubsw %[x], %[w2], %[t]\n\t"
	        "vpaddw %[t], %[s2], %[s2]\n\t"
	        "vpmaddubsw %[x], %[w3], %[t]\n\t"
	        "vpaddw %[t], %[s3], %[s3]\n\t"
	        "vmovdqu (%[q],%[k]), %[x]\n\t"
	        "vpmaddubsw %[x], %[w0], %[w0]\n\t"
	        "vpaddw %[w0], %[s4], %[s4]\n\t"
	        "vpmaddubsw %[x], %[w1], %[w1]\n\t"
	        "vpaddw %[w1], %[s5], %[s5]\n\t"
	        "vpmaddubsw %[x], %[w2], %[w2]\n\t"
	        "vpaddw %[w2], %[s6], %[s6]\n\t"
	        "vpmaddubsw %[x], %[w3], %[w3]\n\t"
	        "vpaddw %[w3], %[s7], %[s7]\n\t"
	        "add $32, %[b]\n\t"
	        "add $32, %[q]\n\t"
	        "cmp %[end], %[b]\n\t"
	        "jb 1b"
	        : [s0] "+x"(s0), [s1] "+x"(s1), [s2] "+x"(s2), [s3] "+x"(s3), [s4] "+x"(s4),
	          [s5] "+x"(s5), [s6] "+x"(s6), [s7] "+x"(s7), [w0] "=&x"(w0), [w1] "=&x"(w1),
	          [w2] "=&x"(w2), [w3] "=&x"(w3), [x] "=&x"(x), [t] "=&x"(t), [b] "+r"(b),
	          [q] "+r"(q)
	        : [kc] "r"(kc), [kc3] "r"(kc3), [k] "r"(k), [end] "r"(end)
	        : "cc", "memory");
	s[0][0] = s0; s[0][1] = s1; s[0][2] = s2; s[0][3] = s3;
	s[1][0] = s4; s[1][1] = s5; s[1][2] = s6; s[1][3] = s7;
}

/* nr weight rows of buf ([nr][kc] codes) x na activation rows of q ([na] rows, stride k)
 * over kc elements, sums added to part ([na][GEMM_NR] int32). */
ALWAYS_INLINE void gemm_tile(const uint8_t *buf, size_t kc, size_t nr, const int8_t *q,
                             size_t k, size_t na, int32_t *part, int vnni)
{
	__m256i acc[GEMM_NA][GEMM_NR];
#pragma GCC unroll 2
	for (size_t a = 0; a < GEMM_NA; a++)
#pragma GCC unroll 4
		for (size_t t = 0; t < GEMM_NR; t++)
			acc[a][t] = _mm256_setzero_si256();
	for (size_t s0 = 0; s0 < kc; s0 += GEMM_SEG) {
		size_t s1 = kc - s0 < GEMM_SEG ? kc : s0 + GEMM_SEG;
		__m256i s16[GEMM_NA][GEMM_NR];   /* int16 stage (no VNNI) */
#pragma GCC unroll 2
		for (size_t a = 0; a < GEMM_NA; a++)
#pragma GCC unroll 4
			for (size_t t = 0; t < GEMM_NR; t++)
				s16[a][t] = _mm256_setzero_si256();
		if (!vnni && nr == GEMM_NR && na == GEMM_NA) {
			tile42_seg(buf + s0, kc, q + s0, k, s1 - s0, s16);
			gemm_flush(s16, nr, na, part);
			continue;
		}
		for (size_t j = s0; j < s1; j += 32) {
			__m256i c[GEMM_NR];
#pragma GCC unroll 4
			for (size_t t = 0; t < GEMM_NR; t++)   /* rows past nr are never multiplied */
				c[t] = t < nr ? _mm256_loadu_si256((const __m256i *)(buf + t * kc + j))
				              : _mm256_setzero_si256();
#pragma GCC unroll 2
			for (size_t a = 0; a < na; a++) {
				__m256i qa = _mm256_loadu_si256((const __m256i *)(q + a * k + j));
#pragma GCC unroll 4
				for (size_t t = 0; t < nr; t++) {
					if (vnni)
						acc[a][t] = dpbusd_vex(acc[a][t], c[t], qa);
					else
						s16[a][t] = _mm256_add_epi16(_mm256_maddubs_epi16(c[t], qa), s16[a][t]);
				}
			}
		}
		/* widened straight into part: int32 accumulators held across the segments would
		 * not fit the 16 registers beside the int16 ones */
		if (!vnni)
			gemm_flush(s16, nr, na, part);
	}
	if (!vnni)
		return;
	if (nr == GEMM_NR) {
#pragma GCC unroll 2
		for (size_t a = 0; a < na; a++) {
			__m128i *p = (__m128i *)(part + a * GEMM_NR);
			_mm_storeu_si128(p, _mm_add_epi32(_mm_loadu_si128(p),
			                                  reduce4(acc[a][0], acc[a][1], acc[a][2], acc[a][3])));
		}
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
				gemm_tile(buf, kc, nr, qc + i * k, k, 1, part + i * GEMM_NR, vnni);
		}
		for (size_t i = 0; i < mb; i++) {
			float *yi = y + (i0 + i) * ldy + r;
			if (nr == GEMM_NR) {
				__m128i a = _mm_loadu_si128((const __m128i *)(part + i * GEMM_NR));
				_mm_storeu_ps(yi, epilogue4(a, _mm_set1_epi32(qsum[i0 + i]),
				                            _mm_set1_ps(qscale[i0 + i]), wscale));
				continue;
			}
			for (size_t t = 0; t < nr; t++)
				yi[t] = epilogue(part[i * GEMM_NR + t], qsum[i0 + i], qscale[i0 + i], wscale);
		}
	}
}

ALWAYS_INLINE void gemm_rows(const uint8_t *w, size_t k, size_t r0, size_t r1, float wscale,
                             const int8_t *q, const float *qscale, const int32_t *qsum,
                             size_t m, float *y, size_t ldy, int vnni)
{
	size_t r = r0;
	for (; r + GEMM_NR <= r1; r += GEMM_NR)
		gemm_panel(w, k, r, GEMM_NR, wscale, q, qscale, qsum, m, y, ldy, vnni);
	if (r < r1)
		gemm_panel(w, k, r, r1 - r, wscale, q, qscale, qsum, m, y, ldy, vnni);
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
			if (vnni)
				gemv_rows4_vnni(w, k, r, r1, q, acc);
			else
				gemv_rows4(w, k, r, r1, q, acc);
			for (int t = 0; t < 4; t++)
				y[r + t] = epilogue(acc[t], qsum[0], qscale[0], wscale);
		}
		for (; r < r1; r++) {
			gemm_row_acts(w + r * rb, k, q, 1, acc);
			y[r] = epilogue(acc[0], qsum[0], qscale[0], wscale);
		}
		return;
	}
	if (m >= GEMM_MIN_M) {
		gemm_rows(w, k, r0, r1, wscale, q, qscale, qsum, m, y, ldy, vnni);
		return;
	}
	if (vnni && m <= 4) {
		/* a few sequences decoding together: row pairs against all of them */
		size_t r = r0;
		for (; r + 2 <= r1; r += 2) {
			int32_t acc2[2][4];   /* [row][m] */
			const uint8_t *pf = r + 4 <= r1 ? w + (r + 2) * rb : NULL;
			if (m == 4)
				gemm_rows2_vnni4(w + r * rb, k, q, acc2, pf);
			else if (m == 3)
				gemm_rows2_vnni3(w + r * rb, k, q, acc2, pf);
			else
				gemm_rows2_vnni2(w + r * rb, k, q, acc2, pf);
			for (size_t t = 0; t < 2; t++)
				for (size_t a = 0; a < m; a++)
					y[a * ldy + r + t] = epilogue(acc2[t][a], qsum[a], qscale[a], wscale);
		}
		r0 = r;
		if (r0 == r1)
			return;
	}
	/* Few activation rows: a decoded panel would be reused too little to pay for its
	 * stores; each block is decoded in registers and feeds up to four rows instead. Rows in
	 * chunks whose weights stay in L1/L2 while each group of activations passes over them. */
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
					gemm_row_acts(wr, k, qi, 4, acc);
				else if (na == 3)
					gemm_row_acts(wr, k, qi, 3, acc);
				else if (na == 2)
					gemm_row_acts(wr, k, qi, 2, acc);
				else
					gemm_row_acts(wr, k, qi, 1, acc);
				if (na == 4) {
					float o[4];
					_mm_storeu_ps(o, epilogue4(_mm_loadu_si128((const __m128i *)acc),
					                           _mm_loadu_si128((const __m128i *)(qsum + i)),
					                           _mm_loadu_ps(qscale + i), wscale));
					for (size_t a = 0; a < 4; a++)
						y[(i + a) * ldy + r] = o[a];
					continue;
				}
				for (size_t a = 0; a < na; a++)
					y[(i + a) * ldy + r] = epilogue(acc[a], qsum[i + a], qscale[i + a],
					                                wscale);
			}
		}
	}
}

static void ternary_gemm(const uint8_t *w, size_t k, size_t r0, size_t r1, float wscale,
                         const int8_t *q, const float *qscale, const int32_t *qsum, size_t m,
                         float *y, size_t ldy)
{
	ternary_body(w, k, r0, r1, wscale, q, qscale, qsum, m, y, ldy, 0);
}

static void ternary_gemm_vnni(const uint8_t *w, size_t k, size_t r0, size_t r1, float wscale,
                              const int8_t *q, const float *qscale, const int32_t *qsum,
                              size_t m, float *y, size_t ldy)
{
	ternary_body(w, k, r0, r1, wscale, q, qscale, qsum, m, y, ldy, 1);
}

/* ---- f16_gemm ---------------------------------------------------------------------- */

ALWAYS_INLINE __m256 load_h8(const uint16_t *p)
{
	return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

ALWAYS_INLINE float hsum_ps(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

/* Scalar tail of one dot product (k not a multiple of the vector step). */
ALWAYS_INLINE float f16_tail(const uint16_t *w, const uint16_t *x, size_t j, size_t k)
{
	float acc = 0.0f;
	for (; j < k; j++)
		acc += bn_f16_to_f32(w[j]) * bn_f16_to_f32(x[j]);
	return acc;
}

/* NR (<= 4) weight rows x NA (<= 2) activation rows, with NR * NA <= 4 (16 ymm registers).
 * Every dot product has the same structure whatever NR and NA: two accumulators over the
 * halves of each 16-element step, added and reduced at the end, then the scalar tail. So a
 * logit is the same bit for bit however many activation rows share the call (batch
 * invariance), while a weight row's f16 conversion serves NA activations. */
ALWAYS_INLINE void f16_tile(const uint16_t *w, size_t k, size_t r, size_t nr,
                            const uint16_t *x, size_t na, float *y, size_t ldy)
{
	__m256 acc[4][2];   /* [row * na + act][half] */
	for (size_t t = 0; t < 4; t++)
		acc[t][0] = acc[t][1] = _mm256_setzero_ps();
	size_t j = 0;
	for (; j + 16 <= k; j += 16) {
		__m256 x0[2], x1[2];
#pragma GCC unroll 2
		for (size_t a = 0; a < na; a++) {
			x0[a] = load_h8(x + a * k + j);
			x1[a] = load_h8(x + a * k + j + 8);
		}
#pragma GCC unroll 4
		for (size_t t = 0; t < nr; t++) {
			const uint16_t *wt = w + (r + t) * k + j;
			__m256 w0 = load_h8(wt), w1 = load_h8(wt + 8);
#pragma GCC unroll 2
			for (size_t a = 0; a < na; a++) {
				acc[t * na + a][0] = _mm256_fmadd_ps(w0, x0[a], acc[t * na + a][0]);
				acc[t * na + a][1] = _mm256_fmadd_ps(w1, x1[a], acc[t * na + a][1]);
			}
		}
	}
#pragma GCC unroll 4
	for (size_t t = 0; t < nr; t++)
#pragma GCC unroll 2
		for (size_t a = 0; a < na; a++)
			y[a * ldy + r + t] = hsum_ps(_mm256_add_ps(acc[t * na + a][0], acc[t * na + a][1])) +
			                     f16_tail(w + (r + t) * k, x + a * k, j, k);
}

/* One weight row x 4 activation rows: each weight conversion serves four activations.
 * The activations stay f16 ([4][k], 20 KB at k = 2560, inside L1, where an f32 copy of
 * 40 KB was read from L2) and are converted from memory inside the loop; on Zen 3 that form
 * of vcvtph2ps issues beside the FMAs: ~5.7 cycles a 16-element step against ~9.7 with f32
 * activations (one thread, L2-resident rows). f16_tile's per-dot structure exactly (two
 * accumulators over the halves of each 16-element step, added, reduced, then the scalar
 * tail) and the same conversion, so the logits are the same bits. pf (or NULL): the next row. */
ALWAYS_INLINE void f16_row_x4(const uint16_t *w, size_t k, size_t r, const uint16_t *x,
                              float *y, size_t ldy, const uint16_t *pf)
{
	__m256 z = _mm256_setzero_ps();
	__m256 a00 = z, a01 = z, a10 = z, a11 = z, a20 = z, a21 = z, a30 = z, a31 = z;
	const uint16_t *wr = w + r * k;
	const uint16_t *x0 = x, *x1 = x + k, *x2 = x + 2 * k, *x3 = x + 3 * k;
	size_t j = 0;
	for (; j + 16 <= k; j += 16) {
		if (pf && !(j & 31))   /* one line (32 elements) every other step */
			_mm_prefetch((const char *)(pf + j), _MM_HINT_T0);
		__m256 u0 = load_h8(wr + j), u1 = load_h8(wr + j + 8);
		a00 = _mm256_fmadd_ps(u0, load_h8(x0 + j), a00);
		a01 = _mm256_fmadd_ps(u1, load_h8(x0 + j + 8), a01);
		a10 = _mm256_fmadd_ps(u0, load_h8(x1 + j), a10);
		a11 = _mm256_fmadd_ps(u1, load_h8(x1 + j + 8), a11);
		a20 = _mm256_fmadd_ps(u0, load_h8(x2 + j), a20);
		a21 = _mm256_fmadd_ps(u1, load_h8(x2 + j + 8), a21);
		a30 = _mm256_fmadd_ps(u0, load_h8(x3 + j), a30);
		a31 = _mm256_fmadd_ps(u1, load_h8(x3 + j + 8), a31);
	}
	y[r] = hsum_ps(_mm256_add_ps(a00, a01)) + f16_tail(wr, x0, j, k);
	y[ldy + r] = hsum_ps(_mm256_add_ps(a10, a11)) + f16_tail(wr, x1, j, k);
	y[2 * ldy + r] = hsum_ps(_mm256_add_ps(a20, a21)) + f16_tail(wr, x2, j, k);
	y[3 * ldy + r] = hsum_ps(_mm256_add_ps(a30, a31)) + f16_tail(wr, x3, j, k);
}

static void f16_gemm(const uint16_t *w, size_t k, size_t r0, size_t r1,
                     const uint16_t *x, size_t m, float *y, size_t ldy)
{
	if (m >= 4) {
		/* four activations at a time */
		size_t i0 = 0;
		for (; i0 + 4 <= m; i0 += 4)
			for (size_t r = r0; r < r1; r++)
				f16_row_x4(w, k, r, x + i0 * k, y + i0 * ldy, ldy,
				           r + 1 < r1 ? w + (r + 1) * k : NULL);
		if (i0 == m)
			return;
		x += i0 * k;
		y += i0 * ldy;
		m -= i0;
	}
	/* m == 1: four rows per pass. m > 1: two rows against activation pairs, so the rows stay
	 * in L1 across the pairs (weights stream from memory once). */
	size_t r = r0;
	if (m == 1) {
		for (; r + 4 <= r1; r += 4)
			f16_tile(w, k, r, 4, x, 1, y, ldy);
	} else {
		for (; r + 2 <= r1; r += 2) {
			size_t i = 0;
			for (; i + 2 <= m; i += 2)
				f16_tile(w, k, r, 2, x + i * k, 2, y + i * ldy, ldy);
			if (i < m)
				f16_tile(w, k, r, 2, x + i * k, 1, y + i * ldy, ldy);
		}
	}
	for (; r < r1; r++)
		for (size_t i = 0; i < m; i++)
			f16_tile(w, k, r, 1, x + i * k, 1, y + i * ldy, ldy);
}

/* ---- rmsnorm ----------------------------------------------------------------------- */

static void rmsnorm(const float *x, const float *w, size_t n, float eps, float *y)
{
	/* The double sum must run in index order to match the scalar plugin to the bit: only the
	 * squares are vectorized, the adds stay one dependent chain. */
	double sum = 0.0;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256 xv = _mm256_loadu_ps(x + i);
		__m256 sq = _mm256_mul_ps(xv, xv);
		double d[8];   /* [8] squares widened to double */
		_mm256_storeu_pd(d, _mm256_cvtps_pd(_mm256_castps256_ps128(sq)));
		_mm256_storeu_pd(d + 4, _mm256_cvtps_pd(_mm256_extractf128_ps(sq, 1)));
		sum += d[0];
		sum += d[1];
		sum += d[2];
		sum += d[3];
		sum += d[4];
		sum += d[5];
		sum += d[6];
		sum += d[7];
	}
	for (; i < n; i++)
		sum += (double)(x[i] * x[i]);
	float mean = (float)(sum / (double)n);
	float scale = 1.0f / sqrtf(mean + eps);
	__m256 vs = _mm256_set1_ps(scale);
	i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs),
		                                      _mm256_loadu_ps(w + i)));
	for (; i < n; i++)
		y[i] = (x[i] * scale) * w[i];
}

/* ---- attn_head --------------------------------------------------------------------- */

/* f16 x f16 products are exact in f32 (11-bit significands, exponents well inside the f32
 * range), and widening to double is exact, so each score is a double sum of exact terms.
 * The q.k sum below runs in a different order than the scalar loop; it equals the scalar
 * result whenever no partial sum rounds, which holds unless the terms span more than about
 * 2^45 in magnitude (checked on random data by tests/check_plugins). The weighted sum of V
 * keeps the scalar order exactly (vectorized across d, sequential in t). */
/* A score from its two 4-lane f64 chains: lanes added, reduced, then the scalar tail over
 * d in [hd8, hd) in order. q16, kt: [hd] f16 bits. */
ALWAYS_INLINE double score_finish(__m256d a0, __m256d a1, const uint16_t *q16,
                                  const uint16_t *kt, size_t hd8, size_t hd)
{
	__m256d a = _mm256_add_pd(a0, a1);
	__m128d h = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
	double acc = _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
	for (size_t d = hd8; d < hd; d++)
		acc += (double)(bn_f16_to_f32(q16[d]) * bn_f16_to_f32(kt[d]));
	return acc;
}

#define BN_ATTN_F16C
#include "attn-common.h"

static void attn_head(const uint16_t *q16, const uint16_t *k, const uint16_t *v,
                      size_t stride, size_t n, size_t hd, float scale,
                      float *out, float *scratch)
{
	size_t hd8 = hd & ~(size_t)7;
	float qf[hd8 ? hd8 : 1];   /* [hd8] f32: q16 converted once */
	for (size_t d = 0; d < hd8; d += 8)
		_mm256_storeu_ps(qf + d, load_h8(q16 + d));

	float mx = -INFINITY;
	for (size_t t = 0; t < n; t++) {
		const uint16_t *kt = k + t * stride;   /* [hd] */
		__m256d a0 = _mm256_setzero_pd(), a1 = a0;
		for (size_t d = 0; d < hd8; d += 8) {
			__m256 p = _mm256_mul_ps(_mm256_loadu_ps(qf + d), load_h8(kt + d));
			a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(p)));
			a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(p, 1)));
		}
		float s = (float)score_finish(a0, a1, q16, kt, hd8, hd) * scale;
		scratch[t] = s;
		if (s > mx)
			mx = s;
	}
	softmax_f16(scratch, n, mx);

	size_t d = 0;
	for (; d + 32 <= hd; d += 32) {
		__m256d acc[8];   /* [32] double sums for out[d..d+31] */
		for (int c = 0; c < 8; c++)
			acc[c] = _mm256_setzero_pd();
		for (size_t u = 0; u < n; u++) {
			__m256 pb = _mm256_broadcast_ss(scratch + u);
			const uint16_t *vt = v + u * stride + d;
#pragma GCC unroll 4
			for (int c = 0; c < 4; c++) {
				__m256 pr = _mm256_mul_ps(pb, load_h8(vt + 8 * c));
				acc[2 * c] = _mm256_add_pd(acc[2 * c],
				                           _mm256_cvtps_pd(_mm256_castps256_ps128(pr)));
				acc[2 * c + 1] = _mm256_add_pd(acc[2 * c + 1],
				                               _mm256_cvtps_pd(_mm256_extractf128_ps(pr, 1)));
			}
		}
		for (int c = 0; c < 8; c++)
			_mm_storeu_ps(out + d + 4 * c, _mm256_cvtpd_ps(acc[c]));
	}
	for (; d + 8 <= hd; d += 8) {
		__m256d a0 = _mm256_setzero_pd(), a1 = a0;
		for (size_t u = 0; u < n; u++) {
			__m256 pr = _mm256_mul_ps(_mm256_broadcast_ss(scratch + u),
			                          load_h8(v + u * stride + d));
			a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(pr)));
			a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(pr, 1)));
		}
		_mm_storeu_ps(out + d, _mm256_cvtpd_ps(a0));
		_mm_storeu_ps(out + d + 4, _mm256_cvtpd_ps(a1));
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
 * order (the same two 4-lane chains over 8-element steps for the scores; t in order for
 * each output). */
ALWAYS_INLINE void attn_g(const uint16_t *q16, size_t gq, const uint16_t *k, const uint16_t *v,
                          size_t stride, size_t n, size_t hd, float scale, float *out,
                          float *scratch)
{
	size_t hd8 = hd & ~(size_t)7;
	double qd[ATT_G][ATT_HD_MAX];   /* [gq][hd8] queries in f64 */
	for (size_t i = 0; i < gq; i++)
		for (size_t d = 0; d < hd8; d += 8) {
			__m256 f = load_h8(q16 + i * hd + d);
			_mm256_storeu_pd(qd[i] + d, _mm256_cvtps_pd(_mm256_castps256_ps128(f)));
			_mm256_storeu_pd(qd[i] + d + 4, _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)));
		}

	float mx[ATT_G];
	for (size_t i = 0; i < gq; i++)
		mx[i] = -INFINITY;
	for (size_t t = 0; t < n; t++) {
		const uint16_t *kt = k + t * stride;   /* [hd] */
		__m256d a0[ATT_G], a1[ATT_G];
#pragma GCC unroll 4
		for (size_t i = 0; i < gq; i++)
			a0[i] = a1[i] = _mm256_setzero_pd();
		for (size_t d = 0; d < hd8; d += 8) {
			__m256 kf = load_h8(kt + d);
			__m256d k0 = _mm256_cvtps_pd(_mm256_castps256_ps128(kf));
			__m256d k1 = _mm256_cvtps_pd(_mm256_extractf128_ps(kf, 1));
#pragma GCC unroll 4
			for (size_t i = 0; i < gq; i++) {
				a0[i] = _mm256_fmadd_pd(_mm256_loadu_pd(qd[i] + d), k0, a0[i]);
				a1[i] = _mm256_fmadd_pd(_mm256_loadu_pd(qd[i] + d + 4), k1, a1[i]);
			}
		}
#pragma GCC unroll 4
		for (size_t i = 0; i < gq; i++) {
			float sc = (float)score_finish(a0[i], a1[i], q16 + i * hd, kt, hd8, hd) * scale;
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
	for (size_t i = 0; i < gq; i++)
		for (size_t d = 0; d < hd8; d++)
			acc[i][d] = 0.0;
	for (size_t t0 = 0; t0 < n; t0 += ATT_TB) {
		size_t tn = n - t0 < ATT_TB ? n - t0 : ATT_TB;
		for (size_t i = 0; i < gq; i++)
			for (size_t u = 0; u < tn; u++)
				pd[i][u] = scratch[i * n + t0 + u];
		for (size_t d = 0; d < hd8; d += 8) {
			__m256d a0[ATT_G], a1[ATT_G];
#pragma GCC unroll 4
			for (size_t i = 0; i < gq; i++) {
				a0[i] = _mm256_loadu_pd(acc[i] + d);
				a1[i] = _mm256_loadu_pd(acc[i] + d + 4);
			}
			const uint16_t *vt = v + t0 * stride + d;
			for (size_t u = 0; u < tn; u++, vt += stride) {
				__m256 vf = load_h8(vt);
				__m256d v0 = _mm256_cvtps_pd(_mm256_castps256_ps128(vf));
				__m256d v1 = _mm256_cvtps_pd(_mm256_extractf128_ps(vf, 1));
#pragma GCC unroll 4
				for (size_t i = 0; i < gq; i++) {
					__m256d pb = _mm256_broadcast_sd(pd[i] + u);
					a0[i] = _mm256_fmadd_pd(pb, v0, a0[i]);
					a1[i] = _mm256_fmadd_pd(pb, v1, a1[i]);
				}
			}
#pragma GCC unroll 4
			for (size_t i = 0; i < gq; i++) {
				_mm256_storeu_pd(acc[i] + d, a0[i]);
				_mm256_storeu_pd(acc[i] + d + 4, a1[i]);
			}
		}
	}
	for (size_t i = 0; i < gq; i++) {
		for (size_t d = 0; d < hd8; d += 4)
			_mm_storeu_ps(out + i * hd + d, _mm256_cvtpd_ps(_mm256_loadu_pd(acc[i] + d)));
		for (size_t d = hd8; d < hd; d++)
			out[i * hd + d] = value_dot(scratch + i * n, v, stride, n, d);
	}
}

#include "attn-group.h"

/* ---- q8_gemm ----------------------------------------------------------------------- */

/* The contract fixes each logit's float operations (kernel.h: block sums in block order),
 * so the SIMD lanes run across weight rows: eight rows at a time, one lane each, every lane
 * doing the scalar plugin's f32 steps. The integer block dot of one row is maddubs with the
 * sign trick: |w| (u8, 0..128: -128 becomes 128) times x with w's sign (x is in [-127, 127],
 * so negating it never wraps); pair sums are at most 2 * 128 * 127 = 32512, no saturation. */
#define Q8_ROWS 8

ALWAYS_INLINE __m256i q8_dot(const uint8_t *blk, __m256i x)   /* 8 int32 partial sums */
{
	__m256i w = _mm256_loadu_si256((const __m256i *)(blk + 2));
	__m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
	return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* v[t]: [8] int32 of row t -> one lane per row, the rows' totals (exact in any order). */
ALWAYS_INLINE __m256i q8_hsum8(const __m256i v[Q8_ROWS])
{
	__m256i a = _mm256_hadd_epi32(v[0], v[1]), b = _mm256_hadd_epi32(v[2], v[3]);
	__m256i c = _mm256_hadd_epi32(v[4], v[5]), d = _mm256_hadd_epi32(v[6], v[7]);
	a = _mm256_hadd_epi32(a, b);   /* 128-bit halves: rows 0-3 over elements 0-3, 4-7 */
	c = _mm256_hadd_epi32(c, d);   /* rows 4-7 */
	return _mm256_add_epi32(_mm256_permute2x128_si256(a, c, 0x20),
	                        _mm256_permute2x128_si256(a, c, 0x31));
}

ALWAYS_INLINE uint16_t q8_d(const uint8_t *blk)   /* the block's f16 scale (unaligned) */
{
	uint16_t d;
	memcpy(&d, blk, 2);
	return d;
}

/* Eight weight rows (wr[t], rows may repeat at a range's end) against one activation row:
 * out[t] = the row's logit. pf (or NULL): the next eight rows, contiguous, swept into the
 * cache meanwhile (8 * 34 bytes of them per block). */
ALWAYS_INLINE void q8_rows8(const uint8_t *const wr[Q8_ROWS], size_t nb, const int8_t *x,
                            const uint16_t *xd, float out[Q8_ROWS], const uint8_t *pf)
{
	__m256 acc = _mm256_setzero_ps();
	for (size_t b = 0; b < nb; b++) {
		size_t off = b * BN_Q8_0_BLOCK_BYTES;
		if (pf) {
			const char *p = (const char *)pf + b * Q8_ROWS * BN_Q8_0_BLOCK_BYTES;
			_mm_prefetch(p, _MM_HINT_T0);
			_mm_prefetch(p + 64, _MM_HINT_T0);
			_mm_prefetch(p + 128, _MM_HINT_T0);
			_mm_prefetch(p + 192, _MM_HINT_T0);
			_mm_prefetch(p + 256, _MM_HINT_T0);
		}
		__m256i xv = _mm256_loadu_si256((const __m256i *)(x + b * BN_Q8_0_BLOCK));
		__m256i v[Q8_ROWS];
#pragma GCC unroll 8
		for (int t = 0; t < Q8_ROWS; t++)
			v[t] = q8_dot(wr[t] + off, xv);
		__m256 isum = _mm256_cvtepi32_ps(q8_hsum8(v));   /* |isum| < 2^24: exact */
		__m128i dh = _mm_setr_epi16((short)q8_d(wr[0] + off), (short)q8_d(wr[1] + off),
		                            (short)q8_d(wr[2] + off), (short)q8_d(wr[3] + off),
		                            (short)q8_d(wr[4] + off), (short)q8_d(wr[5] + off),
		                            (short)q8_d(wr[6] + off), (short)q8_d(wr[7] + off));
		/* dw * dx is exact (f16 x f16); then one rounding each for the product and the add */
		__m256 s = _mm256_mul_ps(_mm256_cvtph_ps(dh), _mm256_set1_ps(_cvtsh_ss(xd[b])));
		acc = _mm256_add_ps(acc, _mm256_mul_ps(isum, s));
	}
	_mm256_storeu_ps(out, acc);
}

static void q8_gemm(const uint8_t *w, size_t k, size_t r0, size_t r1, const int8_t *xq,
                    const uint16_t *xd, size_t m, float *y, size_t ldy)
{
	size_t nb = k / BN_Q8_0_BLOCK, rb = nb * BN_Q8_0_BLOCK_BYTES;
	for (size_t r = r0; r < r1; r += Q8_ROWS) {
		size_t nr = r1 - r < Q8_ROWS ? r1 - r : Q8_ROWS;
		const uint8_t *wr[Q8_ROWS];   /* a short group repeats its last row */
		for (size_t t = 0; t < Q8_ROWS; t++)
			wr[t] = w + (r + (t < nr ? t : nr - 1)) * rb;
		const uint8_t *pf = r + 2 * Q8_ROWS <= r1 ? w + (r + Q8_ROWS) * rb : NULL;
		/* the group's rows (8 * rb bytes) stay in L1/L2 while every activation passes */
		for (size_t i = 0; i < m; i++) {
			float out[Q8_ROWS];   /* [8] */
			q8_rows8(wr, nb, xq + i * k, xd + i * nb, out, i ? NULL : pf);
			for (size_t t = 0; t < nr; t++)
				y[i * ldy + r + t] = out[t];
		}
	}
}

/* ---- plugin entry points ----------------------------------------------------------- */

static const struct bn_kernel_ops avx2_ops = {
	.size = sizeof(struct bn_kernel_ops),
	.minor = BN_KERNEL_ABI_MINOR,
	.variant = "avx2",
	.quantize_i8 = quantize_i8,
	.ternary_gemm = ternary_gemm,
	.f16_gemm = f16_gemm,
	.rmsnorm = rmsnorm,
	.attn_head = attn_head,
	.attn_group = attn_group,
	.q8_gemm = q8_gemm,
};

static const struct bn_kernel_ops avx2_vnni_ops = {
	.size = sizeof(struct bn_kernel_ops),
	.minor = BN_KERNEL_ABI_MINOR,
	.variant = "avx2-vnni",
	.quantize_i8 = quantize_i8,
	.ternary_gemm = ternary_gemm_vnni,
	.f16_gemm = f16_gemm,
	.rmsnorm = rmsnorm,
	.attn_head = attn_head,
	.attn_group = attn_group,
	.q8_gemm = q8_gemm,
};

BN_KERNEL_EXPORT const struct bn_kernel_desc bn_kernel_desc = {
	.abi_major = BN_KERNEL_ABI_MAJOR,
	.abi_minor = BN_KERNEL_ABI_MINOR,
	.name = "avx2",
	.description = "AVX2/FMA/F16C: maddubs ternary dot, F16C LM head",
	.required = BN_CPU_AVX2 | BN_CPU_FMA | BN_CPU_F16C,
	.priority = 20,
};

BN_KERNEL_EXPORT const struct bn_kernel_ops *bn_kernel_open(uint64_t cpu_features);
BN_KERNEL_EXPORT const struct bn_kernel_ops *bn_kernel_open(uint64_t cpu_features)
{
	if ((cpu_features & bn_kernel_desc.required) != bn_kernel_desc.required)
		return NULL;
	return (cpu_features & BN_CPU_AVXVNNI) ? &avx2_vnni_ops : &avx2_ops;
}
