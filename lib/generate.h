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
#include "sampler.h"

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

/* Runs one generation on sequence seq (its cache is cleared first). -ENOSPC when the prompt
 * does not fit the context (both sizes in the message). Errors during generation end it with
 * reason "error" and return the error. */
int bn_generate(struct bn_ctx *c, uint32_t seq, const struct bn_tokenizer *t,
                const int32_t *prompt, size_t n_prompt, const struct bn_gen_opts *o,
                const struct bn_gen_io *io, struct bn_gen_stats *st, struct bn_error *err);

double bn_now(void);   /* monotonic seconds */

#endif
