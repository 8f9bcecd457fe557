/* The OpenAI-compatible HTTP front door (see http.h for the threading rule). */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "bitnetd.h"
#include "http.h"
#include "log.h"
#include "options.h"
#include "sampler.h"
#include "stop.h"

#define HTTP_MAX_LISTEN 8
#define HTTP_MAX_KEYS 64
#define HTTP_KEEPALIVE_S 15        /* an SSE comment when nothing was sent for this long */

/* ---- streams: one request's text on its way from the pump to a connection ------------ */

struct bd_http_stream {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	atomic_int refs;                /* the connection, and the request while it lives */
	atomic_bool gone;               /* the client went away: cancel */
	char *text;                     /* [len] generated text not yet taken */
	size_t len, cap;
	bool finished, oom;
	enum bn_stop_reason reason;
	uint32_t n_prompt, n_gen;
	int rc;
	char err[512];
};

static struct bd_http_stream *stream_new(void)
{
	struct bd_http_stream *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	atomic_init(&s->refs, 1);
	return s;
}

static void stream_unref(struct bd_http_stream *s)
{
	if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
		return;
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	free(s->text);
	free(s);
}

void bd_http_text(struct bd_http_stream *s, const char *t)
{
	size_t l = strlen(t);
	pthread_mutex_lock(&s->mu);
	if (s->len + l + 1 > s->cap) {
		size_t c = s->cap ? s->cap : 256;
		while (c < s->len + l + 1)
			c *= 2;
		char *n = realloc(s->text, c);
		if (!n) {
			s->oom = true;
			pthread_mutex_unlock(&s->mu);
			return;
		}
		s->text = n;
		s->cap = c;
	}
	memcpy(s->text + s->len, t, l + 1);
	s->len += l;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

void bd_http_finished(struct bd_http_stream *s, const struct bd_request *r)
{
	pthread_mutex_lock(&s->mu);
	s->finished = true;
	s->reason = r->st.reason;
	s->n_prompt = r->st.n_prompt ? r->st.n_prompt : (uint32_t)r->n_ids;
	s->n_gen = r->st.n_gen;
	s->rc = r->rc;
	snprintf(s->err, sizeof(s->err), "%s", r->rc ? r->err : "");
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	stream_unref(s);
}

bool bd_http_gone(const struct bd_http_stream *s)
{
	return atomic_load(&s->gone);
}

/* ---- metrics (bus thread) ----------------------------------------------------------- */

static const double hist_bounds[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 };
#define N_BOUNDS (sizeof(hist_bounds) / sizeof(hist_bounds[0]))

struct hist {
	uint64_t bucket[N_BOUNDS];   /* cumulative counts are formed when printed */
	uint64_t count;
	double sum;
};

static struct hist h_ttft, h_itl, h_queue;

static void hist_add(struct hist *h, double v)
{
	if (!(v >= 0) || !isfinite(v))
		return;
	for (size_t i = 0; i < N_BOUNDS; i++)
		if (v <= hist_bounds[i]) {
			h->bucket[i]++;
			break;
		}
	h->count++;
	h->sum += v;
}

void bd_http_observe(const struct bd_request *r)
{
	if (r->st.n_gen)
		hist_add(&h_ttft, r->first_token_s);
	if (r->st.n_gen > 1)
		hist_add(&h_itl, r->st.gen_s / (double)(r->st.n_gen - 1));
	hist_add(&h_queue, r->queue_s);
}

/* HTTP responses by status, counted by the connection threads. */
static const unsigned codes[] = { 200, 400, 401, 404, 405, 413, 429, 500, 503 };
#define N_CODES (sizeof(codes) / sizeof(codes[0]))
static _Atomic uint64_t code_count[N_CODES];

static void count_code(unsigned code)
{
	for (size_t i = 0; i < N_CODES; i++)
		if (codes[i] == code)
			atomic_fetch_add(&code_count[i], 1);
}

/* ---- jobs: connection thread -> bus thread ------------------------------------------- */

enum job_kind { J_START, J_HEALTH, J_MODELS, J_METRICS };

struct job {
	enum job_kind kind;
	struct job *next;
	bool done;
	/* J_START in */
	bool chat;
	json_object *body;
	struct bd_http_stream *stream;
	char peer[64];
	/* out */
	unsigned status;
	char *out;                       /* J_* body, malloc'd */
	int rc;
	char err[512];
	char model[128];
	uint32_t id;
};

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct job *head, *tail;
	bool stopping;
	struct MHD_Daemon *d[HTTP_MAX_LISTEN];
	unsigned n_d;
	char *keys[HTTP_MAX_KEYS];
	unsigned n_keys;
	size_t max_body;
} H = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, false, { 0 }, 0,
        { 0 }, 0, 0 };

