/* Kernel choice by measurement. A static priority is a guess: on some CPUs the "better"
 * variant streams slower (AVX-512 VNNI vs AVX-VNNI on Zen 5). So `auto` times every runnable
 * plugin variant on the loaded model's own decode shapes, through the real worker pool, and
 * picks the one whose estimated token time is lowest. The choice is cached, keyed by CPU
 * model, features, thread count, plugin builds and model shapes, so a warm start measures
 * nothing. Variants are the plugin opened with some of its optional features masked off
 * (bn_kernel_open picks its code path from the features it is given). */
#ifndef BN_CALIBRATE_H
#define BN_CALIBRATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct bn_model;
struct bn_pool;

#define BN_CALIB_MAX 16

struct bn_calib_row {
	char plugin[32];
	char variant[32];
	uint64_t cpu;             /* features to load it with: bn_kernel_load(dir, plugin, cpu) */
	double ternary_gbps;      /* m = 1 projections, median of the rounds */
	double head_gbps;         /* f16 or q8_0 LM head rows (0: an f32/bf16 head, not timed) */
	double ms_token;          /* the model's decode weights at those rates */
};

struct bn_calib {
	struct bn_calib_row rows[BN_CALIB_MAX];
	size_t n;
	size_t best;              /* index into rows */
	bool from_cache;          /* rows[0] only, read from the cache: nothing was timed */
	double seconds;           /* wall time the calibration took */
	char key[65];             /* sha256 of what the choice depends on */
	char cache_file[512];     /* "" when there is no cache */
};

/* Chooses a kernel for model m on pool's threads from the plugins in dir. cache_dir: where
 * the choice is read and written ("kernel-calibration" in it), NULL for none; use_cache
 * false measures even on a hit (and rewrites the entry). A cache that cannot be read or
 * written is not an error (the choice is just not remembered). Errors: those of
 * bn_kernel_scan, -ENOEXEC when no plugin is runnable, -ENOMEM. */
int bn_calibrate(struct bn_calib *out, const char *dir, uint64_t cpu, const struct bn_model *m,
                 struct bn_pool *pool, const char *cache_dir, bool use_cache,
                 struct bn_error *err);

struct bn_kernel;

/* Loads the kernel `name` from dir; for NULL or "auto" with calibrate set, the one
 * bn_calibrate picks (its table in *calib when calib is not NULL; calib->n is 0 when no
 * calibration ran), else the highest-priority runnable one. Logs the calibration. */
int bn_kernel_load_for(struct bn_kernel **out, const char *dir, const char *name, uint64_t cpu,
                       const struct bn_model *m, struct bn_pool *pool, bool calibrate,
                       const char *cache_dir, struct bn_calib *calib, struct bn_error *err);

/* The default cache directory: $CACHE_DIRECTORY (systemd's CacheDirectory=, first entry),
 * else $XDG_CACHE_HOME/bitnet, else $HOME/.cache/bitnet; NULL when none is known. buf gets
 * the path. */
const char *bn_calib_default_cache(char *buf, size_t len);

#endif
