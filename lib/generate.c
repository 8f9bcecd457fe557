#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "generate.h"

/* Sends text through the stop matcher to the callback. Returns 1 when generation must end
 * (stop string or cancel by the callback), 0 to go on, <0 on error. */
static int emit(struct bn_stop *stop, const struct bn_gen_io *io, const char *text, size_t len,
                enum bn_stop_reason *reason)
{
	const char *out;
	size_t n;
	int r = bn_stop_feed(stop, text, len, &out, &n);
	if (r < 0)
		return r;
	if (n && io->on_text && io->on_text(io->user, out, n)) {
		*reason = BN_STOP_CANCELLED;
		return 1;
	}
	if (r == 1) {
		*reason = BN_STOP_STRING;
		return 1;
	}
	return 0;
}

int bn_gen_seq_init(struct bn_gen_seq *g, const struct bn_tokenizer *t, uint32_t n_ctx,
                    const struct bn_gen_opts *o, const struct bn_gen_io *io, struct bn_error *err)
{
	memset(g, 0, sizeof(*g));
	g->t = t;
	g->o = o;
	g->io = io;
	g->n_ctx = n_ctx;
	g->reason = BN_STOP_NONE;
	int rc = bn_sampler_new(&g->smp, &o->sampling, bn_tokenizer_n_vocab(t), err);
	if (rc)
		return rc;
	rc = bn_stop_init(&g->stop, o->stops, o->n_stops, err);
	if (rc) {
		bn_sampler_free(g->smp);
		g->smp = NULL;
		return rc;
	}
	bn_detok_init(&g->dt, t);
	return 0;
}

int bn_gen_seq_next(struct bn_gen_seq *g, const float *logits, uint32_t p, int32_t *tok,
                    struct bn_error *err)
{
	const struct bn_gen_opts *o = g->o;
	int32_t id = bn_sampler_sample(g->smp, logits);
	bn_sampler_accept(g->smp, id);
	g->n_gen++;
	if (g->io->on_token)
		g->io->on_token(g->io->user, id);
	if (bn_token_is_eog(g->t, id)) {
		g->reason = BN_STOP_EOG;
		return 1;
	}
	const char *text;
	size_t len;
	int rc = bn_detok_feed(&g->dt, id, &text, &len, err);
	if (rc) {
		g->reason = BN_STOP_ERROR;
		return rc;
	}
	int e = emit(&g->stop, g->io, text, len, &g->reason);
	if (e < 0) {
		g->reason = BN_STOP_ERROR;
		return bn_err_set(err, e, "out of memory");
	}
	if (e)
		return 1;
	if (p >= g->n_ctx) {
		g->reason = BN_STOP_CONTEXT_FULL;
		return 1;
	}
	if (o->max_tokens && g->n_gen >= o->max_tokens) {
		g->reason = BN_STOP_LENGTH;   /* no forward pass for a token nobody samples */
		return 1;
	}
	*tok = id;
	return 0;
}

void bn_gen_seq_end(struct bn_gen_seq *g, enum bn_stop_reason reason)
{
	if (reason != BN_STOP_NONE)
		g->reason = reason;
	if (g->reason == BN_STOP_STRING || g->reason == BN_STOP_CANCELLED ||
	    g->reason == BN_STOP_ERROR)
		return;
	const char *text, *out;
	size_t len, n;
	struct bn_error err = { 0 };
	if (!bn_detok_flush(&g->dt, &text, &len, &err) && len)
		emit(&g->stop, g->io, text, len, &g->reason);
	if (g->reason != BN_STOP_STRING && bn_stop_flush(&g->stop, &out, &n) == 0 && n &&
	    g->io->on_text)
		g->io->on_text(g->io->user, out, n);
}

void bn_gen_seq_free(struct bn_gen_seq *g)
{
	if (!g->smp)
		return;   /* never initialised, or already freed */
	bn_detok_free(&g->dt);
	bn_stop_free(&g->stop);
	bn_sampler_free(g->smp);
	g->smp = NULL;
}

