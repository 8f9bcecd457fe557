/* Importer for Hugging Face tokenizer.json files holding a byte-level BPE model. */
#ifndef BN_TOKJSON_H
#define BN_TOKJSON_H

#include "error.h"
#include "vocab.h"

/* Fills out from model.vocab (type NORMAL), model.merges ("a b" strings or ["a","b"] pairs,
 * in rank order) and added_tokens (CONTROL when "special", else USER_DEFINED). Ids must be
 * dense 0..n-1. BOS/EOS/EOT are found by their LLaMA-3 texts when present; model = "gpt2",
 * pre = "llama-bpe", add_bos = true. Messages name the file and the entry at fault. */
int bn_tokjson_load(const char *path, struct bn_vocab *out, struct bn_error *err);

struct bn_gguf;
struct bn_tokenizer;

/* The tokenizer a model runs with: its GGUF vocabulary, or, when json is not NULL, that
 * tokenizer.json instead (bitnet --tokenizer, bitnetd [model] tokenizer). n_rows: the
 * embedding's rows, 0 to skip the check; a vocabulary with more ids than that is refused
 * (-EINVAL naming both sizes), since its ids would index past the embedding. */
int bn_tokenizer_for(struct bn_tokenizer **out, const struct bn_gguf *g, uint32_t n_rows,
                     const char *json, struct bn_error *err);

#endif
