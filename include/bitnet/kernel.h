/* bitnetd kernel plugin ABI. The only header a plugin includes.
 *
 * A plugin is a shared object exporting exactly two symbols:
 *   const struct bn_kernel_desc bn_kernel_desc;   read by the loader without running plugin code
 *   const struct bn_kernel_ops *bn_kernel_open(uint64_t cpu_features);
 * The ops table begins with its size and minor version; members are only ever appended.
 * A NULL op means "use the engine's portable code". Ops are pure, single-threaded functions
 * over row ranges: the engine's worker pool splits the work; plugins never start threads.
 *
 * Arithmetic contract (shared/spec/bitnet-format.md section 4, golden README rules 1-6):
 * integer results must be bit-identical to the scalar plugin; float reductions whose result
 * is re-quantized to int8 downstream (rmsnorm, attention) must keep the scalar plugin's
 * summation semantics (double accumulators) so that the logits do not depend on the plugin.
 */
#ifndef BITNET_KERNEL_H
#define BITNET_KERNEL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#define BN_KERNEL_ABI_MAJOR 1
#define BN_KERNEL_ABI_MINOR 2   /* 1: q8_gemm; 2: attn_group */

#define BN_KERNEL_DESC_SYMBOL "bn_kernel_desc"
#define BN_KERNEL_OPEN_SYMBOL "bn_kernel_open"

#define BN_KERNEL_EXPORT __attribute__((visibility("default")))

/* CPU feature bits (detected by the engine, lib/cpu.c). */
#define BN_CPU_AVX2        (UINT64_C(1) << 0)
#define BN_CPU_FMA         (UINT64_C(1) << 1)
#define BN_CPU_F16C        (UINT64_C(1) << 2)
#define BN_CPU_AVX512F     (UINT64_C(1) << 3)
#define BN_CPU_AVX512BW    (UINT64_C(1) << 4)
#define BN_CPU_AVX512VL    (UINT64_C(1) << 5)
#define BN_CPU_AVX512VNNI  (UINT64_C(1) << 6)
#define BN_CPU_AVXVNNI     (UINT64_C(1) << 7)
#define BN_CPU_AMXINT8     (UINT64_C(1) << 8)   /* AMX-TILE + AMX-INT8, OS saves tiles */
#define BN_CPU_ASIMD       (UINT64_C(1) << 16)  /* arm64 NEON */
#define BN_CPU_ASIMDDP     (UINT64_C(1) << 17)  /* arm64 SDOT/UDOT */

/* Ternary weight rows in the canonical (I2_S) layout: a row of k weights is k/4 bytes;
 * each 128-weight block is 32 bytes, byte j holding elements j, j+32, j+64, j+96 in bits
 * 7:6, 5:4, 3:2, 1:0, as code = ternary + 1 (code 3 decodes as 0... see bn_i2s_code). */
#define BN_I2S_BLOCK 128
#define BN_I2S_BLOCK_BYTES 32

/* Q8_0 (ggml type 8): 32 weights per 34-byte block, `uint16 d (f16); int8 qs[32]`, value =
 * d * q. A row of k weights is k/32 blocks; k is a multiple of 32. */
#define BN_Q8_0_BLOCK 32
#define BN_Q8_0_BLOCK_BYTES 34

struct bn_kernel_desc {
	uint32_t abi_major;      /* BN_KERNEL_ABI_MAJOR the plugin was built for */
	uint32_t abi_minor;
	char name[32];           /* "scalar", "avx2", ... (NUL-terminated) */
	char description[96];
	uint64_t required;       /* BN_CPU_* bits that must all be present */
	int32_t priority;        /* highest runnable wins under "auto" */
	uint32_t reserved;
};

struct bn_kernel_ops {
	uint32_t size;           /* sizeof(struct bn_kernel_ops) the plugin was built with */
	uint32_t minor;          /* BN_KERNEL_ABI_MINOR the plugin was built with */
	const char *variant;     /* e.g. "avx512-vnni": the code path chosen at open time */

	/* Per-token int8 absmax quantization of one row (rule 1):
	 * amax = max|x| floored at 1e-5; s = (float)(127.0 / amax);
	 * q = clamp(rint((float)(x*s)), -128, 127) (round half to even); *sum = sum of q.
	 * x: [n] f32, q: [n] int8. */
	void (*quantize_i8)(const float *x, size_t n, int8_t *q, float *scale, int32_t *sum);

