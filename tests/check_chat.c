/* lib/chat.c (formats, auto choice, rendering) and lib/stop.c (stop strings across chunks). */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "log.h"
#include "stop.h"

/* ---- chat ------------------------------------------------------------------ */

START_TEST(test_parse)
{
	enum bn_chat_format f;
	bool a = true;
	ck_assert_int_eq(bn_chat_format_parse("raw", &f, &a), 0);
	ck_assert(f == BN_CHAT_RAW && !a);
	ck_assert_int_eq(bn_chat_format_parse("chat", &f, &a), 0);
	ck_assert(f == BN_CHAT_BITNET && !a);
	ck_assert_int_eq(bn_chat_format_parse("bitnet", &f, &a), 0);
	ck_assert(f == BN_CHAT_BITNET);
	ck_assert_int_eq(bn_chat_format_parse("llama3", &f, &a), 0);
	ck_assert(f == BN_CHAT_LLAMA3);
	ck_assert_int_eq(bn_chat_format_parse("instruct", &f, &a), 0);
	ck_assert(f == BN_CHAT_INSTRUCT && !a);
	ck_assert_int_eq(bn_chat_format_parse("auto", &f, &a), 0);
	ck_assert(a);
	ck_assert_int_eq(bn_chat_format_parse("Raw", &f, &a), -EINVAL);
	ck_assert_int_eq(bn_chat_format_parse("", &f, &a), -EINVAL);
	ck_assert_int_eq(bn_chat_format_parse(NULL, &f, &a), -EINVAL);
	ck_assert_int_eq(bn_chat_format_parse("chatml", &f, &a), -EINVAL);
	ck_assert_str_eq(bn_chat_format_name(BN_CHAT_INSTRUCT), "instruct");
	ck_assert_str_eq(bn_chat_format_name(BN_CHAT_BITNET), "bitnet");

	ck_assert(bn_chat_adds_bos(BN_CHAT_BITNET) && bn_chat_adds_bos(BN_CHAT_LLAMA3));
	ck_assert(!bn_chat_adds_bos(BN_CHAT_RAW) && !bn_chat_adds_bos(BN_CHAT_INSTRUCT));
	ck_assert_str_eq(bn_chat_default_stop(BN_CHAT_INSTRUCT), "\n\nQ:");
	ck_assert_ptr_null(bn_chat_default_stop(BN_CHAT_RAW));
	ck_assert_ptr_null(bn_chat_default_stop(BN_CHAT_BITNET));
	ck_assert_ptr_null(bn_chat_default_stop(BN_CHAT_LLAMA3));
}
END_TEST

static char last_log[1024];
static void sink(int level, const char *msg, void *user)
{
	(void)level;
	(void)user;
	snprintf(last_log, sizeof(last_log), "%s", msg);
}

START_TEST(test_auto)
{
	const char *l3 = "{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>...";
	bn_log_set_sink(sink, NULL);
	bn_log_set_level(BN_LOG_DEBUG);
	last_log[0] = 0;
	ck_assert_int_eq(bn_chat_auto("bitnet-b1.58", l3), BN_CHAT_BITNET);
	ck_assert_ptr_nonnull(strstr(last_log, "bitnet"));
	ck_assert_int_eq(bn_chat_auto("bitnet-25", NULL), BN_CHAT_BITNET);
	last_log[0] = 0;
	ck_assert_int_eq(bn_chat_auto("bitnet", l3), BN_CHAT_LLAMA3);
	ck_assert_ptr_nonnull(strstr(last_log, "llama3"));
	ck_assert_int_eq(bn_chat_auto("llama", l3), BN_CHAT_LLAMA3);
	last_log[0] = 0;
	ck_assert_int_eq(bn_chat_auto("bitnet", NULL), BN_CHAT_RAW);
	ck_assert_ptr_nonnull(strstr(last_log, "raw"));
	ck_assert_int_eq(bn_chat_auto("bitnet", "{{ '<|im_start|>' }}"), BN_CHAT_RAW);
	ck_assert_int_eq(bn_chat_auto(NULL, NULL), BN_CHAT_RAW);
	bn_log_set_sink(NULL, NULL);
}
END_TEST

