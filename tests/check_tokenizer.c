/* lib/tokenizer.c, lib/vocab.c, lib/tokjson.c.
 *
 * Built twice from this file:
 *   tests/check_tokenizer        a synthetic byte-level vocabulary built here (always runs):
 *                                BPE rank order, round trips, streaming detokenization,
 *                                special tokens, the tokenizer.json importer, GGUF loading.
 *   tests/check_tokenizer_llama3 (BN_TOK_REAL) the real LLaMA-3 vocabulary from the
 *                                tokenizer.json at $BITNET_LLAMA3_TOKENIZER or
 *                                $top_builddir/tests/llama3/package/models/tokenizer.json
 *                                (tests/fetch-llama3-tokenizer.sh): llama.cpp's 46 vectors
 *                                from $TEST_DATA/golden/tokenizer, the Hugging Face cases in
 *                                tests/tokenizer-cases.json, round trips, load time.
 *                                Exits 77 (SKIP) when the vocabulary or the vectors are absent.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "gguf.h"
#include "gguf_write.h"
#include "tokenizer.h"
#include "tokjson.h"
#include "vocab.h"

#define UNUSED __attribute__((unused))

/* ---------------------------------------------------------------------------------------
 * helpers */

UNUSED static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

UNUSED static char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 1 << 16, n = 0;
	char *b = malloc(cap);
	size_t got;
	while (b && (got = fread(b + n, 1, cap - n, f)) > 0) {
		n += got;
		if (n == cap) {
			char *nb = realloc(b, cap *= 2);
			if (!nb) {
				free(b);
				b = NULL;
			}
			b = nb;
		}
	}
	fclose(f);
	if (b) {
		b[n < cap ? n : cap - 1] = '\0';
		*len = n;
	}
	return b;
}

/* GPT-2 byte alphabet, written independently of the library. cp[b]: code point of byte b. */
UNUSED static unsigned gpt2_cp(unsigned b)
{
	if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)
		return b;
	unsigned k = 0;
	for (unsigned c = 0; c < b; c++)
		if (!((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || c >= 0xAE))
			k++;
	return 0x100 + k;
}

/* Spells raw bytes in the GPT-2 alphabet (malloc'ed, NUL-terminated). */
UNUSED static char *gpt2_spell(const char *raw, size_t n)
{
	char *s = malloc(2 * n + 1), *o = s;
	ck_assert_ptr_nonnull(s);
	for (size_t i = 0; i < n; i++) {
		unsigned cp = gpt2_cp((uint8_t)raw[i]);
		if (cp < 0x80) {
			*o++ = (char)cp;
		} else {
			*o++ = (char)(0xC0 | (cp >> 6));
			*o++ = (char)(0x80 | (cp & 0x3F));
		}
	}
	*o = '\0';
	return s;
}

/* A synthetic vocabulary: the 256 bytes (ids 0..255 in byte order), then "extra" normal
 * tokens given as raw bytes, then CONTROL <|begin_of_text|> <|end_of_text|> <|eot_id|> and
 * USER_DEFINED <tool>. Merges are given as raw "left" "right" pairs. */
struct syn_merge {
	const char *l, *r;
};

UNUSED static void syn_vocab(struct bn_vocab *v, const char *const *extra, size_t n_extra,
		      const struct syn_merge *m, size_t n_m)
{
	static const char *const specials[] = { "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>",
						"<tool>" };
	memset(v, 0, sizeof(*v));
	v->n_tokens = (uint32_t)(256 + n_extra + 4);
	v->tokens = calloc(v->n_tokens, sizeof(char *));
	v->types = calloc(v->n_tokens, sizeof(int32_t));
	ck_assert(v->tokens && v->types);
	uint32_t k = 0;
	for (unsigned b = 0; b < 256; b++, k++) {
		char c = (char)b;
		v->tokens[k] = gpt2_spell(&c, 1);
		v->types[k] = BN_TOKEN_NORMAL;
	}
	for (size_t i = 0; i < n_extra; i++, k++) {
		v->tokens[k] = gpt2_spell(extra[i], strlen(extra[i]));
		v->types[k] = BN_TOKEN_NORMAL;
	}
	for (size_t i = 0; i < 4; i++, k++) {
		v->tokens[k] = strdup(specials[i]);
		v->types[k] = i < 3 ? BN_TOKEN_CONTROL : BN_TOKEN_USER_DEFINED;
	}
	v->n_merges = (uint32_t)n_m;
	v->merges = calloc(n_m ? n_m : 1, sizeof(char *));
	for (size_t i = 0; i < n_m; i++) {
		char *l = gpt2_spell(m[i].l, strlen(m[i].l)), *r = gpt2_spell(m[i].r, strlen(m[i].r));
		v->merges[i] = malloc(strlen(l) + strlen(r) + 2);
		sprintf(v->merges[i], "%s %s", l, r);
		free(l);
		free(r);
	}
	v->bos = (int32_t)(256 + n_extra);
	v->eos = v->bos + 1;
	v->eot = v->bos + 2;
	v->pad = -1;
	v->add_bos = true;
	strcpy(v->model, "gpt2");
	strcpy(v->pre, "llama-bpe");
}

