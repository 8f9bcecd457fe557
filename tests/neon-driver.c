/* Standalone comparison driver for tests/neon-qemu.sh: the NEON plugin (native aarch64
 * code, linked in) against the scalar reference (plugins/kernel-scalar.c built with
 * BN_KERNEL_BUILTIN), both code paths, under qemu-aarch64. No Check, no libbitnet. */
#include "plugin-compare.h"

void bn_scalar_quantize_i8(const float *x, size_t n, int8_t *q, float *scale, int32_t *sum);
void bn_scalar_ternary_gemm(const uint8_t *w, size_t k, size_t r0, size_t r1, float wscale,
                            const int8_t *q, const float *qscale, const int32_t *qsum,
                            size_t m, float *y, size_t ldy);
void bn_scalar_f16_gemm(const uint16_t *w, size_t k, size_t r0, size_t r1,
                        const uint16_t *x, size_t m, float *y, size_t ldy);
void bn_scalar_rmsnorm(const float *x, const float *w, size_t n, float eps, float *y);
void bn_scalar_attn_head(const uint16_t *q16, const uint16_t *k, const uint16_t *v,
                         size_t stride, size_t n, size_t hd, float scale,
                         float *out, float *scratch);
void bn_scalar_q8_gemm(const uint8_t *w, size_t k, size_t r0, size_t r1, const int8_t *xq,
                       const uint16_t *xd, size_t m, float *y, size_t ldy);
extern const struct bn_kernel_desc bn_kernel_desc;
const struct bn_kernel_ops *bn_kernel_open(uint64_t cpu_features);

static const struct bn_kernel_ops ref_ops = {
	.size = sizeof(struct bn_kernel_ops),
	.minor = BN_KERNEL_ABI_MINOR,
	.variant = "scalar",
	.quantize_i8 = bn_scalar_quantize_i8,
	.ternary_gemm = bn_scalar_ternary_gemm,
	.f16_gemm = bn_scalar_f16_gemm,
	.rmsnorm = bn_scalar_rmsnorm,
	.attn_head = bn_scalar_attn_head,
	.q8_gemm = bn_scalar_q8_gemm,
};

int main(void)
{
	static const uint64_t masks[2] = { BN_CPU_ASIMD | BN_CPU_ASIMDDP, BN_CPU_ASIMD };
	static const char *want[2] = { "neon-dotprod", "neon" };
	unsigned fails = 0;
	for (int i = 0; i < 2; i++) {
		const struct bn_kernel_ops *ops = bn_kernel_open(masks[i]);
		if (!ops || strcmp(ops->variant, want[i])) {
			fprintf(stderr, "FAIL: features %#llx open %s, want %s\n",
			        (unsigned long long)masks[i], ops ? ops->variant : "NULL", want[i]);
			fails++;
			continue;
		}
		char label[64];
		snprintf(label, sizeof(label), "%s/%s (qemu)", bn_kernel_desc.name, ops->variant);
		struct pc_ctx c = { .ref = &ref_ops, .ops = ops, .label = label, .small = 1,
		                    .rng = 0x2545f4914f6cdd1dull + (uint64_t)i };
		unsigned f = pc_run_all(&c);
		printf("%s: %u comparisons, %u failures\n", label, c.checks, f);
		fails += f;
	}
	if (bn_kernel_open(0)) {
		fprintf(stderr, "FAIL: opened without ASIMD\n");
		fails++;
	}
	return fails ? 1 : 0;
}