static void expect(enum bn_chat_format f, const struct bn_chat_msg *m, size_t n, const char *sys,
		   const char *want)
{
	char *out = NULL;
	struct bn_error err = { 0 };
	int rc = bn_chat_render(f, m, n, sys, &out, &err);
	ck_assert_msg(rc == 0, "render %s: %s", bn_chat_format_name(f), err.msg);
	ck_assert_msg(strcmp(out, want) == 0, "format %s:\n got  [%s]\n want [%s]",
		      bn_chat_format_name(f), out, want);
	free(out);
}

static const struct bn_chat_msg one[] = { { "user", "What is 2+2?" } };
static const struct bn_chat_msg multi[] = {
	{ "system", "Be brief." },
	{ "user", "Hi" },
	{ "assistant", "Hello!" },
	{ "user", "Capital of France?" },
};

START_TEST(test_render_bitnet)
{
	expect(BN_CHAT_BITNET, one, 1, NULL,
	       "<|begin_of_text|>User: What is 2+2?<|eot_id|>Assistant: ");
	expect(BN_CHAT_BITNET, one, 1, "You are helpful.",
	       "<|begin_of_text|>System: You are helpful.<|eot_id|>User: What is 2+2?<|eot_id|>Assistant: ");
	expect(BN_CHAT_BITNET, multi, 4, NULL,
	       "<|begin_of_text|>System: Be brief.<|eot_id|>User: Hi<|eot_id|>"
	       "Assistant: Hello!<|eot_id|>User: Capital of France?<|eot_id|>Assistant: ");
}
END_TEST

START_TEST(test_render_llama3)
{
	expect(BN_CHAT_LLAMA3, one, 1, NULL,
	       "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
	       "<|start_header_id|>assistant<|end_header_id|>\n\n");
	expect(BN_CHAT_LLAMA3, multi + 1, 3, "Be brief.",
	       "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
	       "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
	       "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
	       "<|start_header_id|>user<|end_header_id|>\n\nCapital of France?<|eot_id|>"
	       "<|start_header_id|>assistant<|end_header_id|>\n\n");
}
END_TEST

START_TEST(test_render_instruct)
{
	expect(BN_CHAT_INSTRUCT, one, 1, NULL, "Q: What is 2+2?\nA:");
	expect(BN_CHAT_INSTRUCT, one, 1, "Be brief.", "System: Be brief.\n\nQ: What is 2+2?\nA:");
	expect(BN_CHAT_INSTRUCT, multi, 4, NULL,
	       "System: Be brief.\n\nQ: Hi\nA: Hello!\n\nQ: Capital of France?\nA:");
	expect(BN_CHAT_INSTRUCT, multi + 1, 3, "Be brief.",
	       "System: Be brief.\n\nQ: Hi\nA: Hello!\n\nQ: Capital of France?\nA:");
	/* two questions in a row: the first gets an empty answer slot */
	const struct bn_chat_msg two[] = { { "user", "a" }, { "user", "b" } };
	expect(BN_CHAT_INSTRUCT, two, 2, NULL, "Q: a\nA:\n\nQ: b\nA:");
}
END_TEST

START_TEST(test_render_raw)
{
	expect(BN_CHAT_RAW, one, 1, NULL, "What is 2+2?");
	const struct bn_chat_msg cont[] = { { "user", "Once upon" }, { "assistant", " a time" } };
	expect(BN_CHAT_RAW, cont, 2, NULL, "Once upon a time");
	expect(BN_CHAT_RAW, one, 1, "Sys. ", "Sys. What is 2+2?");
	/* UTF-8 passes through untouched */
	const struct bn_chat_msg u[] = { { "user", "caf\xc3\xa9 \xf0\x9f\x98\x80" } };
	expect(BN_CHAT_RAW, u, 1, NULL, "caf\xc3\xa9 \xf0\x9f\x98\x80");
}
END_TEST

