/* Fuzz target for the tokenizer and the detokenizers (lib/tokenizer.c) over the fixed
 * vocabulary of fixed_vocab.h.
 *
 * Input: byte 0 holds flags (bit 0: add BOS), the rest is the payload. Each input is
 *  - encoded as text, with and without special-token parsing: it must succeed (every byte
 *    has a token), and detokenizing gives back exactly the payload (tokenizer.h promises
 *    it for any bytes); the streaming detokenizer gives the payload with every maximal
 *    ill-formed UTF-8 subpart replaced by U+FFFD, in chunks that are whole characters;
 *  - read as little-endian int16 token ids (some negative or past the vocabulary):
 *    bn_detokenize refuses any id out of range and otherwise concatenates the pieces;
 *    the streaming detokenizer refuses such ids without losing its state.
 *
 *   scripts/fuzz.sh tokenizer 60        (libFuzzer, see tests/fuzz/README)
 *   build/tests/fuzz/fuzz_tokenizer FILE|DIR...   (replay; -DBN_FUZZ_STANDALONE)
 *   build/tests/fuzz/fuzz_tokenizer --tokenizer-json   (prints the vocabulary) */
#include "fuzz_common.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fixed_vocab.h"
#include "tokenizer.h"

static const struct bn_tokenizer *tokenizer(void)
{
	static struct bn_tokenizer *t;
	if (!t) {
		struct bn_vocab v;
		struct bn_error err = { 0 };
		fixed_vocab(&v);
		if (bn_tokenizer_new(&t, &v, NULL, &err) != 0) {
			fprintf(stderr, "fixed vocabulary: %s\n", err.msg);
			abort();
		}
		bn_vocab_free(&v);
	}
	return t;
}

/* The streaming detokenizer over ids[n]: the text it prints, with out-of-range ids
 * refused along the way. Every chunk must be well-formed UTF-8 on its own. */
static void stream(const struct bn_tokenizer *t, const int32_t *ids, size_t n, char **out,
		   size_t *out_len)
{
	struct bn_detok d;
	struct bn_error err = { 0 };
	size_t cap = 64, len = 0;
	char *s = malloc(cap);
	FUZZ_CHECK(s != NULL);
	bn_detok_init(&d, t);
	for (size_t i = 0; i <= n; i++) {
		const char *text;
		size_t tl;
		int rc;
		memset(&err, 0, sizeof(err));
		if (i < n)
			rc = bn_detok_feed(&d, ids[i], &text, &tl, &err);
		else
			rc = bn_detok_flush(&d, &text, &tl, &err);
		bool in_range = i == n || (ids[i] >= 0 && (uint32_t)ids[i] < bn_tokenizer_n_vocab(t));
		if (!in_range) {
			FUZZ_CHECK(rc == -EINVAL);
			FUZZ_CHECK_ERROR(rc, err);
			FUZZ_CHECK(tl == 0);
			continue;
		}
		FUZZ_CHECK(rc == 0);
		FUZZ_CHECK(text[tl] == '\0');
		FUZZ_CHECK(fuzz_utf8_valid(text, tl));
		if (len + tl + 1 > cap) {
			while (len + tl + 1 > cap)
				cap *= 2;
			s = realloc(s, cap);
			FUZZ_CHECK(s != NULL);
		}
		memcpy(s + len, text, tl);
		len += tl;
	}
	FUZZ_CHECK(d.n_pend == 0);   /* flush resets */
	bn_detok_free(&d);
	s[len] = '\0';
	*out = s;
	*out_len = len;
}

/* The stream must print exactly the sanitized form of the raw bytes. */
static void check_stream(const struct bn_tokenizer *t, const int32_t *ids, size_t n,
			 const char *raw, size_t raw_len)
{
	char *got, *want;
	size_t got_len, want_len;
	stream(t, ids, n, &got, &got_len);
	fuzz_utf8_sanitize(raw, raw_len, &want, &want_len);
	FUZZ_CHECK(got_len == want_len && memcmp(got, want, got_len) == 0);
	free(got);
	free(want);
}

static void check_encode(const struct bn_tokenizer *t, const char *text, size_t len,
			 bool add_bos, bool parse_special)
{
	struct bn_error err = { 0 };
	int32_t *ids = NULL;
	size_t n = 0;
	int rc = bn_tokenize(t, text, len, add_bos, parse_special, &ids, &n, &err);
	if (rc != 0)
		fprintf(stderr, "tokenize: %s\n", err.msg);
	FUZZ_CHECK(rc == 0 && ids != NULL);
	size_t skip = 0;
	if (add_bos) {
		FUZZ_CHECK(n >= 1 && ids[0] == bn_tokenizer_bos(t));
		skip = 1;
	}
	FUZZ_CHECK(n - skip <= len);   /* at most one token per byte */
	for (size_t i = skip; i < n; i++) {
		int32_t ty = bn_tokenizer_token_type(t, ids[i]);
		FUZZ_CHECK(ty >= 0);
		/* control tokens come only from special parsing */
		if (!parse_special)
			FUZZ_CHECK(ty != BN_TOKEN_CONTROL);
	}
	char *back = NULL;
	size_t back_len = 0;
	rc = bn_detokenize(t, ids + skip, n - skip, &back, &back_len, &err);
	FUZZ_CHECK(rc == 0 && back != NULL && back[back_len] == '\0');
	FUZZ_CHECK(back_len == len && memcmp(back, text, len) == 0);
	free(back);
	check_stream(t, ids + skip, n - skip, text, len);
	free(ids);
}

