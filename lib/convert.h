/* Hugging Face BitNetForCausalLM checkpoint (model_type "bitnet") -> bitnet-b1.58 GGUF, or a
 * LlamaForCausalLM one with BitNet quantization (quantization_config.quant_method "bitnet":
 * ternary projections, no sub-norms; Falcon3-*-1.58bit, Llama3-8B-1.58) -> llama GGUF with
 * the q/k rows permuted as llama.cpp's converter does it.
 * Internal to libbitnet; `bitnet convert` is its CLI.
 *
 * Input directory: config.json, tokenizer.json (or the path given), optional
 * tokenizer_config.json / chat_template.jinja, and the weights as model.safetensors or a
 * sharded model.safetensors.index.json. Projections may be
 *   - packed: U8 [out/4, in] (four ternary values per byte along the output dimension)
 *     plus a one-element weight_scale (transformers' offline "bitlinear" form, as published
 *     in microsoft/bitnet-b1.58-2B-4T);
 *   - master weights: BF16/F16/F32 [out, in] without weight_scale, ternarized here per
 *     tensor by absmean (microsoft/bitnet-b1.58-2B-4T-bf16);
 *   - float ternary values {-1, 0, +1} with a weight_scale (transformers' offline
 *     "autobitlinear" form after unpacking).
 * Output: the layout the engine loads (lib/model.c): F16 token_embd (the tied head) and, when
 * untied, an F16 output.weight (with head_type Q8_0 the head rows, tied or not, are written
 * as a Q8_0 output.weight), F32 norms, the seven projections per layer in I2_S (default),
 * TQ2_0 or TQ1_0, and only the
 * metadata keys the engine reads. Whatever cannot be converted exactly is refused with a
 * message naming the file and tensor; the output file is written under a temporary name
 * and renamed only when complete.
 *
 * Memory: the safetensors files are mapped and each tensor is streamed row by row into the
 * writer, its pages dropped once done; peak memory is the tokenizer plus a few rows. */
#ifndef BN_CONVERT_H
#define BN_CONVERT_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"

struct bn_convert_opts {
	const char *hf_dir;
	const char *out;              /* the GGUF path */
	uint32_t wtype;               /* enum bn_ggml_type: I2_S (default when 0), TQ2_0, TQ1_0 */
	uint32_t head_type;           /* the LM head: F16 (default when 0: tied, or output.weight
	                               * when untied) or Q8_0 (output.weight, also when tied) */
	const char *tokenizer_json;   /* NULL: hf_dir/tokenizer.json */
	/* called with bytes of tensor data done / total, at least once per tensor (may be NULL) */
	void (*progress)(void *user, uint64_t done, uint64_t total);
	void *user;
};

struct bn_convert_report {
	const char *hf_class;         /* "BitNetForCausalLM" or "LlamaForCausalLM" */
	const char *arch;             /* the GGUF's: "bitnet-b1.58" or "llama" */
	const char *form;             /* "packed", "master weights" or "ternary floats" */
	const char *linear_class;     /* "bitlinear" or "autobitlinear" when a weight_scale was
	                               * used, else NULL */
	uint32_t n_layer, n_embd, n_ff, n_head, n_head_kv, n_vocab, n_ctx;
	uint32_t n_tensors;           /* written */
	uint32_t n_files;             /* safetensors shards read */
	uint32_t n_pad_tokens;        /* vocabulary entries added up to the embedding's rows */
	uint32_t n_scales_rounded;    /* TQ types: projection scales not exact in f16 */
	double max_scale_rel_change;  /* their largest relative change */
	uint32_t n_zero_tensors;      /* projections whose ternary codes are all zero */
	bool untied_head;             /* tie_word_embeddings false: output.weight from lm_head */
	uint32_t head_type;           /* output.weight's type (F16 or Q8_0) when written */
	uint64_t bytes;               /* size of the GGUF */
};

int bn_convert(const struct bn_convert_opts *o, struct bn_convert_report *rep,
               struct bn_error *err);

#endif
