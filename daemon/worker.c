/* The generation thread: it owns the kernel plugin, the worker pool and the context, does
 * every (re)load between requests, and runs the FIFO queue one request at a time through
 * bn_generate (the context has one sequence; more sequences would mean more slots here).
 * It talks to the bus thread only through bd.lock and the eventfd. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "bitnetd.h"
#include "cpu.h"
#include "error.h"
#include "gguf.h"
#include "kernels.h"
#include "log.h"
#include "norms.h"
#include "model.h"
#include "pool.h"
#include "tokenizer.h"
#include "vocab.h"

/* generation thread only */
static struct bn_kernel *w_kernel;
static struct bn_pool *w_pool;
static struct bn_ctx *w_ctx;
static struct bd_model *w_model;
static struct bd_config w_cfg;
static pthread_t w_thread;
static bool w_started;

struct bd_model *bd_model_ref(struct bd_model *m)
{
	if (m)
		atomic_fetch_add(&m->refs, 1);
	return m;
}

void bd_model_unref(struct bd_model *m)
{
	if (!m || atomic_fetch_sub(&m->refs, 1) != 1)
		return;
	bn_tokenizer_free(m->tok);
	bn_model_free(m->model);
	free(m);
}

static void wake_bus(void)
{
	uint64_t one = 1;
	ssize_t n = write(bd.efd, &one, sizeof(one));
	(void)n;
}

static int model_open(struct bd_model **out, const struct bd_config *c, struct bn_error *err)
{
	struct bd_model *m = calloc(1, sizeof(*m));
	if (!m)
		return bn_err_set(err, -ENOMEM, "out of memory");
	atomic_init(&m->refs, 1);
	m->cfg = *c;
	enum bn_gate gate = BN_GATE_WARN;
	bn_gate_parse(c->gate, &gate);   /* the config check accepted only valid names */
	struct bn_model_opts mo = { .mlock = c->mlock, .rescale_gamma = c->rescale_gamma,
	                            .strict = c->strict, .gate = (int)gate,
	                            .policy = c->gate_policy[0] ? c->gate_policy : NULL };
	bd_notify("STATUS=Mapping and validating %s", c->model_path);
	int rc = bn_model_load(&m->model, c->model_path, &mo, err);
	if (rc) {
		free(m);
		return rc;
	}
	const struct bn_hparams *hp = bn_model_hparams(m->model);
	struct bn_vocab v = { 0 };
	rc = bn_vocab_from_gguf(&v, bn_model_gguf(m->model), err);
	if (!rc)
		rc = bn_tokenizer_new(&m->tok, &v, hp->arch_name, err);
	bn_vocab_free(&v);
	if (rc) {
		bn_err_prefix(err, "%s", c->model_path);
		bn_model_free(m->model);
		free(m);
		return rc;
	}
	bool is_auto = false;
	bn_chat_format_parse(c->template_name, &m->chat_fmt, &is_auto);
	if (is_auto) {
		struct bn_gguf_str t;
		char *embedded = NULL;
		if (!bn_gguf_get_str(bn_model_gguf(m->model), "tokenizer.chat_template", &t))
			embedded = strndup(t.ptr, t.len);
		m->chat_fmt = bn_chat_auto(hp->arch_name, embedded);
		free(embedded);
	}
	for (size_t i = 0; i < m->model->n_corrections; i++) {
		const struct bn_correction *cr = &m->model->corrections[i];
		bn_log(BN_LOG_NOTICE, "correction at load: %s %s x%g (rms %g -> %g)", cr->tensor,
		       cr->kind, cr->factor, cr->rms_before, cr->rms_after);
	}
	*out = m;
	return 0;
}

static bool model_settings_differ(const struct bd_config *a, const struct bd_config *b)
{
	return strcmp(a->model_path, b->model_path) || a->strict != b->strict ||
	       a->rescale_gamma != b->rescale_gamma || a->mlock != b->mlock ||
	       strcmp(a->gate, b->gate) || strcmp(a->gate_policy, b->gate_policy) ||
	       strcmp(a->template_name, b->template_name);
}

