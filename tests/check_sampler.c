/* lib/sampler.c: options, greedy, determinism, distributions, filters, repetition penalty. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"

/* test-local generator for random logits (independent of the sampler's) */
static uint64_t lcg_state;
static double urand(void)
{
	lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
	return (double)(lcg_state >> 11) * 0x1.0p-53;
}
static float nrand(void)
{
	double u1 = urand(), u2 = urand();
	if (u1 < 1e-300)
		u1 = 1e-300;
	return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static struct bn_sampler *mk(float temp, uint32_t top_k, float top_p, float min_p, float pen,
			     uint32_t window, uint64_t seed, uint32_t n_vocab)
{
	struct bn_sampler_opts o = {
		.temperature = temp, .top_k = top_k, .top_p = top_p, .min_p = min_p,
		.repeat_penalty = pen, .repeat_window = window, .seed = seed,
	};
	struct bn_sampler *s = NULL;
	struct bn_error err = { 0 };
	int rc = bn_sampler_new(&s, &o, n_vocab, &err);
	ck_assert_msg(rc == 0, "bn_sampler_new: %s", err.msg);
	return s;
}

START_TEST(test_opts)
{
	struct bn_sampler_opts o;
	struct bn_error err = { 0 };
	bn_sampler_opts_default(&o);
	ck_assert(o.temperature == 0.8f && o.top_k == 40 && o.top_p == 0.95f && o.min_p == 0.05f);
	ck_assert(o.repeat_penalty == 1.0f && o.repeat_window == 64 && o.seed == 0);
	ck_assert_int_eq(bn_sampler_opts_check(&o, &err), 0);

	static const struct { int field; float v; const char *name; } bad[] = {
		{ 0, -0.1f, "temperature" }, { 0, 100.5f, "temperature" }, { 0, NAN, "temperature" },
		{ 1, 0.0f, "top_p" }, { 1, 1.01f, "top_p" }, { 1, NAN, "top_p" },
		{ 2, -0.01f, "min_p" }, { 2, 1.5f, "min_p" },
		{ 3, 0.0f, "repeat_penalty" }, { 3, 10.5f, "repeat_penalty" }, { 3, -1.0f, "repeat_penalty" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct bn_sampler_opts b = o;
		float *f[] = { &b.temperature, &b.top_p, &b.min_p, &b.repeat_penalty };
		*f[bad[i].field] = bad[i].v;
		memset(&err, 0, sizeof(err));
		ck_assert_int_eq(bn_sampler_opts_check(&b, &err), -ERANGE);
		ck_assert_msg(strstr(err.msg, bad[i].name), "case %zu: '%s'", i, err.msg);
		struct bn_sampler *s = (struct bn_sampler *)1;
		ck_assert_int_eq(bn_sampler_new(&s, &b, 10, &err), -ERANGE);
		ck_assert_ptr_null(s);
	}
	struct bn_sampler_opts b = o;
	b.repeat_window = 65537;
	ck_assert_int_eq(bn_sampler_opts_check(&b, &err), -ERANGE);
	ck_assert_ptr_nonnull(strstr(err.msg, "repeat_window"));
	b.repeat_window = 65536;
	ck_assert_int_eq(bn_sampler_opts_check(&b, &err), 0);
	/* edges that are allowed */
	b = o;
	b.temperature = 0.0f; b.top_p = 1.0f; b.min_p = 1.0f; b.repeat_penalty = 10.0f;
	ck_assert_int_eq(bn_sampler_opts_check(&b, &err), 0);
	b.temperature = 100.0f; b.min_p = 0.0f;
	ck_assert_int_eq(bn_sampler_opts_check(&b, &err), 0);

	struct bn_sampler *s;
	ck_assert_int_eq(bn_sampler_new(&s, &o, 0, &err), -EINVAL);
}
END_TEST

START_TEST(test_stop_reason_names)
{
	ck_assert_str_eq(bn_stop_reason_name(BN_STOP_EOG), "stop");
	ck_assert_str_eq(bn_stop_reason_name(BN_STOP_LENGTH), "length");
	ck_assert_str_eq(bn_stop_reason_name(BN_STOP_STRING), "stop-string");
	ck_assert_str_eq(bn_stop_reason_name(BN_STOP_CANCELLED), "cancelled");
	ck_assert_str_eq(bn_stop_reason_name(BN_STOP_CONTEXT_FULL), "context-full");
	ck_assert_str_eq(bn_stop_reason_name(BN_STOP_ERROR), "error");
	ck_assert_str_eq(bn_stop_reason_name(BN_STOP_NONE), "none");
}
END_TEST

START_TEST(test_greedy)
{
	struct bn_sampler *s = mk(0.0f, 40, 0.95f, 0.05f, 1.0f, 64, 1, 8);
	float l[8] = { 0 };
	ck_assert_int_eq(bn_sampler_sample(s, l), 0);            /* all tied */
	float l2[8] = { 1, 3, 2, -1, 3, 3, 0, 2.9f };
	ck_assert_int_eq(bn_sampler_sample(s, l2), 1);           /* 1, 4, 5 tied */
	float l3[8] = { NAN, 1, 5, NAN, -INFINITY, 5, 0, 0 };
	ck_assert_int_eq(bn_sampler_sample(s, l3), 2);           /* NaN never wins */
	float l4[8] = { -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY };
	ck_assert_int_eq(bn_sampler_sample(s, l4), 0);
	bn_sampler_free(s);

	/* a 128256 vocab against an independent argmax, with the max duplicated */
	const uint32_t nv = 128256;
	float *big = malloc(nv * sizeof(*big));                  /* [nv] */
	ck_assert_ptr_nonnull(big);
	lcg_state = 5;
	s = mk(0.0f, 0, 1.0f, 0.0f, 1.0f, 64, 1, nv);
	for (int rep = 0; rep < 5; rep++) {
		for (uint32_t i = 0; i < nv; i++)
			big[i] = nrand();
		uint32_t a = (uint32_t)(urand() * nv), b = (uint32_t)(urand() * nv);
		big[a] = big[b] = 9.0f;
		uint32_t want = a < b ? a : b;
		ck_assert_int_eq(bn_sampler_sample(s, big), (int32_t)want);
	}
	bn_sampler_free(s);
	free(big);
}
END_TEST

static void run_seq(struct bn_sampler *s, int32_t *out, int n, uint32_t nv, uint64_t lseed)
{
	float *l = malloc(nv * sizeof(*l));   /* [nv] */
	lcg_state = lseed;
	for (int t = 0; t < n; t++) {
		for (uint32_t i = 0; i < nv; i++)
			l[i] = 2.0f * nrand();
		out[t] = bn_sampler_sample(s, l);
		bn_sampler_accept(s, out[t]);
	}
	free(l);
}

START_TEST(test_determinism)
{
	enum { N = 200, NV = 1000 };
	int32_t a[N], b[N], c[N], d[N];
	struct bn_sampler_opts o;
	bn_sampler_opts_default(&o);
	o.seed = 1234;
	o.repeat_penalty = 1.1f;
	struct bn_sampler *s1, *s2, *s3;
	struct bn_error err;
	ck_assert_int_eq(bn_sampler_new(&s1, &o, NV, &err), 0);
	ck_assert_int_eq(bn_sampler_new(&s2, &o, NV, &err), 0);
	o.seed = 1235;
	ck_assert_int_eq(bn_sampler_new(&s3, &o, NV, &err), 0);
	run_seq(s1, a, N, NV, 77);
	run_seq(s2, b, N, NV, 77);
	run_seq(s3, c, N, NV, 77);
	ck_assert_mem_eq(a, b, sizeof(a));
	int differ = 0;
	for (int i = 0; i < N; i++)
		differ += a[i] != c[i];
	ck_assert_msg(differ > N / 10, "seeds 1234 and 1235 differ at only %d of %d", differ, N);
	/* reset replays the same sequence */
	bn_sampler_reset(s1);
	run_seq(s1, d, N, NV, 77);
	ck_assert_mem_eq(a, d, sizeof(a));
	bn_sampler_free(s1);
	bn_sampler_free(s2);
	bn_sampler_free(s3);
}
END_TEST

/* Sequences computed by an independent Python transcription of the algorithm documented
 * in sampler.h (splitmix64 -> xoshiro256**, 53-bit doubles, double softmax, sorted
 * candidates); they pin the results across platforms and future edits. */
START_TEST(test_pinned)
{
	const float l[8] = { 1.0f, 2.0f, 0.5f, -1.0f, 1.5f, 0.25f, 2.0f, -0.5f };
	static const struct {
		float t; uint32_t k; float p, mp; uint64_t seed; int32_t want[24];
	} cases[] = {
		{ 0.7f, 0, 1.0f, 0.0f, 12345, { 6, 1, 6, 0, 4, 0, 1, 1, 1, 6, 6, 4, 6, 6, 1, 6, 3, 6, 4, 2, 1, 1, 1, 1 } },
		{ 1.0f, 3, 1.0f, 0.0f, 7, { 6, 1, 4, 4, 4, 4, 1, 1, 6, 1, 6, 6, 4, 4, 6, 6, 1, 6, 1, 1, 1, 6, 6, 1 } },
		{ 1.3f, 0, 0.8f, 0.1f, 99, { 6, 6, 6, 0, 0, 1, 1, 1, 0, 4, 4, 1, 1, 1, 6, 6, 1, 0, 1, 4, 6, 1, 0, 4 } },
	};
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct bn_sampler *s = mk(cases[c].t, cases[c].k, cases[c].p, cases[c].mp, 1.0f, 64,
					  cases[c].seed, 8);
		for (int i = 0; i < 24; i++) {
			int32_t got = bn_sampler_sample(s, l);
			ck_assert_msg(got == cases[c].want[i], "case %zu draw %d: got %d want %d", c, i,
				      got, cases[c].want[i]);
		}
		bn_sampler_free(s);
	}
}
END_TEST

/* empirical frequencies over 20000 draws against expected probabilities, within 5 sigma */
static void check_freq(struct bn_sampler *s, const float *l, int nv, const double *p)
{
	enum { DRAWS = 20000 };
	int cnt[16] = { 0 };
	for (int i = 0; i < DRAWS; i++) {
		int32_t t = bn_sampler_sample(s, l);
		ck_assert(t >= 0 && t < nv);
		cnt[t]++;
	}
	for (int i = 0; i < nv; i++) {
		double mean = DRAWS * p[i], sd = sqrt(DRAWS * p[i] * (1.0 - p[i]));
		if (p[i] == 0.0)
			ck_assert_msg(cnt[i] == 0, "token %d has p 0 but was drawn %d times", i, cnt[i]);
		else
			ck_assert_msg(fabs(cnt[i] - mean) <= 5.0 * sd + 1.0,
				      "token %d: %d draws, expected %.1f +- %.1f", i, cnt[i], mean, sd);
	}
}

static void softmax(const float *l, int n, double t, double *p)
{
	double m = -INFINITY, z = 0.0;
	for (int i = 0; i < n; i++)
		m = fmax(m, l[i]);
	for (int i = 0; i < n; i++)
		z += (p[i] = exp((l[i] - m) / t));
	for (int i = 0; i < n; i++)
		p[i] /= z;
}

START_TEST(test_distribution)
{
	const float l[5] = { 1.0f, 0.0f, 2.0f, -1.0f, 0.5f };
	double p[5];
	/* temperature 1, no filters */
	struct bn_sampler *s = mk(1.0f, 0, 1.0f, 0.0f, 1.0f, 64, 42, 5);
	softmax(l, 5, 1.0, p);
	check_freq(s, l, 5, p);
	bn_sampler_free(s);
	/* temperature 0.5 */
	s = mk(0.5f, 0, 1.0f, 0.0f, 1.0f, 64, 43, 5);
	softmax(l, 5, 0.5, p);
	check_freq(s, l, 5, p);
	bn_sampler_free(s);
	/* top-k 3 renormalises over {2, 0, 4} */
	s = mk(1.0f, 3, 1.0f, 0.0f, 1.0f, 64, 44, 5);
	const float l3[3] = { 1.0f, 2.0f, 0.5f };
	double p3[3];
	softmax(l3, 3, 1.0, p3);
	double pk[5] = { p3[0], 0, p3[1], 0, p3[2] };
	check_freq(s, l, 5, pk);
	bn_sampler_free(s);
	/* top-p: probabilities 0.5 0.3 0.15 0.05 and top_p 0.9 keep the first three */
	const float lp[4] = { logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f) };
	double pp[4] = { 0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0 };
	s = mk(1.0f, 0, 0.9f, 0.0f, 1.0f, 64, 45, 4);
	check_freq(s, lp, 4, pp);
	bn_sampler_free(s);
	/* min-p 0.35 of the best (0.5) drops everything under 0.175 */
	double pm[4] = { 0.5 / 0.8, 0.3 / 0.8, 0, 0 };
	s = mk(1.0f, 0, 1.0f, 0.35f, 1.0f, 64, 46, 4);
	check_freq(s, lp, 4, pm);
	bn_sampler_free(s);
}
END_TEST

