/* Worker pool: every worker runs each dispatch exactly once, the split covers every row once,
 * CPU lists are checked against what the process may use, and the chosen CPUs are reported. */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "error.h"
#include "pool.h"

struct count_job {
	_Atomic unsigned calls;
	_Atomic unsigned long mask;
	_Atomic unsigned long long rows;  /* sum of rows seen */
	size_t total;
};

static void count_worker(void *arg, unsigned idx, unsigned n)
{
	struct count_job *j = arg;
	atomic_fetch_add(&j->calls, 1);
	atomic_fetch_or(&j->mask, 1ul << idx);
	size_t lo, hi;
	bn_pool_split(j->total, 16, idx, n, &lo, &hi);
	for (size_t r = lo; r < hi; r++)
		atomic_fetch_add(&j->rows, r + 1);
}

/* A pool of exactly n workers (default options otherwise). */
static struct bn_pool *pool_of(unsigned n)
{
	struct bn_pool_opts o;
	bn_pool_opts_default(&o);
	o.threads = n;
	struct bn_error err = { 0 };
	struct bn_pool *p;
	ck_assert_int_eq(bn_pool_new(&p, &o, &err), 0);
	ck_assert_uint_eq(bn_pool_size(p), n);
	return p;
}

START_TEST(test_dispatch)
{
	unsigned threads[] = { 1, 2, 3, 5 };
	for (size_t t = 0; t < sizeof(threads) / sizeof(threads[0]); t++) {
		struct bn_pool *p = pool_of(threads[t]);
		for (int rep = 0; rep < 2000; rep++) {
			struct count_job j = { 0 };
			j.total = 1000 + (size_t)rep % 37;
			bn_pool_run(p, count_worker, &j);
			ck_assert_uint_eq(atomic_load(&j.calls), threads[t]);
			ck_assert_uint_eq(atomic_load(&j.mask), (1ul << threads[t]) - 1);
			ck_assert_uint_eq(atomic_load(&j.rows), (unsigned long long)j.total * (j.total + 1) / 2);
		}
		bn_pool_free(p);
	}
}
END_TEST

START_TEST(test_split)
{
	for (size_t total = 0; total < 300; total += 7)
		for (unsigned n = 1; n <= 9; n++) {
			size_t prev = 0;
			for (unsigned i = 0; i < n; i++) {
				size_t lo, hi;
				bn_pool_split(total, 16, i, n, &lo, &hi);
				ck_assert_uint_eq(lo, prev);
				ck_assert(hi >= lo);
				ck_assert(lo % 16 == 0 || lo == total);
				prev = hi;
			}
			ck_assert_uint_eq(prev, total);
		}
}
END_TEST

/* bn_split: every chunk exactly once, whatever the workers; a worker's own range comes
 * first and in order; a worker that never runs leaves its range to the others. */
struct split_job {
	struct bn_split s;
	_Atomic unsigned char seen[700];
	_Atomic unsigned bad_order;
	unsigned skip;                /* this worker takes nothing (it "lost its core") */
};

static void split_worker(void *arg, unsigned idx, unsigned n)
{
	struct split_job *j = arg;
	if (idx == j->skip)
		return;
	size_t lo, hi, ch, own = 0;
	bn_pool_split(700, 1, idx, n, &lo, &hi);   /* 700 chunks, as bn_split_init below */
	unsigned cur = 0;
	while (bn_split_next(&j->s, idx, &cur, &ch)) {
		atomic_fetch_add(&j->seen[ch], 1);
		if (cur == 0 && (ch < lo || ch >= hi || ch < own))
			atomic_fetch_add(&j->bad_order, 1);
		own = ch;
	}
}

START_TEST(test_split_dispenser)
{
	unsigned threads[] = { 1, 2, 3, 5 };
	for (size_t t = 0; t < sizeof(threads) / sizeof(threads[0]); t++) {
		struct bn_pool *p = pool_of(threads[t]);
		for (int rep = 0; rep < 300; rep++) {
			static struct split_job j;
			memset(&j, 0, sizeof j);
			j.skip = threads[t] > 1 && rep % 3 == 0 ? (unsigned)rep % threads[t] : ~0u;
			bn_split_init(&j.s, 700, threads[t]);
			bn_pool_run(p, split_worker, &j);
			for (size_t c = 0; c < 700; c++)
				ck_assert_uint_eq(atomic_load(&j.seen[c]), 1);
			ck_assert_uint_eq(atomic_load(&j.bad_order), 0);
		}
		bn_pool_free(p);
	}
	/* more workers than ranges: they share the ranges, still once each */
	struct bn_split s;
	bn_split_init(&s, 10, 1000);
	ck_assert_uint_eq(s.nranges, BN_SPLIT_RANGES);
	unsigned char seen[10] = { 0 };
	size_t ch;
	for (unsigned w = 0; w < 1000; w++) {
		unsigned cur = 0;
		while (bn_split_next(&s, w, &cur, &ch)) {
			ck_assert(ch < 10);
			seen[ch]++;
		}
	}
	for (size_t c = 0; c < 10; c++)
		ck_assert_uint_eq(seen[c], 1);
}
END_TEST

