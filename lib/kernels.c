#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu.h"
#include "kernels.h"
#include "log.h"

const char *bn_kernel_default_dir(void)
{
	static char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		size_t bl = strlen(BN_BUILD_DIR);
		if (!strncmp(exe, BN_BUILD_DIR, bl) && exe[bl] == '/')
			return BN_BUILD_PLUGIN_DIR;
	}
	return BN_PLUGIN_DIR;
}

static bool is_plugin_file(const char *f)
{
	size_t n = strlen(f);
	return n > 10 && !strncmp(f, "kernel-", 7) && !strcmp(f + n - 3, ".so");
}

/* Opens one plugin file and reads its descriptor; leaves *dl open on success. */
static int probe(const char *dir, const char *file, uint64_t cpu, struct bn_kernel_info *info,
                 void **dl_out)
{
	char path[PATH_MAX];
	memset(info, 0, sizeof(*info));
	snprintf(info->file, sizeof(info->file), "%s", file);
	snprintf(info->name, sizeof(info->name), "%.*s", (int)(strlen(file) - 10), file + 7);
	if (snprintf(path, sizeof(path), "%s/%s", dir, file) >= (int)sizeof(path)) {
		snprintf(info->problem, sizeof(info->problem), "path too long");
		return -ENAMETOOLONG;
	}
	/* The descriptor is plain data: reading it runs no plugin code (plugins have no
	 * constructors), so a plugin built for a wider ISA is safe to inspect. */
	void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!dl) {
		const char *e = dlerror();
		snprintf(info->problem, sizeof(info->problem), "cannot load: %s", e ? e : "?");
		return -ENOEXEC;
	}
	const struct bn_kernel_desc *d = dlsym(dl, BN_KERNEL_DESC_SYMBOL);
	void *open_fn = dlsym(dl, BN_KERNEL_OPEN_SYMBOL);
	if (!d || !open_fn) {
		snprintf(info->problem, sizeof(info->problem), "missing symbol %s",
		         !d ? BN_KERNEL_DESC_SYMBOL : BN_KERNEL_OPEN_SYMBOL);
		dlclose(dl);
		return -ENOEXEC;
	}
	info->abi_major = d->abi_major;
	info->abi_minor = d->abi_minor;
	info->required = d->required;
	info->priority = d->priority;
	memcpy(info->description, d->description, sizeof(info->description) - 1);
	char dname[sizeof(d->name) + 1];
	memcpy(dname, d->name, sizeof(d->name));
	dname[sizeof(d->name)] = '\0';
	if (strcmp(dname, info->name)) {
		snprintf(info->problem, sizeof(info->problem),
		         "descriptor names '%s' but the file is %s", dname, file);
		dlclose(dl);
		return -ENOEXEC;
	}
	if (d->abi_major != BN_KERNEL_ABI_MAJOR) {
		snprintf(info->problem, sizeof(info->problem),
		         "plugin ABI %u.%u, engine speaks %u.x", d->abi_major, d->abi_minor,
		         BN_KERNEL_ABI_MAJOR);
		dlclose(dl);
		return -ENOEXEC;
	}
	info->missing = d->required & ~cpu;
	if (info->missing) {
		char fs[128];
		snprintf(info->problem, sizeof(info->problem), "CPU lacks %s",
		         bn_cpu_features_str(info->missing, fs, sizeof(fs)));
		*dl_out = dl;
		return -ENODEV;
	}
	info->usable = true;
	*dl_out = dl;
	return 0;
}

static int cmp_info(const void *a, const void *b)
{
	const struct bn_kernel_info *x = a, *y = b;
	if (x->priority != y->priority)
		return x->priority > y->priority ? -1 : 1;
	return strcmp(x->name, y->name);
}

int bn_kernel_scan(const char *dir, uint64_t cpu, struct bn_kernel_info **out, size_t *n,
                   struct bn_error *err)
{
	*out = NULL;
	*n = 0;
	if (!dir || dir[0] != '/')
		return bn_err_set(err, -EINVAL, "plugin directory '%s' is not an absolute path",
		                  dir ? dir : "(null)");
	DIR *dp = opendir(dir);
	if (!dp)
		return bn_err_set(err, -errno, "plugin directory %s: %s", dir, strerror(errno));
	struct bn_kernel_info *list = NULL;
	size_t cnt = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(dp))) {
		if (!is_plugin_file(de->d_name))
			continue;
		if (cnt == cap) {
			cap = cap ? cap * 2 : 8;
			struct bn_kernel_info *nl = realloc(list, cap * sizeof(*list));
			if (!nl) {
				free(list);
				closedir(dp);
				return bn_err_set(err, -ENOMEM, "out of memory");
			}
			list = nl;
		}
		void *dl = NULL;
		probe(dir, de->d_name, cpu, &list[cnt], &dl);
		if (dl)
			dlclose(dl);
		cnt++;
	}
	closedir(dp);
	if (cnt)
		qsort(list, cnt, sizeof(*list), cmp_info);
	*out = list;
	*n = cnt;
	return 0;
}

