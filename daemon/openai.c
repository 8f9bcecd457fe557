/* The OpenAI API's shapes: request bodies into a started request (with the same limits as
 * the D-Bus options), response objects and server-sent events, errors. No HTTP and no
 * threads here: http.c moves the bytes. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitnetd.h"
#include "http.h"
#include "openai.h"
#include "options.h"
#include "request.h"
#include "sampler.h"
#include "stop.h"

#define JSON_PLAIN (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

const char *bd_openai_model_id(void)
{
	const char *p = bd.cfg.model_path, *s = strrchr(p, '/');
	return s ? s + 1 : p;
}

/* ---- request bodies (bus thread: the limits are bd.cfg's) ---------------------------- */

static int bad_param(struct bd_openai_start *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad_param(struct bd_openai_start *j, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(j->err, sizeof(j->err), fmt, ap);
	va_end(ap);
	j->rc = -EINVAL;
	return -EINVAL;
}

static bool get_number(json_object *o, const char *k, double *out)
{
	json_object *v;
	if (!json_object_object_get_ex(o, k, &v) || json_object_is_type(v, json_type_null))
		return false;
	*out = json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int)
	       ? json_object_get_double(v) : NAN;
	return true;
}

/* OpenAI's fields, and the sampler's own as extensions (top_k, min_p, repeat_penalty). */
static int body_opts(struct bd_openai_start *j, json_object *b, struct bd_req_opts *o)
{
	memset(o, 0, sizeof(*o));
	bn_sampler_opts_default(&o->gen.sampling);
	o->gen.sampling.temperature = (float)bd.cfg.temperature;
	o->gen.sampling.top_k = bd.cfg.top_k;
	o->gen.sampling.top_p = (float)bd.cfg.top_p;
	o->gen.sampling.min_p = (float)bd.cfg.min_p;
	o->gen.sampling.repeat_penalty = (float)bd.cfg.repeat_penalty;
	o->gen.max_tokens = bd.cfg.max_tokens;
	double x;
	json_object *v;
	for (const char *const *k = (const char *const[]){ "max_tokens", "max_completion_tokens", NULL };
	     *k; k++)
		if (get_number(b, *k, &x)) {
			if (!(x >= 1 && x <= bd.cfg.max_tokens_limit) || x != floor(x))
				return bad_param(j, "%s: %g is not an integer in [1, %u] (max_tokens_limit)", *k,
				                 x, bd.cfg.max_tokens_limit);
			o->gen.max_tokens = (uint32_t)x;
		}
	if (get_number(b, "temperature", &x)) {
		if (!(x >= 0 && x <= BN_SAMPLER_MAX_TEMPERATURE))
			return bad_param(j, "temperature: %g is outside [0, %g]", x,
			                 (double)BN_SAMPLER_MAX_TEMPERATURE);
		o->gen.sampling.temperature = (float)x;
	}
	if (get_number(b, "top_p", &x)) {
		if (!(x > 0 && x <= 1) || !((float)x > 0))
			return bad_param(j, "top_p: %g is outside (0, 1]", x);
		o->gen.sampling.top_p = (float)x;
	}
	if (get_number(b, "top_k", &x)) {
		if (!(x >= 0 && x <= (1u << 24)) || x != floor(x))
			return bad_param(j, "top_k: %g is not an integer in [0, %u]", x, 1u << 24);
		o->gen.sampling.top_k = (uint32_t)x;
	}
	if (get_number(b, "min_p", &x)) {
		if (!(x >= 0 && x <= 1))
			return bad_param(j, "min_p: %g is outside [0, 1]", x);
		o->gen.sampling.min_p = (float)x;
	}
	if (get_number(b, "repeat_penalty", &x)) {
		if (!(x > 0 && x <= BN_SAMPLER_MAX_REPEAT_PENALTY) || !((float)x > 0))
			return bad_param(j, "repeat_penalty: %g is outside (0, %g]", x,
			                 (double)BN_SAMPLER_MAX_REPEAT_PENALTY);
		o->gen.sampling.repeat_penalty = (float)x;
	}
	for (const char *const *k = (const char *const[]){ "frequency_penalty", "presence_penalty", NULL };
	     *k; k++)
		if (get_number(b, *k, &x) && x != 0)
			return bad_param(j, "%s: not supported (use repeat_penalty, 1 = off)", *k);
	if (get_number(b, "n", &x) && x != 1)
		return bad_param(j, "n: only 1 completion per request");
	if (get_number(b, "best_of", &x) && x != 1)
		return bad_param(j, "best_of: only 1");
	for (const char *const *k = (const char *const[]){ "logprobs", "echo", NULL }; *k; k++)
		if (json_object_object_get_ex(b, *k, &v) && json_object_get_boolean(v) &&
		    !json_object_is_type(v, json_type_null))
			return bad_param(j, "%s: not supported", *k);
	if (json_object_object_get_ex(b, "seed", &v) && !json_object_is_type(v, json_type_null)) {
		if (!json_object_is_type(v, json_type_int))
			return bad_param(j, "seed: not an integer");
		o->gen.sampling.seed = (uint64_t)json_object_get_int64(v);
		o->seed_set = true;
	}
	if (json_object_object_get_ex(b, "stop", &v) && !json_object_is_type(v, json_type_null)) {
		bool one = json_object_is_type(v, json_type_string);
		if (!one && !json_object_is_type(v, json_type_array))
			return bad_param(j, "stop: a string or an array of strings");
		size_t n = one ? 1 : json_object_array_length(v);
		if (n > BN_STOP_MAX_STRINGS)
			return bad_param(j, "stop: more than %d strings", BN_STOP_MAX_STRINGS);
		for (size_t i = 0; i < n; i++) {
			json_object *e = one ? v : json_object_array_get_idx(v, i);
			if (!json_object_is_type(e, json_type_string))
				return bad_param(j, "stop: element %zu is not a string", i);
			const char *s = json_object_get_string(e);
			size_t l = strlen(s);
			if (!l || l > BN_STOP_MAX_LEN || !bn_stop_utf8_valid(s, l))
				return bad_param(j, "stop: string %zu is empty, longer than %d bytes or not "
				                 "UTF-8", i, BN_STOP_MAX_LEN);
			o->stops[o->n_stops++] = s;
		}
	}
	o->gen.stops = o->stops;
	o->gen.n_stops = o->n_stops;
	return 0;
}