START_TEST(test_cpus)
{
	struct bn_pool_opts o;
	bn_pool_opts_default(&o);
	struct bn_error err = { 0 };
	struct bn_pool *p;
	o.cpus = "not-a-list";
	ck_assert_int_eq(bn_pool_new(&p, &o, &err), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "not-a-list"));
	o.cpus = "4000";   /* outside any allowed set */
	ck_assert_int_eq(bn_pool_new(&p, &o, &err), -EPERM);
	ck_assert_ptr_nonnull(strstr(err.msg, "outside"));

	/* The first CPU the process may use: the pool runs one worker there and says so. */
	cpu_set_t set;
	ck_assert_int_eq(sched_getaffinity(0, sizeof(set), &set), 0);
	int first = -1;
	for (int c = 0; c < CPU_SETSIZE && first < 0; c++)
		if (CPU_ISSET(c, &set))
			first = c;
	char list[16];
	snprintf(list, sizeof(list), "%d", first);
	o.cpus = list;
	ck_assert_int_eq(bn_pool_new(&p, &o, &err), 0);
	ck_assert_uint_eq(bn_pool_size(p), 1);
	ck_assert_str_eq(bn_pool_cpus(p), list);
	bn_pool_free(p);

	o.cpus = NULL;
	o.threads = 2000;
	ck_assert_int_eq(bn_pool_new(&p, &o, &err), -EINVAL);
}
END_TEST

/* The numa_maps line of the mapping that starts at addr, or "" (file unreadable). */
static void numa_line(const void *addr, char *out, size_t len)
{
	out[0] = '\0';
	FILE *f = fopen("/proc/self/numa_maps", "r");
	if (!f)
		return;
	char line[1024], want[32];
	snprintf(want, sizeof(want), "%lx ", (unsigned long)(uintptr_t)addr);
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, want, strlen(want))) {
			snprintf(out, len, "%s", line);
			break;
		}
	fclose(f);
}

/* numa = interleave / bind on a read-only file mapping: the range gets the policy on the
 * workers' nodes (node 0 on a one-node machine) and every page is resident afterwards. */
START_TEST(test_numa)
{
	enum bn_numa m;
	ck_assert_int_eq(bn_numa_parse("interleave", &m), 0);
	ck_assert_int_eq(m, BN_NUMA_INTERLEAVE);
	ck_assert_int_eq(bn_numa_parse("bind", &m), 0);
	ck_assert_int_eq(bn_numa_parse("off", &m), 0);
	ck_assert_int_eq(bn_numa_parse("on", &m), -EINVAL);
	ck_assert_str_eq(bn_numa_name(BN_NUMA_INTERLEAVE), "interleave");

	char path[] = "/tmp/check_pool_numa.XXXXXX";
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	unlink(path);
	size_t len = (size_t)64 << 20;
	ck_assert_int_eq(ftruncate(fd, (off_t)len), 0);
	const unsigned char *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
	ck_assert_ptr_ne(map, MAP_FAILED);
	close(fd);

	struct bn_pool *p;
	struct bn_error err = { 0 };
	ck_assert_int_eq(bn_pool_new(&p, NULL, &err), 0);
	char line[1024];
	numa_line(map, line, sizeof(line));
	if (!line[0]) {
		bn_pool_free(p);
		munmap((void *)map, len);
		printf("note: /proc/self/numa_maps has no line for the mapping: placement unchecked\n");
		return;
	}
	ck_assert_msg(!strstr(line, "interleave"), "policy before placement: %s", line);
	ck_assert_int_eq(bn_pool_place(p, map, len, BN_NUMA_OFF, &err), 0);
	numa_line(map, line, sizeof(line));
	ck_assert_msg(strstr(line, "default"), "numa = off changed the policy: %s", line);

	ck_assert_msg(bn_pool_place(p, map, len, BN_NUMA_INTERLEAVE, &err) == 0, "%s", err.msg);
	numa_line(map, line, sizeof(line));
	ck_assert_msg(strstr(line, "interleave:"), "after interleave: %s", line);
	char mapped[32];
	snprintf(mapped, sizeof(mapped), "mapped=%zu ", len / (size_t)sysconf(_SC_PAGESIZE));
	ck_assert_msg(strstr(line, mapped), "not every page resident (%s): %s", mapped, line);

	ck_assert_msg(bn_pool_place(p, map, len, BN_NUMA_BIND, &err) == 0, "%s", err.msg);
	numa_line(map, line, sizeof(line));
	/* hwloc asks for MPOL_PREFERRED_MANY where the kernel has it (bind without STRICT) */
	ck_assert_msg(strstr(line, "bind:") || strstr(line, "prefer"), "after bind: %s", line);
	bn_pool_free(p);
	munmap((void *)map, len);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pool");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_dispatch);
	tcase_add_test(tc, test_split);
	tcase_add_test(tc, test_split_dispenser);
	tcase_add_test(tc, test_cpus);
	tcase_add_test(tc, test_numa);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
