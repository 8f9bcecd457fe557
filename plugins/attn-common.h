/* Attention helpers shared by source by the SIMD plugins, included before their attn_head:
 * the scalar plugin's operations (kernel.h rule 4), written once. A plugin that defines
 * BN_ATTN_F16C (x86: F16C is there) rounds the softmax weights to f16 eight at a time;
 * F16C rounds to nearest even, as bn_f32_to_f16. */
#ifndef BN_PLUGIN_ATTN_COMMON_H
#define BN_PLUGIN_ATTN_COMMON_H

/* p [n]: scores with maximum mx -> softmax weights rounded to f16 (rule 4). */
ALWAYS_INLINE void softmax_f16(float *p, size_t n, float mx)
{
	float inv = bn_softmax_exp(p, n, mx);
	size_t t = 0;
#ifdef BN_ATTN_F16C
	__m256 vinv = _mm256_set1_ps(inv);
	for (; t + 8 <= n; t += 8) {
		__m128i h = _mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(p + t), vinv),
		                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
		_mm256_storeu_ps(p + t, _mm256_cvtph_ps(h));
	}
#endif
	for (; t < n; t++)
		p[t] = bn_f16_to_f32(bn_f32_to_f16(p[t] * inv));
}

/* One output of the weighted sum of V, t in order (the scalar plugin's loop): p [n]. */
ALWAYS_INLINE float value_dot(const float *p, const uint16_t *v, size_t stride, size_t n,
                              size_t d)
{
	double acc = 0.0;
	for (size_t t = 0; t < n; t++)
		acc += (double)(p[t] * bn_f16_to_f32(v[t * stride + d]));
	return (float)acc;
}

#endif
