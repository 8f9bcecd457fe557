/* What the activations look like inside a forward pass (bitnet trace): a callback that
 * bn_decode calls at fixed points between ops with one token's vector. Off unless a context
 * is given a sink; then the pass calls it from the calling thread, in pass order (layer by
 * layer, op by op, token by token), after the pool has finished the op. The sink only reads:
 * the values and the logits are the same with or without it. */
#ifndef BN_TRACE_H
#define BN_TRACE_H

#include <stddef.h>
#include <stdint.h>

#include "bitnet/bitnet.h"

/* In pass order. The per-layer ops come with layer = 0..n_layer-1; the last two with
 * layer = n_layer. Vectors are f32 as the pass holds them. */
enum bn_trace_op {
	BN_TRACE_ATTN_NORM,       /* attention rmsnorm output [n_embd] (before int8 quantization) */
	BN_TRACE_Q,               /* q projection [n_embd], before rope */
	BN_TRACE_K,               /* k projection [n_head_kv * head_dim], before rope */
	BN_TRACE_V,               /* v projection [n_head_kv * head_dim] */
	BN_TRACE_ATTN,            /* attention output, heads concatenated [n_embd] */
	BN_TRACE_ATTN_SUB_NORM,   /* attention sub-norm output [n_embd] (llama: wo's input, the
	                           * attention output) */
	BN_TRACE_WO,              /* output projection [n_embd], before the residual add */
	BN_TRACE_FFN_NORM,        /* FFN rmsnorm output [n_embd] */
	BN_TRACE_GATE,            /* gate projection [n_ff] */
	BN_TRACE_UP,              /* up projection [n_ff] */
	BN_TRACE_FFN_ACT,         /* activation(gate) * up after the FFN sub-norm [n_ff] (llama:
	                           * without a norm) */
	BN_TRACE_DOWN,            /* down projection [n_embd], before the residual add */
	BN_TRACE_LAYER_OUT,       /* residual stream after the layer [n_embd] */
	BN_TRACE_OUT_NORM,        /* final rmsnorm output [n_embd] (before f16 rounding) */
	BN_TRACE_LOGITS,          /* logits [n_vocab] */
	BN_TRACE_N
};

/* token_index is the token's index in the batch (not its position). OUT_NORM and LOGITS
 * come only for the tokens whose logits the batch asks for; LOGITS only when bn_decode
 * is given a logits buffer. */
struct bn_trace_sink {
	void (*fn)(void *user, uint32_t layer, enum bn_trace_op op, uint32_t token_index,
	           const float *x, size_t n);
	void *user;
};

/* Short names ("attn_norm", "q", ..., "logits"), also the JSON names of bitnet trace. */
const char *bn_trace_op_name(enum bn_trace_op op);

/* Calls sink->fn from now on (NULL or a NULL fn: stop). The sink is copied. */
void bn_ctx_set_trace(struct bn_ctx *c, const struct bn_trace_sink *sink);

#endif
