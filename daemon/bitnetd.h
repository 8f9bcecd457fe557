/* bitnetd's shared state and the subsystems' interfaces (being split into focused
 * headers: conf.h, notify.h, worker.h, guard.h, request.h, manager.h). */
#ifndef BD_BITNETD_H
#define BD_BITNETD_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "conf.h"
#include "worker.h"

struct bd_request;

/* ---- the daemon's state ------------------------------------------------------------ */
enum bd_state { BD_LOADING, BD_READY, BD_RELOADING, BD_STOPPING };

struct bd_counters {
	uint64_t served, rejected, cancelled, failed, tokens_in, tokens_out;
	uint64_t cache_hits, cached_tokens;   /* requests that reused a prefix; tokens reused */
};

struct DBusConnection;

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

extern struct bd bd;

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
