/* The reference kernel plugin: portable C, the definition every other plugin is tested
 * against. Also compiled into libbitnet (lib/scalar_builtin.c, BN_KERNEL_BUILTIN) as the
 * engine's portable code for ops a plugin leaves NULL. */
#include <math.h>
#include <stdint.h>
#include <stddef.h>

#include "bitnet/kernel.h"

#ifdef BN_KERNEL_BUILTIN
#define SC(name) bn_scalar_##name
#define SC_LINK
#else
#define SC(name) name
#define SC_LINK static
#endif

SC_LINK void SC(quantize_i8)(const float *x, size_t n, int8_t *q, float *scale, int32_t *sum);
SC_LINK void SC(ternary_gemm)(const uint8_t *w, size_t k, size_t r0, size_t r1, float wscale,
                              const int8_t *q, const float *qscale, const int32_t *qsum,
                              size_t m, float *y, size_t ldy);
SC_LINK void SC(f16_gemm)(const uint16_t *w, size_t k, size_t r0, size_t r1,
                          const uint16_t *x, size_t m, float *y, size_t ldy);
SC_LINK void SC(rmsnorm)(const float *x, const float *w, size_t n, float eps, float *y);
SC_LINK void SC(attn_head)(const uint16_t *q16, const uint16_t *k, const uint16_t *v,
                           size_t stride, size_t n, size_t hd, float scale,
                           float *out, float *scratch);
SC_LINK void SC(q8_gemm)(const uint8_t *w, size_t k, size_t r0, size_t r1, const int8_t *xq,
                         const uint16_t *xd, size_t m, float *y, size_t ldy);

SC_LINK void SC(quantize_i8)(const float *x, size_t n, int8_t *q, float *scale, int32_t *sum)
{
	float amax = 0.0f;
	for (size_t i = 0; i < n; i++) {
		float a = fabsf(x[i]);
		if (a > amax)
			amax = a;
	}
	if (amax < 1e-5f)
		amax = 1e-5f;
	float s = (float)(127.0 / (double)amax);
	int32_t acc = 0;
	for (size_t i = 0; i < n; i++) {
		float v = rintf(x[i] * s);       /* default rounding mode: half to even */
		if (v > 127.0f)
			v = 127.0f;
		if (v < -128.0f)
			v = -128.0f;
		q[i] = (int8_t)v;
		acc += q[i];
	}
	*scale = s;
	*sum = acc;
}

SC_LINK void SC(ternary_gemm)(const uint8_t *w, size_t k, size_t r0, size_t r1, float wscale,
                              const int8_t *q, const float *qscale, const int32_t *qsum,
                              size_t m, float *y, size_t ldy)
{
	size_t row_bytes = k / 4;
	for (size_t r = r0; r < r1; r++) {
		const uint8_t *wr = w + r * row_bytes;   /* [k/4] codes of row r */
		for (size_t i = 0; i < m; i++) {
			const int8_t *qi = q + i * k;     /* [k] */
			int32_t acc = 0;
			for (size_t b = 0; b < k; b += BN_I2S_BLOCK) {
				const uint8_t *blk = wr + b / 4;
				for (size_t j = 0; j < 32; j++) {
					uint8_t c = blk[j];
					int c0 = c >> 6, c1 = (c >> 4) & 3, c2 = (c >> 2) & 3, c3 = c & 3;
					/* code 3 is unused; it decodes as 0, like code 1 */
					c0 = c0 == 3 ? 1 : c0;
					c1 = c1 == 3 ? 1 : c1;
					c2 = c2 == 3 ? 1 : c2;
					c3 = c3 == 3 ? 1 : c3;
					acc += c0 * qi[b + j] + c1 * qi[b + j + 32] +
					       c2 * qi[b + j + 64] + c3 * qi[b + j + 96];
				}
			}
			y[i * ldy + r] = ((float)(acc - qsum[i]) / qscale[i]) * wscale;
		}
	}
}

SC_LINK void SC(f16_gemm)(const uint16_t *w, size_t k, size_t r0, size_t r1,
                          const uint16_t *x, size_t m, float *y, size_t ldy)
{
	for (size_t r = r0; r < r1; r++) {
		const uint16_t *wr = w + r * k;   /* [k] */
		for (size_t i = 0; i < m; i++) {
			const uint16_t *xi = x + i * k;
			float acc = 0.0f;
			for (size_t j = 0; j < k; j++)
				acc += bn_f16_to_f32(wr[j]) * bn_f16_to_f32(xi[j]);
			y[i * ldy + r] = acc;
		}
	}
}

