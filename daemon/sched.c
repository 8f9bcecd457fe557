/* The scheduler (sched.h): slots, continuous batching, chunked prefill, the prefix cache,
 * streaming and the per-request figures. The sampling, stop strings and detokenizing of
 * each request are lib/generate.c's step API, the same code `bitnet run` runs, so a request
 * gives the same tokens here as there, alone or beside others. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bitnetd.h"
#include "error.h"
#include "guard.h"
#include "kernels.h"
#include "log.h"
#include "model.h"
#include "pool.h"
#include "request.h"
#include "sched.h"
#include "slots.h"
#include "tokenizer.h"

/* A running request's generation state (generation thread only). */
struct job {
	struct bd_request *r;
	uint32_t slot;
	struct bn_gen_seq g;
	struct bn_gen_io io;
	char *buf;                /* [len] text not yet handed to the bus thread */
	size_t len, cap;
	unsigned pieces;          /* text callbacks since the last hand-over */
	double t_admit, t_prefilled, t_last, t_handed;
	float *gaps;              /* [n_gaps] seconds between consecutive tokens */
	uint32_t n_gaps, cap_gaps;
};

static struct bd_slots S;
static struct bd_step step;
static float *logits;         /* [slots][n_vocab] */
static uint32_t n_vocab, step_budget;

int bd_sched_reset(const struct bd_engine *e)
{
	uint32_t V = bn_model_hparams(e->model->model)->n_vocab;
	if (S.slot && S.n == e->slots && S.n_ctx == e->n_ctx && step.cap == e->step_tokens + e->slots &&
	    V == n_vocab) {
		bd_slots_forget(&S);
		return 0;
	}
	bd_sched_free();
	float *l = malloc((size_t)e->slots * V * sizeof(float));
	if (!l || bd_slots_init(&S, e->slots, e->n_ctx) ||
	    bd_step_init(&step, e->step_tokens + e->slots, e->slots)) {
		free(l);
		bd_sched_free();
		return -ENOMEM;
	}
	logits = l;
	n_vocab = V;
	step_budget = e->step_tokens;
	return 0;
}

void bd_sched_free(void)
{
	bd_slots_free(&S);
	bd_step_free(&step);
	free(logits);
	logits = NULL;
	n_vocab = 0;
}

uint32_t bd_sched_busy(void)
{
	return S.slot ? bd_slots_busy(&S) : 0;
}

uint32_t bd_sched_free_slots(void)
{
	return S.slot ? S.n - bd_slots_busy(&S) : 0;
}

/* ---- streaming ----------------------------------------------------------------------- */

static void hand_over(struct job *j)
{
	if (!j->len)
		return;
	struct bd_request *r = j->r;
	pthread_mutex_lock(&bd.lock);
	if (r->out_len + j->len + 1 > r->out_cap) {
		size_t cap = (r->out_len + j->len + 1) * 2;
		char *n = realloc(r->out, cap);
		if (!n) {
			pthread_mutex_unlock(&bd.lock);
			return;
		}
		r->out = n;
		r->out_cap = cap;
	}
	memcpy(r->out + r->out_len, j->buf, j->len);
	r->out_len += j->len;
	pthread_mutex_unlock(&bd.lock);
	j->len = 0;
	j->pieces = 0;
	j->t_handed = bn_now();
	bd_wake_bus();
}

/* Text comes in whole characters; a few tokens' worth goes out per signal. */
static int on_text(void *user, const char *text, size_t len)
{
	struct job *j = user;
	if (j->len + len > j->cap) {
		size_t cap = (j->len + len) * 2 + 64;
		char *n = realloc(j->buf, cap);
		if (!n)
			return 1;
		j->buf = n;
		j->cap = cap;
	}
	memcpy(j->buf + j->len, text, len);
	j->len += len;
	if (++j->pieces >= 4 || bn_now() - j->t_handed > 0.05)
		hand_over(j);
	return 0;
}

/* ---- admission and retirement ---------------------------------------------------------- */

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

/* q-quantile of sorted v [n], nearest rank */
static double quantile(const float *v, uint32_t n, double q)
{
	if (!n)
		return 0;
	uint32_t k = (uint32_t)(q * n);
	return v[k < n ? k : n - 1];
}

