/* Fuzz target for the tokenizer.json importer (lib/tokjson.c). bn_tokjson_load takes a
 * path, so the input goes through a memfd (/proc/self/fd/N).
 *
 * A refusal must say why. An accepted file gives a vocabulary that keeps the importer's
 * promises (dense ids, every token and merge set, BOS/EOS/EOT found by their LLaMA-3
 * texts, gpt2 / llama-bpe / add_bos), that bn_tokenizer_new accepts, and that tokenizes
 * and detokenizes consistently (vocab_check.h).
 *
 *   scripts/fuzz.sh tokjson 60          (libFuzzer, see tests/fuzz/README)
 *   build/tests/fuzz/fuzz_tokjson FILE|DIR...   (replay; -DBN_FUZZ_STANDALONE) */
#include "fuzz_common.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "tokjson.h"
#include "vocab.h"
#include "vocab_check.h"

static int32_t first_with_text(const struct bn_vocab *v, const char *s)
{
	for (uint32_t i = 0; i < v->n_tokens; i++)
		if (strcmp(v->tokens[i], s) == 0)
			return (int32_t)i;
	return -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fuzz_memfd_path(data, size);
	struct bn_vocab v;
	struct bn_error err = { 0 };
	memset(&v, 0x5a, sizeof(v));   /* the importer must clear it */
	int rc = bn_tokjson_load(path, &v, &err);
	FUZZ_NOTE("tokjson: %d %s\n", rc, err.msg);
	if (rc != 0) {
		FUZZ_CHECK_ERROR(rc, err);
		/* the message names the file */
		FUZZ_CHECK(strncmp(err.msg, path, strlen(path)) == 0);
		/* nothing left behind for the caller */
		FUZZ_CHECK(v.n_tokens == 0 && v.tokens == NULL && v.types == NULL &&
			   v.n_merges == 0 && v.merges == NULL);
		FUZZ_CHECK(v.bos == -1 && v.eos == -1 && v.eot == -1 && v.pad == -1);
		bn_vocab_free(&v);
		return 0;
	}
	vc_check_vocab(&v);
	for (uint32_t i = 0; i < v.n_tokens; i++)
		FUZZ_CHECK(v.types[i] == BN_TOKEN_NORMAL || v.types[i] == BN_TOKEN_CONTROL ||
			   v.types[i] == BN_TOKEN_USER_DEFINED);
	for (uint32_t i = 0; i < v.n_merges; i++) {
		/* "left right": one space, neither side empty */
		const char *m = v.merges[i], *sp = strchr(m, ' ');
		FUZZ_CHECK(sp != NULL && sp != m && sp[1] != '\0' && strchr(sp + 1, ' ') == NULL);
	}
	FUZZ_CHECK(v.bos == first_with_text(&v, "<|begin_of_text|>"));
	FUZZ_CHECK(v.eos == first_with_text(&v, "<|end_of_text|>"));
	FUZZ_CHECK(v.eot == first_with_text(&v, "<|eot_id|>"));
	FUZZ_CHECK(v.pad == -1 && v.add_bos);
	FUZZ_CHECK(strcmp(v.model, "gpt2") == 0 && strcmp(v.pre, "llama-bpe") == 0);
	vc_check_tokenizer(&v, NULL, true, data, size);
	bn_vocab_free(&v);
	return 0;
}

#ifdef BN_FUZZ_STANDALONE
int main(int argc, char **argv)
{
	return fuzz_replay_main(argc, argv);
}
#endif