/* A message's content: a string, or an array of {"type": "text", "text": ...} parts (joined). */
static int content_text(struct bd_openai_start *j, json_object *c, size_t i, char **out)
{
	if (json_object_is_type(c, json_type_string)) {
		*out = strdup(json_object_get_string(c));
		return *out ? 0 : -ENOMEM;
	}
	if (!json_object_is_type(c, json_type_array))
		return bad_param(j, "messages[%zu].content: a string or an array of text parts", i);
	size_t len = 0;
	char *t = calloc(1, 1);
	for (size_t k = 0; t && k < json_object_array_length(c); k++) {
		json_object *p = json_object_array_get_idx(c, k), *ty, *x;
		if (!json_object_object_get_ex(p, "type", &ty) || strcmp(json_object_get_string(ty), "text") ||
		    !json_object_object_get_ex(p, "text", &x) || !json_object_is_type(x, json_type_string)) {
			free(t);
			return bad_param(j, "messages[%zu].content[%zu]: only text parts are supported", i, k);
		}
		size_t l = strlen(json_object_get_string(x));
		char *n = realloc(t, len + l + 1);
		if (!n) {
			free(t);
			t = NULL;
			break;
		}
		t = n;
		memcpy(t + len, json_object_get_string(x), l + 1);
		len += l;
	}
	*out = t;
	return t ? 0 : -ENOMEM;
}