struct order { float l; int id; };
static int cmp_order(const void *a, const void *b)
{
	const struct order *x = a, *y = b;
	if (x->l != y->l)
		return x->l > y->l ? -1 : 1;
	return x->id - y->id;
}

/* Independent allowed set: top-k by (logit desc, id asc), softmax at t over it, a token
 * survives top-p if the mass before it is under top_p, min-p if p >= min_p * p_max
 * (with a little slack for rounding at the edges). */
static void allowed_set(const float *l, int nv, float t, uint32_t k, float top_p, float min_p,
			unsigned char *ok)
{
	struct order *o = malloc(nv * sizeof(*o));   /* [nv] */
	for (int i = 0; i < nv; i++)
		o[i] = (struct order){ l[i], i };
	qsort(o, nv, sizeof(*o), cmp_order);
	int m = (k && (int)k < nv) ? (int)k : nv;
	double z = 0.0;
	for (int j = 0; j < m; j++)
		z += exp(((double)o[j].l - o[0].l) / t);
	double cum = 0.0;
	memset(ok, 0, nv);
	for (int j = 0; j < m; j++) {
		double p = exp(((double)o[j].l - o[0].l) / t) / z;
		bool in = (top_p >= 1.0f || cum < top_p + 1e-9) && p >= min_p * (1.0 / z) - 1e-12;
		ok[o[j].id] = in;
		cum += p;
	}
	free(o);
}

