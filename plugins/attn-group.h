/* The attn_group entry point (kernel.h, minor 2) of a SIMD plugin, shared by source: the
 * plugin defines, before including this,
 *   attn_head   its op;
 *   attn_g      ALWAYS_INLINE, gq (1..ATT_G) queries in one pass over the keys and values,
 *               each with attn_head's arithmetic, heads of at most ATT_HD_MAX elements;
 * and gets attn_g1..attn_g4 (one function per query count, so that each keeps its
 * accumulators in registers) and attn_group: g queries in passes of up to ATT_G, or one by
 * one through attn_head when a head is longer than the pass's stack rows allow. */
#ifndef BN_PLUGIN_ATTN_GROUP_H
#define BN_PLUGIN_ATTN_GROUP_H

#define ATT_FN(g)                                                                           \
	static __attribute__((noinline)) void attn_g##g(const uint16_t *q16, const uint16_t *k, \
		const uint16_t *v, size_t stride, size_t n, size_t hd, float scale, float *out,     \
		float *scratch)                                                                     \
	{                                                                                       \
		attn_g(q16, g, k, v, stride, n, hd, scale, out, scratch);                           \
	}
ATT_FN(1)
ATT_FN(2)
ATT_FN(3)
ATT_FN(4)
#undef ATT_FN

static void attn_group(const uint16_t *q16, size_t g, const uint16_t *k, const uint16_t *v,
                       size_t stride, size_t n, size_t hd, float scale, float *out,
                       float *scratch)
{
	if (hd > ATT_HD_MAX) {
		for (size_t i = 0; i < g; i++)
			attn_head(q16 + i * hd, k, v, stride, n, hd, scale, out + i * hd, scratch + i * n);
		return;
	}
	for (size_t i = 0; i < g; i += ATT_G) {
		size_t gq = g - i < ATT_G ? g - i : ATT_G;
		const uint16_t *qi = q16 + i * hd;
		float *oi = out + i * hd, *si = scratch + i * n;
		if (gq == 4)
			attn_g4(qi, k, v, stride, n, hd, scale, oi, si);
		else if (gq == 3)
			attn_g3(qi, k, v, stride, n, hd, scale, oi, si);
		else if (gq == 2)
			attn_g2(qi, k, v, stride, n, hd, scale, oi, si);
		else
			attn_g1(qi, k, v, stride, n, hd, scale, oi, si);
	}
}

#endif
