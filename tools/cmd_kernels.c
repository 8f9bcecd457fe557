/* bitnet kernels: every plugin in the directory, what it needs, and which `auto` picks;
 * with --calibrate MODEL, the timing table that `auto` chooses from on that model. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calibrate.h"
#include "cpu.h"
#include "engine.h"
#include "error.h"
#include "kernels.h"
#include "model.h"
#include "pool.h"
#include "tools.h"

static void kernels_usage(FILE *f)
{
	fprintf(f, "usage: bitnet kernels [--plugin-dir DIR]\n"
	           "       bitnet kernels --calibrate MODEL [--threads N] [--cpus LIST] [--smt]\n"
	           "                      [--plugin-dir DIR] [--cache] [--cache-dir DIR]\n");
}

/* Times every runnable variant on MODEL (always measures; --cache also stores the choice
 * where `auto` looks for it). */
static int calibrate(const char *dir, const char *model, unsigned threads, const char *cpus,
                     bool smt, bool store, const char *cache_dir)
{
	struct bn_error err = { 0 };
	struct bn_model *m = NULL;
	struct bn_pool *p = NULL;
	int rc = 1;
	struct bn_pool_opts po;
	bn_pool_opts_default(&po);
	po.threads = threads;
	po.cpus = cpus;
	po.smt = smt;
	char cache[512];
	if (store && !cache_dir)
		cache_dir = bn_calib_default_cache(cache, sizeof(cache));
	struct bn_calib cal;
	if (bn_model_load(&m, model, NULL, &err) || bn_pool_new(&p, &po, &err) ||
	    bn_calibrate(&cal, dir, bn_cpu_features(), m, p, store ? cache_dir : NULL, false, &err)) {
		tool_error("kernels", "%s", err.msg);
		goto out;
	}
	printf("calibration on %s, %u threads on CPU %s (%.0f ms)\n", model, bn_pool_size(p),
	       bn_pool_cpus(p), 1e3 * cal.seconds);
	printf("%-10s %-18s %-14s %14s %12s %12s\n", "plugin", "variant", "features off",
	       "ternary GB/s", "head GB/s", "ms/token");
	uint64_t cpu = bn_cpu_features();
	for (size_t i = 0; i < cal.n; i++) {
		const struct bn_calib_row *r = &cal.rows[i];
		char off[128] = "-";
		if (cpu & ~r->cpu)
			bn_cpu_features_str(cpu & ~r->cpu, off, sizeof(off));
		printf("%-10s %-18s %-14s %14.2f %12.2f %12.2f%s\n", r->plugin, r->variant, off,
		       r->ternary_gbps, r->head_gbps, r->ms_token, i == cal.best ? "  <- auto" : "");
	}
	if (cal.cache_file[0])
		printf("choice stored in %s\n", cal.cache_file);
	rc = 0;
out:
	bn_pool_free(p);
	bn_model_free(m);
	return rc;
}

int cmd_kernels(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "plugin-dir", required_argument, NULL, 'd' },
		{ "calibrate", required_argument, NULL, 'c' },
		{ "threads", required_argument, NULL, 't' },
		{ "cpus", required_argument, NULL, 'C' },
		{ "smt", no_argument, NULL, 'S' },
		{ "cache", no_argument, NULL, 'k' },
		{ "cache-dir", required_argument, NULL, 'K' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	const char *dir = NULL, *model = NULL, *cpus = NULL, *cache_dir = NULL;
	unsigned long threads = 0;
	bool smt = false, store = false;
	int c;
	while ((c = getopt_long(argc, argv, "d:t:h", lo, NULL)) != -1) {
		switch (c) {
		case 'd': dir = optarg; break;
		case 'c': model = optarg; break;
		case 't':
			if (strcmp(optarg, "auto") && !tool_parse_uint("kernels", "--threads", optarg, 1, 1024, &threads))
				return 2;
			break;
		case 'C': cpus = optarg; break;
		case 'S': smt = true; break;
		case 'k': store = true; break;
		case 'K': cache_dir = optarg; store = true; break;
		case 'h': kernels_usage(stdout); return 0;
		default: kernels_usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		kernels_usage(stderr);
		return 2;
	}
	if (!dir)
		dir = bn_kernel_default_dir();
	if (tool_check_cpu_env("kernels"))
		return 2;
	if (model)
		return calibrate(dir, model, (unsigned)threads, cpus, smt, store, cache_dir);
	uint64_t cpu = bn_cpu_features();
	char fs[256];
	printf("cpu features: %s\nplugin directory: %s\n\n", bn_cpu_features_str(cpu, fs, sizeof(fs)), dir);
	struct bn_error err = { 0 };
	struct bn_kernel_info *list;
	size_t n;
	if (bn_kernel_scan(dir, cpu, &list, &n, &err)) {
		tool_error("kernels", "%s", err.msg);
		return 1;
	}
	const char *pick = NULL;
	printf("%-10s %-8s %-40s %s\n", "plugin", "priority", "requires", "status");
	for (size_t i = 0; i < n; i++) {
		if (list[i].usable && !pick)
			pick = list[i].name;
		printf("%-10s %-8d %-40s %s\n", list[i].name, list[i].priority,
		       list[i].required ? bn_cpu_features_str(list[i].required, fs, sizeof(fs)) : "-",
		       list[i].usable ? "usable" : list[i].problem);
	}
	if (tool_calibrate_enabled())
		printf("\nauto: measured on the model at load (bitnet kernels --calibrate MODEL shows the "
		       "table); by priority alone: %s\n", pick ? pick : "(none)");
	else
		printf("\nauto (BITNET_CALIBRATE=0: by priority): %s\n", pick ? pick : "(none)");
	free(list);
	return pick ? 0 : 1;
}