START_TEST(test_filters_exclude)
{
	enum { NV = 600, ROUNDS = 300 };
	static const struct { float t; uint32_t k; float p, mp; } cfg[] = {
		{ 1.5f, 5, 1.0f, 0.0f },
		{ 1.0f, 0, 0.5f, 0.0f },     /* top-p over the whole vocabulary (heap path) */
		{ 1.0f, 50, 0.5f, 0.0f },
		{ 1.0f, 0, 1.0f, 0.2f },     /* min-p over the whole vocabulary */
		{ 0.8f, 20, 0.9f, 0.1f },
		{ 2.0f, 0, 0.7f, 0.05f },
	};
	float *l = malloc(NV * sizeof(*l));              /* [NV] */
	unsigned char *ok = malloc(NV);                  /* [NV] */
	lcg_state = 99;
	for (size_t c = 0; c < sizeof(cfg) / sizeof(cfg[0]); c++) {
		struct bn_sampler *s = mk(cfg[c].t, cfg[c].k, cfg[c].p, cfg[c].mp, 1.0f, 64, c, NV);
		int distinct_first = -1, varied = 0;
		for (int r = 0; r < ROUNDS; r++) {
			for (int i = 0; i < NV; i++)
				l[i] = 3.0f * nrand();
			if (r % 3 == 0)   /* ties at the top */
				l[(int)(urand() * NV)] = l[(int)(urand() * NV)] = 9.0f;
			allowed_set(l, NV, cfg[c].t, cfg[c].k, cfg[c].p, cfg[c].mp, ok);
			float before = l[0];
			for (int d = 0; d < 5; d++) {
				int32_t t = bn_sampler_sample(s, l);
				ck_assert(t >= 0 && t < NV);
				ck_assert_msg(ok[t], "config %zu round %d: token %d (logit %g) is excluded",
					      c, r, t, (double)l[t]);
				if (distinct_first < 0)
					distinct_first = t;
				varied |= t != distinct_first;
			}
			ck_assert(l[0] == before);
		}
		ck_assert_msg(varied, "config %zu always returned the same token", c);
		bn_sampler_free(s);
	}
	free(l);
	free(ok);
}
END_TEST

