/* Coverage-guided fuzz target for lib/gguf.c (libFuzzer). tests/check_gguf.c runs a
 * bounded mutation test in `make check`; fuzz_model goes on from the reader to the model.
 *
 *   scripts/fuzz.sh gguf 60             (libFuzzer, see tests/fuzz/README), or by hand:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Ilib lib/gguf.c lib/error.c \
 *         tests/fuzz/fuzz_gguf.c -o fuzz_gguf
 *   ./fuzz_gguf -max_len=65536 corpus/ tests/fuzz/corpus/gguf tests/fuzz/corpus/model
 *
 * Built with -DBN_FUZZ_STANDALONE and without -fsanitize=fuzzer it replays the files (and
 * directories) named on the command line, for reproducing a crash with gcc or under
 * valgrind; `make check` replays the corpora that way (tests/fuzz-replay.sh). */
#include "fuzz_common.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

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
	return fuzz_replay_main(argc, argv);
}
#endif