SC_LINK void SC(rmsnorm)(const float *x, const float *w, size_t n, float eps, float *y)
{
	double sum = 0.0;
	for (size_t i = 0; i < n; i++)
		sum += (double)(x[i] * x[i]);
	float mean = (float)(sum / (double)n);
	float scale = 1.0f / sqrtf(mean + eps);
	for (size_t i = 0; i < n; i++)
		y[i] = (x[i] * scale) * w[i];
}

SC_LINK void SC(attn_head)(const uint16_t *q16, const uint16_t *k, const uint16_t *v,
                           size_t stride, size_t n, size_t hd, float scale,
                           float *out, float *scratch)
{
	float mx = -INFINITY;
	for (size_t t = 0; t < n; t++) {
		const uint16_t *kt = k + t * stride;   /* [hd] */
		double acc = 0.0;
		for (size_t d = 0; d < hd; d++)
			acc += (double)(bn_f16_to_f32(q16[d]) * bn_f16_to_f32(kt[d]));
		float s = (float)acc * scale;
		scratch[t] = s;
		if (s > mx)
			mx = s;
	}
	float inv = bn_softmax_exp(scratch, n, mx);
	for (size_t t = 0; t < n; t++)   /* softmax weights rounded to f16 (rule 4) */
		scratch[t] = bn_f16_to_f32(bn_f32_to_f16(scratch[t] * inv));
	for (size_t d = 0; d < hd; d++) {
		double acc = 0.0;
		for (size_t t = 0; t < n; t++)
			acc += (double)(scratch[t] * bn_f16_to_f32(v[t * stride + d]));
		out[d] = (float)acc;
	}
}

SC_LINK void SC(q8_gemm)(const uint8_t *w, size_t k, size_t r0, size_t r1, const int8_t *xq,
                         const uint16_t *xd, size_t m, float *y, size_t ldy)
{
	size_t nb = k / BN_Q8_0_BLOCK, row_bytes = nb * BN_Q8_0_BLOCK_BYTES;
	for (size_t r = r0; r < r1; r++) {
		const uint8_t *wr = w + r * row_bytes;   /* [k/32] blocks of row r */
		for (size_t i = 0; i < m; i++) {
			const int8_t *xi = xq + i * k;        /* [k] */
			const uint16_t *di = xd + i * nb;     /* [k/32] */
			float acc = 0.0f;
			for (size_t b = 0; b < nb; b++) {
				const uint8_t *blk = wr + b * BN_Q8_0_BLOCK_BYTES;
				const int8_t *qs = (const int8_t *)(blk + 2);
				uint16_t dw = (uint16_t)(blk[0] | blk[1] << 8);   /* little endian, unaligned */
				int32_t isum = 0;
				for (size_t j = 0; j < BN_Q8_0_BLOCK; j++)
					isum += qs[j] * xi[b * BN_Q8_0_BLOCK + j];
				acc += (float)isum * (bn_f16_to_f32(dw) * bn_f16_to_f32(di[b]));
			}
			y[i * ldy + r] = acc;
		}
	}
}

#ifndef BN_KERNEL_BUILTIN
static const struct bn_kernel_ops scalar_ops = {
	.size = sizeof(struct bn_kernel_ops),
	.minor = BN_KERNEL_ABI_MINOR,
	.variant = "scalar",
	.quantize_i8 = quantize_i8,
	.ternary_gemm = ternary_gemm,
	.f16_gemm = f16_gemm,
	.rmsnorm = rmsnorm,
	.attn_head = attn_head,
	.q8_gemm = q8_gemm,
};

BN_KERNEL_EXPORT const struct bn_kernel_desc bn_kernel_desc = {
	.abi_major = BN_KERNEL_ABI_MAJOR,
	.abi_minor = BN_KERNEL_ABI_MINOR,
	.name = "scalar",
	.description = "portable C reference kernels",
	.required = 0,
	.priority = 0,
};

BN_KERNEL_EXPORT const struct bn_kernel_ops *bn_kernel_open(uint64_t cpu_features);
BN_KERNEL_EXPORT const struct bn_kernel_ops *bn_kernel_open(uint64_t cpu_features)
{
	(void)cpu_features;
	return &scalar_ops;
}
#endif