START_TEST(test_logits_untouched)
{
	enum { NV = 300 };
	float l[NV], copy[NV];
	lcg_state = 3;
	for (int i = 0; i < NV; i++)
		l[i] = nrand();
	memcpy(copy, l, sizeof(l));
	struct bn_sampler *s = mk(0.9f, 0, 0.9f, 0.05f, 1.3f, 8, 1, NV);
	for (int i = 0; i < 20; i++)
		bn_sampler_accept(s, bn_sampler_sample(s, l));
	ck_assert_mem_eq(l, copy, sizeof(l));
	bn_sampler_free(s);
}
END_TEST

START_TEST(test_repeat_penalty)
{
	struct bn_sampler *s = mk(0.0f, 0, 1.0f, 0.0f, 1.5f, 3, 0, 6);
	float l[6] = { 2.0f, 1.9f, 0.5f, -1.0f, -1.2f, -3.0f };
	ck_assert_int_eq(bn_sampler_sample(s, l), 0);
	bn_sampler_accept(s, 0);
	ck_assert_int_eq(bn_sampler_sample(s, l), 1);   /* 2.0 / 1.5 < 1.9 */
	bn_sampler_accept(s, 0);                        /* once per distinct token: 1.33 stays */
	float l2[6] = { 2.0f, 1.3f, 0.5f, -1.0f, -1.2f, -3.0f };
	ck_assert_int_eq(bn_sampler_sample(s, l2), 0);
	/* the window holds 3: after three other tokens, 0 is no longer penalised */
	bn_sampler_accept(s, 2);
	bn_sampler_accept(s, 5);
	bn_sampler_accept(s, 5);
	ck_assert_int_eq(bn_sampler_sample(s, l), 0);
	/* negative logits are multiplied */
	float l3[6] = { -5.0f, -5.0f, -5.0f, -1.0f, -1.2f, -3.0f };
	bn_sampler_accept(s, 3);
	ck_assert_int_eq(bn_sampler_sample(s, l3), 4);   /* -1.5 < -1.2 */
	/* out-of-vocabulary ids are ignored, reset clears the history */
	bn_sampler_accept(s, -1);
	bn_sampler_accept(s, 6);
	ck_assert_int_eq(bn_sampler_sample(s, l3), 4);
	bn_sampler_reset(s);
	ck_assert_int_eq(bn_sampler_sample(s, l3), 3);
	bn_sampler_free(s);

	/* penalty 1 changes nothing; a window of 0 neither */
	s = mk(0.0f, 0, 1.0f, 0.0f, 1.0f, 3, 0, 6);
	bn_sampler_accept(s, 0);
	ck_assert_int_eq(bn_sampler_sample(s, l), 0);
	bn_sampler_free(s);
	s = mk(0.0f, 0, 1.0f, 0.0f, 2.0f, 0, 0, 6);
	bn_sampler_accept(s, 0);
	ck_assert_int_eq(bn_sampler_sample(s, l), 0);
	bn_sampler_free(s);

	/* sampled: a penalised token becomes rarer */
	const float lf[2] = { 1.0f, 1.0f };
	s = mk(1.0f, 0, 1.0f, 0.0f, 2.0f, 64, 9, 2);
	bn_sampler_accept(s, 0);
	double p[2];
	const float lpen[2] = { 0.5f, 1.0f };
	softmax(lpen, 2, 1.0, p);
	check_freq(s, lf, 2, p);
	bn_sampler_free(s);
}
END_TEST

