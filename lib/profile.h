/* Where a forward pass's time goes: per op kind wall time, dispatches, the caller's wait
 * for the other workers and the weight bytes streamed (bitnet bench --profile). Off unless
 * a context is given a struct to fill; then it costs two clock reads per op. */
#ifndef BN_PROFILE_H
#define BN_PROFILE_H

#include <stdbool.h>
#include <stdint.h>

#include "bitnet/bitnet.h"

enum bn_prof_op {
	BN_PROF_EMBED,        /* token embedding and rope tables */
	BN_PROF_NORMQ,        /* rmsnorm (+ FFN activation) and int8 quantization */
	BN_PROF_QKV,          /* ternary q, k, v projections (one dispatch) */
	BN_PROF_ROPE_KV,      /* rope, K/V into the f16 cache, q to f16 */
	BN_PROF_ATTN,         /* attention over the cache */
	BN_PROF_WO,           /* ternary output projection */
	BN_PROF_GATEUP,       /* ternary gate and up projections (one dispatch) */
	BN_PROF_DOWN,         /* ternary down projection */
	BN_PROF_RESID,        /* residual adds */
	BN_PROF_OUT_NORM,     /* final norm; the head input rounded to f16 or quantized to Q8_0 */
	BN_PROF_HEAD,         /* the LM head */
	BN_PROF_N
};

struct bn_profile {
	double seconds[BN_PROF_N];   /* wall time (the calling thread's view) */
	double wait[BN_PROF_N];      /* of which the caller waited for other workers */
	double bytes[BN_PROF_N];     /* weight bytes read */
	uint64_t calls[BN_PROF_N];   /* pool dispatches (0: ran on the caller alone) */
	uint64_t passes;             /* bn_decode calls with tokens */
	uint64_t tokens;             /* tokens of those calls */
	double total;                /* wall time inside bn_decode */
};

const char *bn_prof_op_name(enum bn_prof_op op);
/* True for the ops that stream weights (their GB/s is the figure that matters). */
bool bn_prof_op_streams(enum bn_prof_op op);

/* Accumulate into p from now on (NULL: stop). p is not cleared. */
void bn_ctx_set_profile(struct bn_ctx *c, struct bn_profile *p);

/* The weight-streaming ops alone, as one decode step runs them (m = 1: every layer's
 * projections in the pass's order, then the head), on the context's current activations,
 * `reps` times; reports the best pass's GB/s of each. Compare with the rate the same ops
 * reach inside bn_decode. Needs one bn_decode first (the activations). */
int bn_ctx_stream_probe(struct bn_ctx *c, int reps, double *ternary_gbps, double *head_gbps);

#endif