static void check_decode(const struct bn_tokenizer *t, const uint8_t *p, size_t len)
{
	size_t n = len / 2;
	uint32_t nv = bn_tokenizer_n_vocab(t);
	int32_t *ids = malloc((n ? n : 1) * sizeof(*ids));   /* [n] */
	FUZZ_CHECK(ids != NULL);
	bool all_in = true;
	size_t total = 0;
	for (size_t i = 0; i < n; i++) {
		int16_t raw = (int16_t)(uint16_t)(p[2 * i] | (p[2 * i + 1] << 8));
		/* mostly in range, some just outside it on either side */
		ids[i] = (int32_t)raw % (int32_t)(nv + 8);
		if (ids[i] < 0 || (uint32_t)ids[i] >= nv) {
			all_in = false;
		} else {
			const char *piece;
			size_t pl;
			FUZZ_CHECK(bn_token_piece(t, ids[i], &piece, &pl) == 0);
			total += pl;
		}
	}
	struct bn_error err = { 0 };
	char *s = NULL;
	size_t sl = 0;
	int rc = bn_detokenize(t, ids, n, &s, &sl, &err);
	if (!all_in) {
		FUZZ_CHECK(rc == -EINVAL && s == NULL);
		FUZZ_CHECK_ERROR(rc, err);
	} else {
		FUZZ_CHECK(rc == 0 && s != NULL && sl == total && s[sl] == '\0');
	}
	/* the raw bytes of the ids in range, which the stream must print sanitized */
	char *raw = malloc(total + 1);
	FUZZ_CHECK(raw != NULL);
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		const char *piece;
		size_t pl;
		if (bn_token_piece(t, ids[i], &piece, &pl) == 0) {
			memcpy(raw + o, piece, pl);
			o += pl;
		}
	}
	FUZZ_CHECK(o == total);
	if (s)
		FUZZ_CHECK(memcmp(s, raw, total) == 0);
	check_stream(t, ids, n, raw, total);
	/* what any ids decode to encodes back to the same bytes */
	if (total <= 4096)
		check_encode(t, raw, total, false, false);
	free(raw);
	free(s);
	free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct bn_tokenizer *t = tokenizer();
	if (size == 0)
		return 0;
	bool add_bos = data[0] & 1;
	const char *text = (const char *)data + 1;
	size_t len = size - 1;
	check_encode(t, text, len, add_bos, false);
	check_encode(t, text, len, add_bos, true);
	check_decode(t, data + 1, len);
	return 0;
}

#ifdef BN_FUZZ_STANDALONE
static void json_str(const char *s)
{
	putchar('"');
	for (const uint8_t *p = (const uint8_t *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

/* The fixed vocabulary as a Hugging Face tokenizer.json (corpus/tokjson/fixed.json). */
static void print_tokenizer_json(void)
{
	struct bn_vocab v;
	fixed_vocab(&v);
	printf("{\n  \"version\": \"1.0\",\n  \"added_tokens\": [");
	bool first = true;
	for (uint32_t i = 0; i < v.n_tokens; i++) {
		/* a duplicate string cannot be a vocab key twice: it becomes an added token */
		if (v.types[i] != BN_TOKEN_CONTROL && v.types[i] != BN_TOKEN_USER_DEFINED &&
		    fv_find(&v, v.tokens[i]) == (int32_t)i)
			continue;
		printf("%s\n    {\"id\": %u, \"content\": ", first ? "" : ",", i);
		json_str(v.tokens[i]);
		printf(", \"special\": %s}", v.types[i] == BN_TOKEN_CONTROL ? "true" : "false");
		first = false;
	}
	printf("\n  ],\n  \"model\": {\n    \"type\": \"BPE\",\n    \"vocab\": {");
	first = true;
	for (uint32_t i = 0; i < v.n_tokens; i++) {
		if (v.types[i] == BN_TOKEN_CONTROL || v.types[i] == BN_TOKEN_USER_DEFINED ||
		    fv_find(&v, v.tokens[i]) != (int32_t)i)
			continue;
		printf("%s\n      ", first ? "" : ",");
		json_str(v.tokens[i]);
		printf(": %u", i);
		first = false;
	}
	printf("\n    },\n    \"merges\": [");
	for (uint32_t i = 0; i < v.n_merges; i++) {
		printf("%s\n      ", i ? "," : "");
		json_str(v.merges[i]);
	}
	printf("\n    ]\n  }\n}\n");
	bn_vocab_free(&v);
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--tokenizer-json") == 0) {
		print_tokenizer_json();
		return 0;
	}
	return fuzz_replay_main(argc, argv);
}
#endif
