/* The generation thread (worker.c; its scheduler in sched.h): it owns the kernel plugin,
 * the worker pool and the context, loads and reloads the model between requests and runs
 * the queued requests. Below the request layer and every front door: it meets them only
 * through struct bd (the queue, the load hand-over, under bd.lock), the requests' cancel
 * flags and the eventfd that wakes the bus thread. */
#ifndef BD_WORKER_H
#define BD_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "bitnet/bitnet.h"
#include "chat.h"
#include "conf.h"

/* A model with its tokenizer, shared read-only by the bus thread (tokenizing, properties)
 * and the generation thread; freed when the last reference goes. */
struct bd_model {
	atomic_int refs;
	struct bn_model *model;
	struct bn_tokenizer *tok;
	enum bn_chat_format chat_fmt;   /* [model] template resolved for this model */
	struct bd_config cfg;           /* the settings it was loaded with */
	atomic_bool stale;              /* the file changed under the mapping (guard.c) */
};

struct bd_model *bd_model_ref(struct bd_model *m);
void bd_model_unref(struct bd_model *m);

/* What the bus thread shows of the engine; copied out by the generation thread. */
struct bd_engine_info {
	char kernel[32];
	char kernel_variant[32];
	unsigned n_fallback;
	unsigned threads;
	char cpus[256];
	uint32_t n_ctx;                 /* per slot */
	uint32_t slots, step_tokens;
	uint64_t kv_bytes;              /* K and V reserved for all slots */
};

int bd_worker_start(void);
/* Wakes the bus thread (its eventfd): text, a finished request or a load result. */
void bd_wake_bus(void);
/* Asks the generation thread to (re)load with cfg between requests. */
void bd_worker_load(const struct bd_config *cfg);
void bd_worker_stop(void);

#endif
