/* The small fixed vocabulary of the tokenizer and chat fuzz targets, built in code so that
 * the targets need no file: the 256 byte tokens (ids 0..255 in byte order, spelt in the
 * GPT-2 byte alphabet), the tokens of a few merges (English, digits, newlines, a 2-byte and
 * a 4-byte character), two tokens no merge reaches, a duplicate, an empty token, then
 * LLaMA-3's control tokens and a few user-defined ones (one is a prefix of "<|eot_id|>").
 * `fuzz_tokenizer --tokenizer-json` (standalone build) prints it as a tokenizer.json:
 * corpus/tokjson/fixed.json is that output. */
#ifndef BN_FUZZ_FIXED_VOCAB_H
#define BN_FUZZ_FIXED_VOCAB_H

#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "vocab.h"

#define FV_MAX_TOKENS 512
#define FV_MAX_MERGES 64

/* Raw bytes -> the GPT-2 alphabet (printable bytes stand for themselves, the other 68
 * are U+0100.. in byte order), UTF-8, NUL-terminated. out holds 2 * n + 1 bytes. */
static void fv_map(const char *raw, size_t n, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned b = (uint8_t)raw[i], cp;
		if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) {
			cp = b;
		} else {
			/* rank of b among the bytes that are not printable */
			unsigned r = 0;
			for (unsigned x = 0; x < b; x++)
				if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE))
					r++;
			cp = 0x100 + r;
		}
		if (cp < 0x80) {
			out[o++] = (char)cp;
		} else {
			out[o++] = (char)(0xC0 | (cp >> 6));
			out[o++] = (char)(0x80 | (cp & 0x3F));
		}
	}
	out[o] = '\0';
}

static char *fv_mapdup(const char *raw)
{
	size_t n = strlen(raw);
	char *s = malloc(2 * n + 1);
	FUZZ_CHECK(s != NULL);
	fv_map(raw, n, s);
	return s;
}

static void fv_push(struct bn_vocab *v, char *text, int32_t type)
{
	FUZZ_CHECK(v->n_tokens < FV_MAX_TOKENS);
	v->tokens[v->n_tokens] = text;
	v->types[v->n_tokens] = type;
	v->n_tokens++;
}

static int32_t fv_find(const struct bn_vocab *v, const char *text)
{
	for (uint32_t i = 0; i < v->n_tokens; i++)
		if (strcmp(v->tokens[i], text) == 0)
			return (int32_t)i;
	return -1;
}

/* Fills v (free with bn_vocab_free). */
FUZZ_UNUSED static void fixed_vocab(struct bn_vocab *v)
{
	/* merges in rank order, as raw bytes; "x"+"y" has no token and is skipped */
	static const char *const merges[][2] = {
		{ " ", "t" }, { "h", "e" }, { " t", "he" }, { "i", "n" }, { "e", "r" }, { " ", "a" },
		{ "o", "n" }, { "1", "2" }, { "12", "3" }, { "\n", "\n" }, { " ", " " },
		{ "  ", "  " }, { "'", "s" }, { "l", "l" }, { " ", "w" }, { "o", "r" },
		{ " w", "or" }, { "l", "d" }, { " wor", "ld" }, { "H", "e" }, { "He", "ll" },
		{ "Hell", "o" }, { "\xC3", "\xA9" }, { "\xF0", "\x9F" }, { "\xF0\x9F", "\xA6" },
		{ "\xF0\x9F\xA6", "\x99" }, { "x", "y" }, { "\r", "\n" }, { "\t", "\t" },
	};
	static const char *const control[] = {
		"<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
		"<|end_header_id|>", "<|reserved_special_token_0|>",
	};
	static const char *const user[] = { "<|e", "<tool>", "\xE2\x86\x92" /* U+2192 */ };
	size_t n_merges = sizeof(merges) / sizeof(merges[0]);

	memset(v, 0, sizeof(*v));
	v->tokens = calloc(FV_MAX_TOKENS, sizeof(*v->tokens));
	v->types = calloc(FV_MAX_TOKENS, sizeof(*v->types));
	v->merges = calloc(FV_MAX_MERGES, sizeof(*v->merges));
	FUZZ_CHECK(v->tokens && v->types && v->merges && n_merges <= FV_MAX_MERGES);
	for (unsigned b = 0; b < 256; b++) {
		char raw = (char)b, *s = malloc(3);
		FUZZ_CHECK(s != NULL);
		fv_map(&raw, 1, s);
		fv_push(v, s, BN_TOKEN_NORMAL);
	}
	for (size_t i = 0; i < n_merges; i++) {
		char *l = fv_mapdup(merges[i][0]), *r = fv_mapdup(merges[i][1]);
		char *m = malloc(strlen(l) + strlen(r) + 2);
		FUZZ_CHECK(m != NULL);
		sprintf(m, "%s %s", l, r);
		v->merges[v->n_merges++] = m;
		if (strcmp(merges[i][0], "x") != 0) {
			char *t = malloc(strlen(l) + strlen(r) + 1);
			FUZZ_CHECK(t != NULL);
			sprintf(t, "%s%s", l, r);
			if (fv_find(v, t) < 0)
				fv_push(v, t, BN_TOKEN_NORMAL);
			else
				free(t);
		}
		free(l);
		free(r);
	}
	fv_push(v, fv_mapdup(" hello"), BN_TOKEN_NORMAL);      /* whole-piece match only */
	fv_push(v, fv_mapdup("!!!"), BN_TOKEN_NORMAL);
	fv_push(v, fv_mapdup(" the"), BN_TOKEN_NORMAL);        /* duplicate: the first id wins */
	fv_push(v, fv_mapdup(""), BN_TOKEN_UNUSED);
	for (size_t i = 0; i < sizeof(control) / sizeof(control[0]); i++) {
		char *s = strdup(control[i]);
		FUZZ_CHECK(s != NULL);
		fv_push(v, s, BN_TOKEN_CONTROL);
	}
	for (size_t i = 0; i < sizeof(user) / sizeof(user[0]); i++) {
		char *s = strdup(user[i]);
		FUZZ_CHECK(s != NULL);
		fv_push(v, s, BN_TOKEN_USER_DEFINED);
	}
	v->bos = fv_find(v, "<|begin_of_text|>");
	v->eos = fv_find(v, "<|end_of_text|>");
	v->eot = fv_find(v, "<|eot_id|>");
	v->pad = -1;
	v->add_bos = true;
	strcpy(v->model, "gpt2");
	strcpy(v->pre, "llama-bpe");
}

#endif
