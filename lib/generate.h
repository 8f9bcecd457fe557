/* One generation on one sequence of a context: prefill the prompt, then sample, detokenize
 * at UTF-8 boundaries, match stop strings and stream text through a callback. Shared by
 * `bitnet run` and bitnetd so both produce the same tokens for the same options. */
#ifndef BN_GENERATE_H
#define BN_GENERATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bitnet/bitnet.h"
#include "error.h"
#include "pool.h"       /* bn_now */
#include "sampler.h"
#include "stop.h"
#include "tokenizer.h"

struct bn_tokenizer;

struct bn_gen_opts {
	struct bn_sampler_opts sampling;
	uint32_t max_tokens;             /* 0: until the context is full */
	const char *const *stops;        /* [n_stops] stop strings (not emitted) */
	size_t n_stops;
};

struct bn_gen_stats {
	enum bn_stop_reason reason;
	uint32_t n_prompt, n_gen;        /* tokens */
	double prompt_s, gen_s;          /* wall seconds of prefill and of generation */
	double prompt_tps, gen_tps;      /* tokens per second */
};

/* Text callback: whole UTF-8 characters. Return non-zero to cancel. */
typedef int (*bn_gen_text_fn)(void *user, const char *text, size_t len);
/* Polled between tokens; true cancels (reason "cancelled"). May be NULL. */
typedef bool (*bn_gen_cancel_fn)(void *user);
/* Called with each token id as it is produced. May be NULL. */
typedef void (*bn_gen_token_fn)(void *user, int32_t id);

struct bn_gen_io {
	bn_gen_text_fn on_text;
	bn_gen_cancel_fn cancelled;
	bn_gen_token_fn on_token;
	void *user;
};

/* One sequence's token loop, one token at a time, for callers that run many sequences in
 * one batch (bitnetd's scheduler). bn_generate is this loop over one sequence, so the two
 * produce the same tokens and text for the same logits and options.
 *
 *   bn_gen_seq_init(g)                  sampler, stop matcher, detokenizer
 *   after each forward pass whose last row is the sequence's position p - 1:
 *     bn_gen_seq_next(g, logits, p)     0: decode *tok at position p; 1: ended (g->reason)
 *   bn_gen_seq_end(g)                   flushes held-back text (unless a stop string or a
 *                                       cancel ended it), then bn_gen_seq_free(g) */
struct bn_gen_seq {
	const struct bn_tokenizer *t;
	const struct bn_gen_opts *o;
	const struct bn_gen_io *io;
	uint32_t n_ctx;
	struct bn_sampler *smp;
	struct bn_stop stop;
	struct bn_detok dt;
	uint32_t n_gen;                  /* tokens sampled */
	enum bn_stop_reason reason;      /* BN_STOP_NONE while running */
};

int bn_gen_seq_init(struct bn_gen_seq *g, const struct bn_tokenizer *t, uint32_t n_ctx,
                    const struct bn_gen_opts *o, const struct bn_gen_io *io, struct bn_error *err);
/* logits: [n_vocab] for the sequence's position p - 1 (p tokens are in its cache). Samples,
 * streams and decides whether the sequence goes on. Returns 0 with *tok to decode at position
 * p, 1 when it ended (g->reason), or a negative errno (g->reason is BN_STOP_ERROR). */
int bn_gen_seq_next(struct bn_gen_seq *g, const float *logits, uint32_t p, int32_t *tok,
                    struct bn_error *err);
/* Ends the sequence with reason (BN_STOP_NONE keeps g->reason) and flushes held-back text. */
void bn_gen_seq_end(struct bn_gen_seq *g, enum bn_stop_reason reason);
void bn_gen_seq_free(struct bn_gen_seq *g);

/* Runs one generation on sequence seq (its cache is cleared first). -ENOSPC when the prompt
 * does not fit the context (both sizes in the message). Errors during generation end it with
 * reason "error" and return the error. */
int bn_generate(struct bn_ctx *c, uint32_t seq, const struct bn_tokenizer *t,
                const int32_t *prompt, size_t n_prompt, const struct bn_gen_opts *o,
                const struct bn_gen_io *io, struct bn_gen_stats *st, struct bn_error *err);

#endif