/* Posts j and waits for the bus thread. false when the daemon is stopping. */
static bool job_run(struct job *j)
{
	pthread_mutex_lock(&H.mu);
	if (H.stopping) {
		pthread_mutex_unlock(&H.mu);
		return false;
	}
	j->next = NULL;
	if (H.tail)
		H.tail->next = j;
	else
		H.head = j;
	H.tail = j;
	pthread_mutex_unlock(&H.mu);
	bd_wake_bus();
	pthread_mutex_lock(&H.mu);
	while (!j->done && !H.stopping)
		pthread_cond_wait(&H.cv, &H.mu);
	bool ok = j->done;
	if (!ok) {   /* stopping: take it off the list if the bus thread never saw it */
		for (struct job **pp = &H.head; *pp; pp = &(*pp)->next)
			if (*pp == j) {
				*pp = j->next;
				break;
			}
		H.tail = NULL;
		for (struct job *k = H.head; k; k = k->next)
			H.tail = k;
	}
	pthread_mutex_unlock(&H.mu);
	return ok;
}

static const char *model_id(void)
{
	const char *p = bd.cfg.model_path, *s = strrchr(p, '/');
	return s ? s + 1 : p;
}

static void snap_health(struct job *j)
{
	const char *st = bd.state == BD_STOPPING ? "stopping"
	               : !bd.loaded              ? "loading"
	               : bd.state == BD_RELOADING ? "reloading" : "ok";
	bool ok = !strcmp(st, "ok");
	j->status = ok ? 200 : 503;
	json_object *o = json_object_new_object();
	json_object_object_add(o, "status", json_object_new_string(st));
	if (bd.loaded)
		json_object_object_add(o, "model", json_object_new_string(model_id()));
	j->out = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

static void snap_models(struct job *j)
{
	json_object *o = json_object_new_object(), *a = json_object_new_array();
	json_object_object_add(o, "object", json_object_new_string("list"));
	if (bd.loaded) {
		json_object *m = json_object_new_object();
		json_object_object_add(m, "id", json_object_new_string(model_id()));
		json_object_object_add(m, "object", json_object_new_string("model"));
		json_object_object_add(m, "created", json_object_new_int64(0));
		json_object_object_add(m, "owned_by", json_object_new_string("bitnetd"));
		json_object_array_add(a, m);
	}
	json_object_object_add(o, "data", a);
	j->status = 200;
	j->out = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

struct sbuf {
	char *p;
	size_t len, cap;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = b->p ? vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap) : -1;
		va_end(ap);
		if (n >= 0 && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		size_t c = b->cap ? b->cap * 2 : 4096;
		while (n >= 0 && c < b->len + (size_t)n + 1)
			c *= 2;
		char *q = realloc(b->p, c);
		if (!q)
			return;
		b->p = q;
		b->cap = c;
	}
}

static void metric(struct sbuf *b, const char *name, const char *type, const char *help)
{
	sb_printf(b, "# HELP bitnetd_%s %s\n# TYPE bitnetd_%s %s\n", name, help, name, type);
}

static void hist_print(struct sbuf *b, const char *name, const char *help, const struct hist *h)
{
	metric(b, name, "histogram", help);
	uint64_t cum = 0;
	for (size_t i = 0; i < N_BOUNDS; i++) {
		cum += h->bucket[i];
		sb_printf(b, "bitnetd_%s_bucket{le=\"%g\"} %llu\n", name, hist_bounds[i],
		          (unsigned long long)cum);
	}
	sb_printf(b, "bitnetd_%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)h->count);
	sb_printf(b, "bitnetd_%s_sum %.6f\nbitnetd_%s_count %llu\n", name, h->sum, name,
	          (unsigned long long)h->count);
}

static void snap_metrics(struct job *j)
{
	struct sbuf b = { 0 };
	pthread_mutex_lock(&bd.lock);
	uint32_t queued = bd.n_queued, running = bd.n_running;
	pthread_mutex_unlock(&bd.lock);
	const struct bd_counters *c = &bd.cnt;
	metric(&b, "ready", "gauge", "1 when the daemon answers requests");
	sb_printf(&b, "bitnetd_ready %d\n", bd.loaded && bd.state == BD_READY);
	metric(&b, "requests_total", "counter", "Generate/Chat/completion requests by outcome");
	sb_printf(&b, "bitnetd_requests_total{outcome=\"served\"} %llu\n", (unsigned long long)c->served);
	sb_printf(&b, "bitnetd_requests_total{outcome=\"failed\"} %llu\n", (unsigned long long)c->failed);
	sb_printf(&b, "bitnetd_requests_total{outcome=\"cancelled\"} %llu\n",
	          (unsigned long long)c->cancelled);
	sb_printf(&b, "bitnetd_requests_total{outcome=\"rejected\"} %llu\n",
	          (unsigned long long)c->rejected);
	metric(&b, "tokens_total", "counter", "prompt tokens read and tokens generated");
	sb_printf(&b, "bitnetd_tokens_total{direction=\"prompt\"} %llu\n", (unsigned long long)c->tokens_in);
	sb_printf(&b, "bitnetd_tokens_total{direction=\"generated\"} %llu\n",
	          (unsigned long long)c->tokens_out);
	metric(&b, "prefix_cache_hits_total", "counter", "requests that reused a cached prompt prefix");
	sb_printf(&b, "bitnetd_prefix_cache_hits_total %llu\n", (unsigned long long)c->cache_hits);
	metric(&b, "prefix_cached_tokens_total", "counter", "prompt tokens taken from the prefix cache");
	sb_printf(&b, "bitnetd_prefix_cached_tokens_total %llu\n", (unsigned long long)c->cached_tokens);
	metric(&b, "queue_depth", "gauge", "requests waiting for a slot");
	sb_printf(&b, "bitnetd_queue_depth %u\n", queued);
	metric(&b, "slots_busy", "gauge", "slots generating");
	sb_printf(&b, "bitnetd_slots_busy %u\n", running);
	metric(&b, "slots", "gauge", "slots configured");
	sb_printf(&b, "bitnetd_slots %u\n", bd.info.slots);
	metric(&b, "kv_positions", "gauge", "context positions held by the slots' KV caches");
	sb_printf(&b, "bitnetd_kv_positions %llu\n", (unsigned long long)atomic_load(&bd.kv_positions));
	hist_print(&b, "time_to_first_token_seconds", "submission to the first generated token", &h_ttft);
	hist_print(&b, "inter_token_seconds", "mean time between generated tokens, per request",
	           &h_itl);
	hist_print(&b, "queue_seconds", "time waiting for a slot", &h_queue);
	metric(&b, "http_responses_total", "counter", "HTTP responses by status code");
	for (size_t i = 0; i < N_CODES; i++)
		sb_printf(&b, "bitnetd_http_responses_total{code=\"%u\"} %llu\n", codes[i],
		          (unsigned long long)atomic_load(&code_count[i]));
	j->status = b.p ? 200 : 500;
	j->out = b.p;
}

/* ---- request bodies to options (bus thread: the limits are bd.cfg's) ----------------- */

static int bad_param(struct job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad_param(struct job *j, const char *fmt, ...)
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
static int body_opts(struct job *j, json_object *b, struct bd_req_opts *o)
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
static int content_text(struct job *j, json_object *c, size_t i, char **out)
{
	if (json_object_is_type(c, json_type_string)) {
		*out = strdup(json_object_get_string(c));
		return *out ? 0 : -ENOMEM;
	}
	if (!json_object_is_type(c, json_type_array))
		return bad_param(j, "messages[%zu].content: a string or an array of text parts", i);
	struct sbuf b = { 0 };
	sb_printf(&b, "%s", "");
	for (size_t k = 0; k < json_object_array_length(c); k++) {
		json_object *p = json_object_array_get_idx(c, k), *t, *x;
		if (!json_object_object_get_ex(p, "type", &t) || strcmp(json_object_get_string(t), "text") ||
		    !json_object_object_get_ex(p, "text", &x) || !json_object_is_type(x, json_type_string)) {
			free(b.p);
			return bad_param(j, "messages[%zu].content[%zu]: only text parts are supported", i, k);
		}
		sb_printf(&b, "%s", json_object_get_string(x));
	}
	*out = b.p;
	return b.p ? 0 : -ENOMEM;
}

static void job_start(struct job *j)
{
	json_object *b = j->body, *v;
	struct bd_req_opts o;
	struct bn_chat_msg *msgs = NULL;
	char **texts = NULL;
	size_t n = 0;
	struct bd_request *r = NULL;
	struct bn_error err = { 0 };
	snprintf(j->model, sizeof(j->model), "%.127s", model_id());
	if (!json_object_is_type(b, json_type_object)) {
		bad_param(j, "the body is not a JSON object");
		return;
	}
	if (body_opts(j, b, &o))
		return;
	struct bd_start st = { NULL, j->chat, NULL, NULL, 0, &o, j->stream };
	char owner[80];
	snprintf(owner, sizeof(owner), "http:%s", j->peer);
	st.owner = owner;
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
	/* the request holds a reference to the stream from here until bd_http_finished */
	atomic_fetch_add(&j->stream->refs, 1);
	if ((j->rc = bd_request_start(&st, &r, &err))) {
		stream_unref(j->stream);
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

void bd_http_service(void)
{
	for (;;) {
		pthread_mutex_lock(&H.mu);
		struct job *j = H.head;
		if (j) {
			H.head = j->next;
			if (!H.head)
				H.tail = NULL;
		}
		pthread_mutex_unlock(&H.mu);
		if (!j)
			return;
		switch (j->kind) {
		case J_START: job_start(j); break;
		case J_HEALTH: snap_health(j); break;
		case J_MODELS: snap_models(j); break;
		case J_METRICS: snap_metrics(j); break;
		}
		pthread_mutex_lock(&H.mu);
		j->done = true;
		pthread_cond_broadcast(&H.cv);
		pthread_mutex_unlock(&H.mu);
	}
}

/* ---- responses ----------------------------------------------------------------------- */

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, const char *type,
                               char *body)
{
	count_code(status);
	if (!body)
		return MHD_NO;
	struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body,
	                                                         MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", type);
	if (status == 401)
		MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
	enum MHD_Result ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

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

/* {"error": {"message", "type", "param": null, "code"}} */
static enum MHD_Result respond_error(struct MHD_Connection *c, unsigned status, const char *code,
                                     const char *msg)
{
	json_object *o = json_object_new_object(), *e = json_object_new_object();
	json_object_object_add(e, "message", json_object_new_string(msg));
	json_object_object_add(e, "type", json_object_new_string(err_type(status)));
	json_object_object_add(e, "param", NULL);
	json_object_object_add(e, "code", code ? json_object_new_string(code) : NULL);
	json_object_object_add(o, "error", e);
	char *body = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	return respond(c, status, "application/json", body);
}

/* A daemon error (negative errno) as an HTTP status. */
static unsigned status_of(int rc, const char **code)
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

static const char *finish_reason(enum bn_stop_reason r)
{
	return r == BN_STOP_LENGTH || r == BN_STOP_CONTEXT_FULL ? "length" : "stop";
}

/* ---- a connection ---------------------------------------------------------------------- */

struct conn {
	char *body;                     /* [len] the request body so far */
	size_t len;
	bool too_big;
	struct bd_http_stream *stream;  /* a completion's, once started */
	/* streaming (SSE) state, used by the content reader */
	bool chat, include_usage, role_sent, final_sent, done_sent;
	uint32_t id;
	long created;
	char model[128];
	char *pend;                     /* formatted bytes not yet handed to MHD */
	size_t pend_len, pend_off;
};

static void conn_free(struct conn *k)
{
	if (!k)
		return;
	if (k->stream) {
		atomic_store(&k->stream->gone, true);   /* a no-op once the request ended */
		bd_wake_bus();
		stream_unref(k->stream);
	}
	free(k->body);
	free(k->pend);
	free(k);
}

static bool authorized(struct MHD_Connection *c)
{
	if (!H.n_keys)
		return true;
	const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
	if (!a || strncmp(a, "Bearer ", 7))
		return false;
	a += 7;
	size_t al = strlen(a);
	bool ok = false;
	/* every key compared in full, in constant time for its length */
	for (unsigned i = 0; i < H.n_keys; i++) {
		size_t kl = strlen(H.keys[i]);
		unsigned char d = (unsigned char)(kl != al);
		for (size_t b = 0; b < kl; b++)
			d |= (unsigned char)(H.keys[i][b] ^ (b < al ? a[b] : 0));
		ok |= d == 0;
	}
	return ok;
}

/* One SSE event for a chunk (text NULL: the closing chunk with finish_reason). */
static char *sse_chunk(struct conn *k, const char *text, const char *finish, bool usage_only,
                       const struct bd_http_stream *s)
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
	if (usage_only) {
		json_object *u = json_object_new_object();
		json_object_object_add(u, "prompt_tokens", json_object_new_int64(s->n_prompt));
		json_object_object_add(u, "completion_tokens", json_object_new_int64(s->n_gen));
		json_object_object_add(u, "total_tokens", json_object_new_int64(s->n_prompt + s->n_gen));
		json_object_object_add(o, "usage", u);
	}
	const char *js = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	size_t l = strlen(js);
	char *ev = malloc(l + 9);
	if (ev)
		snprintf(ev, l + 9, "data: %s\n\n", js);
	json_object_put(o);
	return ev;
}

static char *sse_error(const struct bd_http_stream *s)
{
	const char *code;
	unsigned st = status_of(s->rc, &code);
	json_object *o = json_object_new_object(), *e = json_object_new_object();
	json_object_object_add(e, "message", json_object_new_string(s->err[0] ? s->err : "error"));
	json_object_object_add(e, "type", json_object_new_string(err_type(st)));
	json_object_object_add(e, "code", code ? json_object_new_string(code) : NULL);
	json_object_object_add(o, "error", e);
	const char *js = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	size_t l = strlen(js);
	char *ev = malloc(l + 9);
	if (ev)
		snprintf(ev, l + 9, "data: %s\n\n", js);
	json_object_put(o);
	return ev;
}

/* The next event of the stream into k->pend; false at the end of it. Blocks for text. */
static bool sse_next(struct conn *k)
{
	struct bd_http_stream *s = k->stream;
	char *text = NULL;
	bool fin, keepalive = false;
	pthread_mutex_lock(&s->mu);
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += HTTP_KEEPALIVE_S;
	while (!s->len && !s->finished && !keepalive)
		if (pthread_cond_timedwait(&s->cv, &s->mu, &until) == ETIMEDOUT)
			keepalive = true;
	if (s->len) {
		text = s->text;
		s->text = NULL;
		s->len = s->cap = 0;
	}
	fin = s->finished && !text;
	pthread_mutex_unlock(&s->mu);
	free(k->pend);
	k->pend = NULL;
	k->pend_off = 0;
	if (text) {
		k->pend = sse_chunk(k, text, NULL, false, s);
		free(text);
	} else if (keepalive && !fin) {
		k->pend = strdup(": keepalive\n\n");
	} else if (!k->final_sent) {
		k->final_sent = true;
		if (s->rc && s->reason == BN_STOP_ERROR)
			k->pend = sse_error(s);
		else
			k->pend = sse_chunk(k, NULL, finish_reason(s->reason), false, s);
	} else if (k->include_usage && !k->done_sent && !s->rc) {
		k->include_usage = false;
		k->pend = sse_chunk(k, NULL, NULL, true, s);
	} else if (!k->done_sent) {
		k->done_sent = true;
		k->pend = strdup("data: [DONE]\n\n");
	} else {
		return false;
	}
	k->pend_len = k->pend ? strlen(k->pend) : 0;
	return k->pend != NULL;
}

static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct conn *k = cls;
	(void)pos;
	while (k->pend_off == k->pend_len) {
		if (!sse_next(k))
			return MHD_CONTENT_READER_END_OF_STREAM;
	}
	size_t n = k->pend_len - k->pend_off;
	if (n > max)
		n = max;
	memcpy(buf, k->pend + k->pend_off, n);
	k->pend_off += n;
	return (ssize_t)n;
}

/* The whole completion as one JSON object (after waiting for it). */
static enum MHD_Result respond_whole(struct MHD_Connection *c, struct conn *k)
{
	struct bd_http_stream *s = k->stream;
	pthread_mutex_lock(&s->mu);
	while (!s->finished)
		pthread_cond_wait(&s->cv, &s->mu);
	pthread_mutex_unlock(&s->mu);
	if (s->rc && s->reason == BN_STOP_ERROR && !s->len) {
		const char *code;
		unsigned st = status_of(s->rc, &code);
		return respond_error(c, st, code, s->err);
	}
	char id[48];
	snprintf(id, sizeof(id), "%s-%u", k->chat ? "chatcmpl" : "cmpl", k->id);
	json_object *o = json_object_new_object(), *choices = json_object_new_array(),
	            *ch = json_object_new_object(), *u = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_string(id));
	json_object_object_add(o, "object", json_object_new_string(k->chat ? "chat.completion"
	                                                                   : "text_completion"));
	json_object_object_add(o, "created", json_object_new_int64(k->created));
	json_object_object_add(o, "model", json_object_new_string(k->model));
	json_object_object_add(ch, "index", json_object_new_int(0));
	const char *text = s->text ? s->text : "";
	if (k->chat) {
		json_object *m = json_object_new_object();
		json_object_object_add(m, "role", json_object_new_string("assistant"));
		json_object_object_add(m, "content", json_object_new_string(text));
		json_object_object_add(ch, "message", m);
	} else {
		json_object_object_add(ch, "text", json_object_new_string(text));
		json_object_object_add(ch, "logprobs", NULL);
	}
	json_object_object_add(ch, "finish_reason", json_object_new_string(finish_reason(s->reason)));
	json_object_array_add(choices, ch);
	json_object_object_add(o, "choices", choices);
	json_object_object_add(u, "prompt_tokens", json_object_new_int64(s->n_prompt));
	json_object_object_add(u, "completion_tokens", json_object_new_int64(s->n_gen));
	json_object_object_add(u, "total_tokens", json_object_new_int64(s->n_prompt + s->n_gen));
	json_object_object_add(o, "usage", u);
	char *body = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
	                                                      JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	return respond(c, 200, "application/json", body);
}

static void peer_of(struct MHD_Connection *c, char *buf, size_t len)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	snprintf(buf, len, "?");
	if (!ci || !ci->client_addr)
		return;
	const struct sockaddr *sa = ci->client_addr;
	char host[INET6_ADDRSTRLEN] = "?";
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host, sizeof(host));
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof(host));
	snprintf(buf, len, "%s", host);
}