UNUSED static int32_t syn_id(const struct bn_tokenizer *t, const char *raw)
{
	for (uint32_t i = 0; i < bn_tokenizer_n_vocab(t); i++) {
		const char *p;
		size_t n;
		bn_token_piece(t, (int32_t)i, &p, &n);
		if (n == strlen(raw) && memcmp(p, raw, n) == 0)
			return (int32_t)i;
	}
	return -2;
}

/* The default synthetic tokenizer: a few English merges. */
static const char *const syn_extra[] = { " t", "he", " the", "in", "ing", " w", "or", " wor",
					 "ld", " world", "aa", "\xE2\x82", "\xE2\x82\xAC", "ab", "bc",
					 "abc" };
static const struct syn_merge syn_merges[] = {
	{ " ", "t" }, { "h", "e" }, { " t", "he" }, { "i", "n" }, { "in", "g" }, { " ", "w" },
	{ "o", "r" }, { " w", "or" }, { "l", "d" }, { " wor", "ld" }, { "a", "a" },
	{ "\xE2", "\x82" }, { "\xE2\x82", "\xAC" }, { "b", "c" }, { "a", "b" }, { "a", "bc" },
};

UNUSED static struct bn_tokenizer *syn_tokenizer(void)
{
	struct bn_vocab v;
	struct bn_error err = { 0 };
	struct bn_tokenizer *t = NULL;
	syn_vocab(&v, syn_extra, sizeof(syn_extra) / sizeof(syn_extra[0]), syn_merges,
		  sizeof(syn_merges) / sizeof(syn_merges[0]));
	int rc = bn_tokenizer_new(&t, &v, "bitnet-b1.58", &err);
	ck_assert_msg(rc == 0, "bn_tokenizer_new: %s", err.msg);
	bn_vocab_free(&v);   /* the tokenizer keeps its own copy */
	return t;
}

static void roundtrip(const struct bn_tokenizer *t, const char *s, size_t n, bool parse_special)
{
	int32_t *ids;
	size_t n_ids;
	struct bn_error err = { 0 };
	int rc = bn_tokenize(t, s, n, false, parse_special, &ids, &n_ids, &err);
	ck_assert_msg(rc == 0, "tokenize: %s", err.msg);
	char *back;
	size_t bl;
	rc = bn_detokenize(t, ids, n_ids, &back, &bl, &err);
	ck_assert_msg(rc == 0, "detokenize: %s", err.msg);
	ck_assert_msg(bl == n && memcmp(back, s, n) == 0, "round trip of %zu bytes '%.60s' gave "
		      "%zu bytes '%.60s'", n, s, bl, back);
	free(back);
	free(ids);
}

/* Text, code and white space, plus bytes that are not UTF-8. */
static const char *const corpus[] = {
	"", "a", "Hello world", "hello world, the world is ringing", " the  the   the",
	"日本語のテキスト", "中文，你好！", "Привет, мир!", "Γειά σου", "مرحبا بالعالم", "नमस्ते",
	"สวัสดี", "👨‍👩‍👧‍👦 👍🏽 🏳️‍🌈 🇯🇵", "e\xCC\x81 combining", "€100 and €200",
	"int main(void) {\n\treturn 0;\n}\n", "def f(x):\n    return x ** 2  # sq\n",
	"  \t \n\n\r\n   \r\r\n\t\t", "   ", "\n", "DON'T don't I'M we've 'll", "1234567890 3.14",
	"aaaaaaa abcabc bcbc", "<|eot_id|> <|begin_of_text|>x<tool>y", "<|eot_id|", "\xC2\xA0\xE3\x80\x80",
	"\xE2\x80\xA8\xC2\x85", "\xFF\xFE invalid \x80\xC0\xAF \xED\xA0\x80 \xF4\x90\x80\x80 \xE2\x82",
	"abc\xE2\x82", "\xF0\x9F\x98", "tail \xC3",
};

/* UTF-8 validity by the Unicode table 3-7 byte ranges (independent of the library). */
static bool valid_utf8(const char *s, size_t n)
{
	const uint8_t *u = (const uint8_t *)s;
	for (size_t i = 0; i < n;) {
		uint8_t c = u[i];
		size_t l;
		uint8_t lo = 0x80, hi = 0xBF;
		if (c < 0x80)
			l = 1;
		else if (c >= 0xC2 && c <= 0xDF)
			l = 2;
		else if (c >= 0xE0 && c <= 0xEF) {
			l = 3;
			lo = c == 0xE0 ? 0xA0 : 0x80;
			hi = c == 0xED ? 0x9F : 0xBF;
		} else if (c >= 0xF0 && c <= 0xF4) {
			l = 4;
			lo = c == 0xF0 ? 0x90 : 0x80;
			hi = c == 0xF4 ? 0x8F : 0xBF;
		} else
			return false;
		if (i + l > n)
			return false;
		if (l > 1 && (u[i + 1] < lo || u[i + 1] > hi))
			return false;
		for (size_t k = 2; k < l; k++)
			if ((u[i + k] & 0xC0) != 0x80)
				return false;
		i += l;
	}
	return true;
}

