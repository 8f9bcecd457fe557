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
#elif defined(BROKEN_OLDABI)
/* A complete ABI 1.0 plugin (before q8_gemm): usable, q8_gemm from the built-in code. */
#define P_NAME "oldabi"
#define P_MAJOR BN_KERNEL_ABI_MAJOR
#define P_REQ 0
#define P_PRIO 99
#endif
#ifndef P_PRIO
#define P_PRIO 100   /* would win under auto if the loader ignored its problems */
#endif

BN_KERNEL_EXPORT const struct bn_kernel_desc bn_kernel_desc = {
	.abi_major = P_MAJOR,
	.abi_minor = 0,
	.name = P_NAME,
	.description = "loader test plugin",
	.required = P_REQ,
	.priority = P_PRIO,
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

#ifdef BROKEN_OLDABI
static void old_quantize(const float *x, size_t n, int8_t *q, float *scale, int32_t *sum)
{
	(void)x;
	for (size_t i = 0; i < n; i++)
		q[i] = 2;
	*scale = 1.0f;
	*sum = 2 * (int32_t)n;
}

/* Every op of minor 0 is set; the table ends where q8_gemm begins (its size then). */
static const struct bn_kernel_ops old_ops = {
	.size = offsetof(struct bn_kernel_ops, q8_gemm),
	.minor = 0,
	.variant = "oldabi",
	.quantize_i8 = old_quantize,
	.ternary_gemm = (void *)2,
	.f16_gemm = (void *)3,
	.rmsnorm = (void *)4,
	.attn_head = (void *)5,
	.q8_gemm = (void *)6,   /* past .size: must be ignored, never called */
};
#endif

#ifndef BROKEN_NOSYM
BN_KERNEL_EXPORT const struct bn_kernel_ops *bn_kernel_open(uint64_t cpu_features);
BN_KERNEL_EXPORT const struct bn_kernel_ops *bn_kernel_open(uint64_t cpu_features)
{
	(void)cpu_features;
#if defined(BROKEN_PARTIAL)
	return &partial_ops;
#elif defined(BROKEN_OLDABI)
	return &old_ops;
#else
	abort();   /* the loader must refuse these before calling open */
#endif
}
#endif
