/* Requests (request.c), whichever front door they came through: the checks a prompt
 * passes, rendering and tokenizing, the FIFO queue the generation thread takes them from,
 * cancelling, and on the bus thread the pump that hands their text and end to the door.
 * Above the generation thread (worker.h), below the doors (bus_request.c, http.c): it
 * reaches them only through the struct bd_door each request carries, as bus.c reaches
 * its objects through their interface tables. */
#ifndef BD_REQUEST_H
#define BD_REQUEST_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat.h"
#include "error.h"
#include "generate.h"

struct bd_model;
struct bd_request;
struct bd_req_opts;       /* options.h */

/* A front door's side of its requests, called on the bus thread by the pump. */
struct bd_door {
	/* New text of r: whole UTF-8 characters, U+0000 already replaced by U+FFFD. */
	void (*text)(struct bd_request *r, const char *text);
	/* r ended (st, rc and err are final) and left the live list; it is freed next. */
	void (*finished)(struct bd_request *r);
	/* NULL, or true once r's client went away without a word: r is then cancelled. */
	bool (*gone)(const struct bd_request *r);
	/* NULL, or the daemon stops with r unfinished: the door's last word to the client
	 * (r ends as an error, "the daemon stopped"). */
	void (*stopped)(struct bd_request *r);
};

enum bd_req_state { BD_REQ_QUEUED, BD_REQ_RUNNING, BD_REQ_DONE };

struct bd_request {
	uint32_t id;
	char *owner;                    /* the client: a unique bus name or "http:ADDRESS" */
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
	char *out;                      /* [out_len] text not yet handed to the door */
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
	const struct bd_door *door;     /* the door it came through: text and end go there */
	void *door_data;                /* the door's own (HTTP: the connection's stream) */
};

/* A Generate or Chat, whichever door it came through (request.c, bus thread). */
struct bd_start {
	const char *owner;              /* the caller's bus name, or "http:ADDRESS" */
	bool chat;
	const char *prompt;             /* !chat */
	const struct bn_chat_msg *msgs; /* chat: [n_msgs] */
	size_t n_msgs;
	struct bd_req_opts *opts;       /* checked by the door; the seed is drawn here if unset */
	const struct bd_door *door;
	void *door_data;
};
/* Checks (ready, model unchanged, prompt or messages, busy), renders and tokenizes, then
 * queues the request; *out stays owned by the daemon. Negative errno with err set. */
int bd_request_start(const struct bd_start *st, struct bd_request **out, struct bn_error *err);

void bd_request_free(struct bd_request *r);

/* The checks every door makes, in this order: -EALREADY while loading or stopping; then
 * a client's text (what names it in the message) as UTF-8, non-empty unless allow_empty,
 * within max_prompt_bytes. 0 or a negative errno with err set. */
int bd_request_not_ready(struct bn_error *err);
int bd_request_check_text(const char *what, const char *s, size_t len, bool allow_empty,
                          struct bn_error *err);

/* Checks the UTF-8 of a string from a client before it can reach any reply. */
bool bd_utf8_ok(const char *s, size_t len);

/* Bus thread, when the generation thread woke it: hands each request's new text and end
 * to its door, retires finished requests and counts them. */
void bd_requests_pump(void);
/* Cancels every request of owner (it left), or every request when owner is NULL. */
void bd_requests_cancel_owner(const char *owner);
/* A queued request leaves the queue and ends as cancelled; a running one stops at its
 * next token. The caller pumps. */
void bd_request_cancel(struct bd_request *r);
/* How request id ended, while it is among the last ones removed. */
bool bd_request_ended(uint32_t id, enum bn_stop_reason *reason, int *rc);
/* The pump calls fn when it finds a (re)load result waiting (main.c sets the manager's). */
void bd_requests_on_load(void (*fn)(void));
/* At shutdown, the generation thread stopped: ends and frees every request still listed. */
void bd_requests_abandon(void);

#endif