void bd_openai_start(struct bd_openai_start *j)
{
	json_object *b = j->body, *v;
	struct bd_req_opts o;
	struct bn_chat_msg *msgs = NULL;
	char **texts = NULL;
	size_t n = 0;
	struct bd_request *r = NULL;
	struct bn_error err = { 0 };
	snprintf(j->model, sizeof(j->model), "%.127s", bd_openai_model_id());
	if (!json_object_is_type(b, json_type_object)) {
		bad_param(j, "the body is not a JSON object");
		return;
	}
	if (body_opts(j, b, &o))
		return;
	struct bd_start st = { j->owner, j->chat, NULL, NULL, 0, &o, &bd_http_door, j->stream };
	if (j->chat) {
		if (!json_object_object_get_ex(b, "messages", &v) || !json_object_is_type(v, json_type_array)) {
			bad_param(j, "messages: required, an array");
			return;
		}
		n = json_object_array_length(v);
		msgs = calloc(n ? n : 1, sizeof(*msgs));
		texts = calloc(n ? n : 1, sizeof(*texts));
		if (!msgs || !texts) {
			j->rc = -ENOMEM;
			snprintf(j->err, sizeof(j->err), "out of memory");
			goto out;
		}
		for (size_t i = 0; i < n; i++) {
			json_object *m = json_object_array_get_idx(v, i), *role, *content;
			if (!json_object_object_get_ex(m, "role", &role) ||
			    !json_object_is_type(role, json_type_string) ||
			    !json_object_object_get_ex(m, "content", &content)) {
				bad_param(j, "messages[%zu]: needs a role and a content", i);
				goto out;
			}
			const char *rs = json_object_get_string(role);
			msgs[i].role = !strcmp(rs, "developer") ? "system" : rs;
			if (content_text(j, content, i, &texts[i]))
				goto out;
			msgs[i].content = texts[i];
		}
		st.msgs = msgs;
		st.n_msgs = n;
	} else {
		if (!json_object_object_get_ex(b, "prompt", &v)) {
			bad_param(j, "prompt: required");
			goto out;
		}
		if (json_object_is_type(v, json_type_array) && json_object_array_length(v) == 1)
			v = json_object_array_get_idx(v, 0);
		if (!json_object_is_type(v, json_type_string)) {
			bad_param(j, "prompt: a string (or an array of one string)");
			goto out;
		}
		st.prompt = json_object_get_string(v);
	}
	/* the request holds a reference to the stream from here until it finishes */
	bd_http_stream_ref(j->stream);
	if ((j->rc = bd_request_start(&st, &r, &err))) {
		bd_http_stream_unref(j->stream);
		snprintf(j->err, sizeof(j->err), "%s", err.msg);
		goto out;
	}
	j->id = r->id;
out:
	for (size_t i = 0; texts && i < n; i++)
		free(texts[i]);
	free(texts);
	free(msgs);
}

/* ---- errors -------------------------------------------------------------------------- */

static const char *err_type(unsigned status)
{
	switch (status) {
	case 400: case 404: case 405: case 413: return "invalid_request_error";
	case 401: return "authentication_error";
	case 429: return "rate_limit_error";
	case 503: return "service_unavailable";
	default: return "server_error";
	}
}

/* {"error": {"message", "type", ["param": null,] "code"}} */
static json_object *error_json(unsigned status, const char *code, const char *msg, bool param)
{
	json_object *o = json_object_new_object(), *e = json_object_new_object();
	json_object_object_add(e, "message", json_object_new_string(msg));
	json_object_object_add(e, "type", json_object_new_string(err_type(status)));
	if (param)
		json_object_object_add(e, "param", NULL);
	json_object_object_add(e, "code", code ? json_object_new_string(code) : NULL);
	json_object_object_add(o, "error", e);
	return o;
}

static json_object *usage_json(uint32_t n_prompt, uint32_t n_gen)
{
	json_object *u = json_object_new_object();
	json_object_object_add(u, "prompt_tokens", json_object_new_int64(n_prompt));
	json_object_object_add(u, "completion_tokens", json_object_new_int64(n_gen));
	json_object_object_add(u, "total_tokens", json_object_new_int64(n_prompt + n_gen));
	return u;
}

/* o as text (malloc'd), then o released; as one server-sent event when sse */
static char *text_of(json_object *o, bool sse)
{
	const char *js = json_object_to_json_string_ext(o, JSON_PLAIN);
	size_t l = strlen(js) + (sse ? 9 : 1);
	char *t = malloc(l);
	if (t)
		snprintf(t, l, sse ? "data: %s\n\n" : "%s", js);
	json_object_put(o);
	return t;
}

char *bd_openai_error(unsigned status, const char *code, const char *msg)
{
	return text_of(error_json(status, code, msg, true), false);
}

