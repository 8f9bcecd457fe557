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
#include <unistd.h>

#include "bitnetd.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "openai.h"
#include "request.h"
#include "worker.h"

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

void bd_http_stream_ref(struct bd_http_stream *s)
{
	atomic_fetch_add(&s->refs, 1);
}

void bd_http_stream_unref(struct bd_http_stream *s)
{
	if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
		return;
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	free(s->text);
	free(s);
}

/* The door's side of a request (request.h): text and end go to the connection's stream. */
static void stream_text(struct bd_request *r, const char *t)
{
	struct bd_http_stream *s = r->door_data;
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

/* drops the request's reference to the stream */
static void stream_finished(struct bd_request *r)
{
	struct bd_http_stream *s = r->door_data;
	pthread_mutex_lock(&s->mu);
	s->finished = true;
	s->reason = r->st.reason;
	s->n_prompt = r->st.n_prompt ? r->st.n_prompt : (uint32_t)r->n_ids;
	s->n_gen = r->st.n_gen;
	s->rc = r->rc;
	snprintf(s->err, sizeof(s->err), "%s", r->rc ? r->err : "");
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	bd_http_stream_unref(s);
}

static bool stream_gone(const struct bd_request *r)
{
	const struct bd_http_stream *s = r->door_data;
	return atomic_load(&s->gone);
}

/* stopping: a client still waiting gets the request's end, an error */
const struct bd_door bd_http_door = { stream_text, stream_finished, stream_gone,
                                      stream_finished };

/* ---- jobs: connection thread -> bus thread ------------------------------------------- */

enum job_kind { J_START, J_HEALTH, J_MODELS, J_METRICS };

struct job {
	enum job_kind kind;
	struct job *next;
	bool done;
	struct bd_openai_start st;       /* J_START */
	unsigned status;                 /* the others: the response */
	char *out;                       /* malloc'd body */
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
		json_object_object_add(o, "model", json_object_new_string(bd_openai_model_id()));
	j->out = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

static void snap_models(struct job *j)
{
	json_object *o = json_object_new_object(), *a = json_object_new_array();
	json_object_object_add(o, "object", json_object_new_string("list"));
	if (bd.loaded) {
		json_object *m = json_object_new_object();
		json_object_object_add(m, "id", json_object_new_string(bd_openai_model_id()));
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
		case J_START: bd_openai_start(&j->st); break;
		case J_HEALTH: snap_health(j); break;
		case J_MODELS: snap_models(j); break;
		case J_METRICS:
			j->out = bd_metrics_text();
			j->status = 200;
			break;
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
	bd_metrics_http_code(status);
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

static enum MHD_Result respond_error(struct MHD_Connection *c, unsigned status, const char *code,
                                     const char *msg)
{
	return respond(c, status, "application/json", bd_openai_error(status, code, msg));
}

/* ---- a connection ---------------------------------------------------------------------- */

struct conn {
	char *body;                     /* [len] the request body so far */
	size_t len;
	bool too_big;
	struct bd_http_stream *stream;  /* a completion's, once started */
	struct bd_openai_resp resp;
	/* streaming (SSE) state, used by the content reader */
	bool include_usage, final_sent, done_sent;
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
		bd_http_stream_unref(k->stream);
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
		k->pend = bd_openai_event(&k->resp, text, NULL, false, 0, 0);
		free(text);
	} else if (keepalive && !fin) {
		k->pend = strdup(": keepalive\n\n");
	} else if (!k->final_sent) {
		k->final_sent = true;
		if (s->rc && s->reason == BN_STOP_ERROR)
			k->pend = bd_openai_error_event(s->rc, s->err);
		else
			k->pend = bd_openai_event(&k->resp, NULL, bd_openai_finish_reason(s->reason), false,
			                          0, 0);
	} else if (k->include_usage && !k->done_sent && !s->rc) {
		k->include_usage = false;
		k->pend = bd_openai_event(&k->resp, NULL, NULL, true, s->n_prompt, s->n_gen);
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
		unsigned st = bd_openai_status(s->rc, &code);
		return respond_error(c, st, code, s->err);
	}
	return respond(c, 200, "application/json",
	               bd_openai_whole(&k->resp, s->text ? s->text : "", s->reason, s->n_prompt,
	                               s->n_gen));
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
	k->resp.chat = chat;
	k->include_usage = json_object_object_get_ex(b, "stream_options", &v) &&
	                   json_object_object_get_ex(v, "include_usage", &v) && json_object_get_boolean(v);
	k->resp.created = (long)time(NULL);
	if (!(k->stream = stream_new())) {
		json_object_put(b);
		return respond_error(c, 500, NULL, "out of memory");
	}
	char owner[80] = "http:";
	peer_of(c, owner + 5, sizeof(owner) - 5);
	struct job j = { .kind = J_START,
	                 .st = { .body = b, .chat = chat, .owner = owner, .stream = k->stream } };
	bool ran = job_run(&j);
	json_object_put(b);
	if (!ran)
		return respond_error(c, 503, "not_ready", "the daemon is stopping");
	if (j.st.rc) {
		const char *code;
		unsigned st = bd_openai_status(j.st.rc, &code);
		return respond_error(c, st, code, j.st.err);
	}
	k->resp.id = j.st.id;
	snprintf(k->resp.model, sizeof(k->resp.model), "%s", j.st.model);
	if (!stream)
		return respond_whole(c, k);
	struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_reader,
	                                                           k, NULL);
	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, "Content-Type", "text/event-stream");
	MHD_add_response_header(r, "Cache-Control", "no-cache");
	bd_metrics_http_code(200);
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

/* Sockets systemd passed (a .socket unit, sd_listen_fds' protocol: LISTEN_PID is us,
 * LISTEN_FDS of them from fd 3). They live in the host's network namespace, so a unit with
 * PrivateNetwork=yes still serves HTTP through them. */
static unsigned passed_fds(void)
{
	const char *pid = getenv("LISTEN_PID"), *n = getenv("LISTEN_FDS");
	if (!pid || !n || strtol(pid, NULL, 10) != (long)getpid())
		return 0;
	long k = strtol(n, NULL, 10);
	return k > 0 && k <= HTTP_MAX_LISTEN ? (unsigned)k : 0;
}

static struct MHD_Daemon *mhd_start(const struct bd_config *cfg, const struct sockaddr *sa,
                                    int fd, bool v6)
{
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
	                 MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
	struct MHD_OptionItem common[] = {
		{ MHD_OPTION_CONNECTION_LIMIT, cfg->http_max_connections, NULL },
		{ MHD_OPTION_PER_IP_CONNECTION_LIMIT, cfg->http_max_connections, NULL },
		{ MHD_OPTION_CONNECTION_TIMEOUT, cfg->http_timeout, NULL },
		{ MHD_OPTION_CONNECTION_MEMORY_LIMIT, 64 * 1024, NULL },
		{ MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, NULL },
		{ MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL },
		{ MHD_OPTION_END, 0, NULL },
	};
	if (fd >= 0)
		return MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_ARRAY, common,
		                        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd, MHD_OPTION_END);
	return MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_ARRAY, common,
	                        MHD_OPTION_SOCK_ADDR, sa, MHD_OPTION_END);
}