/* Feeds ids and collects the chunks; checks every chunk is whole UTF-8 characters. */
static char *detok_collect(const struct bn_tokenizer *t, const int32_t *ids, size_t n,
			   size_t *len)
{
	struct bn_detok d;
	struct bn_error err = { 0 };
	bn_detok_init(&d, t);
	char *acc = malloc(16 * n + 16);
	size_t o = 0;
	for (size_t i = 0; i <= n; i++) {
		const char *p;
		size_t l;
		int rc = i < n ? bn_detok_feed(&d, ids[i], &p, &l, &err)
			       : bn_detok_flush(&d, &p, &l, &err);
		ck_assert_msg(rc == 0, "%s", err.msg);
		/* a chunk never ends inside a character */
		if (l) {
			uint8_t last_lead = 0;
			size_t k = l;
			while (k > 0 && ((uint8_t)p[k - 1] & 0xC0) == 0x80)
				k--;
			ck_assert_uint_gt(k, 0);
			last_lead = (uint8_t)p[k - 1];
			size_t want = last_lead < 0x80 ? 1 : last_lead < 0xE0 ? 2 : last_lead < 0xF0 ? 3 : 4;
			ck_assert_uint_eq(l - (k - 1), want);
		}
		ck_assert(valid_utf8(p, l));
		memcpy(acc + o, p, l);
		o += l;
	}
	bn_detok_free(&d);
	acc[o] = '\0';
	*len = o;
	return acc;
}

/* ---------------------------------------------------------------------------------------
 * synthetic vocabulary */
#ifndef BN_TOK_REAL

