/* A gpt2-style BPE vocabulary as plain arrays: what a GGUF's tokenizer.ggml.* keys hold and
 * what an imported HF tokenizer.json gives. Shared by the tokenizer, the tokenizer.json
 * importer and mkmodel. */
#ifndef BN_VOCAB_H
#define BN_VOCAB_H

#include <stdbool.h>
#include <stdint.h>

/* token_type values as in GGUF */
enum bn_token_type {
	BN_TOKEN_UNDEFINED = 0, BN_TOKEN_NORMAL = 1, BN_TOKEN_UNKNOWN = 2, BN_TOKEN_CONTROL = 3,
	BN_TOKEN_USER_DEFINED = 4, BN_TOKEN_UNUSED = 5, BN_TOKEN_BYTE = 6,
};

struct bn_vocab {
	uint32_t n_tokens;
	char **tokens;          /* [n_tokens] NUL-terminated, in the GPT-2 byte alphabet */
	int32_t *types;         /* [n_tokens] enum bn_token_type */
	uint32_t n_merges;
	char **merges;          /* [n_merges] "left right", rank = index */
	int32_t bos, eos, eot, pad;   /* -1 when absent */
	bool add_bos;
	char model[16];         /* "gpt2" */
	char pre[32];           /* "llama-bpe" */
};

void bn_vocab_free(struct bn_vocab *v);   /* frees arrays and strings; v itself is the caller's */

/* Reads tokenizer.ggml.{model,pre,tokens,token_type,merges,bos_token_id,eos_token_id,
 * eot_token_id,padding_token_id,add_bos_token}. A missing pre leaves pre empty (the tokenizer
 * picks a default from the architecture); a missing EOT id is looked up as "<|eot_id|>".
 * Messages name the key; the caller prefixes the file name. On error out is left empty. */
struct bn_gguf;
struct bn_error;
int bn_vocab_from_gguf(struct bn_vocab *out, const struct bn_gguf *g, struct bn_error *err);

#endif
