/* The scheduler: the generation thread's side of serving (design.md, "Serving"). Requests
 * that worker.c takes off the queue get a slot (prefix cache first); every step then runs
 * the next token of each decoding slot and chunks of waiting prompts through the engine as
 * one batch, samples, streams and retires. Front doors meet it only through the queue in
 * struct bd, the request's cancel flag and its out buffer. Generation thread only. */
#ifndef BD_SCHED_H
#define BD_SCHED_H

#include <stdint.h>

struct bn_ctx;
struct bn_kernel;
struct bn_pool;
struct bd_model;
struct bd_request;

/* What the generation thread runs requests on (worker.c owns and swaps it). */
struct bd_engine {
	struct bn_kernel *kernel;
	struct bn_pool *pool;
	struct bn_ctx *ctx;              /* slots sequences of n_ctx positions each */
	struct bd_model *model;
	uint32_t slots, n_ctx, step_tokens;
};

/* After a (re)load, with no slot busy: sizes the slots for e and forgets every cached
 * prefix. 0 or -ENOMEM. */
int bd_sched_reset(const struct bd_engine *e);
void bd_sched_free(void);
uint32_t bd_sched_busy(void);
uint32_t bd_sched_free_slots(void);
/* Places r (already marked running by the caller) in a free slot; a request that cannot
 * start (a prompt that no longer fits, out of memory) is finished with its error. */
void bd_sched_admit(const struct bd_engine *e, struct bd_request *r);
/* One step: retires cancelled requests, runs one batch, samples and streams. */
void bd_sched_step(const struct bd_engine *e);

#endif
