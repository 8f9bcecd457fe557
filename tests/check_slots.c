/* daemon/slots.c: the prefix matcher, least-recently-used placement, the step planner
 * (decode rows, chunked prefill in admission order, the token budget) and a simulated
 * scheduler run whose histories must equal what each request put through the engine. */
#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "slots.h"

static struct bd_slots S;
static struct bd_step st;

static void setup(uint32_t n, uint32_t n_ctx, uint32_t budget)
{
	ck_assert_int_eq(bd_slots_init(&S, n, n_ctx), 0);
	ck_assert_int_eq(bd_step_init(&st, budget + n, n), 0);
}

static void teardown(void)
{
	bd_slots_free(&S);
	bd_step_free(&st);
}

/* Puts tokens [n] into slot i's history as if a request had run them and left. */
static void fill(uint32_t i, const int32_t *t, uint32_t n)
{
	bd_slots_take(&S, i, t, n, 0, NULL);
	memcpy(S.slot[i].hist, t, n * sizeof(int32_t));
	S.slot[i].n_hist = n;
	bd_slots_release(&S, i);
}

START_TEST(prefix_len)
{
	int32_t a[] = { 1, 2, 3, 4 }, b[] = { 1, 2, 9 }, c[] = { 5 };
	ck_assert_uint_eq(bd_prefix_len(a, 4, b, 3), 2);
	ck_assert_uint_eq(bd_prefix_len(a, 4, a, 4), 4);
	ck_assert_uint_eq(bd_prefix_len(a, 4, a, 2), 2);
	ck_assert_uint_eq(bd_prefix_len(a, 4, c, 1), 0);
	ck_assert_uint_eq(bd_prefix_len(a, 0, a, 4), 0);
}
END_TEST

START_TEST(pick_lru_and_busy)
{
	setup(3, 64, 16);
	int32_t p[] = { 7, 8, 9 };
	uint32_t reuse = 99;
	/* nothing cached: the least recently used (never used: the first) */
	ck_assert_int_eq(bd_slots_pick(&S, p, 3, &reuse), 0);
	ck_assert_uint_eq(reuse, 0);
	int32_t x[] = { 1 }, y[] = { 2 }, z[] = { 3 };
	fill(1, x, 1);
	fill(0, y, 1);
	fill(2, z, 1);
	/* used in the order 1, 0, 2: slot 1 is the least recent */
	ck_assert_int_eq(bd_slots_pick(&S, p, 3, &reuse), 1);
	bd_slots_take(&S, 1, p, 3, 0, NULL);
	ck_assert_int_eq(bd_slots_pick(&S, p, 3, &reuse), 0);
	bd_slots_take(&S, 0, p, 3, 0, NULL);
	ck_assert_int_eq(bd_slots_pick(&S, p, 3, &reuse), 2);
	bd_slots_take(&S, 2, p, 3, 0, NULL);
	ck_assert_uint_eq(bd_slots_busy(&S), 3);
	ck_assert_int_eq(bd_slots_pick(&S, p, 3, &reuse), -1);
	bd_slots_release(&S, 0);
	ck_assert_int_eq(bd_slots_pick(&S, p, 3, &reuse), 0);
	teardown();
}
END_TEST

START_TEST(pick_longest_prefix)
{
	setup(4, 64, 16);
	int32_t sys_a[] = { 1, 2, 3, 4, 5, 6 }, sys_b[] = { 1, 2, 3, 9, 9 }, other[] = { 4, 4 };
	fill(0, other, 2);
	fill(1, sys_a, 6);
	fill(2, sys_b, 5);
	uint32_t reuse;
	int32_t q[] = { 1, 2, 3, 4, 5, 7, 7 };
	ck_assert_int_eq(bd_slots_pick(&S, q, 7, &reuse), 1);
	ck_assert_uint_eq(reuse, 5);
	int32_t r[] = { 1, 2, 3, 9, 8 };
	ck_assert_int_eq(bd_slots_pick(&S, r, 5, &reuse), 2);
	ck_assert_uint_eq(reuse, 4);
	/* the whole prompt cached: its last token still runs, for the logits */
	ck_assert_int_eq(bd_slots_pick(&S, sys_a, 6, &reuse), 1);
	ck_assert_uint_eq(reuse, 5);
	int32_t shorter[] = { 1, 2, 3 };
	ck_assert_int_eq(bd_slots_pick(&S, shorter, 3, &reuse), 1);   /* ties: 1 is older than 2 */
	ck_assert_uint_eq(reuse, 2);
	/* a busy slot's history is not offered */
	bd_slots_take(&S, 1, other, 2, 0, NULL);
	S.slot[1].n_hist = 2;   /* as if its prompt had run */
	ck_assert_int_eq(bd_slots_pick(&S, q, 7, &reuse), 2);
	ck_assert_uint_eq(reuse, 3);
	/* no match at all: the least recently used free slot (3 was never used) */
	int32_t none[] = { 42, 43 };
	ck_assert_int_eq(bd_slots_pick(&S, none, 2, &reuse), 3);
	ck_assert_uint_eq(reuse, 0);
	/* take keeps only the reused positions; release keeps the history; forget drops it */
	bd_slots_take(&S, 2, r, 5, 4, NULL);
	ck_assert_uint_eq(S.slot[2].n_hist, 4);
	ck_assert_uint_eq(S.slot[2].n_cached, 4);
	bd_slots_release(&S, 2);
	ck_assert_uint_eq(S.slot[2].n_hist, 4);
	bd_slots_forget(&S);
	ck_assert_uint_eq(S.slot[2].n_hist, 0);
	ck_assert_uint_eq(S.slot[1].n_hist, 2);   /* busy: untouched */
	teardown();
}
END_TEST

