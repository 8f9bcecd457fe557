/* Rewrites a model's LM head in another type (`bitnet requant`). Internal to libbitnet.
 *
 * The head is output.weight when the file has one, else token_embd.weight (tied). The
 * output file is the input with output.weight added (at the end of the tensor table) or
 * replaced (in place) in the new type; every KV and every other tensor's bytes are copied
 * unchanged, in the same order, with the input's general.alignment. The file is written
 * under a temporary name and renamed over out only when complete (out may be the input).
 *
 * Types: q8_0 from an f16, bf16 or f32 head (kernel.h bn_q8_0_quantize_block per 32
 * values); f16 from a bf16 or f32 output.weight. Refused: a head already of the type, and a
 * q8_0 head to f16 (the dequantized values are not the original head: requantize the
 * original file instead).
 *
 * Memory: the input is mapped and streamed, its pages dropped once copied; peak memory is
 * a row of the head plus the writer's buffer. */
#ifndef BN_REQUANT_H
#define BN_REQUANT_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"

struct bn_requant_opts {
	const char *in, *out;
	uint32_t head_type;         /* enum bn_ggml_type: BN_TYPE_Q8_0 or BN_TYPE_F16 */
	/* called with bytes of tensor data done / total, every few MiB and once per tensor */
	void (*progress)(void *user, uint64_t done, uint64_t total);
	void *user;
};

struct bn_requant_report {
	const char *source;         /* "output.weight" or "token_embd.weight" */
	uint32_t source_type;       /* its type in the input */
	bool replaced;              /* output.weight replaced (else added) */
	uint32_t n_embd, n_vocab;
	uint64_t head_bytes_in;     /* the source tensor's bytes */
	uint64_t head_bytes_out;    /* output.weight's bytes in the output */
	uint64_t bytes;             /* size of the output file */
	double rel_rms_error;       /* sqrt(sum (head - source)^2 / sum source^2) over the head */
};

int bn_requant(const struct bn_requant_opts *o, struct bn_requant_report *rep,
               struct bn_error *err);

/* "q8_0" / "f16" (any case) -> the type, -EINVAL otherwise. */
int bn_requant_parse_head(const char *s);

#endif
