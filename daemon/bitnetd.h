/* bitnetd configuration: one table of keys with types, ranges and defaults, read with
 * iniparser. The same table checks the file, prints the defaults and documents the keys. */
#ifndef BD_BITNETD_H
#define BD_BITNETD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define BD_DEFAULT_CONFIG BN_SYSCONFDIR "/bitnetd.conf"

struct bd_config {
	/* [model] */
	char model_path[4096];
	uint32_t context;            /* 0: the model's training context */
	char kv_type[8];             /* f16 */
	char template_name[16];      /* chat format for Chat(): auto | chat | bitnet | llama3 | instruct | raw */
	bool strict, rescale_gamma;
	char gate[8];                /* norm-statistics gate: none | warn | strict */
	char gate_policy[4096];      /* INI rule file for the gate; empty: built-in rules */
	char tokenizer[4096];        /* a tokenizer.json instead of the model's vocabulary */
	/* [engine] */
	char plugin[32];             /* auto or a plugin name */
	bool calibrate;              /* auto: choose by measurement */
	char plugin_dir[4096];       /* empty: the built-in default */
	uint32_t threads;            /* 0: one per physical core */
	char cpus[256];              /* auto or a list "0-3,8" */
	bool smt, mlock, prefault;
	char numa[12];               /* off | interleave | bind: NUMA placement of the weights */
	/* [server] */
	uint32_t slots;              /* requests generated at once, one context sequence each */
	uint32_t step_tokens;        /* tokens per scheduler step (decode rows + prompt chunks) */
	uint32_t max_queue;          /* requests waiting for a slot */
	uint32_t max_prompt_bytes;
	uint32_t max_tokens_limit;   /* the most a client may ask for */
	uint32_t max_tokens;         /* default when the client does not say */
	double temperature, top_p, min_p, repeat_penalty;
	uint32_t top_k;
	/* [http] */
	char http_listen[512];       /* empty: no HTTP; else "127.0.0.1:8080 [::1]:8080" */
	char http_api_key_file[4096];
	uint32_t http_max_body_bytes;
	uint32_t http_max_connections;
	uint32_t http_timeout;       /* seconds a client may stay silent */
	/* [log] */
	int log_level;               /* BN_LOG_* */
};

void bd_config_defaults(struct bd_config *c);

/* Reads path into c (starting from the defaults) and checks what the load would refuse,
 * short of loading the model: the model file (a regular file with the GGUF magic), the
 * gate policy (parsed), the kernel plugin (scanned in plugin_dir, and opened when named),
 * the CPU list and thread count (bn_pool_plan). Start, reload and --check-config all run
 * it. Every problem is logged (file: [section] key: why). Unknown sections or keys and
 * keys before any section are warnings unless strict_unknown, which makes them errors.
 * Returns the number of errors (0: c is usable), or -1 when the file cannot be read or
 * parsed at all. */
int bd_config_load(struct bd_config *c, const char *path, bool strict_unknown);

/* Prints every key with its default as a commented config file. */
void bd_config_print_defaults(FILE *f);

/* ---- notify.c: sd_notify protocol and the journald log sink ----------------------- */
/* Sends one datagram of newline-separated assignments to $NOTIFY_SOCKET (no-op without it). */
void bd_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Log lines go to stderr as "<N>message" so journald keeps their priority. */
void bd_log_install(void);
/* While buf is set, error and warning lines are also appended to it ("; " separated). */
void bd_log_capture(char *buf, size_t len);

/* ---- worker.c: the engine and the generation thread ------------------------------- */
#include <pthread.h>
#include <stdatomic.h>

#include "bitnet/bitnet.h"
#include "chat.h"
#include "generate.h"

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

/* guard.c: a model file truncated or written to while mapped. */
int bd_guard_install(void);             /* the SIGBUS handler; once, at start */
void bd_guard_watch(struct bd_model *m);
void bd_guard_unwatch(struct bd_model *m);
/* 0 while m's file is as loaded, else -ESTALE naming what happened (sticky, logged once). */
int bd_model_check(struct bd_model *m, struct bn_error *err);

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
	char arch[32], weight_type[16], head_type[16];
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

int bd_worker_start(void);
/* Wakes the bus thread (its eventfd): text, a finished request or a load result. */
void bd_wake_bus(void);
/* Asks the generation thread to (re)load with cfg between requests. */
void bd_worker_load(const struct bd_config *cfg);
void bd_worker_stop(void);
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
