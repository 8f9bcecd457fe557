/* The generation thread: it owns the kernel plugin, the worker pool and the context (one
 * sequence per slot), does every (re)load while no slot is busy, admits queued requests in
 * arrival order into free slots and runs the scheduler's steps (sched.c). It talks to the
 * bus thread only through bd.lock, the requests' cancel flags and the eventfd. */
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
#include "calibrate.h"
#include "cpu.h"
#include "error.h"
#include "gguf.h"
#include "guard.h"
#include "kernels.h"
#include "log.h"
#include "model.h"
#include "norms.h"
#include "notify.h"
#include "pool.h"
#include "request.h"
#include "sched.h"
#include "tokenizer.h"
#include "tokjson.h"
#include "vocab.h"

/* generation thread only */
static struct bd_engine w;
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
	bd_guard_unwatch(m);
	bn_model_free(m->model);
	free(m);
}

void bd_wake_bus(void)
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
	rc = bn_tokenizer_for(&m->tok, bn_model_gguf(m->model), hp->n_vocab,
	                      c->tokenizer[0] ? c->tokenizer : NULL, err);
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
	bd_guard_watch(m);
	*out = m;
	return 0;
}

static bool model_settings_differ(const struct bd_config *a, const struct bd_config *b)
{
	return strcmp(a->model_path, b->model_path) || a->strict != b->strict ||
	       a->rescale_gamma != b->rescale_gamma || a->mlock != b->mlock ||
	       strcmp(a->gate, b->gate) || strcmp(a->gate_policy, b->gate_policy) ||
	       strcmp(a->tokenizer, b->tokenizer) ||
	       strcmp(a->template_name, b->template_name);
}

/* The steps of engine_load: each builds its part of e anew when the settings in c (or the
 * parts built before it) change it, and leaves it as w's otherwise. */

static int engine_model(const struct bd_config *c, bool first, struct bd_engine *e,
                        bool *model_changed, struct bn_error *err)
{
	/* a model whose file changed under it is mapped again even with the same settings */
	if (!first && !model_settings_differ(c, &w_cfg) && !atomic_load(&w.model->stale))
		return 0;
	int rc = model_open(&e->model, c, err);
	if (rc)
		return rc;
	*model_changed = true;
	if (c->prefault && !c->mlock && !strcmp(c->numa, "off")) {
		bd_notify("STATUS=Reading the weights in");
		double t0 = bn_now();
		size_t b = bn_model_prefault(e->model->model);
		bn_log(BN_LOG_INFO, "prefault: %.1f MB of %s read in %.2f s", (double)b / 1e6,
		       bn_model_path(e->model->model), bn_now() - t0);
	}
	return 0;
}

static int engine_pool(const struct bd_config *c, bool first, struct bd_engine *e,
                       struct bn_error *err)
{
	if (!first && c->threads == w_cfg.threads && !strcmp(c->cpus, w_cfg.cpus) &&
	    c->smt == w_cfg.smt)
		return 0;
	bd_notify("STATUS=Starting the worker pool");
	struct bn_pool_opts po;
	bn_pool_opts_default(&po);
	po.threads = c->threads;
	po.cpus = strcmp(c->cpus, "auto") ? c->cpus : NULL;
	po.smt = c->smt;
	return bn_pool_new(&e->pool, &po, err);
}

/* Placed again when the model (its pages) or the pool (its nodes) is new. */
static int engine_numa(const struct bd_config *c, bool first, struct bd_engine *e,
                       struct bn_error *err)
{
	if (!strcmp(c->numa, "off") ||
	    !(first || e->model != w.model || e->pool != w.pool || strcmp(c->numa, w_cfg.numa)))
		return 0;
	enum bn_numa nm = BN_NUMA_OFF;
	bn_numa_parse(c->numa, &nm);   /* the config check allowed only valid names */
	const struct bn_gguf *g = bn_model_gguf(e->model->model);
	bd_notify("STATUS=Placing the weights on NUMA nodes (%s)", c->numa);
	return bn_pool_place(e->pool, g->base, g->size, nm, err);
}