/* Ends r with its reason (and error, rc < 0), hands back its slot and tells the bus. */
static void finish(struct bd_request *r, struct job *j, enum bn_stop_reason reason, int rc,
                   const char *msg)
{
	double now = bn_now();
	if (j) {
		if (!rc)
			bn_gen_seq_end(&j->g, reason);
		hand_over(j);
		r->st.reason = rc ? BN_STOP_ERROR : j->g.reason;
		r->st.n_gen = j->g.n_gen;
		double t1 = j->t_prefilled ? j->t_prefilled : now;
		r->st.prompt_s = t1 - j->t_admit;
		r->st.gen_s = j->t_prefilled ? now - j->t_prefilled : 0;
		uint32_t computed = r->st.n_prompt - r->n_cached;
		r->st.prompt_tps = j->t_prefilled && r->st.prompt_s > 0 ? computed / r->st.prompt_s : 0;
		r->st.gen_tps = r->st.gen_s > 0 ? r->st.n_gen / r->st.gen_s : 0;
		if (j->n_gaps) {
			qsort(j->gaps, j->n_gaps, sizeof(float), cmp_float);
			r->gap_p50 = quantile(j->gaps, j->n_gaps, 0.50);
			r->gap_p95 = quantile(j->gaps, j->n_gaps, 0.95);
			r->gap_max = j->gaps[j->n_gaps - 1];
		}
		bd_slots_release(&S, j->slot);
		bn_gen_seq_free(&j->g);
		free(j->buf);
		free(j->gaps);
		free(j);
	} else {
		r->st.reason = rc ? BN_STOP_ERROR : reason;
	}
	if (rc) {
		r->rc = rc;
		if (rc == -ENOSPC)
			r->st.reason = BN_STOP_CONTEXT_FULL;
		snprintf(r->err, sizeof(r->err), "%s", msg);
		bn_log(BN_LOG_WARNING, "request %u: %s", r->id, msg);
	}
	pthread_mutex_lock(&bd.lock);
	r->state = BD_REQ_DONE;
	bd.n_running--;
	atomic_store(&bd.kv_positions, bd_slots_positions(&S));
	pthread_mutex_unlock(&bd.lock);
	bd_wake_bus();
}

/* The receipt: what ran r, copied so that a later reload cannot change it. */
static void receipt(const struct bd_engine *e, struct bd_request *r)
{
	snprintf(r->kernel, sizeof(r->kernel), "%s", e->kernel->info.name);
	snprintf(r->kernel_variant, sizeof(r->kernel_variant), "%s",
	         e->kernel->variant ? e->kernel->variant : "");
	r->threads = bn_pool_size(e->pool);
	snprintf(r->cpus, sizeof(r->cpus), "%s", bn_pool_cpus(e->pool));
	struct bn_model_identity id;
	bn_model_identity(e->model->model, &id);
	snprintf(r->model_path, sizeof(r->model_path), "%s", id.path);
	r->model_size = id.size;
	snprintf(r->arch, sizeof(r->arch), "%s", id.arch);
	snprintf(r->weight_type, sizeof(r->weight_type), "%s", id.weight_type);
	snprintf(r->head_type, sizeof(r->head_type), "%s", id.head_type);
	r->file_type = id.file_type;
	memcpy(r->header_sha256, id.header_sha256, sizeof(r->header_sha256));
	size_t nc;
	bn_model_corrections(e->model->model, &nc);
	r->n_corrections = (uint32_t)nc;
	r->strict = e->model->cfg.strict;
}