START_TEST(test_bpe_rank_order)
{
	struct bn_tokenizer *t = syn_tokenizer();
	int32_t *ids;
	size_t n;
	struct bn_error err = { 0 };
	/* "xabc": not a vocabulary entry; b+c (rank 13) before a+b (14), then a+bc (15) */
	ck_assert_int_eq(bn_tokenize(t, "xabc", 4, false, false, &ids, &n, &err), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_int_eq(ids[0], 'x');
	ck_assert_int_eq(ids[1], syn_id(t, "abc"));
	free(ids);
	/* equal ranks: leftmost pair first */
	ck_assert_int_eq(bn_tokenize(t, "aaa", 3, false, false, &ids, &n, &err), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_int_eq(ids[0], syn_id(t, "aa"));
	ck_assert_int_eq(ids[1], 'a');
	free(ids);
	ck_assert_int_eq(bn_tokenize(t, "aaaa", 4, false, false, &ids, &n, &err), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_int_eq(ids[0], syn_id(t, "aa"));
	ck_assert_int_eq(ids[1], syn_id(t, "aa"));
	free(ids);
	/* " the world" splits into " the" + " world"; both merge to one token each; BOS first */
	ck_assert_int_eq(bn_tokenize(t, " the world", 10, true, false, &ids, &n, &err), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert_int_eq(ids[0], bn_tokenizer_bos(t));
	ck_assert_int_eq(ids[1], syn_id(t, " the"));
	ck_assert_int_eq(ids[2], syn_id(t, " world"));
	free(ids);
	/* "thing": t h i n g -> t he? no: "h e" needs an e; i+n then in+g */
	ck_assert_int_eq(bn_tokenize(t, "thing", 5, false, false, &ids, &n, &err), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert_int_eq(ids[0], 't');
	ck_assert_int_eq(ids[1], 'h');
	ck_assert_int_eq(ids[2], syn_id(t, "ing"));
	free(ids);
	/* a multi-byte character merges through its byte tokens */
	ck_assert_int_eq(bn_tokenize(t, "x\xE2\x82\xAC", 4, false, false, &ids, &n, &err), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_int_eq(ids[1], syn_id(t, "\xE2\x82\xAC"));
	free(ids);
	ck_assert_str_eq(bn_tokenizer_pre(t), "llama-bpe");
	bn_tokenizer_free(t);
}
END_TEST

START_TEST(test_roundtrip_synthetic)
{
	struct bn_tokenizer *t = syn_tokenizer();
	for (size_t i = 0; i < sizeof(corpus) / sizeof(corpus[0]); i++) {
		roundtrip(t, corpus[i], strlen(corpus[i]), false);
		roundtrip(t, corpus[i], strlen(corpus[i]), true);
	}
	/* NUL bytes and every byte value */
	char all[512];
	for (int i = 0; i < 512; i++)
		all[i] = (char)(i * 7 + 3);
	roundtrip(t, all, sizeof(all), true);
	roundtrip(t, "a\0b\0\0c", 6, false);
	/* long runs: no quadratic blow-up, no regex stack trouble */
	size_t big = 200000;
	char *s = malloc(big);
	memset(s, 'a', big);
	roundtrip(t, s, big, false);
	memset(s, ' ', big);
	s[big - 1] = 'x';
	roundtrip(t, s, big, false);
	for (size_t i = 0; i < big; i++)
		s[i] = "ab \n\xE2\x82\xAC!"[i % 8];
	roundtrip(t, s, big, false);
	free(s);
	bn_tokenizer_free(t);
}
END_TEST

START_TEST(test_detok_split_points)
{
	/* Every split point of a text of 1- to 4-byte characters, as two tokens. */
	const char *text = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80z\xE4\xB8\xAD";
	size_t n = strlen(text);
	for (size_t k = 1; k < n; k++) {
		char *a = strndup(text, k), *b = strdup(text + k);
		const char *extra[] = { a, b };
		struct bn_vocab v;
		struct bn_error err = { 0 };
		struct bn_tokenizer *t;
		syn_vocab(&v, extra, 2, NULL, 0);
		ck_assert_int_eq(bn_tokenizer_new(&t, &v, NULL, &err), 0);
		int32_t ids[2] = { 256, 257 };
		/* first token alone: only the complete characters come out */
		struct bn_detok d;
		const char *p;
		size_t l, l2;
		bn_detok_init(&d, t);
		ck_assert_int_eq(bn_detok_feed(&d, ids[0], &p, &l, &err), 0);
		size_t whole = 0;
		for (size_t i = 0; i < k;) {
			uint8_t c = (uint8_t)text[i];
			size_t cl = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
			if (i + cl > k)
				break;
			i += cl;
			whole = i;
		}
		ck_assert_uint_eq(l, whole);
		ck_assert(memcmp(p, text, l) == 0);
		ck_assert_int_eq(bn_detok_feed(&d, ids[1], &p, &l2, &err), 0);
		ck_assert_uint_eq(whole + l2, n);
		ck_assert(memcmp(p, text + whole, l2) == 0);
		ck_assert_int_eq(bn_detok_flush(&d, &p, &l, &err), 0);
		ck_assert_uint_eq(l, 0);
		bn_detok_free(&d);
		/* also the byte tokens one by one */
		int32_t bytes[32];
		for (size_t i = 0; i < n; i++)
			bytes[i] = (uint8_t)text[i];
		size_t ol;
		char *out = detok_collect(t, bytes, n, &ol);
		ck_assert_uint_eq(ol, n);
		ck_assert(memcmp(out, text, n) == 0);
		free(out);
		bn_tokenizer_free(t);
		bn_vocab_free(&v);
		free(a);
		free(b);
	}
}
END_TEST

START_TEST(test_detok_invalid)
{
	struct bn_tokenizer *t = syn_tokenizer();
	static const struct {
		const char *in, *out;
	} cases[] = {
		{ "\x80", "\xEF\xBF\xBD" },
		{ "a\xC3(", "a\xEF\xBF\xBD(" },
		{ "\xC0\xAF", "\xEF\xBF\xBD\xEF\xBF\xBD" },
		{ "\xED\xA0\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" },   /* surrogate */
		{ "\xF0\x9F\x98" "A", "\xEF\xBF\xBD" "A" },                    /* truncated 4-byte */
		{ "\xF5\xFF", "\xEF\xBF\xBD\xEF\xBF\xBD" },
		{ "\xF4\x90\x80\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" },
		{ "\xE2\x82", "\xEF\xBF\xBD" },                                /* dangling at flush */
		{ "\xE2\x82\xE2\x82\xAC", "\xEF\xBF\xBD\xE2\x82\xAC" },
		{ "ok\xC3\xA9", "ok\xC3\xA9" },
	};
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		int32_t ids[16];
		size_t n = strlen(cases[c].in), ol;
		for (size_t i = 0; i < n; i++)
			ids[i] = (uint8_t)cases[c].in[i];
		char *out = detok_collect(t, ids, n, &ol);
		ck_assert_msg(ol == strlen(cases[c].out) && memcmp(out, cases[c].out, ol) == 0,
			      "case %zu: got %zu bytes", c, ol);
		free(out);
	}
	/* out-of-range ids: an error, the pending bytes kept */
	struct bn_detok d;
	struct bn_error err = { 0 };
	const char *p;
	size_t l;
	bn_detok_init(&d, t);
	ck_assert_int_eq(bn_detok_feed(&d, 0xE2, &p, &l, &err), 0);
	ck_assert_int_eq(bn_detok_feed(&d, -1, &p, &l, &err), -EINVAL);
	ck_assert_int_eq(bn_detok_feed(&d, (int32_t)bn_tokenizer_n_vocab(t), &p, &l, &err), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "outside the vocabulary"));
	ck_assert_int_eq(bn_detok_feed(&d, 0x82, &p, &l, &err), 0);
	ck_assert_int_eq(bn_detok_feed(&d, 0xAC, &p, &l, &err), 0);
	ck_assert_uint_eq(l, 3);
	ck_assert(memcmp(p, "\xE2\x82\xAC", 3) == 0);
	bn_detok_free(&d);
	/* random id streams never crash and always give valid UTF-8 */
	uint64_t s = 12345;
	for (int round = 0; round < 200; round++) {
		int32_t ids[40];
		for (int i = 0; i < 40; i++) {
			s = s * 6364136223846793005ull + 1442695040888963407ull;
			ids[i] = (int32_t)((s >> 33) % bn_tokenizer_n_vocab(t));
		}
		size_t ol;
		char *out = detok_collect(t, ids, 40, &ol);
		ck_assert_msg(valid_utf8(out, ol), "round %d: invalid UTF-8 out of the stream", round);
		free(out);
	}
	int32_t bad[] = { 5, 99999 };
	char *o;
	ck_assert_int_eq(bn_detokenize(t, bad, 2, &o, &l, &err), -EINVAL);
	bn_tokenizer_free(t);
}
END_TEST

START_TEST(test_specials)
{
	struct bn_tokenizer *t = syn_tokenizer();
	int32_t *ids;
	size_t n;
	struct bn_error err = { 0 };
	int32_t bos = bn_tokenizer_bos(t), eos = bn_tokenizer_eos(t), eot = bn_tokenizer_eot(t);
	int32_t tool = eot + 1;
	ck_assert_int_eq(bn_tokenizer_token_type(t, eot), BN_TOKEN_CONTROL);
	ck_assert_int_eq(bn_tokenizer_token_type(t, tool), BN_TOKEN_USER_DEFINED);
	ck_assert(bn_token_is_eog(t, eos) && bn_token_is_eog(t, eot) && !bn_token_is_eog(t, bos));
	ck_assert(!bn_token_is_eog(t, -1));
	const char *txt = "x<|eot_id|>y<tool><|begin_of_text|>";
	ck_assert_int_eq(bn_tokenize(t, txt, strlen(txt), false, true, &ids, &n, &err), 0);
	ck_assert_uint_eq(n, 5);
	ck_assert_int_eq(ids[0], 'x');
	ck_assert_int_eq(ids[1], eot);
	ck_assert_int_eq(ids[2], 'y');
	ck_assert_int_eq(ids[3], tool);
	ck_assert_int_eq(ids[4], bos);
	free(ids);
	/* not parsed: no control id appears, USER_DEFINED still matched */
	ck_assert_int_eq(bn_tokenize(t, txt, strlen(txt), false, false, &ids, &n, &err), 0);
	int tools = 0;
	for (size_t i = 0; i < n; i++) {
		ck_assert(ids[i] != eot && ids[i] != bos);
		tools += ids[i] == tool;
	}
	ck_assert_int_eq(tools, 1);
	free(ids);
	/* pieces of control tokens are their text */
	const char *p;
	size_t l;
	ck_assert_int_eq(bn_token_piece(t, eot, &p, &l), 0);
	ck_assert(l == 10 && memcmp(p, "<|eot_id|>", 10) == 0);
	ck_assert_int_eq(bn_token_piece(t, -5, &p, &l), -EINVAL);
	/* BOS only when asked */
	ck_assert_int_eq(bn_tokenize(t, "", 0, true, false, &ids, &n, &err), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(ids[0], bos);
	free(ids);
	ck_assert_int_eq(bn_tokenize(t, "", 0, false, false, &ids, &n, &err), 0);
	ck_assert_uint_eq(n, 0);
	free(ids);
	bn_tokenizer_free(t);
}
END_TEST

START_TEST(test_longest_special_first)
{
	/* two USER_DEFINED tokens sharing a prefix: the longer one wins where both match */
	static const char *const extra[] = { "q" };
	struct bn_vocab v;
	struct bn_error err = { 0 };
	struct bn_tokenizer *t;
	syn_vocab(&v, extra, 1, NULL, 0);
	free(v.tokens[256]);
	v.tokens[256] = strdup("<tool>x");
	v.types[256] = BN_TOKEN_USER_DEFINED;
	ck_assert_int_eq(bn_tokenizer_new(&t, &v, NULL, &err), 0);
	int32_t *ids;
	size_t n;
	ck_assert_int_eq(bn_tokenize(t, "<tool>x<tool>y", 14, false, false, &ids, &n, &err), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert_int_eq(ids[0], 256);
	ck_assert_int_eq(ids[1], 256 + 1 + 3);
	ck_assert_int_eq(ids[2], 'y');
	free(ids);
	bn_tokenizer_free(t);
	bn_vocab_free(&v);
}
END_TEST

START_TEST(test_new_errors)
{
	struct bn_vocab v;
	struct bn_error err = { 0 };
	struct bn_tokenizer *t = (struct bn_tokenizer *)&v;
	syn_vocab(&v, NULL, 0, NULL, 0);
	strcpy(v.model, "llama");
	ck_assert_int_eq(bn_tokenizer_new(&t, &v, NULL, &err), -ENOTSUP);
	ck_assert_ptr_null(t);
	ck_assert_ptr_nonnull(strstr(err.msg, "llama"));
	strcpy(v.model, "gpt2");
	v.eot = (int32_t)v.n_tokens;
	ck_assert_int_eq(bn_tokenizer_new(&t, &v, NULL, &err), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "EOT"));
	v.eot = -1;
	v.merges = realloc(v.merges, sizeof(char *));
	v.merges[0] = strdup("nospace");
	v.n_merges = 1;
	ck_assert_int_eq(bn_tokenizer_new(&t, &v, NULL, &err), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "nospace"));
	/* an unknown pre-tokenizer falls back to llama-bpe */
	v.n_merges = 0;
	strcpy(v.pre, "whatever");
	ck_assert_int_eq(bn_tokenizer_new(&t, &v, NULL, &err), 0);
	ck_assert_str_eq(bn_tokenizer_pre(t), "llama-bpe");
	bn_tokenizer_free(t);
	v.n_merges = 1;
	bn_vocab_free(&v);
}
END_TEST

UNUSED static char *write_tmp(const char *content)
{
	char *path = strdup("/tmp/bn-tokjson-XXXXXX");
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
	return path;
}

UNUSED static int load_json(const char *content, struct bn_vocab *v, struct bn_error *err)
{
	char *path = write_tmp(content);
	int rc = bn_tokjson_load(path, v, err);
	unlink(path);
	free(path);
	return rc;
}

START_TEST(test_tokjson)
{
	struct bn_vocab v;
	struct bn_error err = { 0 };
	/* both merge spellings, added tokens special and not, ids out of order */
	const char *ok = "{\"added_tokens\":[{\"id\":4,\"content\":\"<|eot_id|>\",\"special\":true},"
			 "{\"id\":5,\"content\":\"<x>\",\"special\":false}],"
			 "\"model\":{\"type\":\"BPE\",\"vocab\":{\"b\":1,\"a\":0,\"ab\":2,\"abb\":3},"
			 "\"merges\":[\"a b\",[\"ab\",\"b\"]]}}";
	ck_assert_int_eq(load_json(ok, &v, &err), 0);
	ck_assert_uint_eq(v.n_tokens, 6);
	ck_assert_str_eq(v.tokens[0], "a");
	ck_assert_str_eq(v.tokens[3], "abb");
	ck_assert_int_eq(v.types[2], BN_TOKEN_NORMAL);
	ck_assert_int_eq(v.types[4], BN_TOKEN_CONTROL);
	ck_assert_int_eq(v.types[5], BN_TOKEN_USER_DEFINED);
	ck_assert_uint_eq(v.n_merges, 2);
	ck_assert_str_eq(v.merges[0], "a b");
	ck_assert_str_eq(v.merges[1], "ab b");
	ck_assert_int_eq(v.eot, 4);
	ck_assert_int_eq(v.bos, -1);
	ck_assert_str_eq(v.model, "gpt2");
	ck_assert_str_eq(v.pre, "llama-bpe");
	ck_assert(v.add_bos);
	bn_vocab_free(&v);

	/* a hole in the ids */
	ck_assert_int_eq(load_json("{\"model\":{\"vocab\":{\"a\":0,\"b\":2},\"merges\":[]}}", &v, &err),
			 -EINVAL);
	ck_assert_msg(strstr(err.msg, "id 2") || strstr(err.msg, "id 1"), "%s", err.msg);
	ck_assert_int_eq(load_json("{\"model\":{\"vocab\":{\"a\":0,\"b\":7},\"merges\":[]}}", &v, &err),
			 -EINVAL);
	ck_assert_msg(strstr(err.msg, "id 7") != NULL, "%s", err.msg);
	ck_assert_int_eq(load_json("{\"model\":{\"vocab\":{\"a\":0,\"b\":0}}}", &v, &err), -EINVAL);
	ck_assert_int_eq(load_json("{\"model\":{\"vocab\":{\"a\":0},\"merges\":[\"ab\"]}}", &v, &err),
			 -EINVAL);
	ck_assert_int_eq(load_json("{\"model\":{\"vocab\":{\"a\":0},\"merges\":[[\"a\"]]}}", &v, &err),
			 -EINVAL);
	ck_assert_int_eq(load_json("{\"model\":{\"type\":\"Unigram\",\"vocab\":{}}}", &v, &err),
			 -ENOTSUP);
	ck_assert_int_eq(load_json("{\"model\": {\"vocab\": ", &v, &err), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "JSON"));
	ck_assert_int_eq(bn_tokjson_load("/nonexistent/tokenizer.json", &v, &err), -ENOENT);
	ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/tokenizer.json"));
	ck_assert_ptr_null(v.tokens);
}
END_TEST

/* A vocabulary-only GGUF through the project's writer and reader. */
UNUSED static char *write_vocab_gguf(const struct bn_vocab *v, bool with_pre, bool with_eot)
{
	char *path = strdup("/tmp/bn-vocab-XXXXXX");
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	close(fd);
	struct bn_ggufw *w;
	struct bn_error err = { 0 };
	ck_assert_int_eq(bn_ggufw_open(&w, path, &err), 0);
	ck_assert_int_eq(bn_ggufw_kv_str(w, "general.architecture", "bitnet-b1.58", &err), 0);
	ck_assert_int_eq(bn_ggufw_kv_str(w, "tokenizer.ggml.model", v->model, &err), 0);
	if (with_pre)
		ck_assert_int_eq(bn_ggufw_kv_str(w, "tokenizer.ggml.pre", v->pre, &err), 0);
	ck_assert_int_eq(bn_ggufw_kv_arr_str(w, "tokenizer.ggml.tokens",
					     (const char *const *)v->tokens, v->n_tokens, &err), 0);
	ck_assert_int_eq(bn_ggufw_kv_arr_i32(w, "tokenizer.ggml.token_type", v->types, v->n_tokens,
					     &err), 0);
	ck_assert_int_eq(bn_ggufw_kv_arr_str(w, "tokenizer.ggml.merges",
					     (const char *const *)v->merges, v->n_merges, &err), 0);
	ck_assert_int_eq(bn_ggufw_kv_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)v->bos, &err), 0);
	ck_assert_int_eq(bn_ggufw_kv_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)v->eos, &err), 0);
	if (with_eot)
		ck_assert_int_eq(bn_ggufw_kv_u32(w, "tokenizer.ggml.eot_token_id", (uint32_t)v->eot,
						 &err), 0);
	ck_assert_int_eq(bn_ggufw_kv_bool(w, "tokenizer.ggml.add_bos_token", v->add_bos, &err), 0);
	ck_assert_msg(bn_ggufw_close(w, &err) == 0, "%s", err.msg);
	return path;
}

