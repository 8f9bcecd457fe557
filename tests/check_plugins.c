/* Every kernel plugin against the scalar reference, op by op (tests/plugin-compare.h).
 *
 * Default build: every kernel-*.so in the build tree's plugin directory that this CPU can
 * run, once per code path: the full feature set, without AMX, and without AMX and the
 * dot-product extensions, so that e.g. "avx512-vnni-amx", "avx512-vnni" and "avx512" all run
 * on an AMX machine. Plugins the CPU cannot run are skipped with a note.
 * BN_CHECK_LINKED: the plugin source is linked into this program, compiled against SIMDe
 * (tests/check_plugins_simde_avx512, _neon), so its code runs on any x86-64 host. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitnet/kernel.h"
#include "cpu.h"
#include "kernels.h"
#include "plugin-compare.h"

/* The dot-product extensions a plugin may pick at open time. */
#define DOT_FEATURES (BN_CPU_AVX512VNNI | BN_CPU_AVXVNNI | BN_CPU_ASIMDDP)
#define N_MASKS 3

struct variant {
	char plugin[32];
	char variant[32];
	uint64_t cpu;          /* features passed to bn_kernel_open */
	char label[96];
};

static struct variant variants[24];
static int n_variants;

/* Feature sets to open each plugin with, most capable first: [N_MASKS] */
static void feature_masks(uint64_t full, uint64_t *masks)
{
	masks[0] = full;
	masks[1] = full & ~BN_CPU_AMXINT8;
	masks[2] = full & ~(BN_CPU_AMXINT8 | DOT_FEATURES);
}

/* Appends a variant unless an earlier mask of the same plugin already gave its code path. */
static void add_variant(const char *plugin, const char *variant, uint64_t cpu, const char *suffix)
{
	char fs[256];
	printf("%s with features [%s]: variant %s\n", plugin,
	       bn_cpu_features_str(cpu, fs, sizeof(fs)), variant);
	for (int i = 0; i < n_variants; i++)
		if (!strcmp(variants[i].plugin, plugin) && !strcmp(variants[i].variant, variant))
			return;
	if (n_variants == (int)(sizeof(variants) / sizeof(variants[0])))
		return;
	struct variant *v = &variants[n_variants++];
	snprintf(v->plugin, sizeof(v->plugin), "%s", plugin);
	snprintf(v->variant, sizeof(v->variant), "%s", variant);
	v->cpu = cpu;
	snprintf(v->label, sizeof(v->label), "%s/%s%s", plugin, variant, suffix);
}

#ifdef BN_CHECK_LINKED
extern const struct bn_kernel_desc bn_kernel_desc;
const struct bn_kernel_ops *bn_kernel_open(uint64_t cpu_features);

static void find_variants(void)
{
	uint64_t masks[N_MASKS];
	feature_masks(bn_kernel_desc.required | DOT_FEATURES | BN_CPU_AMXINT8, masks);
	for (int i = 0; i < N_MASKS; i++) {
		const struct bn_kernel_ops *ops = bn_kernel_open(masks[i]);
		if (!ops) {
			printf("note: %s refused features %#llx\n", bn_kernel_desc.name,
			       (unsigned long long)masks[i]);
			continue;
		}
		add_variant(bn_kernel_desc.name, ops->variant, masks[i], " (SIMDe)");
	}
}

START_TEST(test_variant)
{
	struct variant *v = &variants[_i];
	const struct bn_kernel_ops *ops = bn_kernel_open(v->cpu);
	ck_assert_ptr_nonnull(ops);
	ck_assert_uint_ge(ops->size, sizeof(struct bn_kernel_ops));
	/* SIMDe has no AMX: the plugin must never pick it there, whatever the features say */
	ck_assert_msg(!strstr(ops->variant, "amx"), "%s chose %s under SIMDe", v->plugin,
	              ops->variant);
	struct pc_ctx c = { .ref = &bn_scalar_builtin_ops, .ops = ops, .label = v->label,
	                    .small = 1, .rng = 0x9e3779b97f4a7c15ull + (uint64_t)_i };
	unsigned fails = pc_run_all(&c);
	printf("%s: %u comparisons, %u failures\n", v->label, c.checks, fails);
	ck_assert_msg(fails == 0, "%s: %u of %u comparisons differ from scalar", v->label, fails,
	              c.checks);
}
END_TEST

#else

static void find_variants(void)
{
	uint64_t cpu = bn_cpu_features();
	struct bn_kernel_info *list;
	size_t n;
	struct bn_error err;
	memset(&err, 0, sizeof(err));
	if (bn_kernel_scan(BN_BUILD_PLUGIN_DIR, cpu, &list, &n, &err)) {
		printf("note: cannot scan %s\n", BN_BUILD_PLUGIN_DIR);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (!list[i].usable) {
			printf("note: skipping plugin %s: %s\n", list[i].name, list[i].problem);
			continue;
		}
		uint64_t masks[N_MASKS];
		feature_masks(cpu, masks);
		for (int j = 0; j < N_MASKS; j++) {
			struct bn_kernel *k;
			if (bn_kernel_load(&k, BN_BUILD_PLUGIN_DIR, list[i].name, masks[j], &err)) {
				printf("note: %s refused its features: %s\n", list[i].name, err.msg);
				continue;
			}
			add_variant(list[i].name, k->variant, masks[j], "");
			bn_kernel_unload(k);
		}
	}
	free(list);
}

START_TEST(test_variant)
{
	struct variant *v = &variants[_i];
	struct bn_kernel *k;
	struct bn_error err;
	memset(&err, 0, sizeof(err));
	int rc = bn_kernel_load(&k, BN_BUILD_PLUGIN_DIR, v->plugin, v->cpu, &err);
	ck_assert_msg(rc == 0, "load %s: %d", v->plugin, rc);
	ck_assert_str_eq(k->variant, v->variant);
	ck_assert_msg(k->n_fallback == 0 || !strcmp(v->plugin, "scalar"),
	              "%s leaves %u ops to the built-in code", v->plugin, k->n_fallback);
	struct pc_ctx c = { .ref = &bn_scalar_builtin_ops, .ops = &k->ops, .label = v->label,
	                    .small = 0, .rng = 0x9e3779b97f4a7c15ull + (uint64_t)_i };
	unsigned fails = pc_run_all(&c);
	printf("%s: %u comparisons, %u failures\n", v->label, c.checks, fails);
	bn_kernel_unload(k);
	ck_assert_msg(fails == 0, "%s: %u of %u comparisons differ from scalar", v->label, fails,
	              c.checks);
}
END_TEST

#endif

int main(void)
{
	find_variants();
	if (!n_variants) {
		printf("no runnable kernel plugin found\n");
		return 77;
	}
	Suite *s = suite_create("plugins");
	TCase *tc = tcase_create("ops");
	tcase_set_timeout(tc, 300);
	tcase_add_loop_test(tc, test_variant, 0, n_variants);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