/* After the model and the pool: `auto` measures the plugins on them. */
static int engine_kernel(const struct bd_config *c, bool first, struct bd_engine *e,
                         struct bn_error *err)
{
	bool is_auto = !strcmp(c->plugin, "auto");
	if (!(first || strcmp(c->plugin, w_cfg.plugin) || strcmp(c->plugin_dir, w_cfg.plugin_dir) ||
	      c->strict != w_cfg.strict || c->calibrate != w_cfg.calibrate ||
	      (is_auto && c->calibrate && (e->model != w.model || e->pool != w.pool))))
		return 0;
	uint64_t cpu = bn_cpu_features();
	const char *dir = c->plugin_dir[0] ? c->plugin_dir : bn_kernel_default_dir();
	char cache[512];
	bd_notify("STATUS=Loading kernel plugin from %s%s", dir,
	          is_auto && c->calibrate ? " (timing the variants on the model)" : "");
	int rc = bn_kernel_load_for(&e->kernel, dir, is_auto ? NULL : c->plugin, cpu,
	                            e->model->model, e->pool, c->calibrate,
	                            bn_calib_default_cache(cache, sizeof(cache)), NULL, err);
	if (rc)
		return rc;
	struct bn_kernel *k = e->kernel;
	if (c->strict && k->n_fallback)
		return bn_err_set(err, -ENOEXEC, "kernel plugin '%s' lacks %u ops and strict mode "
		                  "refuses the built-in fallback", k->info.name, k->n_fallback);
	bn_log(BN_LOG_INFO, "kernel plugin %s (%s) from %s", k->info.name, k->variant, dir);
	return 0;
}

static int engine_ctx(const struct bd_config *c, bool first, struct bd_engine *e,
                      struct bn_error *err)
{
	if (!first && e->model == w.model && c->context == w_cfg.context &&
	    c->slots == w_cfg.slots && c->step_tokens == w_cfg.step_tokens)
		return 0;
	/* a step carries up to step_tokens prompt and decode rows, and every slot's
	 * next token even when that is more */
	struct bn_ctx_opts co = { .n_ctx = c->context, .n_seq = c->slots,
	                          .n_batch = c->step_tokens + c->slots };
	return bn_ctx_new(&e->ctx, e->model->model, e->kernel, e->pool, &co, err);
}

/* The scheduler's slots sized for e; on failure the old engine gets its own back. */
static int engine_slots(const struct bd_config *c, struct bd_engine *e, struct bn_error *err)
{
	e->slots = c->slots;
	e->n_ctx = bn_ctx_n_ctx(e->ctx);
	e->step_tokens = c->step_tokens;
	if (!bd_sched_reset(e))
		return 0;
	int rc = bn_err_set(err, -ENOMEM, "out of memory for %u slots", c->slots);
	/* the failed reset freed the slots: the old engine needs its own back */
	if (w.ctx && bd_sched_reset(&w))
		bn_log(BN_LOG_ERR, "out of memory restoring the slots");
	return rc;
}

/* Frees the parts of e that are not w's: what a failed load built. */
static void engine_drop_new(struct bd_engine *e)
{
	if (e->ctx != w.ctx)
		bn_ctx_free(e->ctx);
	if (e->pool != w.pool)
		bn_pool_free(e->pool);
	if (e->kernel != w.kernel)
		bn_kernel_unload(e->kernel);
	if (e->model != w.model)
		bd_model_unref(e->model);
}

