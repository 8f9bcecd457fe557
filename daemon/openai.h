/* The OpenAI API's request and response shapes (openai.c), for the HTTP front door. */
#ifndef BD_OPENAI_H
#define BD_OPENAI_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "sampler.h"

struct bd_http_stream;

/* A (chat) completion to start, on the bus thread, and what came of it. */
struct bd_openai_start {
	json_object *body;              /* in: the parsed request body */
	bool chat;
	const char *owner;              /* "http:ADDRESS" */
	struct bd_http_stream *stream;  /* the request takes a reference */
	int rc;                         /* out: 0, or a negative errno with err */
	char err[512];
	uint32_t id;                    /* the request's id */
	char model[128];                /* the id /v1/models gives the model */
};

/* Body fields (model, prompt | messages, max_tokens | max_completion_tokens, temperature,
 * top_p, seed, stop, n = 1; top_k, min_p, repeat_penalty as extensions; penalties, logprobs
 * and echo refused) checked against the configuration, then bd_request_start. */
void bd_openai_start(struct bd_openai_start *j);
const char *bd_openai_model_id(void);   /* bus thread */

/* What a response is about: ids and names repeat in every chunk. */
struct bd_openai_resp {
	bool chat;
	uint32_t id;
	long created;
	char model[128];
	bool role_sent;                 /* chat streams: the first delta carries the role */
};

/* One "data: {...}\n\n" event: a text chunk, or (text NULL) the closing chunk with
 * finish, or (usage_only) the usage chunk of stream_options.include_usage. malloc'd. */
char *bd_openai_event(struct bd_openai_resp *k, const char *text, const char *finish,
                      bool usage_only, uint32_t n_prompt, uint32_t n_gen);
/* "data: {"error": ...}\n\n" for a stream that failed after it began. */
char *bd_openai_error_event(int rc, const char *msg);
/* The unstreamed response object. */
char *bd_openai_whole(const struct bd_openai_resp *k, const char *text,
                      enum bn_stop_reason reason, uint32_t n_prompt, uint32_t n_gen);
/* {"error": {"message", "type", "param", "code"}} */
char *bd_openai_error(unsigned status, const char *code, const char *msg);
/* A daemon error (negative errno) as an HTTP status and an error code (or NULL). */
unsigned bd_openai_status(int rc, const char **code);
const char *bd_openai_finish_reason(enum bn_stop_reason r);   /* "stop" | "length" */

#endif
