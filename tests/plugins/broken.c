/* Deliberately broken or unusual kernel plugins for the loader tests (tests/check_loader.c).
 * One source, one variant per BROKEN_* macro. */
#include <stdlib.h>

#include "bitnet/kernel.h"

#if defined(BROKEN_ABI)
#define P_NAME "badabi"
#define P_MAJOR (BN_KERNEL_ABI_MAJOR + 1)
#define P_REQ 0
#elif defined(BROKEN_NOSYM)
#define P_NAME "nosym"
#define P_MAJOR BN_KERNEL_ABI_MAJOR
#define P_REQ 0
#elif defined(BROKEN_NEEDS)
/* Needs x86 and arm features at once: no CPU has both, so it must never be opened. */
#define P_NAME "needs"
#define P_MAJOR BN_KERNEL_ABI_MAJOR
#define P_REQ (BN_CPU_AVX512VNNI | BN_CPU_ASIMDDP)
#elif defined(BROKEN_PARTIAL)
#define P_NAME "partial"
#define P_MAJOR BN_KERNEL_ABI_MAJOR
#define P_REQ 0
#elif defined(BROKEN_MISNAMED)
#define P_NAME "somethingelse"
#define P_MAJOR BN_KERNEL_ABI_MAJOR
#define P_REQ 0
#endif

BN_KERNEL_EXPORT const struct bn_kernel_desc bn_kernel_desc = {
	.abi_major = P_MAJOR,
	.abi_minor = 0,
	.name = P_NAME,
	.description = "loader test plugin",
	.required = P_REQ,
	.priority = 100,   /* would win under auto if the loader ignored its problems */
};

#ifdef BROKEN_PARTIAL
/* Only one op (an old plugin, say): the rest must come from the built-in scalar code. The
 * table is cut short (size) to test that the loader ignores members past it. */
static void partial_quantize(const float *x, size_t n, int8_t *q, float *scale, int32_t *sum)
{
	(void)x;
	for (size_t i = 0; i < n; i++)
		q[i] = 1;
	*scale = 1.0f;
	*sum = (int32_t)n;
}

static const struct bn_kernel_ops partial_ops = {
	.size = offsetof(struct bn_kernel_ops, ternary_gemm),
	.minor = 0,
	.variant = "partial",
	.quantize_i8 = partial_quantize,
	.rmsnorm = (void *)1,   /* past .size: must be ignored, never called */
};
#endif

#ifndef BROKEN_NOSYM
BN_KERNEL_EXPORT const struct bn_kernel_ops *bn_kernel_open(uint64_t cpu_features);
BN_KERNEL_EXPORT const struct bn_kernel_ops *bn_kernel_open(uint64_t cpu_features)
{
	(void)cpu_features;
#ifdef BROKEN_PARTIAL
	return &partial_ops;
#else
	abort();   /* the loader must refuse these before calling open */
#endif
}
#endif