/* The golden greedy continuation (TEST_DATA/golden): argmax of tiny.full.ref.bin rows
 * 15..46 is tiny.greedy.txt. Added only when the files exist. */
static char golden_bin[4096], golden_txt[4096];

START_TEST(test_golden_greedy)
{
	FILE *f = fopen(golden_bin, "rb");
	ck_assert_ptr_nonnull(f);
	int32_t hdr[2];
	ck_assert_int_eq(fread(hdr, sizeof(hdr), 1, f), 1);
	ck_assert_int_eq(hdr[0], 48);
	int32_t nv = hdr[1];
	float *rows = malloc((size_t)hdr[0] * nv * sizeof(float));   /* [48][nv] */
	ck_assert_int_eq(fread(rows, sizeof(float) * nv, hdr[0], f), (size_t)hdr[0]);
	fclose(f);
	FILE *t = fopen(golden_txt, "r");
	ck_assert_ptr_nonnull(t);
	struct bn_sampler *s = mk(0.0f, 40, 0.95f, 0.05f, 1.0f, 64, 0, (uint32_t)nv);
	int k = 0, want;
	while (fscanf(t, "%d", &want) == 1) {
		ck_assert_int_eq(bn_sampler_sample(s, rows + (size_t)(15 + k) * nv), want);
		k++;
		if (fgetc(t) == EOF)
			break;
	}
	fclose(t);
	ck_assert_int_eq(k, 32);
	bn_sampler_free(s);
	free(rows);
}
END_TEST

int main(void)
{
	Suite *su = suite_create("sampler");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_opts);
	tcase_add_test(tc, test_stop_reason_names);
	tcase_add_test(tc, test_greedy);
	tcase_add_test(tc, test_determinism);
	tcase_add_test(tc, test_pinned);
	tcase_add_test(tc, test_distribution);
	tcase_add_test(tc, test_filters_exclude);
	tcase_add_test(tc, test_logits_untouched);
	tcase_add_test(tc, test_repeat_penalty);
	const char *sd = getenv("TEST_DATA");
	if (sd) {
		snprintf(golden_bin, sizeof(golden_bin), "%s/golden/tiny.full.ref.bin", sd);
		snprintf(golden_txt, sizeof(golden_txt), "%s/golden/tiny.greedy.txt", sd);
		FILE *a = fopen(golden_bin, "rb"), *b = fopen(golden_txt, "r");
		if (a && b)
			tcase_add_test(tc, test_golden_greedy);
		else
			fprintf(stderr, "check_sampler: golden files absent, golden greedy test skipped\n");
		if (a)
			fclose(a);
		if (b)
			fclose(b);
	}
	suite_add_tcase(su, tc);
	SRunner *sr = srunner_create(su);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