START_TEST(test_vocab_gguf)
{
	struct bn_vocab v, r;
	struct bn_error err = { 0 };
	syn_vocab(&v, syn_extra, sizeof(syn_extra) / sizeof(syn_extra[0]), syn_merges,
		  sizeof(syn_merges) / sizeof(syn_merges[0]));
	for (int variant = 0; variant < 2; variant++) {
		char *path = write_vocab_gguf(&v, variant == 0, variant == 0);
		struct bn_gguf *g;
		ck_assert_msg(bn_gguf_open(&g, path, &err) == 0, "%s", err.msg);
		ck_assert_msg(bn_vocab_from_gguf(&r, g, &err) == 0, "%s", err.msg);
		ck_assert_uint_eq(r.n_tokens, v.n_tokens);
		ck_assert_uint_eq(r.n_merges, v.n_merges);
		for (uint32_t i = 0; i < v.n_tokens; i++) {
			ck_assert_str_eq(r.tokens[i], v.tokens[i]);
			ck_assert_int_eq(r.types[i], v.types[i]);
		}
		for (uint32_t i = 0; i < v.n_merges; i++)
			ck_assert_str_eq(r.merges[i], v.merges[i]);
		ck_assert_int_eq(r.bos, v.bos);
		ck_assert_int_eq(r.eos, v.eos);
		ck_assert_int_eq(r.eot, v.eot);   /* variant 1: found as "<|eot_id|>" */
		ck_assert_int_eq(r.pad, -1);
		ck_assert(r.add_bos);
		ck_assert_str_eq(r.model, "gpt2");
		ck_assert_str_eq(r.pre, variant == 0 ? "llama-bpe" : "");
		struct bn_tokenizer *t;
		ck_assert_int_eq(bn_tokenizer_new(&t, &r, "bitnet-b1.58", &err), 0);
		ck_assert_str_eq(bn_tokenizer_pre(t), "llama-bpe");
		roundtrip(t, corpus[3], strlen(corpus[3]), false);
		bn_tokenizer_free(t);
		bn_vocab_free(&r);
		bn_gguf_close(g);
		unlink(path);
		free(path);
	}
	bn_vocab_free(&v);
}
END_TEST