/* Builds whatever the new settings change, all of it before releasing anything, so a
 * failure leaves the old engine serving. */
static int engine_load(const struct bd_config *c, bool *model_changed, struct bn_error *err)
{
	bool first = !w_ctx;
	struct bd_model *m = w_model;
	struct bn_kernel *k = w_kernel;
	struct bn_pool *p = w_pool;
	struct bn_ctx *ctx = w_ctx;
	int rc = 0;
	*model_changed = false;

	uint64_t cpu = bn_cpu_features();
	const char *dir = c->plugin_dir[0] ? c->plugin_dir : bn_kernel_default_dir();
	const char *plugin = strcmp(c->plugin, "auto") ? c->plugin : NULL;
	if (first || strcmp(c->plugin, w_cfg.plugin) || strcmp(c->plugin_dir, w_cfg.plugin_dir) ||
	    c->strict != w_cfg.strict) {
		bd_notify("STATUS=Loading kernel plugin from %s", dir);
		if ((rc = bn_kernel_load(&k, dir, plugin, cpu, err)))
			goto fail;
		if (c->strict && k->n_fallback) {
			rc = bn_err_set(err, -ENOEXEC, "kernel plugin '%s' lacks %u ops and strict mode "
			                "refuses the built-in fallback", k->info.name, k->n_fallback);
			goto fail;
		}
		bn_log(BN_LOG_INFO, "kernel plugin %s (%s) from %s", k->info.name, k->variant, dir);
	}
	if (first || model_settings_differ(c, &w_cfg)) {
		if ((rc = model_open(&m, c, err)))
			goto fail;
		*model_changed = true;
	}
	if (first || c->threads != w_cfg.threads || strcmp(c->cpus, w_cfg.cpus) || c->smt != w_cfg.smt) {
		bd_notify("STATUS=Starting the worker pool");
		struct bn_pool_opts po;
		bn_pool_opts_default(&po);
		po.threads = c->threads;
		po.cpus = strcmp(c->cpus, "auto") ? c->cpus : NULL;
		po.smt = c->smt;
		if ((rc = bn_pool_new(&p, &po, err)))
			goto fail;
	}
	if (strcmp(c->numa, "off") &&
	    (first || m != w_model || p != w_pool || strcmp(c->numa, w_cfg.numa))) {
		enum bn_numa nm = BN_NUMA_OFF;
		bn_numa_parse(c->numa, &nm);   /* the config check allowed only valid names */
		const struct bn_gguf *g = bn_model_gguf(m->model);
		bd_notify("STATUS=Placing the weights on NUMA nodes (%s)", c->numa);
		if ((rc = bn_pool_place(p, g->base, g->size, nm, err)))
			goto fail;
	}
	if (first || m != w_model || c->context != w_cfg.context) {
		struct bn_ctx_opts co = { .n_ctx = c->context, .n_seq = 1, .n_batch = 0 };
		if ((rc = bn_ctx_new(&ctx, m->model, k, p, &co, err)))
			goto fail;
	} else {
		bn_ctx_set_kernel(ctx, k);
		bn_ctx_set_pool(ctx, p);
	}
	/* commit: release what was replaced */
	if (ctx != w_ctx)
		bn_ctx_free(w_ctx);
	if (p != w_pool)
		bn_pool_free(w_pool);
	if (k != w_kernel)
		bn_kernel_unload(w_kernel);
	if (m != w_model)
		bd_model_unref(w_model);
	w_ctx = ctx;
	w_pool = p;
	w_kernel = k;
	w_model = m;
	w_cfg = *c;
	bn_log(BN_LOG_INFO, "engine: %s, kernel %s, %u threads on CPUs %s, context %u",
	       bn_model_path(m->model), k->info.name, bn_pool_size(p), bn_pool_cpus(p),
	       bn_ctx_n_ctx(ctx));
	return 0;
fail:
	if (ctx != w_ctx)
		bn_ctx_free(ctx);
	if (p != w_pool)
		bn_pool_free(p);
	if (k != w_kernel)
		bn_kernel_unload(k);
	if (m != w_model)
		bd_model_unref(m);
	return rc;
}