int bn_generate(struct bn_ctx *c, uint32_t seq, const struct bn_tokenizer *t,
                const int32_t *prompt, size_t n_prompt, const struct bn_gen_opts *o,
                const struct bn_gen_io *io, struct bn_gen_stats *st, struct bn_error *err)
{
	memset(st, 0, sizeof(*st));
	st->reason = BN_STOP_ERROR;
	uint32_t n_ctx = bn_ctx_n_ctx(c), n_batch = bn_ctx_n_batch(c);
	/* logits are the model's rows; the sampler looks at the tokenizer's ids (fewer when a
	 * tokenizer.json replaces a padded vocabulary: the pad rows are never sampled) */
	uint32_t V = bn_ctx_n_vocab(c);
	if (bn_tokenizer_n_vocab(t) > V)
		return bn_err_set(err, -EINVAL, "the tokenizer has %u tokens, the model %u rows",
		                  bn_tokenizer_n_vocab(t), V);
	if (!n_prompt)
		return bn_err_set(err, -EINVAL, "the prompt is empty");
	if (n_prompt >= n_ctx)
		return bn_err_set(err, -ENOSPC, "prompt of %zu tokens does not fit the context of %u "
		                  "tokens (one position is needed to generate)", n_prompt, n_ctx);
	struct bn_gen_seq g;
	int rc = bn_gen_seq_init(&g, t, n_ctx, o, io, err);
	if (rc)
		return rc;
	float *logits = malloc((size_t)V * sizeof(float));          /* [V] */
	uint32_t *pos = malloc((size_t)n_batch * sizeof(uint32_t));  /* [n_batch] */
	uint32_t *seqs = malloc((size_t)n_batch * sizeof(uint32_t)); /* [n_batch] */
	if (!logits || !pos || !seqs) {
		rc = bn_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	bn_ctx_seq_clear(c, seq);
	st->n_prompt = (uint32_t)n_prompt;

	double t0 = bn_now(), t1 = t0;
	for (size_t done = 0; done < n_prompt;) {
		uint32_t n = (uint32_t)(n_prompt - done < n_batch ? n_prompt - done : n_batch);
		for (uint32_t i = 0; i < n; i++) {
			pos[i] = (uint32_t)(done + i);
			seqs[i] = seq;
		}
		struct bn_batch b = { n, prompt + done, pos, seqs, NULL };
		if ((rc = bn_decode(c, &b, logits, err)))
			goto out;
		done += n;
		if (io->cancelled && io->cancelled(io->user)) {
			g.reason = BN_STOP_CANCELLED;
			goto finish;
		}
	}
	t1 = bn_now();
	st->prompt_s = t1 - t0;

	for (uint32_t p = (uint32_t)n_prompt;; p++) {
		if (io->cancelled && io->cancelled(io->user)) {
			g.reason = BN_STOP_CANCELLED;
			break;
		}
		int32_t tok;
		rc = bn_gen_seq_next(&g, logits, p, &tok, err);
		if (rc < 0)
			goto out;
		if (rc) {
			rc = 0;
			break;
		}
		seqs[0] = seq;
		pos[0] = p;
		struct bn_batch b = { 1, &tok, pos, seqs, NULL };
		if ((rc = bn_decode(c, &b, logits, err)))
			goto out;
	}
finish:
	st->gen_s = bn_now() - t1;
	bn_gen_seq_end(&g, BN_STOP_NONE);
	st->reason = g.reason;
	st->n_gen = g.n_gen;
	st->prompt_tps = st->prompt_s > 0 ? st->n_prompt / st->prompt_s : 0;
	st->gen_tps = st->gen_s > 0 ? st->n_gen / st->gen_s : 0;
out:
	if (rc) {
		st->reason = BN_STOP_ERROR;
		st->n_gen = g.n_gen;
	}
	free(logits);
	free(pos);
	free(seqs);
	bn_gen_seq_free(&g);
	return rc;
}