static Suite *synthetic_suite(void)
{
	Suite *s = suite_create("tokenizer");
	TCase *tc = tcase_create("synthetic");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_bpe_rank_order);
	tcase_add_test(tc, test_roundtrip_synthetic);
	tcase_add_test(tc, test_detok_split_points);
	tcase_add_test(tc, test_detok_invalid);
	tcase_add_test(tc, test_specials);
	tcase_add_test(tc, test_longest_special_first);
	tcase_add_test(tc, test_new_errors);
	tcase_add_test(tc, test_tokjson);
	tcase_add_test(tc, test_vocab_gguf);
	suite_add_tcase(s, tc);
	return s;
}
#endif

#ifdef BN_TOK_REAL
/* ---------------------------------------------------------------------------------------
 * the real LLaMA-3 vocabulary (loaded once in main, shared by the forked tests) */

static struct bn_tokenizer *llama3;
static char *golden_dir;

static void check_ids(const char *what, const char *text, size_t len, bool special,
		      const int32_t *want, size_t n_want)
{
	int32_t *ids;
	size_t n;
	struct bn_error err = { 0 };
	ck_assert_msg(bn_tokenize(llama3, text, len, false, special, &ids, &n, &err) == 0,
		      "%s: %s", what, err.msg);
	size_t i = 0;
	while (i < n && i < n_want && ids[i] == want[i])
		i++;
	ck_assert_msg(i == n && i == n_want, "%s (parse_special=%d) '%.80s': %zu ids, want %zu; "
		      "first difference at %zu: got %d want %d", what, special, text, n, n_want, i,
		      i < n ? ids[i] : -1, i < n_want ? want[i] : -1);
	free(ids);
}