/* ---- streaming ---------------------------------------------------------------------- */

struct run_state {
	struct bd_request *r;
	char *buf;          /* [len] text not yet handed to the bus thread */
	size_t len, cap;
	unsigned pieces;    /* callbacks since the last hand-over */
	double last;
};

static void hand_over(struct run_state *s)
{
	if (!s->len)
		return;
	struct bd_request *r = s->r;
	pthread_mutex_lock(&bd.lock);
	if (r->out_len + s->len + 1 > r->out_cap) {
		size_t cap = (r->out_len + s->len + 1) * 2;
		char *n = realloc(r->out, cap);
		if (!n) {
			pthread_mutex_unlock(&bd.lock);
			return;
		}
		r->out = n;
		r->out_cap = cap;
	}
	memcpy(r->out + r->out_len, s->buf, s->len);
	r->out_len += s->len;
	pthread_mutex_unlock(&bd.lock);
	s->len = 0;
	s->pieces = 0;
	s->last = bn_now();
	wake_bus();
}

/* Text comes in whole characters; a few tokens' worth goes out per signal. */
static int on_text(void *user, const char *text, size_t len)
{
	struct run_state *s = user;
	if (s->len + len > s->cap) {
		size_t cap = (s->len + len) * 2 + 64;
		char *n = realloc(s->buf, cap);
		if (!n)
			return 1;
		s->buf = n;
		s->cap = cap;
	}
	memcpy(s->buf + s->len, text, len);
	s->len += len;
	if (++s->pieces >= 4 || bn_now() - s->last > 0.05)
		hand_over(s);
	return 0;
}

static bool on_cancel(void *user)
{
	struct run_state *s = user;
	return atomic_load(&s->r->cancel);
}

static void run_request(struct bd_request *r)
{
	struct bn_error err = { 0 };
	struct run_state s = { .r = r, .last = bn_now() };
	snprintf(r->kernel, sizeof(r->kernel), "%s", w_kernel->info.name);
	snprintf(r->kernel_variant, sizeof(r->kernel_variant), "%s",
	         w_kernel->variant ? w_kernel->variant : "");
	r->threads = bn_pool_size(w_pool);
	snprintf(r->cpus, sizeof(r->cpus), "%s", bn_pool_cpus(w_pool));
	struct bn_model_identity id;
	bn_model_identity(w_model->model, &id);
	snprintf(r->model_path, sizeof(r->model_path), "%s", id.path);
	r->model_size = id.size;
	snprintf(r->arch, sizeof(r->arch), "%s", id.arch);
	snprintf(r->weight_type, sizeof(r->weight_type), "%s", id.weight_type);
	r->file_type = id.file_type;
	memcpy(r->header_sha256, id.header_sha256, sizeof(r->header_sha256));
	size_t nc;
	bn_model_corrections(w_model->model, &nc);
	r->n_corrections = (uint32_t)nc;
	r->strict = w_model->cfg.strict;
	if (r->m != w_model) {
		/* queued before a model reload: the ids belong to the old vocabulary */
		free(r->ids);
		r->ids = NULL;
		r->rc = bn_tokenize(w_model->tok, r->text, r->text_len, r->add_bos, r->parse_special,
		                    &r->ids, &r->n_ids, &err);
		if (r->rc)
			goto out;
	}
	struct bn_gen_io io = { on_text, on_cancel, NULL, &s };
	r->rc = bn_generate(w_ctx, 0, w_model->tok, r->ids, r->n_ids, &r->gen, &io, &r->st, &err);
	hand_over(&s);
out:
	if (r->rc) {
		if (r->rc == -ENOSPC)
			r->st.reason = BN_STOP_CONTEXT_FULL;
		else
			r->st.reason = BN_STOP_ERROR;
		snprintf(r->err, sizeof(r->err), "%s", err.msg);
		bn_log(BN_LOG_WARNING, "request %u: %s", r->id, err.msg);
	}
	free(s.buf);
}