START_TEST(plan_decode_then_prefill)
{
	setup(4, 256, 20);
	int32_t a[20], b[5], c[3];
	for (int i = 0; i < 20; i++)
		a[i] = 100 + i;
	for (int i = 0; i < 5; i++)
		b[i] = 200 + i;
	for (int i = 0; i < 3; i++)
		c[i] = 300 + i;
	/* slot 2 decodes; slot 0 was admitted before slot 3 */
	bd_slots_take(&S, 2, c, 3, 0, NULL);
	memcpy(S.slot[2].hist, c, sizeof(c));
	S.slot[2].n_hist = 3;
	bd_slots_continue(&S, 2, 55);
	bd_slots_take(&S, 0, a, 20, 0, NULL);
	bd_slots_take(&S, 3, b, 5, 0, NULL);
	bd_slots_plan(&S, 8, &st);
	ck_assert_uint_eq(st.n, 8);
	ck_assert_uint_eq(st.n_decode, 1);
	ck_assert_uint_eq(st.n_prefill, 7);
	ck_assert_int_eq(st.token[0], 55);
	ck_assert_uint_eq(st.pos[0], 3);
	ck_assert_uint_eq(st.seq[0], 2);
	ck_assert(st.want[0]);
	for (uint32_t j = 1; j < 8; j++) {
		ck_assert_uint_eq(st.seq[j], 0);   /* the earlier admission goes first */
		ck_assert_uint_eq(st.pos[j], j - 1);
		ck_assert_int_eq(st.token[j], a[j - 1]);
		ck_assert(!st.want[j]);
	}
	ck_assert_uint_eq(st.n_want, 1);
	ck_assert_uint_eq(st.want_slot[0], 2);
	bd_slots_commit(&S, &st);
	ck_assert_uint_eq(S.slot[2].n_hist, 4);
	ck_assert_int_eq(S.slot[2].hist[3], 55);
	ck_assert_uint_eq(S.slot[0].n_hist, 7);
	/* next step (budget 18): slot 0's remaining 13, then 4 of slot 3's 5 */
	bd_slots_continue(&S, 2, 56);
	bd_slots_plan(&S, 18, &st);
	ck_assert_uint_eq(st.n, 18);
	ck_assert_uint_eq(st.n_prefill, 17);
	ck_assert_uint_eq(st.seq[13], 0);
	ck_assert(st.want[13]);               /* slot 0's last prompt token */
	ck_assert_uint_eq(st.seq[14], 3);
	ck_assert_uint_eq(st.pos[14], 0);
	ck_assert_uint_eq(st.seq[17], 3);
	ck_assert(!st.want[17]);              /* slot 3 has one prompt token left */
	ck_assert_uint_eq(st.n_want, 2);
	ck_assert_uint_eq(st.want_slot[0], 2);
	ck_assert_uint_eq(st.want_slot[1], 0);
	teardown();
}
END_TEST

START_TEST(plan_prefill_never_starves)
{
	setup(4, 64, 2);
	int32_t p[4][6];
	for (uint32_t i = 0; i < 4; i++) {
		for (uint32_t k = 0; k < 6; k++)
			p[i][k] = (int32_t)(i * 10 + k);
		bd_slots_take(&S, i, p[i], 6, 0, NULL);
	}
	for (uint32_t i = 0; i < 3; i++) {
		memcpy(S.slot[i].hist, p[i], sizeof(p[i]));
		S.slot[i].n_hist = 6;
		bd_slots_continue(&S, i, 1);
	}
	/* three decode rows exceed the budget of 2: the prompt still gets one token */
	bd_slots_plan(&S, 2, &st);
	ck_assert_uint_eq(st.n_decode, 3);
	ck_assert_uint_eq(st.n_prefill, 1);
	ck_assert_uint_eq(st.seq[3], 3);
	ck_assert_uint_le(st.n, st.cap);
	teardown();
}
END_TEST

START_TEST(plan_reused_prefix)
{
	setup(2, 64, 16);
	int32_t old[] = { 1, 2, 3, 4, 5, 6, 7, 8 }, now[] = { 1, 2, 3, 4, 9, 9 };
	fill(1, old, 8);
	uint32_t reuse;
	int s = bd_slots_pick(&S, now, 6, &reuse);
	ck_assert_int_eq(s, 1);
	ck_assert_uint_eq(reuse, 4);
	bd_slots_take(&S, 1, now, 6, reuse, NULL);
	bd_slots_plan(&S, 16, &st);
	ck_assert_uint_eq(st.n, 2);   /* only the new tokens run, from position 4 */
	ck_assert_uint_eq(st.pos[0], 4);
	ck_assert_int_eq(st.token[0], 9);
	ck_assert(st.want[1]);
	bd_slots_commit(&S, &st);
	ck_assert_uint_eq(S.slot[1].n_hist, 6);
	ck_assert_mem_eq(S.slot[1].hist, now, sizeof(now));
	teardown();
}
END_TEST