START_TEST(test_render_errors)
{
	char *out = (char *)1;
	struct bn_error err = { 0 };
	const struct bn_chat_msg bad_role[] = { { "user", "hi" }, { "bot", "hello" } };
	ck_assert_int_eq(bn_chat_render(BN_CHAT_BITNET, bad_role, 2, NULL, &out, &err), -EINVAL);
	ck_assert_ptr_null(out);
	ck_assert_msg(strstr(err.msg, "'bot'") && strstr(err.msg, "message 1"), "%s", err.msg);
	const struct bn_chat_msg caps[] = { { "User", "hi" } };
	ck_assert_int_eq(bn_chat_render(BN_CHAT_RAW, caps, 1, NULL, &out, &err), -EINVAL);
	const struct bn_chat_msg nul_role[] = { { NULL, "hi" } };
	ck_assert_int_eq(bn_chat_render(BN_CHAT_RAW, nul_role, 1, NULL, &out, &err), -EINVAL);
	const struct bn_chat_msg nul_content[] = { { "user", NULL } };
	ck_assert_int_eq(bn_chat_render(BN_CHAT_RAW, nul_content, 1, NULL, &out, &err), -EINVAL);
	static const char *const bad_utf8[] = {
		"\xff", "ab\xc3", "\xc0\xaf" /* overlong */, "\xed\xa0\x80" /* surrogate */,
		"\xf4\x90\x80\x80" /* > U+10FFFF */, "\x80",
	};
	for (size_t i = 0; i < sizeof(bad_utf8) / sizeof(bad_utf8[0]); i++) {
		const struct bn_chat_msg m[] = { { "user", bad_utf8[i] } };
		ck_assert_int_eq(bn_chat_render(BN_CHAT_LLAMA3, m, 1, NULL, &out, &err), -EILSEQ);
		ck_assert_ptr_null(out);
		ck_assert_int_eq(bn_chat_render(BN_CHAT_RAW, one, 1, bad_utf8[i], &out, &err), -EILSEQ);
		ck_assert_ptr_nonnull(strstr(err.msg, "system"));
	}
	ck_assert_int_eq(bn_chat_render(BN_CHAT_BITNET, one, 0, NULL, &out, &err), -EINVAL);
	ck_assert_int_eq(bn_chat_render((enum bn_chat_format)42, one, 1, NULL, &out, &err), -EINVAL);
}
END_TEST

/* ---- stop strings ------------------------------------------------------------ */

struct result {
	char text[512];
	int matched;
	int which;
};

/* Feeds text cut at the given points (ascending, within the text) and flushes. */
static struct result run_cuts(const char *const *stops, size_t n, const char *text,
			      const size_t *cuts, size_t n_cuts)
{
	struct bn_stop st;
	struct bn_error err;
	struct result r = { .matched = 0 };
	ck_assert_int_eq(bn_stop_init(&st, stops, n, &err), 0);
	size_t len = strlen(text), pos = 0;
	for (size_t c = 0; c <= n_cuts; c++) {
		size_t end = c < n_cuts ? cuts[c] : len;
		const char *e;
		size_t el;
		int rc = bn_stop_feed(&st, text + pos, end - pos, &e, &el);
		ck_assert(rc == 0 || rc == 1);
		ck_assert_uint_eq(strlen(e), el);
		ck_assert_msg(bn_stop_utf8_valid(e, el) || !bn_stop_utf8_valid(text, len),
			      "emitted a partial character");
		if (r.matched)
			ck_assert_uint_eq(el, 0);
		strncat(r.text, e, el);
		r.matched = rc;
		pos = end;
	}
	const char *e;
	size_t el;
	int rc = bn_stop_flush(&st, &e, &el);
	ck_assert_int_eq(rc, r.matched);
	if (r.matched)
		ck_assert_uint_eq(el, 0);
	strncat(r.text, e, el);
	r.which = bn_stop_which(&st);
	bn_stop_free(&st);
	return r;
}

/* Every single split point, every pair of split points, and byte by byte give want. */
static void check_stop(const char *const *stops, size_t n, const char *text, const char *want,
		       int want_which)
{
	size_t len = strlen(text);
	struct result r = run_cuts(stops, n, text, NULL, 0);
	ck_assert_msg(strcmp(r.text, want) == 0, "[%s] whole: got [%s] want [%s]", text, r.text, want);
	ck_assert_int_eq(r.which, want_which);
	ck_assert_int_eq(r.matched, want_which >= 0);
	for (size_t i = 0; i <= len; i++)
		for (size_t j = i; j <= len; j++) {
			size_t cuts[2] = { i, j };
			r = run_cuts(stops, n, text, cuts, 2);
			ck_assert_msg(strcmp(r.text, want) == 0, "[%s] cut %zu,%zu: got [%s] want [%s]",
				      text, i, j, r.text, want);
			ck_assert_int_eq(r.which, want_which);
		}
	size_t *all = malloc((len + 1) * sizeof(*all));
	for (size_t i = 0; i < len; i++)
		all[i] = i + 1;
	r = run_cuts(stops, n, text, all, len ? len - 1 : 0);
	ck_assert_msg(strcmp(r.text, want) == 0, "[%s] bytewise: got [%s]", text, r.text);
	free(all);
}