/* e becomes w, and the parts it replaced are released. */
static void engine_commit(const struct bd_config *c, const struct bd_engine *e)
{
	if (e->ctx == w.ctx) {
		bn_ctx_set_kernel(e->ctx, e->kernel);
		bn_ctx_set_pool(e->ctx, e->pool);
	}
	if (e->ctx != w.ctx)
		bn_ctx_free(w.ctx);
	if (e->pool != w.pool)
		bn_pool_free(w.pool);
	if (e->kernel != w.kernel)
		bn_kernel_unload(w.kernel);
	if (e->model != w.model)
		bd_model_unref(w.model);
	w = *e;
	w_cfg = *c;
	uint64_t kv = bn_ctx_kv_bytes(w.ctx);
	bn_log(BN_LOG_INFO, "engine: %s, kernel %s, %u threads on CPUs %s; %u slots of %u positions, "
	       "%u tokens a step; KV cache %.1f MiB reserved (%.1f MiB a slot), committed as it fills",
	       bn_model_path(w.model->model), w.kernel->info.name, bn_pool_size(w.pool),
	       bn_pool_cpus(w.pool), w.slots, w.n_ctx, w.step_tokens, kv / 1048576.0,
	       kv / 1048576.0 / w.slots);
}

/* Builds whatever the new settings change, all of it before releasing anything, so a
 * failure leaves the old engine serving. */
static int engine_load(const struct bd_config *c, bool *model_changed, struct bn_error *err)
{
	bool first = !w.ctx;
	struct bd_engine e = w;   /* each step replaces its part, or keeps w's */
	*model_changed = false;
	int rc = engine_model(c, first, &e, model_changed, err);
	if (!rc)
		rc = engine_pool(c, first, &e, err);
	if (!rc)
		rc = engine_numa(c, first, &e, err);
	if (!rc)
		rc = engine_kernel(c, first, &e, err);
	if (!rc)
		rc = engine_ctx(c, first, &e, err);
	if (!rc)
		rc = engine_slots(c, &e, err);
	if (rc) {
		engine_drop_new(&e);
		return rc;
	}
	engine_commit(c, &e);
	return 0;
}

/* With bd.lock held: what the bus thread shows of the engine. */
static void publish_info(struct bd_engine_info *in)
{
	snprintf(in->kernel, sizeof(in->kernel), "%s", w.kernel->info.name);
	snprintf(in->kernel_variant, sizeof(in->kernel_variant), "%s",
	         w.kernel->variant ? w.kernel->variant : "");
	in->n_fallback = w.kernel->n_fallback;
	in->threads = bn_pool_size(w.pool);
	snprintf(in->cpus, sizeof(in->cpus), "%s", bn_pool_cpus(w.pool));
	in->n_ctx = w.n_ctx;
	in->slots = w.slots;
	in->step_tokens = w.step_tokens;
	in->kv_bytes = bn_ctx_kv_bytes(w.ctx);
}

/* With bd.lock held and no slot busy. */
static void do_load(void)
{
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
		bd.load_model = bd_model_ref(w.model);
		publish_info(&bd.load_info);
		atomic_store(&bd.kv_positions, 0);
	}
	bd_wake_bus();
}

static void *worker_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&bd.lock);
	for (;;) {
		uint32_t busy = bd_sched_busy();
		/* a reload waits for the running requests; queued ones wait for it */
		if (bd.load_pending && !busy) {
			do_load();
			continue;
		}
		/* stopping: the requests were cancelled and end at their next step */
		if (bd.quit && !busy)
			break;
		struct bd_request *r = NULL;
		if (!bd.load_pending && !bd.quit && w.ctx && bd.qhead && bd_sched_free_slots()) {
			r = bd.qhead;
			bd.qhead = r->next;
			if (!bd.qhead)
				bd.qtail = NULL;
			r->next = NULL;
			bd.n_queued--;
			bd.n_running++;
			r->state = BD_REQ_RUNNING;
		}
		if (!r && !busy) {
			pthread_cond_wait(&bd.cond, &bd.lock);
			continue;
		}
		pthread_mutex_unlock(&bd.lock);
		if (r) {
			bd_wake_bus();
			bd_sched_admit(&w, r);   /* every free slot fills before the next step */
		} else {
			bd_sched_step(&w);
		}
		pthread_mutex_lock(&bd.lock);
	}
	pthread_mutex_unlock(&bd.lock);
	bd_sched_free();
	bn_ctx_free(w.ctx);
	bn_pool_free(w.pool);
	bn_kernel_unload(w.kernel);
	bd_model_unref(w.model);
	memset(&w, 0, sizeof(w));
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
