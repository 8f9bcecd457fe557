/* What /metrics shows: the daemon's counters and gauges, and histograms of time to first
 * token, inter-token time and queue wait over every request (D-Bus and HTTP), in the
 * Prometheus text format. The histograms belong to the bus thread. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "bitnetd.h"
#include "metrics.h"

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

void bd_metrics_observe(const struct bd_request *r)
{
	if (r->st.n_gen)
		hist_add(&h_ttft, r->first_token_s);
	if (r->st.n_gen > 1)
		hist_add(&h_itl, r->st.gen_s / (double)(r->st.n_gen - 1));
	hist_add(&h_queue, r->queue_s);
}

/* HTTP responses by status, counted by the connection threads (atomics). */
static const unsigned codes[] = { 200, 400, 401, 404, 405, 413, 429, 500, 503 };
#define N_CODES (sizeof(codes) / sizeof(codes[0]))
static _Atomic uint64_t code_count[N_CODES];

void bd_metrics_http_code(unsigned code)
{
	for (size_t i = 0; i < N_CODES; i++)
		if (codes[i] == code)
			atomic_fetch_add(&code_count[i], 1);
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

char *bd_metrics_text(void)
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
	return b.p;
}