START_TEST(test_stop_basic)
{
	const char *q[] = { "\n\nQ:" };
	check_stop(q, 1, "Paris.\n\nQ: What next?", "Paris.", 0);
	check_stop(q, 1, "Paris.\n\nA", "Paris.\n\nA", -1);
	check_stop(q, 1, "Paris.\n\nQ", "Paris.\n\nQ", -1);      /* held, then flushed */
	check_stop(q, 1, "\n\nQ:", "", 0);
	check_stop(q, 1, "", "", -1);
	const char *w[] = { "world" };
	check_stop(w, 1, "hello wor", "hello wor", -1);
	check_stop(w, 1, "hello worl world", "hello worl ", 0);
	/* no stop strings: everything passes */
	check_stop(NULL, 0, "anything\n\nQ:", "anything\n\nQ:", -1);
}
END_TEST

START_TEST(test_stop_overlap)
{
	const char *s[] = { "ab", "aab" };
	check_stop(s, 2, "xaab", "x", 1);       /* both end together: the longer one */
	check_stop(s, 2, "xaaab", "xa", 1);
	check_stop(s, 2, "xab", "x", 0);
	check_stop(s, 2, "xaa", "xaa", -1);
	const char *s2[] = { "aab" };
	check_stop(s2, 1, "aaab", "a", 0);
	check_stop(s2, 1, "aaaa", "aaaa", -1);
	/* the one that completes first wins, even if a longer one started earlier */
	const char *s3[] = { "abcd", "bc" };
	check_stop(s3, 2, "xabcd", "xa", 1);
	const char *s4[] = { "END", "\n\n", "STOP" };
	check_stop(s4, 3, "one\n\ntwo END", "one", 1);
	check_stop(s4, 3, "one\ntwo EN STOP x", "one\ntwo EN ", 2);
	check_stop(s4, 3, "ENDabc", "", 0);
}
END_TEST

START_TEST(test_stop_utf8)
{
	const char *s[] = { "\xc3\xa9!" };   /* "é!" */
	check_stop(s, 1, "caf\xc3\xa9 ok \xc3\xa9!", "caf\xc3\xa9 ok ", 0);
	check_stop(s, 1, "\xe2\x82\xac\xf0\x9f\x98\x80\xc3\xa9", "\xe2\x82\xac\xf0\x9f\x98\x80\xc3\xa9", -1);
	/* a character split over two feeds is emitted whole */
	struct bn_stop st;
	struct bn_error err;
	const char *e;
	size_t el;
	ck_assert_int_eq(bn_stop_init(&st, NULL, 0, &err), 0);
	ck_assert_int_eq(bn_stop_feed(&st, "h\xc3", 2, &e, &el), 0);
	ck_assert_str_eq(e, "h");
	ck_assert_int_eq(bn_stop_feed(&st, "\xa9llo", 4, &e, &el), 0);
	ck_assert_str_eq(e, "\xc3\xa9llo");
	bn_stop_free(&st);
}
END_TEST

START_TEST(test_stop_after_match_and_reset)
{
	struct bn_stop st;
	struct bn_error err;
	const char *stops[] = { "##" };
	const char *e;
	size_t el;
	ck_assert_int_eq(bn_stop_init(&st, stops, 1, &err), 0);
	ck_assert_int_eq(bn_stop_feed(&st, "a#", 2, &e, &el), 0);
	ck_assert_str_eq(e, "a");
	ck_assert_int_eq(bn_stop_feed(&st, "#b", 2, &e, &el), 1);
	ck_assert_uint_eq(el, 0);
	ck_assert_int_eq(bn_stop_feed(&st, "more", 4, &e, &el), 1);
	ck_assert_uint_eq(el, 0);
	ck_assert_int_eq(bn_stop_flush(&st, &e, &el), 1);
	ck_assert_uint_eq(el, 0);
	ck_assert_int_eq(bn_stop_which(&st), 0);
	bn_stop_reset(&st);
	ck_assert_int_eq(bn_stop_which(&st), -1);
	ck_assert_int_eq(bn_stop_feed(&st, "x#", 2, &e, &el), 0);
	ck_assert_str_eq(e, "x");
	ck_assert_int_eq(bn_stop_flush(&st, &e, &el), 0);
	ck_assert_str_eq(e, "#");
	bn_stop_free(&st);
}
END_TEST

