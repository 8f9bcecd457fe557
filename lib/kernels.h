/* Kernel plugin registry: finds kernel-*.so in one absolute directory, reads each
 * descriptor, and opens the chosen one. Missing ops fall back to the built-in scalar code. */
#ifndef BN_KERNELS_H
#define BN_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#include "bitnet/kernel.h"
#include "error.h"

extern const struct bn_kernel_ops bn_scalar_builtin_ops;

struct bn_kernel_info {
	char name[32];
	char description[96];
	char file[256];          /* file name inside the plugin directory */
	uint64_t required;       /* BN_CPU_* */
	uint64_t missing;        /* required bits this CPU lacks */
	int32_t priority;
	uint32_t abi_major, abi_minor;
	bool usable;             /* loads, ABI matches, CPU has the features */
	char problem[160];       /* why not usable */
};

struct bn_kernel {
	void *dl;                       /* dlopen handle */
	struct bn_kernel_info info;
	char dir[512];
	struct bn_kernel_ops ops;       /* plugin ops, NULLs replaced by built-in scalar ops */
	const char *variant;
	unsigned n_fallback;            /* ops taken from the built-in code */
};

/* The directory uninstalled binaries use (the build tree's plugins) or the installed one. */
const char *bn_kernel_default_dir(void);

/* Lists every kernel-*.so in dir with its descriptor, sorted by priority (highest first).
 * *out is malloc'd. */
int bn_kernel_scan(const char *dir, uint64_t cpu, struct bn_kernel_info **out, size_t *n,
                   struct bn_error *err);

/* Loads the plugin `name` (NULL or "auto": the highest-priority usable one) from dir.
 * Errors: -EINVAL dir not absolute; -ENOENT no such plugin; -ENOEXEC bad ABI or symbols;
 * -ENODEV the CPU lacks its features. Never runs code the CPU cannot execute. */
int bn_kernel_load(struct bn_kernel **out, const char *dir, const char *name, uint64_t cpu,
                   struct bn_error *err);
void bn_kernel_unload(struct bn_kernel *k);

#endif