	/* Ternary x int8 matrix product over weight rows [r0, r1):
	 * y[i][r] = ((float)(sum_j code(w[r][j]) * q[i][j] - qsum[i]) / qscale[i]) * wscale
	 * w: [rows][k/4] canonical codes; q: [m][k] int8 with row stride k;
	 * qscale, qsum: [m]; y: [m][ldy] f32. k is a multiple of 128. Integer sums exact. */
	void (*ternary_gemm)(const uint8_t *w, size_t k, size_t r0, size_t r1, float wscale,
	                     const int8_t *q, const float *qscale, const int32_t *qsum, size_t m,
	                     float *y, size_t ldy);

	/* F16 matrix product over rows [r0, r1) (the tied LM head):
	 * y[i][r] = sum_j f16(w[r][j]) * f16(x[i][j]), accumulated in f32 (order free).
	 * w: [rows][k] f16 bits; x: [m][k] f16 bits; y: [m][ldy] f32. */
	void (*f16_gemm)(const uint16_t *w, size_t k, size_t r0, size_t r1,
	                 const uint16_t *x, size_t m, float *y, size_t ldy);

	/* RMSNorm of one row (rule 2): sum = sum of (float)(x*x) in double, in index order;
	 * mean = (float)(sum / n); y = (x * (1.0f / sqrtf(mean + eps))) * w.
	 * x, w, y: [n] f32 (y may alias x). */
	void (*rmsnorm)(const float *x, const float *w, size_t n, float eps, float *y);

	/* One query head against n cached positions (rule 4):
	 * s_t = (float)(sum_d q16[d] * k[t][d] in double) * scale; softmax with expf and a
	 * double sum; p_t = f16(e_t * (float)(1.0 / sum)); out[d] = (float)(sum_t p_t * v[t][d]
	 * in double). q16: [hd] f16 bits (already rounded); k, v: [n][stride] f16 bits;
	 * out: [hd] f32; scratch: [n] f32. */
	void (*attn_head)(const uint16_t *q16, const uint16_t *k, const uint16_t *v,
	                  size_t stride, size_t n, size_t hd, float scale,
	                  float *out, float *scratch);

	/* ---- minor 1 ---- */

	/* Q8_0 x Q8_0 matrix product over weight rows [r0, r1) (an 8-bit LM head). For weight
	 * row r, activation row i and 32-blocks b = 0, 1, ... in order:
	 *   isum_b = sum_{j<32} wq[r][b][j] * xq[i][32b+j]          (int32, exact)
	 *   acc = acc + (float)isum_b * (f16(wd[r][b]) * f16(xd[i][b]))   (acc starts at 0.0f)
	 *   y[i][r] = acc
	 * Each step rounds to f32 as written (no FMA; f16 x f16 is exact in f32 and |isum| <
	 * 2^24 converts exactly), so the result is fixed to the bit: every plugin must match
	 * the scalar plugin exactly, and a row's value does not depend on m or on [r0, r1).
	 * (SIMD goes across rows, never across a row's blocks.) xq holds values in [-127, 127]
	 * (bn_q8_0_quantize_block never writes -128); wq may hold any int8.
	 * w: [rows][k/32] blocks of BN_Q8_0_BLOCK_BYTES; xq: [m][k] int8; xd: [m][k/32] f16
	 * bits; y: [m][ldy] f32. k is a multiple of 32. */
	void (*q8_gemm)(const uint8_t *w, size_t k, size_t r0, size_t r1, const int8_t *xq,
	                const uint16_t *xd, size_t m, float *y, size_t ldy);

	/* ---- minor 2 ---- */

	/* g query heads of one token that share a KV head (GQA), against the same n cached
	 * positions: exactly the results of g attn_head calls, bit for bit, query i reading
	 * q16 + i * hd and writing out + i * hd and scratch + i * n (the key and value rows are
	 * read once for all g). q16: [g][hd] f16 bits; k, v: [n][stride] f16 bits; out: [g][hd]
	 * f32; scratch: [g][n] f32. NULL: the engine calls the plugin's attn_head g times. */
	void (*attn_group)(const uint16_t *q16, size_t g, const uint16_t *k, const uint16_t *v,
	                   size_t stride, size_t n, size_t hd, float scale, float *out,
	                   float *scratch);
};

