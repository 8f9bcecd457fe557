/* bitnetd's shared state and the subsystems' interfaces (being split into focused
 * headers: conf.h, notify.h, worker.h, guard.h). */
#ifndef BD_BITNETD_H
#define BD_BITNETD_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "conf.h"
#include "generate.h"
#include "worker.h"

enum bd_req_state { BD_REQ_QUEUED, BD_REQ_RUNNING, BD_REQ_DONE };

struct bd_req_opts;       /* options.h */
struct bd_http_stream;    /* http.h */

struct bd_request {
	uint32_t id;
	char path[64];
	char *owner;                    /* caller's unique bus name */
	struct bd_model *m;             /* the model ids were made with */
	char *text;                     /* [text_len] prompt text as rendered */
	size_t text_len;
	bool add_bos;
	struct bn_chat_span *specials;  /* [n_specials] the template's special tokens in text */
	size_t n_specials;
	int32_t *ids;                   /* [n_ids] */
	size_t n_ids;
	struct bn_gen_opts gen;
	char **stops;                   /* [n_stops] owned copies */
	size_t n_stops;
	double t_queued;
	atomic_bool cancel;
	/* owned by the generation thread while running; handed over under bd.lock */
	enum bd_req_state state;
	char *out;                      /* [out_len] text not yet sent as Text */
	size_t out_len, out_cap;
	struct bn_gen_stats st;
	uint32_t slot;
	uint32_t n_cached;              /* prompt tokens whose K/V came from the prefix cache */
	double queue_s;                 /* waiting for a slot */
	double first_token_s;           /* submission to the first token */
	double gap_p50, gap_p95, gap_max;   /* seconds between consecutive tokens */
	int rc;
	char err[512];
	char kernel[32];
	/* the receipt: what ran this request, copied so a later reload cannot change it */
	char kernel_variant[32];
	uint32_t threads;
	char cpus[128];
	bool strict;
	uint32_t n_corrections;
	char model_path[512];
	uint64_t model_size;
	char arch[32], weight_type[16];
	uint32_t file_type;
	char header_sha256[65];
	struct bd_request *next;        /* queue link */
	struct bd_request *all_next;    /* every live request (bus thread) */
	struct bd_http_stream *http;    /* came through HTTP (http.c): text goes there, not to
	                                   signals; NULL for D-Bus requests */
};

/* A Generate or Chat, whichever door it came through (request.c, bus thread). */
struct bd_start {
	const char *owner;              /* the caller's bus name, or "http:ADDRESS" */
	bool chat;
	const char *prompt;             /* !chat */
	const struct bn_chat_msg *msgs; /* chat: [n_msgs] */
	size_t n_msgs;
	struct bd_req_opts *opts;       /* checked by the door; the seed is drawn here if unset */
	struct bd_http_stream *http;
};
/* Checks (ready, model unchanged, prompt or messages, busy), renders and tokenizes, then
 * queues the request; *out stays owned by the daemon. Negative errno with err set. */
int bd_request_start(const struct bd_start *st, struct bd_request **out, struct bn_error *err);

/* The generation thread's run of one request (called without the lock held). */
void bd_request_free(struct bd_request *r);

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
	char last_reload_error[512];
	struct DBusConnection *conn;
	uint64_t cpu_features;
};

extern struct bd bd;

/* ---- bus.c / manager.c / request.c --------------------------------------------------- */
int bd_bus_connect(int bus_type, const char *address);   /* 0 system, 1 session, 2 address */
int bd_bus_request_name(void);
void bd_bus_release(void);
/* poll loop on the bus, signalfd and eventfd until quit; returns the exit code */
int bd_bus_run(int sfd);
/* Prints the introspection XML of the Manager object (the installed interface file). */
void bd_bus_print_interfaces(FILE *f);

/* Called on the bus thread after eventfd fires. */
void bd_requests_pump(void);
/* Marks properties changed; emitted once per loop iteration. */
void bd_props_changed(unsigned mask);
#define BD_PROP_STATE      (1u << 0)
#define BD_PROP_QUEUE      (1u << 1)
#define BD_PROP_COUNTERS   (1u << 2)
#define BD_PROP_ENGINE     (1u << 3)
#define BD_PROP_LIVE       (1u << 31)   /* changes all the time; read it, no signal */
void bd_set_state(enum bd_state s);
const char *bd_state_name(enum bd_state s);
/* Cancels every request of owner (it left the bus), or every request when owner is NULL. */
void bd_requests_cancel_owner(const char *owner);
void bd_reload_begin(void *reply_to);
/* Applies a finished load's result on the bus thread; returns its error (why filled). */
int bd_load_take(char *why, size_t why_len);
void bd_manager_cleanup(void);   /* SIGHUP (NULL) or a Reload() call to answer */

#endif