void bd_sched_admit(const struct bd_engine *e, struct bd_request *r)
{
	struct bn_error err = { 0 };
	int rc;
	double now = bn_now();
	receipt(e, r);
	r->queue_s = now - r->t_queued;
	if ((rc = bd_model_check(e->model, &err))) {
		finish(r, NULL, BN_STOP_ERROR, rc, err.msg);
		return;
	}
	if (r->m != e->model) {
		/* queued before a model reload: the ids belong to the old vocabulary */
		free(r->ids);
		r->ids = NULL;
		r->n_ids = 0;
		if ((rc = bn_tokenize_marked(e->model->tok, r->text, r->text_len, r->specials,
		                             r->n_specials, r->add_bos, &r->ids, &r->n_ids, &err)))
			{
			finish(r, NULL, BN_STOP_ERROR, rc, err.msg);
			return;
		}
		if (!r->n_ids)
			{
			finish(r, NULL, BN_STOP_ERROR, -EINVAL, "the prompt gives no tokens");
			return;
		}
	}
	r->st.n_prompt = (uint32_t)r->n_ids;
	if (r->n_ids >= e->n_ctx) {
		bn_err_set(&err, -ENOSPC, "prompt of %zu tokens does not fit the context of %u tokens "
		           "(one position is needed to generate)", r->n_ids, e->n_ctx);
		{
			finish(r, NULL, BN_STOP_CONTEXT_FULL, -ENOSPC, err.msg);
			return;
		}
	}
	struct job *j = calloc(1, sizeof(*j));
	if (!j)
		{
			finish(r, NULL, BN_STOP_ERROR, -ENOMEM, "out of memory");
			return;
		}
	j->r = r;
	j->io = (struct bn_gen_io){ on_text, NULL, NULL, j };
	if ((rc = bn_gen_seq_init(&j->g, e->model->tok, e->n_ctx, &r->gen, &j->io, &err))) {
		free(j);
		{
			finish(r, NULL, BN_STOP_ERROR, rc, err.msg);
			return;
		}
	}
	uint32_t reuse = 0;
	int s = bd_slots_pick(&S, r->ids, (uint32_t)r->n_ids, &reuse);
	if (s < 0) {   /* the caller admits only into a free slot */
		bn_gen_seq_free(&j->g);
		free(j);
		{
			finish(r, NULL, BN_STOP_ERROR, -EAGAIN, "no free slot");
			return;
		}
	}
	j->slot = (uint32_t)s;
	j->t_admit = j->t_handed = now;
	bd_slots_take(&S, j->slot, r->ids, (uint32_t)r->n_ids, reuse, j);
	r->slot = j->slot;
	r->n_cached = reuse;
	bn_log(BN_LOG_DEBUG, "request %u: slot %u, %u of %zu prompt tokens from the prefix cache, "
	       "waited %.3f s", r->id, j->slot, reuse, r->n_ids, r->queue_s);
}

static void gap_add(struct job *j, float g)
{
	if (j->n_gaps == j->cap_gaps) {
		uint32_t cap = j->cap_gaps ? j->cap_gaps * 2 : 64;
		float *n = realloc(j->gaps, cap * sizeof(float));
		if (!n)
			return;   /* the figures lose a sample, the request goes on */
		j->gaps = n;
		j->cap_gaps = cap;
	}
	j->gaps[j->n_gaps++] = g;
}

/* ---- one step ---------------------------------------------------------------------------- */

void bd_sched_step(const struct bd_engine *e)
{
	for (uint32_t i = 0; i < S.n; i++) {
		struct job *j = S.slot[i].busy ? S.slot[i].user : NULL;
		if (j && atomic_load(&j->r->cancel))
			finish(j->r, j, BN_STOP_CANCELLED, 0, NULL);
	}
	bd_slots_plan(&S, step_budget, &step);
	if (!step.n)
		return;
	struct bn_error err = { 0 };
	struct bn_batch b = { step.n, step.token, step.pos, step.seq, step.want };
	int rc = bn_decode(e->ctx, &b, logits, &err);
	if (rc) {
		/* nothing of the batch reached the histories: every request in it ends */
		for (uint32_t i = 0; i < S.n; i++) {
			struct job *j = S.slot[i].busy ? S.slot[i].user : NULL;
			bool in = false;
			for (uint32_t k = 0; j && k < step.n && !in; k++)
				in = step.seq[k] == i;
			if (in)
				finish(j->r, j, BN_STOP_ERROR, rc, err.msg);
		}
		return;
	}
	if ((rc = bd_model_check(e->model, &err))) {
		/* the step may have read changed weights: its tokens are not emitted, and every
		 * cache was computed from a file that is gone */
		for (uint32_t i = 0; i < S.n; i++) {
			struct job *j = S.slot[i].busy ? S.slot[i].user : NULL;
			if (j)
				finish(j->r, j, BN_STOP_ERROR, rc, err.msg);
		}
		bd_slots_forget(&S);
		return;
	}
	bd_slots_commit(&S, &step);
	double now = bn_now();
	for (uint32_t w = 0; w < step.n_want; w++) {
		uint32_t i = step.want_slot[w];
		struct bd_slot *sl = &S.slot[i];
		struct job *j = sl->user;
		if (!sl->decoding) {
			j->t_prefilled = now;
			j->r->first_token_s = now - j->r->t_queued;
		} else {
			gap_add(j, (float)(now - j->t_last));
		}
		j->t_last = now;
		int32_t tok;
		rc = bn_gen_seq_next(&j->g, logits + (size_t)w * n_vocab, sl->n_hist, &tok, &err);
		if (rc < 0)
			finish(j->r, j, BN_STOP_ERROR, rc, err.msg);
		else if (rc)
			finish(j->r, j, BN_STOP_NONE, 0, NULL);
		else
			bd_slots_continue(&S, i, tok);
	}
	atomic_store(&bd.kv_positions, bd_slots_positions(&S));
}
