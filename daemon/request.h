/* Requests (request.c), whichever front door they came through: the checks a prompt
 * passes, rendering and tokenizing, the FIFO queue the generation thread takes them from,
 * cancelling, and on the bus thread the pump that hands their text and end to the door.
 * Above the generation thread (worker.h), below the doors (bus, http). */
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
struct bd_req_opts;       /* options.h */
struct bd_http_stream;    /* http.h */

enum bd_req_state { BD_REQ_QUEUED, BD_REQ_RUNNING, BD_REQ_DONE };

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

void bd_request_free(struct bd_request *r);

/* Checks the UTF-8 of a string from a client before it can reach any reply. */
bool bd_utf8_ok(const char *s, size_t len);

/* Bus thread, when the generation thread woke it: hands each request's new text and end
 * to its door, retires finished requests and counts them. */
void bd_requests_pump(void);
/* Cancels every request of owner (it left), or every request when owner is NULL. */
void bd_requests_cancel_owner(const char *owner);

#endif
