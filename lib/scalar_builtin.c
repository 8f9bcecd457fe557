/* The scalar plugin's code linked into libbitnet: the engine's portable fallback for any op
 * a plugin leaves NULL, and the reference the plugin tests compare against. */
#define BN_KERNEL_BUILTIN 1
#include "kernels.h"
#include "../plugins/kernel-scalar.c"

const struct bn_kernel_ops bn_scalar_builtin_ops = {
	.size = sizeof(struct bn_kernel_ops),
	.minor = BN_KERNEL_ABI_MINOR,
	.variant = "builtin-scalar",
	.quantize_i8 = bn_scalar_quantize_i8,
	.ternary_gemm = bn_scalar_ternary_gemm,
	.f16_gemm = bn_scalar_f16_gemm,
	.rmsnorm = bn_scalar_rmsnorm,
	.attn_head = bn_scalar_attn_head,
	.q8_gemm = bn_scalar_q8_gemm,
};