static void *worker_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&bd.lock);
	for (;;) {
		if (bd.load_pending) {
			struct bd_config c = bd.load_cfg;
			bd.load_pending = false;
			pthread_mutex_unlock(&bd.lock);
			struct bn_error err = { 0 };
			bool changed = false;
			int rc = engine_load(&c, &changed, &err);
			pthread_mutex_lock(&bd.lock);
			bd.load_done = true;
			bd.load_rc = rc;
			snprintf(bd.load_err, sizeof(bd.load_err), "%s", rc ? err.msg : "");
			bd.load_model_changed = changed;
			if (!rc) {
				bd_model_unref(bd.load_model);
				bd.load_model = bd_model_ref(w_model);
				struct bd_engine_info *in = &bd.load_info;
				snprintf(in->kernel, sizeof(in->kernel), "%s", w_kernel->info.name);
				snprintf(in->kernel_variant, sizeof(in->kernel_variant), "%s",
				         w_kernel->variant ? w_kernel->variant : "");
				in->n_fallback = w_kernel->n_fallback;
				in->threads = bn_pool_size(w_pool);
				snprintf(in->cpus, sizeof(in->cpus), "%s", bn_pool_cpus(w_pool));
				in->n_ctx = bn_ctx_n_ctx(w_ctx);
			}
			wake_bus();
			continue;
		}
		if (bd.quit)
			break;
		struct bd_request *r = bd.qhead;
		if (!r || !w_ctx) {
			pthread_cond_wait(&bd.cond, &bd.lock);
			continue;
		}
		bd.qhead = r->next;
		if (!bd.qhead)
			bd.qtail = NULL;
		r->next = NULL;
		bd.n_queued--;
		bd.running = r;
		r->state = BD_REQ_RUNNING;
		pthread_mutex_unlock(&bd.lock);
		wake_bus();
		run_request(r);
		pthread_mutex_lock(&bd.lock);
		r->state = BD_REQ_DONE;
		bd.running = NULL;
		wake_bus();
	}
	pthread_mutex_unlock(&bd.lock);
	bn_ctx_free(w_ctx);
	bn_pool_free(w_pool);
	bn_kernel_unload(w_kernel);
	bd_model_unref(w_model);
	w_ctx = NULL;
	w_pool = NULL;
	w_kernel = NULL;
	w_model = NULL;
	return NULL;
}

int bd_worker_start(void)
{
	int e = pthread_create(&w_thread, NULL, worker_main, NULL);
	if (e)
		return -e;
	w_started = true;
	return 0;
}

void bd_worker_load(const struct bd_config *cfg)
{
	pthread_mutex_lock(&bd.lock);
	bd.load_cfg = *cfg;
	bd.load_pending = true;
	pthread_cond_signal(&bd.cond);
	pthread_mutex_unlock(&bd.lock);
}

void bd_worker_stop(void)
{
	if (!w_started)
		return;
	pthread_mutex_lock(&bd.lock);
	bd.quit = true;
	pthread_cond_signal(&bd.cond);
	pthread_mutex_unlock(&bd.lock);
	pthread_join(w_thread, NULL);
	w_started = false;
}

void bd_request_free(struct bd_request *r)
{
	if (!r)
		return;
	free(r->owner);
	bd_model_unref(r->m);
	free(r->text);
	free(r->ids);
	for (size_t i = 0; i < r->n_stops; i++)
		free(r->stops[i]);
	free(r->stops);
	free(r->out);
	free(r);
}