typedef const struct bn_kernel_ops *(*bn_kernel_open_fn)(uint64_t cpu_features);

/* IEEE binary16 <-> binary32, round to nearest even. Portable, used by every plugin so
 * that conversions agree to the bit. */
static inline float bn_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t exp = (h >> 10) & 0x1f;
	uint32_t man = h & 0x3ff;
	union { uint32_t u; float f; } r;
	if (exp == 0x1f) {
		r.u = sign | 0x7f800000u | (man << 13);
	} else if (exp == 0) {
		if (man == 0) {
			r.u = sign;
		} else {  /* subnormal: value = man * 2^-24 */
			r.f = (float)man * 0x1p-24f;
			r.u |= sign;
		}
	} else {
		r.u = sign | ((exp + 112) << 23) | (man << 13);
	}
	return r.f;
}

static inline uint16_t bn_f32_to_f16(float f)
{
	union { float f; uint32_t u; } v = { f };
	uint32_t sign = (v.u >> 16) & 0x8000;
	uint32_t a = v.u & 0x7fffffffu;
	if (a >= 0x7f800000u)                       /* inf or nan */
		return (uint16_t)(sign | 0x7c00 | (a > 0x7f800000u ? 0x200 | ((a >> 13) & 0x3ff) : 0));
	if (a >= 0x477ff000u)                       /* rounds to >= 65520: overflow to inf */
		return (uint16_t)(sign | 0x7c00);
	if (a < 0x38800000u) {                      /* below 2^-14: subnormal or zero */
		/* value / 2^-24 rounded half-even: adding 0.5 (as float) rounds in hardware */
		union { float f; uint32_t u; } t;
		t.u = a;
		t.f = t.f + 0.5f;                       /* 2^-1 aligns bit 0 to 2^-24 units */
		return (uint16_t)(sign | (t.u - 0x3f000000u));
	}
	uint32_t mant_odd = (a >> 13) & 1;
	a += 0xc8000fffu + mant_odd;                /* rebias exponent (-112<<23) and round */
	return (uint16_t)(sign | (a >> 13));
}

/* Softmax numerators in place (rule 4): s[t] = expf(s[t] - mx) with libm's expf element by
 * element, summed in double in index order. Returns (float)(1.0 / sum). Shared by every
 * plugin: the attention weights must not depend on which plugin runs. s: [n] f32. */
static inline float bn_softmax_exp(float *s, size_t n, float mx)
{
	double sum = 0.0;
	for (size_t t = 0; t < n; t++) {
		s[t] = expf(s[t] - mx);
		sum += (double)s[t];
	}
	return (float)(1.0 / sum);
}

/* One Q8_0 block of 32 values, the one quantizer of the project (the engine's activations
 * before a Q8_0 head, and `bitnet requant` / `convert` / `mkmodel` for the weights):
 *   amax = max|x| (NaN ignored); d = f16(amax / 127) (f32 division, then round to nearest
 *   even f16); q = rint(x / f32(d)) (f32 division, round half to even), clamped to
 *   [-127, 127]; q = 0 where d is 0 or x is NaN.
 * Dividing by the stored (rounded) d makes d * q the nearest grid point to x; the clamp
 * only matters when d rounded down (|x| / d <= 127.07 rounds to 127). An infinite x gives an
 * infinite d (callers that write weights refuse non-finite values first).
 * x: [32] f32; q: [32] int8; returns d as f16 bits. */
static inline uint16_t bn_q8_0_quantize_block(const float *x, int8_t *q)
{
	float amax = 0.0f;
	for (int j = 0; j < BN_Q8_0_BLOCK; j++) {
		float a = fabsf(x[j]);
		if (a > amax)
			amax = a;
	}
	uint16_t dh = bn_f32_to_f16(amax / 127.0f);
	float d = bn_f16_to_f32(dh);
	for (int j = 0; j < BN_Q8_0_BLOCK; j++) {
		float v = d != 0.0f ? rintf(x[j] / d) : 0.0f;
		if (v > 127.0f)
			v = 127.0f;
		if (v < -127.0f)
			v = -127.0f;
		q[j] = v == v ? (int8_t)v : 0;
	}
	return dh;
}

static inline float bn_bf16_to_f32(uint16_t h)
{
	union { uint32_t u; float f; } r = { (uint32_t)h << 16 };
	return r.f;
}

#endif
