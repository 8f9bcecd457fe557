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

#endif
