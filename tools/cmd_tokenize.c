/* bitnet tokenize / detokenize: the model file's tokenizer, without loading the weights. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gguf.h"
#include "tokenizer.h"
#include "tokjson.h"
#include "tools.h"
#include "vocab.h"

static void tokenize_usage(FILE *f)
{
	fprintf(f, "usage: bitnet tokenize (--model M [--tokenizer T.json] | --tokenizer T.json)\n"
		   "                      [--no-bos] [--special] [--pieces] TEXT|-\n"
		   "  prints the token ids on one line, space-separated; '-' reads the text from\n"
		   "  stdin, byte for byte (a final newline is part of the text)\n"
		   "  --no-bos   do not prepend BOS (it is added when the model asks for it)\n"
		   "  --special  turn control-token texts such as <|eot_id|> into their ids\n"
		   "  --pieces   then one line per token: ID, a tab and its bytes (C escapes for\n"
		   "             control characters, backslash and bytes that are not UTF-8)\n");
}

static void detokenize_usage(FILE *f)
{
	fprintf(f, "usage: bitnet detokenize (--model M | --tokenizer T.json) [--raw] ID... | -\n"
		   "  prints the text of the ids (separated by spaces or commas, or read from stdin\n"
		   "  with '-'), exactly, without an added newline. Bytes that do not form UTF-8\n"
		   "  become U+FFFD unless --raw is given.\n");
}

/* The model file's tokenizer (only the GGUF header is read, not the weights), or json's
 * instead; with a model, json's ids must fit its embedding. */
static int open_tokenizer(const char *verb, const char *path, const char *json,
                          struct bn_tokenizer **t)
{
	struct bn_error err = { 0 };
	struct bn_gguf *g = NULL;
	uint32_t rows = 0;
	int rc = 0;
	if (path && (rc = bn_gguf_open(&g, path, &err)) == 0) {
		/* the embedding's rows: the token table's second dimension */
		const struct bn_gguf_tensor *te = bn_gguf_find_tensor(g, "token_embd.weight");
		if (te && te->n_dims == 2)
			rows = (uint32_t)te->ne[1];
	}
	if (!rc)
		rc = bn_tokenizer_for(t, g, rows, json, &err);
	bn_gguf_close(g);
	if (rc) {
		tool_error(verb, "%s", err.msg);
		return 1;
	}
	return 0;
}

/* One token's bytes on one line: UTF-8 characters as they are, the rest escaped. */
static void print_piece(const char *p, size_t n)
{
	const unsigned char *u = (const unsigned char *)p;
	for (size_t i = 0; i < n;) {
		unsigned char c = u[i];
		size_t l = 0;
		if (c >= 0xC2 && c <= 0xF4) {
			l = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
			if (i + l > n)
				l = 0;
			for (size_t k = 1; k < l; k++)
				if ((u[i + k] & 0xC0) != 0x80)
					l = 0;
			if (l >= 3 && ((c == 0xE0 && u[i + 1] < 0xA0) || (c == 0xED && u[i + 1] > 0x9F) ||
				       (c == 0xF0 && u[i + 1] < 0x90) || (c == 0xF4 && u[i + 1] > 0x8F)))
				l = 0;
		}
		if (l) {
			fwrite(p + i, 1, l, stdout);
			i += l;
			continue;
		}
		if (c == '\\')
			fputs("\\\\", stdout);
		else if (c == '\n')
			fputs("\\n", stdout);
		else if (c == '\t')
			fputs("\\t", stdout);
		else if (c == '\r')
			fputs("\\r", stdout);
		else if (c < 0x20 || c >= 0x7F)
			printf("\\x%02x", c);
		else
			putchar(c);
		i++;
	}
}