static enum MHD_Result completion(struct MHD_Connection *c, struct conn *k, bool chat)
{
	json_tokener *tok = json_tokener_new();
	if (!tok)
		return respond_error(c, 500, NULL, "out of memory");
	json_object *b = json_tokener_parse_ex(tok, k->body ? k->body : "", (int)k->len);
	enum json_tokener_error je = json_tokener_get_error(tok);
	json_tokener_free(tok);
	if (!b || je != json_tokener_success) {
		json_object_put(b);
		char msg[160];
		snprintf(msg, sizeof(msg), "the body is not valid JSON: %s", json_tokener_error_desc(je));
		return respond_error(c, 400, "invalid_json", msg);
	}
	json_object *v;
	bool stream = json_object_object_get_ex(b, "stream", &v) && json_object_get_boolean(v);
	k->chat = chat;
	k->include_usage = json_object_object_get_ex(b, "stream_options", &v) &&
	                   json_object_object_get_ex(v, "include_usage", &v) && json_object_get_boolean(v);
	k->created = (long)time(NULL);
	if (!(k->stream = stream_new())) {
		json_object_put(b);
		return respond_error(c, 500, NULL, "out of memory");
	}
	struct job j = { .kind = J_START, .chat = chat, .body = b, .stream = k->stream };
	peer_of(c, j.peer, sizeof(j.peer));
	bool ran = job_run(&j);
	json_object_put(b);
	if (!ran)
		return respond_error(c, 503, "not_ready", "the daemon is stopping");
	if (j.rc) {
		const char *code;
		unsigned st = status_of(j.rc, &code);
		return respond_error(c, st, code, j.err);
	}
	k->id = j.id;
	snprintf(k->model, sizeof(k->model), "%s", j.model);
	if (!stream)
		return respond_whole(c, k);
	struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_reader,
	                                                           k, NULL);
	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, "Content-Type", "text/event-stream");
	MHD_add_response_header(r, "Cache-Control", "no-cache");
	count_code(200);
	enum MHD_Result ret = MHD_queue_response(c, 200, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result snapshot(struct MHD_Connection *c, enum job_kind kind)
{
	struct job j = { .kind = kind };
	if (!job_run(&j))
		return respond_error(c, 503, "not_ready", "the daemon is stopping");
	if (!j.out)
		return respond_error(c, 500, NULL, "out of memory");
	return respond(c, j.status, kind == J_METRICS ? "text/plain; version=0.0.4" : "application/json",
	               j.out);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
	(void)cls;
	(void)version;
	struct conn *k = *con_cls;
	if (!k) {   /* the headers: say nothing yet */
		if (!(k = calloc(1, sizeof(*k))))
			return MHD_NO;
		*con_cls = k;
		return MHD_YES;
	}
	bool post = !strcmp(method, MHD_HTTP_METHOD_POST);
	if (*upload_size) {   /* a chunk of the body */
		if (k->too_big || k->len + *upload_size > H.max_body) {
			k->too_big = true;
		} else {
			char *n = realloc(k->body, k->len + *upload_size + 1);
			if (!n)
				return MHD_NO;
			k->body = n;
			memcpy(k->body + k->len, upload, *upload_size);
			k->len += *upload_size;
			k->body[k->len] = '\0';
		}
		*upload_size = 0;
		return MHD_YES;
	}
	if (k->stream)   /* already answered */
		return MHD_YES;
	if (!strcmp(url, "/health")) {   /* for load balancers: no key needed */
		if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
			return respond_error(c, 405, NULL, "use GET");
		return snapshot(c, J_HEALTH);
	}
	if (!authorized(c))
		return respond_error(c, 401, "invalid_api_key", "missing or wrong API key "
		                     "(Authorization: Bearer KEY)");
	if (k->too_big) {
		char msg[128];
		snprintf(msg, sizeof(msg), "the body exceeds max_body_bytes %zu", H.max_body);
		return respond_error(c, 413, NULL, msg);
	}
	bool chat = !strcmp(url, "/v1/chat/completions");
	if (chat || !strcmp(url, "/v1/completions")) {
		if (!post)
			return respond_error(c, 405, NULL, "use POST");
		return completion(c, k, chat);
	}
	if (!strcmp(url, "/v1/models") || !strcmp(url, "/metrics")) {
		if (strcmp(method, MHD_HTTP_METHOD_GET))
			return respond_error(c, 405, NULL, "use GET");
		return snapshot(c, url[1] == 'v' ? J_MODELS : J_METRICS);
	}
	char msg[160];
	snprintf(msg, sizeof(msg), "no route %.100s", url);
	return respond_error(c, 404, NULL, msg);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)c;
	(void)toe;
	conn_free(*con_cls);
	*con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	char msg[512];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	msg[strcspn(msg, "\n")] = '\0';
	bn_log(BN_LOG_WARNING, "http: %s", msg);
}