START_TEST(test_stop_init_errors)
{
	struct bn_stop st;
	struct bn_error err = { 0 };
	const char *empty[] = { "ok", "" };
	ck_assert_int_eq(bn_stop_init(&st, empty, 2, &err), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "stop string 1"));
	const char *bad[] = { "\xc3(" };
	ck_assert_int_eq(bn_stop_init(&st, bad, 1, &err), -EILSEQ);
	const char *many[BN_STOP_MAX_STRINGS + 1];
	for (size_t i = 0; i <= BN_STOP_MAX_STRINGS; i++)
		many[i] = "x";
	ck_assert_int_eq(bn_stop_init(&st, many, BN_STOP_MAX_STRINGS + 1, &err), -E2BIG);
	char *huge = malloc(BN_STOP_MAX_LEN + 2);
	memset(huge, 'a', BN_STOP_MAX_LEN + 1);
	huge[BN_STOP_MAX_LEN + 1] = 0;
	const char *h[] = { huge };
	ck_assert_int_eq(bn_stop_init(&st, h, 1, &err), -E2BIG);
	free(huge);
}
END_TEST

/* Random texts over {a, b, c} with random chunkings against a direct search of the whole
 * text for the earliest-ending (then longest) match. */
START_TEST(test_stop_random)
{
	const char *stops[] = { "ab", "aab", "cab", "bcb", "ccc" };
	const size_t ns = 5;
	uint64_t x = 12345;
	for (int it = 0; it < 3000; it++) {
		char text[40];
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		size_t len = (x >> 33) % 39;
		for (size_t i = 0; i < len; i++) {
			x = x * 6364136223846793005ull + 1442695040888963407ull;
			text[i] = "abc"[(x >> 33) % 3];
		}
		text[len] = 0;
		/* the reference */
		char want[40];
		int which = -1;
		size_t cut = len;
		for (size_t e = 1; e <= len && which < 0; e++)
			for (size_t k = 0; k < ns; k++) {
				size_t l = strlen(stops[k]);
				if (l <= e && memcmp(text + e - l, stops[k], l) == 0 &&
				    (which < 0 || l > strlen(stops[which]))) {
					which = (int)k;
					cut = e - l;
				}
			}
		memcpy(want, text, cut);
		want[cut] = 0;
		size_t cuts[8], nc = 0, p = 0;
		while (nc < 8 && p < len) {
			x = x * 6364136223846793005ull + 1442695040888963407ull;
			p += (x >> 33) % 6;
			if (p <= len)
				cuts[nc++] = p;
		}
		struct result r = run_cuts(stops, ns, text, cuts, nc);
		ck_assert_msg(strcmp(r.text, want) == 0, "[%s]: got [%s] want [%s]", text, r.text, want);
		ck_assert_int_eq(r.which, which);
	}
}
END_TEST

int main(void)
{
	Suite *su = suite_create("chat");
	TCase *tc = tcase_create("chat");
	tcase_add_test(tc, test_parse);
	tcase_add_test(tc, test_auto);
	tcase_add_test(tc, test_render_bitnet);
	tcase_add_test(tc, test_render_llama3);
	tcase_add_test(tc, test_render_instruct);
	tcase_add_test(tc, test_render_raw);
	tcase_add_test(tc, test_render_errors);
	suite_add_tcase(su, tc);
	TCase *ts = tcase_create("stop");
	tcase_set_timeout(ts, 60);
	tcase_add_test(ts, test_stop_basic);
	tcase_add_test(ts, test_stop_overlap);
	tcase_add_test(ts, test_stop_utf8);
	tcase_add_test(ts, test_stop_after_match_and_reset);
	tcase_add_test(ts, test_stop_init_errors);
	tcase_add_test(ts, test_stop_random);
	suite_add_tcase(su, ts);
	SRunner *sr = srunner_create(su);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