int cmd_tokenize(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "model", required_argument, NULL, 'm' },
		{ "tokenizer", required_argument, NULL, 'T' },
		{ "no-bos", no_argument, NULL, 'B' },
		{ "special", no_argument, NULL, 's' },
		{ "pieces", no_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	const char *model = NULL, *json = NULL;
	bool no_bos = false, special = false, pieces = false;
	int c;
	while ((c = getopt_long(argc, argv, "m:sph", lo, NULL)) != -1) {
		switch (c) {
		case 'm': model = optarg; break;
		case 'T': json = optarg; break;
		case 'B': no_bos = true; break;
		case 's': special = true; break;
		case 'p': pieces = true; break;
		case 'h': tokenize_usage(stdout); return 0;
		default: tokenize_usage(stderr); return 2;
		}
	}
	if ((!model && !json) || optind != argc - 1) {
		tokenize_usage(stderr);
		return 2;
	}
	const char *arg = argv[optind];
	char *text;
	size_t len;
	if (strcmp(arg, "-") == 0) {
		if (tool_read_all(stdin, &text, &len)) {
			tool_error("tokenize", "cannot read stdin");
			return 1;
		}
	} else {
		len = strlen(arg);
		text = strdup(arg);
		if (!text) {
			tool_error("tokenize", "out of memory");
			return 1;
		}
	}
	struct bn_tokenizer *t;
	if (open_tokenizer("tokenize", model, json, &t)) {
		free(text);
		return 1;
	}
	struct bn_error err = { 0 };
	int32_t *ids;
	size_t n;
	int rc = bn_tokenize(t, text, len, !no_bos && bn_tokenizer_add_bos(t), special, &ids, &n,
			     &err);
	free(text);
	if (rc) {
		tool_error("tokenize", "%s", err.msg);
		bn_tokenizer_free(t);
		return 1;
	}
	for (size_t i = 0; i < n; i++)
		printf(i ? " %d" : "%d", ids[i]);
	putchar('\n');
	if (pieces)
		for (size_t i = 0; i < n; i++) {
			const char *p;
			size_t pl;
			bn_token_piece(t, ids[i], &p, &pl);
			printf("%d\t", ids[i]);
			print_piece(p, pl);
			putchar('\n');
		}
	free(ids);
	bn_tokenizer_free(t);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		tool_error("tokenize", "cannot write the output");
		return 1;
	}
	return 0;
}

/* Appends the ids in s (separated by spaces, tabs, newlines or commas). */
static int parse_ids(const char *s, int32_t **ids, size_t *n, size_t *cap)
{
	while (*s) {
		if (strchr(" \t\r\n,", *s)) {
			s++;
			continue;
		}
		char *end;
		errno = 0;
		long x = strtol(s, &end, 10);
		if (end == s || errno || x < INT32_MIN || x > INT32_MAX ||
		    (*end && !strchr(" \t\r\n,", *end)))
			return -EINVAL;
		if (*n == *cap) {
			size_t nc = *cap ? 2 * *cap : 64;
			int32_t *p = realloc(*ids, nc * sizeof(*p));
			if (!p)
				return -ENOMEM;
			*ids = p;
			*cap = nc;
		}
		(*ids)[(*n)++] = (int32_t)x;
		s = end;
	}
	return 0;
}

int cmd_detokenize(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "model", required_argument, NULL, 'm' },
		{ "tokenizer", required_argument, NULL, 'T' },
		{ "raw", no_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	const char *model = NULL, *json = NULL;
	bool raw = false;
	int c;
	while ((c = getopt_long(argc, argv, "m:rh", lo, NULL)) != -1) {
		switch (c) {
		case 'm': model = optarg; break;
		case 'T': json = optarg; break;
		case 'r': raw = true; break;
		case 'h': detokenize_usage(stdout); return 0;
		default: detokenize_usage(stderr); return 2;
		}
	}
	if ((!model && !json) || optind >= argc) {
		detokenize_usage(stderr);
		return 2;
	}
	int32_t *ids = NULL;
	size_t n = 0, cap = 0;
	for (int i = optind; i < argc; i++) {
		int rc;
		if (strcmp(argv[i], "-") == 0) {
			char *in;
			size_t len;
			if (tool_read_all(stdin, &in, &len)) {
				tool_error("detokenize", "cannot read stdin");
				free(ids);
				return 1;
			}
			rc = memchr(in, '\0', len) ? -EINVAL : parse_ids(in, &ids, &n, &cap);
			free(in);
		} else {
			rc = parse_ids(argv[i], &ids, &n, &cap);
		}
		if (rc) {
			tool_error("detokenize", "'%s': expected token ids (integers)",
				   strcmp(argv[i], "-") ? argv[i] : "stdin");
			free(ids);
			return rc == -EINVAL ? 2 : 1;
		}
	}
	struct bn_tokenizer *t;
	if (open_tokenizer("detokenize", model, json, &t)) {
		free(ids);
		return 1;
	}
	struct bn_error err = { 0 };
	int rc = 0;
	if (raw) {
		char *s;
		size_t len;
		rc = bn_detokenize(t, ids, n, &s, &len, &err);
		if (!rc) {
			fwrite(s, 1, len, stdout);
			free(s);
		}
	} else {
		struct bn_detok d;
		const char *p;
		size_t len;
		bn_detok_init(&d, t);
		for (size_t i = 0; i < n && !rc; i++)
			if (!(rc = bn_detok_feed(&d, ids[i], &p, &len, &err)))
				fwrite(p, 1, len, stdout);
		if (!rc && !(rc = bn_detok_flush(&d, &p, &len, &err)))
			fwrite(p, 1, len, stdout);
		bn_detok_free(&d);
	}
	free(ids);
	bn_tokenizer_free(t);
	if (rc) {
		tool_error("detokenize", "%s", err.msg);
		return 1;
	}
	if (fflush(stdout) != 0 || ferror(stdout)) {
		tool_error("detokenize", "cannot write the output");
		return 1;
	}
	return 0;
}