/* ---- start and stop ------------------------------------------------------------------ */

static int load_keys(const char *file, struct bn_error *err)
{
	FILE *f = fopen(file, "r");
	if (!f)
		return bn_err_set(err, -errno, "[http] api_key_file: %s: %s", file, strerror(errno));
	char line[512];
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\r\n")] = '\0';
		char *s = line + strspn(line, " \t");
		if (!*s || *s == '#')
			continue;
		if (H.n_keys == HTTP_MAX_KEYS || !(H.keys[H.n_keys] = strdup(s))) {
			fclose(f);
			return bn_err_set(err, -E2BIG, "[http] api_key_file: %s: more than %d keys", file,
			                  HTTP_MAX_KEYS);
		}
		H.n_keys++;
	}
	fclose(f);
	if (!H.n_keys)
		return bn_err_set(err, -EINVAL, "[http] api_key_file: %s holds no key", file);
	return 0;
}

/* "127.0.0.1:8080", "[::1]:8080", "localhost:8080" -> a socket address. */
static int parse_listen(const char *a, struct sockaddr_storage *ss, socklen_t *sl, bool *v6,
                        struct bn_error *err)
{
	char host[256], port[16];
	const char *colon;
	if (a[0] == '[') {
		const char *e = strchr(a, ']');
		if (!e || e[1] != ':' || (size_t)(e - a - 1) >= sizeof(host))
			return bn_err_set(err, -EINVAL, "[http] listen: '%s' is not [IPv6]:port", a);
		memcpy(host, a + 1, (size_t)(e - a - 1));
		host[e - a - 1] = '\0';
		colon = e + 1;
	} else {
		colon = strrchr(a, ':');
		if (!colon || (size_t)(colon - a) >= sizeof(host))
			return bn_err_set(err, -EINVAL, "[http] listen: '%s' is not host:port", a);
		memcpy(host, a, (size_t)(colon - a));
		host[colon - a] = '\0';
	}
	snprintf(port, sizeof(port), "%s", colon + 1);
	struct addrinfo hints = { .ai_flags = AI_NUMERICSERV, .ai_socktype = SOCK_STREAM }, *res;
	int g = getaddrinfo(host, port, &hints, &res);
	if (g)
		return bn_err_set(err, -EINVAL, "[http] listen: '%s': %s", a, gai_strerror(g));
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*sl = res->ai_addrlen;
	*v6 = res->ai_family == AF_INET6;
	freeaddrinfo(res);
	return 0;
}

