/* bitnetd's shared state: struct bd, what the bus thread and the generation thread both
 * see (the queue and the load hand-over under bd.lock), and what the bus thread keeps.
 *
 * The daemon's layers, each calling only those below it (daemon/README):
 *   main.c                     start-up, shutdown, and the wiring of the tables below
 *   manager.c bus_request.c    D-Bus objects: the Manager, the request door    | http.c
 *   bus.c                      libdbus glue and the bus thread's poll loop     | openai.c
 *   request.c                  requests of either door: checks, queue, pump
 *   worker.c sched.c slots.c   the generation thread; guard.c the model file
 *   conf.h notify.h metrics.h options.h, and this state
 * Upward, only through tables handed down: bus.c serves struct bd_iface tables and calls
 * struct bd_bus_objects and struct bd_loop; request.c calls each request's struct
 * bd_door; the generation thread wakes the bus thread through bd.efd. */
#ifndef BD_BITNETD_H
#define BD_BITNETD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf.h"
#include "worker.h"

struct bd_request;
struct DBusConnection;

enum bd_state { BD_LOADING, BD_READY, BD_RELOADING, BD_STOPPING };

struct bd_counters {
	uint64_t served, rejected, cancelled, failed, tokens_in, tokens_out;
	uint64_t cache_hits, cached_tokens;   /* requests that reused a prefix; tokens reused */
};

struct bd {
	const char *config_path;
	struct bd_config cfg;           /* bus thread's view of the current settings */
	enum bd_state state;
	int efd;                        /* eventfd: generation thread -> bus thread */

	pthread_mutex_t lock;           /* guards everything below it */
	pthread_cond_t cond;
	struct bd_request *qhead, *qtail;  /* FIFO of requests waiting for a slot */
	uint32_t n_queued;
	uint32_t n_running;             /* requests in slots */
	bool quit;
	bool load_pending;
	struct bd_config load_cfg;
	bool load_done;                 /* result waiting for the bus thread */
	int load_rc;
	char load_err[512];
	struct bd_model *load_model;    /* new model (reference) after a successful load */
	struct bd_engine_info load_info;
	bool load_model_changed;

	_Atomic uint64_t kv_positions;  /* positions held by the slots' caches (generation thread) */

	/* bus thread only */
	struct bd_model *model;
	struct bd_engine_info info;
	bool loaded;
	struct bd_request *all;
	uint32_t next_id;
	uint32_t n_active;              /* n_running as last announced */
	struct bd_counters cnt;
	unsigned props_pending;         /* BD_PROP_* changed since the last flush */
	char last_reload_error[512];
	struct DBusConnection *conn;
	uint64_t cpu_features;
};

extern struct bd bd;   /* main.c */

/* Marks a group of properties changed (BD_PROP_*): manager.c emits them once per loop
 * iteration. Any layer on the bus thread may call it; it only sets bits. */
#define BD_PROP_STATE      (1u << 0)
#define BD_PROP_QUEUE      (1u << 1)
#define BD_PROP_COUNTERS   (1u << 2)
#define BD_PROP_ENGINE     (1u << 3)
#define BD_PROP_LIVE       (1u << 31)   /* changes all the time; read it, no signal */
static inline void bd_props_changed(unsigned mask)
{
	bd.props_pending |= mask;
}

#endif