/* A daemon error (negative errno) as an HTTP status. */
unsigned bd_openai_status(int rc, const char **code)
{
	*code = NULL;
	switch (-rc) {
	case EINVAL: case ERANGE: case EILSEQ: case E2BIG: return 400;
	case ENOSPC: *code = "context_length_exceeded"; return 400;
	case EAGAIN: case EBUSY: *code = "busy"; return 429;
	case EALREADY: *code = "not_ready"; return 503;
	case ESTALE: *code = "model_changed"; return 503;
	default: return 500;
	}
}

const char *bd_openai_finish_reason(enum bn_stop_reason r)
{
	return r == BN_STOP_LENGTH || r == BN_STOP_CONTEXT_FULL ? "length" : "stop";
}

/* ---- responses ----------------------------------------------------------------------- */

char *bd_openai_event(struct bd_openai_resp *k, const char *text, const char *finish,
                      bool usage_only, uint32_t n_prompt, uint32_t n_gen)
{
	json_object *o = json_object_new_object(), *choices = json_object_new_array();
	char id[48];
	snprintf(id, sizeof(id), "%s-%u", k->chat ? "chatcmpl" : "cmpl", k->id);
	json_object_object_add(o, "id", json_object_new_string(id));
	json_object_object_add(o, "object", json_object_new_string(k->chat ? "chat.completion.chunk"
	                                                                   : "text_completion"));
	json_object_object_add(o, "created", json_object_new_int64(k->created));
	json_object_object_add(o, "model", json_object_new_string(k->model));
	if (!usage_only) {
		json_object *ch = json_object_new_object();
		json_object_object_add(ch, "index", json_object_new_int(0));
		if (k->chat) {
			json_object *d = json_object_new_object();
			if (!k->role_sent) {
				json_object_object_add(d, "role", json_object_new_string("assistant"));
				k->role_sent = true;
			}
			if (text)
				json_object_object_add(d, "content", json_object_new_string(text));
			json_object_object_add(ch, "delta", d);
		} else {
			json_object_object_add(ch, "text", json_object_new_string(text ? text : ""));
			json_object_object_add(ch, "logprobs", NULL);
		}
		json_object_object_add(ch, "finish_reason", finish ? json_object_new_string(finish) : NULL);
		json_object_array_add(choices, ch);
	}
	json_object_object_add(o, "choices", choices);
	if (usage_only)
		json_object_object_add(o, "usage", usage_json(n_prompt, n_gen));
	return text_of(o, true);
}

char *bd_openai_error_event(int rc, const char *msg)
{
	const char *code;
	unsigned st = bd_openai_status(rc, &code);
	return text_of(error_json(st, code, msg && *msg ? msg : "error", false), true);
}

char *bd_openai_whole(const struct bd_openai_resp *k, const char *text,
                      enum bn_stop_reason reason, uint32_t n_prompt, uint32_t n_gen)
{
	char id[48];
	snprintf(id, sizeof(id), "%s-%u", k->chat ? "chatcmpl" : "cmpl", k->id);
	json_object *o = json_object_new_object(), *choices = json_object_new_array(),
	            *ch = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_string(id));
	json_object_object_add(o, "object", json_object_new_string(k->chat ? "chat.completion"
	                                                                   : "text_completion"));
	json_object_object_add(o, "created", json_object_new_int64(k->created));
	json_object_object_add(o, "model", json_object_new_string(k->model));
	json_object_object_add(ch, "index", json_object_new_int(0));
		if (k->chat) {
		json_object *m = json_object_new_object();
		json_object_object_add(m, "role", json_object_new_string("assistant"));
		json_object_object_add(m, "content", json_object_new_string(text));
		json_object_object_add(ch, "message", m);
	} else {
		json_object_object_add(ch, "text", json_object_new_string(text));
		json_object_object_add(ch, "logprobs", NULL);
	}
	json_object_object_add(ch, "finish_reason", json_object_new_string(bd_openai_finish_reason(reason)));
	json_object_array_add(choices, ch);
	json_object_object_add(o, "choices", choices);
	json_object_object_add(o, "usage", usage_json(n_prompt, n_gen));
	return text_of(o, false);
}