static int kernel_open(struct bn_kernel *k, void *dl, uint64_t cpu, struct bn_error *err)
{
	bn_kernel_open_fn open_fn;
	*(void **)&open_fn = dlsym(dl, BN_KERNEL_OPEN_SYMBOL);
	const struct bn_kernel_ops *ops = open_fn(cpu);
	if (!ops || ops->size < offsetof(struct bn_kernel_ops, quantize_i8))
		return bn_err_set(err, -ENOEXEC, "kernel plugin '%s' refused to open on this CPU",
		                  k->info.name);
	k->dl = dl;
	/* Copy what the plugin's table has; members it predates stay NULL -> built-in. */
	size_t have = ops->size < sizeof(k->ops) ? ops->size : sizeof(k->ops);
	memset(&k->ops, 0, sizeof(k->ops));
	memcpy(&k->ops, ops, have);
	k->variant = ops->variant ? ops->variant : k->info.name;
	void (**dst)(void) = (void (**)(void))&k->ops.quantize_i8;
	void (*const *src)(void) = (void (*const *)(void))&bn_scalar_builtin_ops.quantize_i8;
	size_t nops = (sizeof(k->ops) - offsetof(struct bn_kernel_ops, quantize_i8)) / sizeof(void *);
	for (size_t i = 0; i < nops; i++) {
		if (!dst[i] && src[i]) {   /* NULL in both (attn_group): the engine's own loop */
			dst[i] = src[i];
			k->n_fallback++;
		}
	}
	k->ops.size = sizeof(k->ops);
	return 0;
}

int bn_kernel_load(struct bn_kernel **out, const char *dir, const char *name, uint64_t cpu,
                   struct bn_error *err)
{
	*out = NULL;
	if (!dir || dir[0] != '/')
		return bn_err_set(err, -EINVAL, "plugin directory '%s' is not an absolute path",
		                  dir ? dir : "(null)");
	struct bn_kernel *k = calloc(1, sizeof(*k));
	if (!k)
		return bn_err_set(err, -ENOMEM, "out of memory");
	snprintf(k->dir, sizeof(k->dir), "%s", dir);
	void *dl = NULL;
	int rc;
	if (name && *name && strcmp(name, "auto")) {
		char file[300];
		if (strchr(name, '/') || strlen(name) > 31) {
			free(k);
			return bn_err_set(err, -EINVAL, "invalid kernel plugin name '%s'", name);
		}
		snprintf(file, sizeof(file), "kernel-%s.so", name);
		char path[PATH_MAX];
		snprintf(path, sizeof(path), "%s/%s", dir, file);
		if (access(path, F_OK)) {
			free(k);
			return bn_err_set(err, -ENOENT, "kernel plugin '%s' not found in %s", name, dir);
		}
		rc = probe(dir, file, cpu, &k->info, &dl);
		if (rc) {
			if (dl)
				dlclose(dl);
			bn_err_set(err, rc, "kernel plugin '%s' (%s/%s): %s", name, dir, file,
			           k->info.problem);
			free(k);
			return rc;
		}
	} else {
		struct bn_kernel_info *list;
		size_t n;
		rc = bn_kernel_scan(dir, cpu, &list, &n, err);
		if (rc) {
			free(k);
			return rc;
		}
		size_t i;
		for (i = 0; i < n; i++) {
			if (!list[i].usable)
				continue;
			if (!probe(dir, list[i].file, cpu, &k->info, &dl))
				break;
			if (dl)
				dlclose(dl);
			dl = NULL;
		}
		free(list);
		if (i == n) {
			free(k);
			return bn_err_set(err, -ENOEXEC, "no usable kernel plugin in %s", dir);
		}
	}
	rc = kernel_open(k, dl, cpu, err);
	if (rc) {
		dlclose(dl);
		free(k);
		return rc;
	}
	if (k->n_fallback)
		bn_log(BN_LOG_DEBUG, "kernel %s: %u ops use the built-in scalar code", k->info.name,
		       k->n_fallback);
	*out = k;
	return 0;
}

void bn_kernel_unload(struct bn_kernel *k)
{
	if (!k)
		return;
	if (k->dl)
		dlclose(k->dl);
	free(k);
}
