/* bitnet kernels: every plugin in the directory, what it needs, and which `auto` picks. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cpu.h"
#include "engine.h"
#include "error.h"
#include "kernels.h"
#include "tools.h"

int cmd_kernels(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "plugin-dir", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	const char *dir = NULL;
	int c;
	while ((c = getopt_long(argc, argv, "d:h", lo, NULL)) != -1) {
		switch (c) {
		case 'd': dir = optarg; break;
		case 'h': printf("usage: bitnet kernels [--plugin-dir DIR]\n"); return 0;
		default: fprintf(stderr, "usage: bitnet kernels [--plugin-dir DIR]\n"); return 2;
		}
	}
	if (!dir)
		dir = bn_kernel_default_dir();
	if (tool_check_cpu_env("kernels"))
		return 2;
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
	printf("\nauto: %s\n", pick ? pick : "(none)");
	free(list);
	return pick ? 0 : 1;
}
