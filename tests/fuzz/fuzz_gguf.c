/* Coverage-guided fuzz target for lib/gguf.c (libFuzzer). Not built by `make check`; the
 * bounded mutation test in tests/check_gguf.c runs there instead.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Ilib lib/gguf.c lib/error.c \
 *         tests/fuzz/fuzz_gguf.c -o fuzz_gguf
 *   ./fuzz_gguf -max_len=65536 corpus/ /path/to/shared/golden/
 *
 * Built with -DBN_FUZZ_STANDALONE and without -fsanitize=fuzzer it replays the files named
 * on the command line, for reproducing a crash with gcc or under valgrind. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bn_gguf *g = NULL;
	struct bn_error err = { 0 };
	int rc = bn_gguf_parse(&g, data, size, &err);
	if (rc != 0) {
		/* a refusal must say why */
		if (g != NULL || err.code != rc || err.msg[0] == '\0')
			abort();
		return 0;
	}
	/* An accepted file keeps its promises: every entry is reachable, every extent inside. */
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		const struct bn_gguf_tensor *t = &g->tensors[i];
		if (bn_gguf_find_tensor(g, t->name) != t ||
		    (const uint8_t *)t->data + t->size > g->base + g->size)
			abort();
	}
	for (uint64_t i = 0; i < g->n_kv; i++) {
		const struct bn_gguf_kv *kv = &g->kv[i];
		if (kv->type == BN_GGUF_ARRAY && kv->arr_type == BN_GGUF_STRING) {
			struct bn_gguf_str *s = calloc((size_t)kv->arr_n + 1, sizeof(*s));
			if (!s)
				abort();
			bn_gguf_arr_strs(kv, s);
			for (uint64_t j = 0; j < kv->arr_n; j++)
				if ((const uint8_t *)s[j].ptr + s[j].len > g->base + g->size)
					abort();
			free(s);
		}
	}
	bn_gguf_close(g);
	return 0;
}

#ifdef BN_FUZZ_STANDALONE
int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		if (!f) {
			fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
			return 1;
		}
		fseek(f, 0, SEEK_END);
		long n = ftell(f);
		fseek(f, 0, SEEK_SET);
		uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);    /* [n] file bytes */
		if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
			fprintf(stderr, "%s: read failed\n", argv[i]);
			fclose(f);
			free(buf);
			return 1;
		}
		fclose(f);
		LLVMFuzzerTestOneInput(buf, (size_t)n);
		free(buf);
	}
	return 0;
}
#endif