/* Random requests through a simulated engine: every batch is well formed (each sequence's
 * positions continue its history, in order), prefill finishes in admission order, and a
 * slot's history is always exactly the tokens that went through it. */
START_TEST(simulated_run)
{
	const uint32_t NS = 4, CTX = 96, BUDGET = 12, NREQ = 200;
	setup(NS, CTX, BUDGET);
	uint64_t rng = 12345 + (uint64_t)_i;
#define RND(m) ((uint32_t)((rng = rng * 6364136223846793005ull + 1442695040888963407ull) >> 33) % (m))
	struct req {
		int32_t prompt[48];
		uint32_t n, gen_left;
		int32_t expect[CTX];        /* what the slot's history must be */
		uint32_t n_expect;
		uint64_t order;
		bool prefilled;
	} *reqs = calloc(NREQ, sizeof(*reqs)), *in[4] = { 0 };
	ck_assert_ptr_nonnull(reqs);
	uint32_t next_req = 0, done = 0, steps = 0;
	uint64_t last_prefilled_order = 0;
	for (uint32_t k = 0; k < NREQ; k++) {
		struct req *r = &reqs[k];
		r->n = 1 + RND(40);
		/* shared beginnings make the prefix cache matter */
		uint32_t family = RND(3);
		for (uint32_t t = 0; t < r->n; t++)
			r->prompt[t] = t < 10 ? (int32_t)(family * 100 + t) : (int32_t)RND(50);
		r->gen_left = 1 + RND(20);
	}
	while (done < NREQ) {
		ck_assert_uint_lt(steps++, 100000);
		/* admit in arrival order while a slot is free */
		uint32_t reuse;
		int s;
		while (next_req < NREQ && (s = bd_slots_pick(&S, reqs[next_req].prompt,
		                                              reqs[next_req].n, &reuse)) >= 0) {
			struct req *r = &reqs[next_req++];
			ck_assert_uint_lt(reuse, r->n);
			ck_assert_mem_eq(S.slot[s].hist, r->prompt, reuse * sizeof(int32_t));
			bd_slots_take(&S, (uint32_t)s, r->prompt, r->n, reuse, r);
			r->order = S.slot[s].order;
			memcpy(r->expect, r->prompt, r->n * sizeof(int32_t));
			r->n_expect = r->n;
			in[s] = r;
		}
		bd_slots_plan(&S, BUDGET, &st);
		ck_assert_uint_gt(st.n, 0);
		ck_assert_uint_le(st.n, st.cap);
		uint32_t len[4];
		for (uint32_t i = 0; i < NS; i++)
			len[i] = S.slot[i].n_hist;
		for (uint32_t j = 0; j < st.n; j++) {
			ck_assert(S.slot[st.seq[j]].busy);
			ck_assert_uint_eq(st.pos[j], len[st.seq[j]]);   /* no gap, no step back */
			len[st.seq[j]]++;
		}
		bd_slots_commit(&S, &st);
		for (uint32_t w = 0; w < st.n_want; w++) {
			uint32_t i = st.want_slot[w];
			struct req *r = in[i];
			ck_assert_ptr_eq(S.slot[i].user, r);
			if (!S.slot[i].decoding) {
				ck_assert_uint_eq(S.slot[i].n_hist, r->n);
				ck_assert_uint_gt(r->order, last_prefilled_order);   /* first come, first served */
				last_prefilled_order = r->order;
			}
			ck_assert_uint_eq(S.slot[i].n_hist, r->n_expect);
			ck_assert_mem_eq(S.slot[i].hist, r->expect, r->n_expect * sizeof(int32_t));
			if (--r->gen_left == 0 || r->n_expect + 1 >= CTX) {
				bd_slots_release(&S, i);
				in[i] = NULL;
				done++;
			} else {
				int32_t tok = (int32_t)RND(50);
				r->expect[r->n_expect++] = tok;
				bd_slots_continue(&S, i, tok);
			}
		}
	}
	ck_assert_uint_eq(bd_slots_busy(&S), 0);
	free(reqs);
	teardown();
#undef RND
}
END_TEST

int main(void)
{
	Suite *su = suite_create("slots");
	TCase *tc = tcase_create("slots");
	tcase_add_test(tc, prefix_len);
	tcase_add_test(tc, pick_lru_and_busy);
	tcase_add_test(tc, pick_longest_prefix);
	tcase_add_test(tc, plan_decode_then_prefill);
	tcase_add_test(tc, plan_prefill_never_starves);
	tcase_add_test(tc, plan_reused_prefix);
	tcase_add_loop_test(tc, simulated_run, 0, 8);
	suite_add_tcase(su, tc);
	SRunner *sr = srunner_create(su);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
