#include <errno.h>
#include <hwloc.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "pool.h"

/* Polls before sleeping on the futex: long enough to bridge the gap between two ops of one
 * forward pass (microseconds), short enough not to steal a shared core for long. */
#define POOL_SPIN 4000

struct bn_pool {
	unsigned n;
	hwloc_topology_t topo;
	int *pu;                       /* [n] OS index of each worker's PU */
	pthread_t *th;                 /* [n] (th[0] unused: the caller) */
	pthread_t bound_caller;
	bool caller_bound, bind;
	char cpus[256];

	_Atomic unsigned gen;          /* bumped per dispatch */
	_Atomic unsigned done;         /* workers 1..n-1 finished this dispatch */
	_Atomic int sleepers;
	_Atomic bool caller_waits;     /* the caller sleeps on `done` */
	_Atomic bool stop;
	bn_pool_fn fn;
	void *arg;
};

struct worker_arg {
	struct bn_pool *p;
	unsigned idx;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield");
#endif
}

static void futex_wait(_Atomic unsigned *addr, unsigned val)
{
	syscall(SYS_futex, (unsigned *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic unsigned *addr)
{
	syscall(SYS_futex, (unsigned *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static void bind_self(struct bn_pool *p, unsigned idx)
{
	if (!p->bind || !p->topo)
		return;
	hwloc_bitmap_t set = hwloc_bitmap_alloc();
	if (!set)
		return;
	hwloc_bitmap_only(set, (unsigned)p->pu[idx]);
	if (hwloc_set_cpubind(p->topo, set, HWLOC_CPUBIND_THREAD))
		bn_log(BN_LOG_WARNING, "pool: cannot bind worker %u to CPU %d: %s", idx, p->pu[idx],
		       strerror(errno));
	hwloc_bitmap_free(set);
}

static void *worker_main(void *v)
{
	struct worker_arg wa = *(struct worker_arg *)v;
	free(v);
	struct bn_pool *p = wa.p;
	bind_self(p, wa.idx);
	unsigned seen = 0;
	for (;;) {
		unsigned g;
		int spins = 0;
		while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
			if (++spins < POOL_SPIN) {
				cpu_relax();
				continue;
			}
			atomic_fetch_add(&p->sleepers, 1);
			if (atomic_load(&p->gen) == seen)
				futex_wait(&p->gen, seen);
			atomic_fetch_sub(&p->sleepers, 1);
			spins = 0;
		}
		seen = g;
		if (atomic_load(&p->stop))
			break;
		p->fn(p->arg, wa.idx, p->n);
		if (atomic_fetch_add_explicit(&p->done, 1, memory_order_seq_cst) + 1 == p->n - 1 &&
		    atomic_load(&p->caller_waits))
			futex_wake_all(&p->done);
	}
	return NULL;
}

void bn_pool_opts_default(struct bn_pool_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->bind = true;
}

/* Chooses the PUs: the allowed set (process binding and cgroup), optionally restricted by
 * a CPU list, one PU per core unless smt. */
static int choose_pus(hwloc_topology_t t, const struct bn_pool_opts *o, int **pus, unsigned *npu,
                      struct bn_error *err)
{
	hwloc_bitmap_t allowed = hwloc_bitmap_alloc(), want = hwloc_bitmap_alloc();
	int rc = 0;
	*pus = NULL;
	*npu = 0;
	if (!allowed || !want) {
		rc = bn_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	if (hwloc_get_cpubind(t, allowed, HWLOC_CPUBIND_PROCESS))
		hwloc_bitmap_copy(allowed, hwloc_topology_get_allowed_cpuset(t));
	hwloc_bitmap_and(allowed, allowed, hwloc_topology_get_allowed_cpuset(t));
	if (o->cpus && *o->cpus && strcmp(o->cpus, "auto")) {
		if (hwloc_bitmap_list_sscanf(want, o->cpus) || hwloc_bitmap_iszero(want)) {
			rc = bn_err_set(err, -EINVAL, "cpus = '%s': not a CPU list like 0-3,8", o->cpus);
			goto out;
		}
		if (!hwloc_bitmap_isincluded(want, allowed)) {
			char a[128], w[128];
			hwloc_bitmap_list_snprintf(a, sizeof(a), allowed);
			hwloc_bitmap_list_snprintf(w, sizeof(w), want);
			rc = bn_err_set(err, -EPERM, "cpus = '%s': CPUs outside the allowed set %s", w, a);
			goto out;
		}
	} else {
		hwloc_bitmap_copy(want, allowed);
	}
	int ncores = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_CORE);
	int maxpu = hwloc_bitmap_weight(want);
	if (maxpu <= 0) {
		rc = bn_err_set(err, -EINVAL, "no CPU is available to this process");
		goto out;
	}
	int *list = calloc((size_t)maxpu, sizeof(int));   /* [maxpu] OS PU indices */
	if (!list) {
		rc = bn_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	unsigned cnt = 0;
	if (ncores > 0) {
		for (int c = 0; c < ncores; c++) {
			hwloc_obj_t core = hwloc_get_obj_by_type(t, HWLOC_OBJ_CORE, (unsigned)c);
			int id = -1;
			while ((id = hwloc_bitmap_next(core->cpuset, id)) != -1) {
				if (!hwloc_bitmap_isset(want, (unsigned)id))
					continue;
				if (cnt < (unsigned)maxpu)
					list[cnt++] = id;
				if (!o->smt)
					break;
			}
		}
	}
	if (!cnt) {   /* no core objects: use PUs */
		int id = -1;
		while ((id = hwloc_bitmap_next(want, id)) != -1 && cnt < (unsigned)maxpu)
			list[cnt++] = id;
	}
	*pus = list;
	*npu = cnt;
out:
	hwloc_bitmap_free(allowed);
	hwloc_bitmap_free(want);
	return rc;
}

int bn_pool_new(struct bn_pool **out, const struct bn_pool_opts *o, struct bn_error *err)
{
	struct bn_pool_opts def;
	if (!o) {
		bn_pool_opts_default(&def);
		o = &def;
	}
	*out = NULL;
	if (o->threads > 1024)
		return bn_err_set(err, -EINVAL, "threads = %u is out of range (1..1024)", o->threads);
	struct bn_pool *p = calloc(1, sizeof(*p));
	if (!p)
		return bn_err_set(err, -ENOMEM, "out of memory");
	p->bind = o->bind;
	int rc = 0;
	int *pus = NULL;
	unsigned npu = 0;
	if (hwloc_topology_init(&p->topo) || hwloc_topology_load(p->topo)) {
		rc = bn_err_set(err, -EIO, "hwloc: cannot load the CPU topology");
		goto fail;
	}
	if ((rc = choose_pus(p->topo, o, &pus, &npu, err)))
		goto fail;
	p->n = o->threads ? o->threads : npu;
	if (p->n > npu)
		bn_log(BN_LOG_WARNING, "pool: %u threads on %u usable cores: workers share cores",
		       p->n, npu);
	p->pu = calloc(p->n, sizeof(int));
	p->th = calloc(p->n, sizeof(pthread_t));
	if (!p->pu || !p->th) {
		rc = bn_err_set(err, -ENOMEM, "out of memory");
		goto fail;
	}
	size_t used = 0;
	for (unsigned i = 0; i < p->n; i++) {
		p->pu[i] = pus[i % npu];
		int w = snprintf(p->cpus + used, sizeof(p->cpus) - used, "%s%d", i ? "," : "", p->pu[i]);
		if (w > 0 && (size_t)w < sizeof(p->cpus) - used)
			used += (size_t)w;
	}
	free(pus);
	pus = NULL;
	for (unsigned i = 1; i < p->n; i++) {
		struct worker_arg *wa = malloc(sizeof(*wa));
		if (!wa) {
			rc = bn_err_set(err, -ENOMEM, "out of memory");
			p->n = i;
			goto fail;
		}
		wa->p = p;
		wa->idx = i;
		int e = pthread_create(&p->th[i], NULL, worker_main, wa);
		if (e) {
			free(wa);
			rc = bn_err_set(err, -e, "pool: cannot start worker %u: %s", i, strerror(e));
			p->n = i;
			goto fail;
		}
	}
	bn_log(BN_LOG_INFO, "pool: %u worker%s on CPU %s", p->n, p->n == 1 ? "" : "s", p->cpus);
	*out = p;
	return 0;
fail:
	free(pus);
	bn_pool_free(p);
	return rc;
}

/* The syntax the documentation gives: comma-separated items N or N-M, N <= M, decimal, no
 * blanks. hwloc's own parser is lenient (it reads "0-3x" as 0-3 and "0-" as every CPU from
 * 0 on), so a plan checks the text first rather than run on a guess. */
static int cpulist_check(const char *s, struct bn_error *err)
{
	const char *p = s;
	for (;;) {
		unsigned long v[2];
		int nv = 0;
		for (;;) {
			if (*p < '0' || *p > '9')
				return bn_err_set(err, -EINVAL, "cpus = '%s': not a CPU list like 0-3,8 "
				                  "(%s%s%s)", s, *p ? "at '" : "a number missing at the end",
				                  p, *p ? "'" : "");
			char *end;
			errno = 0;
			v[nv] = strtoul(p, &end, 10);
			if (errno || v[nv] > BN_POOL_MAX_CPU)
				return bn_err_set(err, -EINVAL, "cpus = '%s': CPU number %.*s is above %u",
				                  s, (int)(end - p), p, BN_POOL_MAX_CPU);
			p = end;
			if (++nv == 2 || *p != '-')
				break;
			p++;
		}
		if (nv == 2 && v[0] > v[1])
			return bn_err_set(err, -EINVAL, "cpus = '%s': range %lu-%lu is reversed (no CPU)",
			                  s, v[0], v[1]);
		if (!*p)
			return 0;
		if (*p != ',')
			return bn_err_set(err, -EINVAL, "cpus = '%s': not a CPU list like 0-3,8 (at '%s')",
			                  s, p);
		p++;
	}
}

int bn_pool_plan(const struct bn_pool_opts *o, unsigned *n_workers, unsigned *n_cores,
                 struct bn_error *err)
{
	struct bn_pool_opts def;
	if (!o) {
		bn_pool_opts_default(&def);
		o = &def;
	}
	*n_workers = 0;
	*n_cores = 0;
	if (o->threads > 1024)
		return bn_err_set(err, -EINVAL, "threads = %u is out of range (1..1024)", o->threads);
	int rc;
	if (o->cpus && *o->cpus && strcmp(o->cpus, "auto") && (rc = cpulist_check(o->cpus, err)))
		return rc;
	hwloc_topology_t t;
	if (hwloc_topology_init(&t))
		return bn_err_set(err, -EIO, "hwloc: cannot load the CPU topology");
	int *pus = NULL;
	unsigned npu = 0;
	if (hwloc_topology_load(t))
		rc = bn_err_set(err, -EIO, "hwloc: cannot load the CPU topology");
	else
		rc = choose_pus(t, o, &pus, &npu, err);
	free(pus);
	hwloc_topology_destroy(t);
	if (rc)
		return rc;
	if (!npu)
		return bn_err_set(err, -EINVAL, "cpus = '%s': no usable core",
		                  o->cpus && *o->cpus ? o->cpus : "auto");
	*n_cores = npu;
	*n_workers = o->threads ? o->threads : npu;
	return 0;
}

void bn_pool_free(struct bn_pool *p)
{
	if (!p)
		return;
	if (p->th) {
		atomic_store(&p->stop, true);
		atomic_fetch_add(&p->gen, 1);
		futex_wake_all(&p->gen);
		for (unsigned i = 1; i < p->n; i++)
			if (p->th[i])
				pthread_join(p->th[i], NULL);
	}
	if (p->topo)
		hwloc_topology_destroy(p->topo);
	free(p->pu);
	free(p->th);
	free(p);
}

unsigned bn_pool_size(const struct bn_pool *p)
{
	return p ? p->n : 1;
}

const char *bn_pool_cpus(const struct bn_pool *p)
{
	return p ? p->cpus : "";
}

double bn_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double pool_run(struct bn_pool *p, bn_pool_fn fn, void *arg, bool timed)
{
	if (!p || p->n <= 1) {
		fn(arg, 0, 1);
		return 0;
	}
	if (!p->caller_bound || !pthread_equal(p->bound_caller, pthread_self())) {
		bind_self(p, 0);
		p->bound_caller = pthread_self();
		p->caller_bound = true;
	}
	p->fn = fn;
	p->arg = arg;
	atomic_store_explicit(&p->done, 0, memory_order_relaxed);
	atomic_fetch_add_explicit(&p->gen, 1, memory_order_seq_cst);
	if (atomic_load(&p->sleepers) > 0)
		futex_wake_all(&p->gen);
	fn(arg, 0, p->n);
	double t0 = timed ? bn_now() : 0;
	unsigned spins = 0, d;
	while ((d = atomic_load_explicit(&p->done, memory_order_acquire)) != p->n - 1) {
		if (++spins < POOL_SPIN) {
			cpu_relax();
			continue;
		}
		atomic_store(&p->caller_waits, true);
		if (atomic_load(&p->done) == d)
			futex_wait(&p->done, d);
		atomic_store(&p->caller_waits, false);
	}
	return timed ? bn_now() - t0 : 0;
}

void bn_pool_run(struct bn_pool *p, bn_pool_fn fn, void *arg)
{
	pool_run(p, fn, arg, false);
}

double bn_pool_run_wait(struct bn_pool *p, bn_pool_fn fn, void *arg)
{
	return pool_run(p, fn, arg, true);
}

void bn_pool_split(size_t total, size_t align, unsigned i, unsigned n, size_t *lo, size_t *hi)
{
	if (!align)
		align = 1;
	size_t units = (total + align - 1) / align;
	size_t a = units * i / n, b = units * (i + 1) / n;
	*lo = a * align < total ? a * align : total;
	*hi = b * align < total ? b * align : total;
}

void bn_split_init(struct bn_split *s, size_t total, unsigned n)
{
	s->nranges = n < 1 ? 1 : n > BN_SPLIT_RANGES ? BN_SPLIT_RANGES : n;
	for (unsigned i = 0; i < s->nranges; i++) {
		size_t lo, hi;
		bn_pool_split(total, 1, i, s->nranges, &lo, &hi);
		atomic_store_explicit(&s->r[i].next, lo, memory_order_relaxed);
		s->r[i].end = hi;
	}
}

bool bn_split_next(struct bn_split *s, unsigned idx, unsigned *cursor, size_t *chunk)
{
	for (; *cursor < s->nranges; ++*cursor) {
		unsigned r = (idx + *cursor) % s->nranges;
		if (atomic_load_explicit(&s->r[r].next, memory_order_relaxed) >= s->r[r].end)
			continue;   /* spent: no need to bump its counter further */
		size_t c = atomic_fetch_add_explicit(&s->r[r].next, 1, memory_order_relaxed);
		if (c < s->r[r].end) {
			*chunk = c;
			return true;
		}
	}
	return false;
}

static const char *const numa_names[] = { [BN_NUMA_OFF] = "off",
                                           [BN_NUMA_INTERLEAVE] = "interleave",
                                           [BN_NUMA_BIND] = "bind" };

int bn_numa_parse(const char *s, enum bn_numa *out)
{
	for (size_t i = 0; i < sizeof(numa_names) / sizeof(numa_names[0]); i++)
		if (!strcmp(s, numa_names[i])) {
			*out = (enum bn_numa)i;
			return 0;
		}
	return -EINVAL;
}

const char *bn_numa_name(enum bn_numa mode)
{
	return (size_t)mode < sizeof(numa_names) / sizeof(numa_names[0]) ? numa_names[mode] : "off";
}

int bn_pool_place(struct bn_pool *p, const void *addr, size_t len, enum bn_numa mode,
                  struct bn_error *err)
{
	if (mode == BN_NUMA_OFF || !len)
		return 0;
	int rc = 0;
	hwloc_bitmap_t cpus = hwloc_bitmap_alloc(), nodes = hwloc_bitmap_alloc();
	if (!cpus || !nodes) {
		rc = bn_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (unsigned i = 0; i < p->n; i++)
		hwloc_bitmap_set(cpus, (unsigned)p->pu[i]);
	hwloc_cpuset_to_nodeset(p->topo, cpus, nodes);
	char list[128];
	hwloc_bitmap_list_snprintf(list, sizeof(list), nodes);
	hwloc_membind_policy_t pol = mode == BN_NUMA_INTERLEAVE ? HWLOC_MEMBIND_INTERLEAVE
	                                                        : HWLOC_MEMBIND_BIND;
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	uintptr_t a = (uintptr_t)addr & ~(uintptr_t)(pg - 1);
	size_t l = (len + ((uintptr_t)addr - a) + pg - 1) & ~(pg - 1);
	if (hwloc_set_area_membind(p->topo, (const void *)a, l, nodes, pol,
	                           HWLOC_MEMBIND_BYNODESET | HWLOC_MEMBIND_MIGRATE)) {
		rc = bn_err_set(err, -errno, "numa = %s: cannot place the weights on NUMA node %s: %s",
		                bn_numa_name(mode), list, strerror(errno));
		goto out;
	}
	/* pages not yet in the page cache: fault them in under the same policy (this thread's,
	 * restored afterwards) */
	if (hwloc_set_membind(p->topo, nodes, pol, HWLOC_MEMBIND_THREAD | HWLOC_MEMBIND_BYNODESET)) {
		rc = bn_err_set(err, -errno, "numa = %s: cannot set the thread's memory policy: %s",
		                bn_numa_name(mode), strerror(errno));
		goto out;
	}
	volatile unsigned char sink = 0;
	for (size_t o = 0; o < l; o += pg)
		sink ^= *(const volatile unsigned char *)(a + o);
	(void)sink;
	hwloc_set_membind(p->topo, hwloc_topology_get_complete_nodeset(p->topo),
	                  HWLOC_MEMBIND_DEFAULT, HWLOC_MEMBIND_THREAD | HWLOC_MEMBIND_BYNODESET);
	bn_log(BN_LOG_INFO, "numa = %s: %.1f MB of weights on NUMA node%s %s", bn_numa_name(mode),
	       (double)l / 1e6, hwloc_bitmap_weight(nodes) > 1 ? "s" : "", list);
out:
	hwloc_bitmap_free(cpus);
	hwloc_bitmap_free(nodes);
	return rc;
}
