#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "generate.h"
#include "stop.h"
#include "tokenizer.h"

double bn_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

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

int bn_generate(struct bn_ctx *c, uint32_t seq, const struct bn_tokenizer *t,
                const int32_t *prompt, size_t n_prompt, const struct bn_gen_opts *o,
                const struct bn_gen_io *io, struct bn_gen_stats *st, struct bn_error *err)
{
	memset(st, 0, sizeof(*st));
	st->reason = BN_STOP_ERROR;
	uint32_t n_ctx = bn_ctx_n_ctx(c), n_batch = bn_ctx_n_batch(c);
	uint32_t V = bn_tokenizer_n_vocab(t);
	if (!n_prompt)
		return bn_err_set(err, -EINVAL, "the prompt is empty");
	if (n_prompt >= n_ctx)
		return bn_err_set(err, -ENOSPC, "prompt of %zu tokens does not fit the context of %u "
		                  "tokens (one position is needed to generate)", n_prompt, n_ctx);
	struct bn_sampler *smp = NULL;
	struct bn_stop stop;
	struct bn_detok dt;
	int rc = bn_sampler_new(&smp, &o->sampling, V, err);
	if (rc)
		return rc;
	rc = bn_stop_init(&stop, o->stops, o->n_stops, err);
	if (rc) {
		bn_sampler_free(smp);
		return rc;
	}
	bn_detok_init(&dt, t);
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
			st->reason = BN_STOP_CANCELLED;
			goto finish;
		}
	}
	t1 = bn_now();
	st->prompt_s = t1 - t0;

	uint32_t p = (uint32_t)n_prompt;
	enum bn_stop_reason reason = BN_STOP_NONE;
	for (;;) {
		if (o->max_tokens && st->n_gen >= o->max_tokens) {
			reason = BN_STOP_LENGTH;
			break;
		}
		if (io->cancelled && io->cancelled(io->user)) {
			reason = BN_STOP_CANCELLED;
			break;
		}
		int32_t tok = bn_sampler_sample(smp, logits);
		bn_sampler_accept(smp, tok);
		st->n_gen++;
		if (io->on_token)
			io->on_token(io->user, tok);
		if (bn_token_is_eog(t, tok)) {
			reason = BN_STOP_EOG;
			break;
		}
		const char *text;
		size_t len;
		if ((rc = bn_detok_feed(&dt, tok, &text, &len, err)))
			goto out;
		int e = emit(&stop, io, text, len, &reason);
		if (e < 0) {
			rc = bn_err_set(err, e, "out of memory");
			goto out;
		}
		if (e)
			break;
		if (p >= n_ctx) {
			reason = BN_STOP_CONTEXT_FULL;
			break;
		}
		if (o->max_tokens && st->n_gen >= o->max_tokens) {
			reason = BN_STOP_LENGTH;   /* no forward pass for a token nobody samples */
			break;
		}
		seqs[0] = seq;
		pos[0] = p;
		struct bn_batch b = { 1, &tok, pos, seqs, NULL };
		if ((rc = bn_decode(c, &b, logits, err)))
			goto out;
		p++;
	}
	st->reason = reason;
finish:
	st->gen_s = bn_now() - t1;
	if (st->reason != BN_STOP_STRING && st->reason != BN_STOP_CANCELLED) {
		const char *text, *out;
		size_t len, n;
		if (!bn_detok_flush(&dt, &text, &len, err) && len)
			emit(&stop, io, text, len, &st->reason);
		if (st->reason != BN_STOP_STRING && bn_stop_flush(&stop, &out, &n) == 0 && n &&
		    io->on_text)
			io->on_text(io->user, out, n);
	}
	st->prompt_tps = st->prompt_s > 0 ? st->n_prompt / st->prompt_s : 0;
	st->gen_tps = st->gen_s > 0 ? st->n_gen / st->gen_s : 0;
out:
	if (rc)
		st->reason = BN_STOP_ERROR;
	free(logits);
	free(pos);
	free(seqs);
	bn_detok_free(&dt);
	bn_stop_free(&stop);
	bn_sampler_free(smp);
	return rc;
}
