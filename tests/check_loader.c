/* Kernel plugin loader: broken plugins are refused with clear errors, never run. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "error.h"
#include "kernels.h"

#ifndef TEST_PLUGIN_DIR
#error TEST_PLUGIN_DIR must name the broken plugins' build directory
#endif

static int load(const char *name, uint64_t cpu, struct bn_error *err, struct bn_kernel **k)
{
	memset(err, 0, sizeof(*err));
	return bn_kernel_load(k, TEST_PLUGIN_DIR, name, cpu, err);
}

START_TEST(test_wrong_abi)
{
	struct bn_error err;
	struct bn_kernel *k;
	ck_assert_int_eq(load("badabi", bn_cpu_features(), &err, &k), -ENOEXEC);
	ck_assert_ptr_null(k);
	ck_assert_ptr_nonnull(strstr(err.msg, "badabi"));
	ck_assert_ptr_nonnull(strstr(err.msg, "ABI"));
}
END_TEST

START_TEST(test_missing_symbol)
{
	struct bn_error err;
	struct bn_kernel *k;
	ck_assert_int_eq(load("nosym", bn_cpu_features(), &err, &k), -ENOEXEC);
	ck_assert_ptr_nonnull(strstr(err.msg, "bn_kernel_open"));
}
END_TEST

START_TEST(test_features_absent)
{
	struct bn_error err;
	struct bn_kernel *k;
	/* Its open() aborts: reaching it would crash this test. */
	ck_assert_int_eq(load("needs", bn_cpu_features(), &err, &k), -ENODEV);
	ck_assert_ptr_nonnull(strstr(err.msg, "needs"));
	ck_assert_ptr_nonnull(strstr(err.msg, "lacks"));
	ck_assert(strstr(err.msg, "avx512vnni") || strstr(err.msg, "asimddp"));
}
END_TEST

START_TEST(test_forced_missing)
{
	struct bn_error err;
	struct bn_kernel *k;
	ck_assert_int_eq(load("avx9000", bn_cpu_features(), &err, &k), -ENOENT);
	ck_assert_ptr_nonnull(strstr(err.msg, "avx9000"));
	ck_assert_ptr_nonnull(strstr(err.msg, "not found"));
	ck_assert_int_eq(load("../scalar", 0, &err, &k), -EINVAL);
}
END_TEST

START_TEST(test_relative_dir)
{
	struct bn_error err = { 0 };
	struct bn_kernel *k;
	ck_assert_int_eq(bn_kernel_load(&k, "plugins", NULL, 0, &err), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "absolute"));
}
END_TEST

START_TEST(test_misnamed)
{
	struct bn_error err;
	struct bn_kernel *k;
	ck_assert_int_eq(load("misnamed", bn_cpu_features(), &err, &k), -ENOEXEC);
	ck_assert_ptr_nonnull(strstr(err.msg, "somethingelse"));
}
END_TEST

START_TEST(test_partial_fallback)
{
	struct bn_error err;
	struct bn_kernel *k;
	ck_assert_int_eq(load("partial", 0, &err, &k), 0);
	ck_assert_uint_eq(k->n_fallback, 5);
	ck_assert_ptr_eq(k->ops.rmsnorm, bn_scalar_builtin_ops.rmsnorm);
	ck_assert_ptr_eq(k->ops.q8_gemm, bn_scalar_builtin_ops.q8_gemm);
	ck_assert_ptr_eq(k->ops.ternary_gemm, bn_scalar_builtin_ops.ternary_gemm);
	ck_assert_ptr_ne(k->ops.quantize_i8, bn_scalar_builtin_ops.quantize_i8);
	bn_kernel_unload(k);
}
END_TEST

START_TEST(test_old_minor)
{
	/* A plugin built against ABI 1.0 (no q8_gemm): its ops kept, q8_gemm from the engine. */
	struct bn_error err;
	struct bn_kernel *k;
	ck_assert_int_eq(load("oldabi", 0, &err, &k), 0);
	ck_assert_uint_eq(k->info.abi_minor, 0);
	ck_assert_uint_eq(k->n_fallback, 1);
	ck_assert_ptr_eq(k->ops.q8_gemm, bn_scalar_builtin_ops.q8_gemm);
	ck_assert_ptr_eq((void *)k->ops.attn_head, (void *)5);
	ck_assert_uint_eq(k->ops.size, sizeof(struct bn_kernel_ops));
	bn_kernel_unload(k);
}
END_TEST

START_TEST(test_auto_skips_broken)
{
	/* Every broken plugin has priority 100; auto must pass over them to the usable one. */
	struct bn_error err;
	struct bn_kernel *k;
	ck_assert_int_eq(load("auto", bn_cpu_features(), &err, &k), 0);
	ck_assert_str_eq(k->info.name, "partial");
	bn_kernel_unload(k);

	struct bn_kernel_info *list;
	size_t n;
	ck_assert_int_eq(bn_kernel_scan(TEST_PLUGIN_DIR, bn_cpu_features(), &list, &n, &err), 0);
	ck_assert_uint_eq(n, 6);
	size_t usable = 0;
	for (size_t i = 0; i < n; i++) {
		usable += list[i].usable;
		if (!list[i].usable)
			ck_assert(list[i].problem[0] != '\0');
	}
	ck_assert_uint_eq(usable, 2);   /* partial and oldabi */
	free(list);
}
END_TEST

START_TEST(test_real_plugins)
{
	/* The build tree's plugins: scalar always loads; auto never picks one the CPU lacks. */
	struct bn_error err = { 0 };
	struct bn_kernel *k;
	ck_assert_int_eq(bn_kernel_load(&k, BN_BUILD_PLUGIN_DIR, "scalar", 0, &err), 0);
	ck_assert_uint_eq(k->n_fallback, 0);
	bn_kernel_unload(k);
	ck_assert_int_eq(bn_kernel_load(&k, BN_BUILD_PLUGIN_DIR, NULL, bn_cpu_features(), &err), 0);
	ck_assert_uint_eq(k->info.required & ~bn_cpu_features(), 0);
	bn_kernel_unload(k);
	/* With no CPU features, only scalar is runnable. */
	ck_assert_int_eq(bn_kernel_load(&k, BN_BUILD_PLUGIN_DIR, NULL, 0, &err), 0);
	ck_assert_str_eq(k->info.name, "scalar");
	bn_kernel_unload(k);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("loader");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_wrong_abi);
	tcase_add_test(tc, test_missing_symbol);
	tcase_add_test(tc, test_features_absent);
	tcase_add_test(tc, test_forced_missing);
	tcase_add_test(tc, test_relative_dir);
	tcase_add_test(tc, test_misnamed);
	tcase_add_test(tc, test_partial_fallback);
	tcase_add_test(tc, test_old_minor);
	tcase_add_test(tc, test_auto_skips_broken);
	tcase_add_test(tc, test_real_plugins);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
