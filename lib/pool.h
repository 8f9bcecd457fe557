/* Persistent worker pool pinned with hwloc: one worker per physical core the process may
 * use (its CPU binding and cgroup), the calling thread being worker 0. Dispatch spins
 * briefly, then sleeps on a futex, so an op costs microseconds, not a mutex round trip. */
#ifndef BN_POOL_H
#define BN_POOL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "error.h"

struct bn_pool;

struct bn_pool_opts {
	unsigned threads;     /* 0: one per usable physical core */
	const char *cpus;     /* NULL, "" or "auto": all allowed; else a list like "0-3,8" */
	bool smt;             /* also use SMT siblings */
	bool bind;            /* pin workers (default in bn_pool_opts_default: true) */
};

typedef void (*bn_pool_fn)(void *arg, unsigned idx, unsigned n);

double bn_now(void);   /* monotonic seconds */

void bn_pool_opts_default(struct bn_pool_opts *o);
int bn_pool_new(struct bn_pool **out, const struct bn_pool_opts *o, struct bn_error *err);
void bn_pool_free(struct bn_pool *p);
/* The largest CPU number a cpus list may name. */
#define BN_POOL_MAX_CPU 65535u
/* What bn_pool_new(o) would choose, without starting a thread: the same PU choice over the
 * CPUs this process may use (binding and cgroup) now. *n_cores: usable cores (PUs with smt)
 * after the cpus list; *n_workers: the workers it would run (threads, or *n_cores when 0;
 * more than *n_cores means workers share cores). Also checks the list's text strictly
 * (items N or N-M with N <= M, comma separated). Errors: -EINVAL malformed list or threads
 * out of range, -EPERM CPUs outside the allowed set, -EIO no topology. */
int bn_pool_plan(const struct bn_pool_opts *o, unsigned *n_workers, unsigned *n_cores,
                 struct bn_error *err);
unsigned bn_pool_size(const struct bn_pool *p);
/* The OS CPU numbers the workers run on, e.g. "0,2" (worker order). */
const char *bn_pool_cpus(const struct bn_pool *p);
/* Runs fn(arg, i, n) on every worker i (the caller is worker 0) and waits for all. */
void bn_pool_run(struct bn_pool *p, bn_pool_fn fn, void *arg);
/* The same; returns the seconds the caller waited for the others after its own share. */
double bn_pool_run_wait(struct bn_pool *p, bn_pool_fn fn, void *arg);
/* NUMA placement of the mapped weights (config `numa`). */
enum bn_numa { BN_NUMA_OFF, BN_NUMA_INTERLEAVE, BN_NUMA_BIND };
int bn_numa_parse(const char *s, enum bn_numa *out);   /* "off", "interleave", "bind" */
const char *bn_numa_name(enum bn_numa mode);
/* Puts the pages of [addr, addr + len) (a read-only file mapping) on the NUMA nodes of the
 * pool's CPUs, interleaved page by page or bound to them: the range's policy is set and its
 * resident pages migrated (those only this process maps), then every page is faulted in
 * under the same policy, since page-cache pages are placed by the faulting thread's policy
 * and not the mapping's. BN_NUMA_OFF: nothing. Logs what it did. */
int bn_pool_place(struct bn_pool *p, const void *addr, size_t len, enum bn_numa mode,
                  struct bn_error *err);
/* Splits [0, total) into n parts aligned to `align`: part i is [*lo, *hi). */
void bn_pool_split(size_t total, size_t align, unsigned i, unsigned n, size_t *lo, size_t *hi);

/* Hands out chunks [0, total) to the n workers of a dispatch: worker i takes the chunks of
 * its own contiguous range front to back (one long stream per thread, which the hardware
 * prefetchers follow; chunks dealt from one shared counter interleave the threads every
 * chunk), then helps the others with what is left of theirs, so a worker that lost its core
 * on a shared machine holds nobody up. Which worker takes a chunk must not change results. */
#define BN_SPLIT_RANGES 64   /* more workers share ranges */
struct bn_split {
	unsigned nranges;
	struct {
		_Alignas(64) _Atomic size_t next;
		size_t end;
	} r[BN_SPLIT_RANGES];
};
void bn_split_init(struct bn_split *s, size_t total, unsigned n);
/* The next chunk for worker idx into *chunk; false when none is left. *cursor starts at 0. */
bool bn_split_next(struct bn_split *s, unsigned idx, unsigned *cursor, size_t *chunk);

#endif