START_TEST(test_golden_vectors)
{
	char path[4096];
	size_t il, ol;
	snprintf(path, sizeof(path), "%s/llama-bpe.inp", golden_dir);
	char *inp = read_all(path, &il);
	snprintf(path, sizeof(path), "%s/llama-bpe.out", golden_dir);
	char *out = read_all(path, &ol);
	ck_assert(inp && out);
	static const char sep[] = "\n__ggml_vocab_test__\n";
	char *p = inp, *q = out;
	int cases = 0;
	for (;;) {
		char *e = strstr(p, sep);   /* texts hold no NULs */
		if (!e)
			break;
		char *nl = strchr(q, '\n');
		ck_assert_ptr_nonnull(nl);
		*nl = '\0';
		int32_t want[4096];
		size_t nw = 0;
		char *s = q, *end;
		for (;;) {
			long id = strtol(s, &end, 10);
			if (end == s)
				break;
			want[nw++] = (int32_t)id;
			s = end;
		}
		char what[32];
		snprintf(what, sizeof(what), "golden case %d", cases + 1);
		check_ids(what, p, (size_t)(e - p), false, want, nw);
		check_ids(what, p, (size_t)(e - p), true, want, nw);
		roundtrip(llama3, p, (size_t)(e - p), false);
		cases++;
		p = e + strlen(sep);
		q = nl + 1;
	}
	ck_assert_int_eq(cases, 46);
	free(inp);
	free(out);
}
END_TEST

static void ids_from_json(json_object *a, int32_t **ids, size_t *n)
{
	*n = json_object_array_length(a);
	*ids = malloc(sizeof(int32_t) * (*n + 1));
	for (size_t i = 0; i < *n; i++)
		(*ids)[i] = json_object_get_int(json_object_array_get_idx(a, i));
}

