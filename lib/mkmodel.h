/* Synthetic BitNet b1.58 model generator: writes a GGUF with the layout of
 * microsoft/bitnet-b1.58-2B-4T (and of shared/golden), or of a llama-arch ternary model, at
 * any size, with random ternary
 * weights, streaming row by row. Internal to libbitnet; `bitnet mkmodel` is its CLI.
 *
 * Weights (as the golden generator describes them): ternary i.i.d. uniform over {-1,0,+1},
 * one scale per projection U(0.5,1.5)/sqrt(fan_in) rounded to 8 significant bits (exact in
 * f16 and bf16), norm weights U(0.5,1.5), embedding N(0, 0.02^2) rounded to its type.
 * Every tensor draws from its own PRNG stream keyed by (seed, tensor name), so one seed
 * gives the same ternary weights and scales whatever wtype, embd_type or scale_tensors
 * say, and the same seed gives a byte-identical file. */
#ifndef BN_MKMODEL_H
#define BN_MKMODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"

struct bn_mkmodel_opts {
	const char *arch;          /* "bitnet-b1.58" (default), "bitnet-25", "bitnet", "llama"
	                            * (no sub-norms; the q/k rows are taken as already in the
	                            * interleaved-RoPE order: random weights have no other) */
	const char *name;          /* general.name; NULL: "mkmodel" */
	uint32_t hidden, ff, layers, heads, kv_heads, vocab, ctx;
	uint32_t wtype;            /* projections: enum bn_ggml_type I2_S, TQ2_0, TQ1_0, F16, BF16, F32 */
	uint32_t embd_type;        /* token_embd: F16 (default), BF16, F32 */
	uint32_t head_type;        /* 0: tied head (no output.weight); Q8_0: an output.weight of
	                            * the embedding's rows quantized to Q8_0 */
	uint64_t seed;
	float gamma_rms;           /* 0: off; else every attn_norm vector is scaled to this RMS */
	bool scale_tensors;        /* (arch bitnet) projections hold bare codes (scale 1.0) and
	                            * blk.N.<proj>.scale F32 [1] tensors hold the scales */
	const char *tokenizer_json;   /* NULL: the synthetic byte-level vocab */
	float rope_base;           /* 500000 */
	float eps;                 /* 1e-5 */
	bool untied;               /* an output.weight head (embd_type, its own random rows); else
	                            * the head is tied to token_embd */
};

/* Defaults: the tiny preset, arch bitnet-b1.58, I2_S projections, F16 embedding, seed 1. */
void bn_mkmodel_defaults(struct bn_mkmodel_opts *o);
/* Sets the shape fields (hidden, ff, layers, heads, kv_heads, vocab, ctx) of a preset:
 * "tiny", "small" or "2b4t". -EINVAL for an unknown name; o is then unchanged. */
int bn_mkmodel_preset(struct bn_mkmodel_opts *o, const char *name);
/* Parse a projection/embedding type name (i2_s, tq2_0, tq1_0, f16, bf16, f32; any case).
 * Returns the enum bn_ggml_type value or -EINVAL. */
int bn_mkmodel_parse_type(const char *s);

/* Checks every option; the message names the option at fault. */
int bn_mkmodel_validate(const struct bn_mkmodel_opts *o, struct bn_error *err);

/* Total bytes of tensor data the model will have (the progress total), 0 if invalid. */
uint64_t bn_mkmodel_data_bytes(const struct bn_mkmodel_opts *o);

/* Writes the model to path (removed again on failure). progress (may be NULL) is called
 * with bytes of tensor data done / total, at least once per tensor and every few MiB. */
int bn_mkmodel_write(const struct bn_mkmodel_opts *o, const char *path,
                     void (*progress)(void *user, uint64_t done, uint64_t total), void *user,
                     struct bn_error *err);

#endif
