/* Token sampling: greedy or seeded random sampling with repetition penalty, top-k,
 * temperature, top-p and min-p, and the reasons a generation stops.
 *
 * Determinism: the result depends only on the logits, the options, the seed and the
 * accepted history. The generator is the project's own (xoshiro256** seeded through
 * splitmix64), uniforms are 53-bit doubles, the softmax is computed in double and
 * candidates are ordered by logit descending then id ascending, so the same inputs give
 * the same tokens on every platform, thread count and kernel plugin.
 *
 * Filter order: repetition penalty -> top-k -> temperature -> softmax -> top-p -> min-p
 * -> draw. Temperature 0 is greedy: argmax of the penalised logits, ties to the lowest id;
 * greedy takes nothing from the generator.
 *
 * Typical use:
 *     struct bn_sampler_opts o;
 *     bn_sampler_opts_default(&o);
 *     o.seed = 42;
 *     if (bn_sampler_opts_check(&o, &err) < 0 || bn_sampler_new(&s, &o, n_vocab, &err) < 0)
 *             ...report err.msg...
 *     for (;;) {
 *             int32_t tok = bn_sampler_sample(s, logits);
 *             bn_sampler_accept(s, tok);
 *             ...
 *     }
 *     bn_sampler_free(s);
 */
#ifndef BN_SAMPLER_H
#define BN_SAMPLER_H

#include <stdint.h>

#include "error.h"

struct bn_sampler_opts {
	float temperature;       /* 0 = greedy; 0..100 */
	uint32_t top_k;          /* 0 = off (also off when >= n_vocab) */
	float top_p;             /* 1 = off; (0, 1] */
	float min_p;             /* 0 = off; [0, 1], relative to the most likely token */
	float repeat_penalty;    /* 1 = off; (0, 10] */
	uint32_t repeat_window;  /* accepted tokens the penalty looks back over; 0..65536 */
	uint64_t seed;           /* every value is a seed (0 too); a caller wanting a random
	                          * seed picks one itself and reports it */
};

#define BN_SAMPLER_MAX_TEMPERATURE 100.0f
#define BN_SAMPLER_MAX_REPEAT_PENALTY 10.0f
#define BN_SAMPLER_MAX_REPEAT_WINDOW 65536u

/* temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1.0, window 64, seed 0 */
void bn_sampler_opts_default(struct bn_sampler_opts *o);

/* Range checks; -ERANGE with a message naming the option (NaN is out of range). */
int bn_sampler_opts_check(const struct bn_sampler_opts *o, struct bn_error *err);

struct bn_sampler;

/* Checks the options and allocates all scratch for n_vocab (1..INT32_MAX) tokens, so that
 * sampling never allocates. */
int bn_sampler_new(struct bn_sampler **out, const struct bn_sampler_opts *o, uint32_t n_vocab,
		   struct bn_error *err);
void bn_sampler_free(struct bn_sampler *s);

/* Picks a token from logits [n_vocab] (not modified). NaN logits count as -inf. With
 * temperature > 0 every call takes exactly one draw from the generator. */
int32_t bn_sampler_sample(struct bn_sampler *s, const float *logits);

/* Adds tok to the repetition history (the last repeat_window accepted tokens). Each
 * distinct token in the window is penalised once, llama-style: a positive logit is
 * divided by the penalty, a negative one multiplied. Ids outside the vocabulary are
 * ignored. Feed the prompt tokens too if they should count. */
void bn_sampler_accept(struct bn_sampler *s, int32_t tok);

/* Clears the history and reseeds the generator with the options' seed. */
void bn_sampler_reset(struct bn_sampler *s);

/* Why a generation finished. The names are the D-Bus Finished(reason) strings. */
enum bn_stop_reason {
	BN_STOP_NONE,          /* still running */
	BN_STOP_EOG,           /* "stop": the model produced EOS or EOT */
	BN_STOP_LENGTH,        /* "length": max tokens reached */
	BN_STOP_STRING,        /* "stop-string": a stop string matched (not emitted) */
	BN_STOP_CANCELLED,     /* "cancelled" */
	BN_STOP_CONTEXT_FULL,  /* "context-full" */
	BN_STOP_ERROR,         /* "error" */
};

/* stop | length | stop-string | cancelled | context-full | error; "none" for BN_STOP_NONE
 * and "unknown" outside the enum. */
const char *bn_stop_reason_name(enum bn_stop_reason r);

#endif
