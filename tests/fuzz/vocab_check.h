/* Checks shared by the targets that build a tokenizer from a fuzzed vocabulary
 * (fuzz_tokjson: tokenizer.json; fuzz_model: a GGUF's tokenizer.ggml.* keys). */
#ifndef BN_FUZZ_VOCAB_CHECK_H
#define BN_FUZZ_VOCAB_CHECK_H

#include "fuzz_common.h"

#include "error.h"
#include "tokenizer.h"
#include "vocab.h"

/* What every accepted vocabulary holds, whatever its source. */
FUZZ_UNUSED static void vc_check_vocab(const struct bn_vocab *v)
{
	FUZZ_CHECK(v->n_tokens >= 1 && v->n_tokens <= INT32_MAX);
	FUZZ_CHECK(v->tokens != NULL && v->types != NULL);
	for (uint32_t i = 0; i < v->n_tokens; i++) {
		FUZZ_CHECK(v->tokens[i] != NULL);
		FUZZ_CHECK(v->types[i] >= BN_TOKEN_UNDEFINED && v->types[i] <= BN_TOKEN_BYTE);
	}
	FUZZ_CHECK(v->n_merges == 0 || v->merges != NULL);
	for (uint32_t i = 0; i < v->n_merges; i++)
		FUZZ_CHECK(v->merges[i] != NULL);
	const int32_t ids[] = { v->bos, v->eos, v->eot, v->pad };
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
		FUZZ_CHECK(ids[i] >= -1 && ids[i] < (int64_t)v->n_tokens);
	FUZZ_CHECK(memchr(v->model, '\0', sizeof(v->model)) != NULL);
	FUZZ_CHECK(memchr(v->pre, '\0', sizeof(v->pre)) != NULL);
}

static bool vc_is_special(const struct bn_tokenizer *t, int32_t id)
{
	int32_t ty = bn_tokenizer_token_type(t, id);
	return ty == BN_TOKEN_CONTROL || ty == BN_TOKEN_USER_DEFINED;
}

/* The streaming detokenizer over ids[n] (all in range) prints the sanitized pieces. */
static void vc_check_stream(const struct bn_tokenizer *t, const int32_t *ids, size_t n,
			    const char *raw, size_t raw_len)
{
	struct bn_detok d;
	struct bn_error err = { 0 };
	char *want;
	size_t want_len, got = 0;
	fuzz_utf8_sanitize(raw, raw_len, &want, &want_len);
	bn_detok_init(&d, t);
	for (size_t i = 0; i <= n; i++) {
		const char *s;
		size_t l;
		int rc = i < n ? bn_detok_feed(&d, ids[i], &s, &l, &err)
		               : bn_detok_flush(&d, &s, &l, &err);
		FUZZ_CHECK(rc == 0);
		FUZZ_CHECK(got + l <= want_len && memcmp(want + got, s, l) == 0);
		got += l;
	}
	FUZZ_CHECK(got == want_len);
	bn_detok_free(&d);
	free(want);
}

/* Encodes text[len] and checks what comes back. With an arbitrary vocabulary the round
 * trip is exact when no id is a CONTROL or USER_DEFINED token: those decode to their own
 * text, so a vocabulary whose byte or merge tokens are marked special (an added token
 * over a vocab entry) spells such text differently, as llama.cpp does. */
static void vc_check_text(const struct bn_tokenizer *t, const char *text, size_t len,
			  bool parse_special)
{
	struct bn_error err = { 0 };
	int32_t *ids = NULL;
	size_t n = 0;
	int rc = bn_tokenize(t, text, len, false, parse_special, &ids, &n, &err);
	if (rc != 0) {
		FUZZ_CHECK_ERROR(rc, err);
		FUZZ_CHECK(ids == NULL && n == 0);
		return;
	}
	FUZZ_CHECK(ids != NULL && n <= len);
	bool plain = true;
	for (size_t i = 0; i < n; i++) {
		FUZZ_CHECK(ids[i] >= 0 && (uint32_t)ids[i] < bn_tokenizer_n_vocab(t));
		if (vc_is_special(t, ids[i]))
			plain = false;
	}
	char *back = NULL;
	size_t bl = 0;
	rc = bn_detokenize(t, ids, n, &back, &bl, &err);
	FUZZ_CHECK(rc == 0 && back != NULL && back[bl] == '\0');
	if (plain)
		FUZZ_CHECK(bl == len && memcmp(back, text, len) == 0);
	vc_check_stream(t, ids, n, back, bl);
	free(back);
	free(ids);
}

/* Builds a tokenizer from v and exercises it on a few texts and on the whole vocabulary.
 * must_build: v came from an importer that promises a usable vocabulary. */
FUZZ_UNUSED static void vc_check_tokenizer(const struct bn_vocab *v, const char *arch,
					   bool must_build, const uint8_t *extra, size_t extra_len)
{
	static const char *const samples[] = {
		"Hello world", " the 123456 <|eot_id|>\n\n  x", "caf\xC3\xA9 \xF0\x9F\xA6\x99 's",
		"\xFF\xC3(\xE2\x82", "",
	};
	struct bn_tokenizer *t = NULL;
	struct bn_error err = { 0 };
	int rc = bn_tokenizer_new(&t, v, arch, &err);
	if (rc != 0) {
		FUZZ_CHECK_ERROR(rc, err);
		FUZZ_CHECK(t == NULL);
		if (must_build)
			FUZZ_CHECK(rc == -ENOMEM);
		return;
	}
	FUZZ_CHECK(bn_tokenizer_n_vocab(t) == v->n_tokens);
	FUZZ_CHECK(bn_tokenizer_bos(t) == v->bos && bn_tokenizer_eos(t) == v->eos &&
		   bn_tokenizer_eot(t) == v->eot);
	for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++)
		for (int ps = 0; ps < 2; ps++)
			vc_check_text(t, samples[i], strlen(samples[i]), ps);
	if (extra_len > 1024)
		extra_len = 1024;
	if (!extra)
		extra = (const uint8_t *)"";
	vc_check_text(t, (const char *)extra, extra_len, true);

	/* every id (the first 4096): pieces concatenate, the stream sanitizes them */
	uint32_t n = v->n_tokens < 4096 ? v->n_tokens : 4096;
	int32_t *ids = malloc(n * sizeof(*ids));   /* [n] */
	FUZZ_CHECK(ids != NULL);
	size_t total = 0;
	for (uint32_t i = 0; i < n; i++) {
		const char *p;
		size_t l;
		ids[i] = (int32_t)i;
		FUZZ_CHECK(bn_token_piece(t, (int32_t)i, &p, &l) == 0);
		total += l;
	}
	char *s = NULL;
	size_t sl = 0;
	FUZZ_CHECK(bn_detokenize(t, ids, n, &s, &sl, &err) == 0 && sl == total);
	vc_check_stream(t, ids, n, s, sl);
	free(s);
	free(ids);
	bn_tokenizer_free(t);
}

#endif