START_TEST(test_hf_cases)
{
	char path[4096];
	const char *src = getenv("top_srcdir");
	snprintf(path, sizeof(path), "%s/tests/tokenizer-cases.json", src ? src : ".");
	json_object *root = json_object_from_file(path);
	ck_assert_msg(root != NULL, "cannot read %s", path);
	json_object *cases;
	ck_assert(json_object_object_get_ex(root, "cases", &cases));
	size_t n = json_object_array_length(cases);
	ck_assert_uint_ge(n, 250);
	for (size_t i = 0; i < n; i++) {
		json_object *c = json_object_array_get_idx(cases, i), *jt, *js, *jp;
		ck_assert(json_object_object_get_ex(c, "text", &jt) &&
			  json_object_object_get_ex(c, "special", &js) &&
			  json_object_object_get_ex(c, "plain", &jp));
		const char *text = json_object_get_string(jt);
		size_t len = (size_t)json_object_get_string_len(jt);
		int32_t *w;
		size_t nw;
		char what[48];
		snprintf(what, sizeof(what), "HF case %zu", i);
		ids_from_json(js, &w, &nw);
		check_ids(what, text, len, true, w, nw);
		free(w);
		ids_from_json(jp, &w, &nw);
		check_ids(what, text, len, false, w, nw);
		free(w);
		roundtrip(llama3, text, len, false);
	}
	json_object_put(root);
}
END_TEST

START_TEST(test_real_specials_and_roundtrip)
{
	int32_t *ids;
	size_t n;
	struct bn_error err = { 0 };
	ck_assert_int_eq(bn_tokenizer_n_vocab(llama3), 128256);
	ck_assert_int_eq(bn_tokenizer_bos(llama3), 128000);
	ck_assert_int_eq(bn_tokenizer_eos(llama3), 128001);
	ck_assert_int_eq(bn_tokenizer_eot(llama3), 128009);
	const char *s = "<|begin_of_text|>hi";
	ck_assert_int_eq(bn_tokenize(llama3, s, strlen(s), true, true, &ids, &n, &err), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert_int_eq(ids[0], 128000);
	ck_assert_int_eq(ids[1], 128000);
	ck_assert_int_eq(ids[2], 6151);
	free(ids);
	ck_assert_int_eq(bn_tokenize(llama3, s, strlen(s), false, false, &ids, &n, &err), 0);
	for (size_t i = 0; i < n; i++)
		ck_assert_int_lt(ids[i], 128000);
	free(ids);
	for (size_t i = 0; i < sizeof(corpus) / sizeof(corpus[0]); i++) {
		roundtrip(llama3, corpus[i], strlen(corpus[i]), false);
		roundtrip(llama3, corpus[i], strlen(corpus[i]), true);
	}
	/* streaming the tokens of a text with multi-byte characters gives it back */
	const char *u = "日本語 👨‍👩‍👧‍👦 € é привет";
	ck_assert_int_eq(bn_tokenize(llama3, u, strlen(u), false, false, &ids, &n, &err), 0);
	size_t ol;
	char *o = detok_collect(llama3, ids, n, &ol);
	ck_assert_str_eq(o, u);
	free(o);
	free(ids);
}
END_TEST

static Suite *real_suite(void)
{
	Suite *s = suite_create("tokenizer-llama3");
	TCase *tc = tcase_create("llama3");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_golden_vectors);
	tcase_add_test(tc, test_hf_cases);
	tcase_add_test(tc, test_real_specials_and_roundtrip);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	const char *env = getenv("BITNET_LLAMA3_TOKENIZER");
	const char *bd = getenv("top_builddir");
	const char *sd = getenv("TEST_DATA");
	char path[4096];
	if (env && *env)
		snprintf(path, sizeof(path), "%s", env);
	else
		snprintf(path, sizeof(path), "%s/tests/llama3/package/models/tokenizer.json",
			 bd ? bd : ".");
	char gpath[4096];
	snprintf(gpath, sizeof(gpath), "%s/golden/tokenizer/llama-bpe.inp", sd ? sd : "tests/golden-data");
	if (access(path, R_OK) != 0 || access(gpath, R_OK) != 0) {
		fprintf(stderr, "SKIP: need %s (tests/fetch-llama3-tokenizer.sh) and %s\n", path, gpath);
		return 77;
	}
	golden_dir = strdup(gpath);
	*strrchr(golden_dir, '/') = '\0';

	struct bn_vocab v;
	struct bn_error err = { 0 };
	double t0 = now_s();
	if (bn_tokjson_load(path, &v, &err) != 0) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	double t1 = now_s();
	if (bn_tokenizer_new(&llama3, &v, "bitnet-b1.58", &err) != 0) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	double t2 = now_s();
	printf("tokenizer.json parse+import: %.1f ms; bn_tokenizer_new (%u tokens, %u merges): "
	       "%.1f ms; regex JIT: %s\n", (t1 - t0) * 1e3, v.n_tokens, v.n_merges, (t2 - t1) * 1e3,
	       bn_tokenizer_jit(llama3) ? "yes" : "no");
	bn_vocab_free(&v);
	if (t2 - t1 > 1.0) {
		fprintf(stderr, "FAIL: bn_tokenizer_new took %.3f s (limit 1 s)\n", t2 - t1);
		return 1;
	}

	SRunner *sr = srunner_create(real_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	bn_tokenizer_free(llama3);
	free(golden_dir);
	return failed ? 1 : 0;
}
#else
int main(void)
{
	SRunner *sr = srunner_create(synthetic_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
#endif