int bd_http_start(const struct bd_config *cfg, struct bn_error *err)
{
	unsigned n_passed = passed_fds();
	if (!cfg->http_listen[0] && !n_passed)
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
		struct MHD_Daemon *d = mhd_start(cfg, (struct sockaddr *)&ss, -1, v6);
		if (!d) {
			rc = bn_err_set(err, -EADDRINUSE, "[http] listen: cannot listen on %s (in use, or "
			                "not an address of this host)", a);
			goto fail;
		}
		H.d[H.n_d++] = d;
		bn_log(BN_LOG_INFO, "http: listening on %s%s", a, H.n_keys ? " (API keys required)" : "");
	}
	for (unsigned i = 0; i < n_passed; i++) {
		int fd = 3 + (int)i;
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		if (getsockname(fd, (struct sockaddr *)&ss, &sl) ||
		    (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)) {
			rc = bn_err_set(err, -EINVAL, "http: passed socket %d is not a TCP socket", fd);
			goto fail;
		}
		if (!H.n_keys && !is_loopback(&ss)) {
			rc = bn_err_set(err, -EACCES, "http: passed socket %d is not on a loopback address "
			                "and there is no api_key_file", fd);
			goto fail;
		}
		if (H.n_d == HTTP_MAX_LISTEN || !(H.d[H.n_d] = mhd_start(cfg, NULL, fd,
		                                                         ss.ss_family == AF_INET6))) {
			rc = bn_err_set(err, -EINVAL, "http: cannot serve on passed socket %d", fd);
			goto fail;
		}
		H.n_d++;
		bn_log(BN_LOG_INFO, "http: listening on a socket systemd passed (fd %d)%s", fd,
		       H.n_keys ? " (API keys required)" : "");
	}
	unsetenv("LISTEN_PID");   /* not for children */
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
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