static bool is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
	if (ss->ss_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
		return IN6_IS_ADDR_LOOPBACK(a) ||
		       (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return false;
}

int bd_http_start(const struct bd_config *cfg, struct bn_error *err)
{
	if (!cfg->http_listen[0])
		return 0;
	int rc;
	H.max_body = cfg->http_max_body_bytes;
	if (cfg->http_api_key_file[0] && (rc = load_keys(cfg->http_api_key_file, err)))
		return rc;
	char list[sizeof(cfg->http_listen)];
	snprintf(list, sizeof(list), "%s", cfg->http_listen);
	char *save = NULL;
	for (char *a = strtok_r(list, " ,\t", &save); a; a = strtok_r(NULL, " ,\t", &save)) {
		struct sockaddr_storage ss;
		socklen_t sl;
		bool v6 = false;
		if ((rc = parse_listen(a, &ss, &sl, &v6, err)))
			goto fail;
		if (!H.n_keys && !is_loopback(&ss)) {
			rc = bn_err_set(err, -EACCES, "[http] listen: %s is not a loopback address and "
			                "there is no api_key_file", a);
			goto fail;
		}
		if (H.n_d == HTTP_MAX_LISTEN) {
			rc = bn_err_set(err, -E2BIG, "[http] listen: more than %d addresses", HTTP_MAX_LISTEN);
			goto fail;
		}
		unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
		                 MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
		struct MHD_Daemon *d = MHD_start_daemon(
			flags, 0, NULL, NULL, on_request, NULL,
			MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
			MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->http_max_connections,
			MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->http_max_connections,
			MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->http_timeout,
			MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024),
			MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
			MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
			MHD_OPTION_END);
		if (!d) {
			rc = bn_err_set(err, -EADDRINUSE, "[http] listen: cannot listen on %s (in use, or "
			                "not an address of this host)", a);
			goto fail;
		}
		H.d[H.n_d++] = d;
		bn_log(BN_LOG_INFO, "http: listening on %s%s", a, H.n_keys ? " (API keys required)" : "");
	}
	return 0;
fail:
	bd_http_stop();
	return rc;
}

void bd_http_stop(void)
{
	pthread_mutex_lock(&H.mu);
	H.stopping = true;
	pthread_cond_broadcast(&H.cv);
	pthread_mutex_unlock(&H.mu);
	for (unsigned i = 0; i < H.n_d; i++)
		MHD_stop_daemon(H.d[i]);
	H.n_d = 0;
	for (unsigned i = 0; i < H.n_keys; i++)
		free(H.keys[i]);
	H.n_keys = 0;
}
