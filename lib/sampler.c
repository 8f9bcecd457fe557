#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "sampler.h"

struct cand {
	float logit;
	int32_t id;
};

struct bn_sampler {
	struct bn_sampler_opts o;
	uint32_t n_vocab;
	struct bn_rng rng;      /* lib/rng.h */
	struct cand *cands;     /* [n_vocab] penalised logits in id order, then reused as a heap */
	struct cand *sorted;    /* [n_vocab] candidates best first, filled only as far as needed */
	double *w;              /* [n_vocab] unnormalised softmax weights, id order */
	uint8_t *seen;          /* [n_vocab] 0 except while applying the penalty */
	int32_t *hist;          /* [repeat_window] ring of accepted tokens */
	uint32_t n_hist;        /* valid entries in hist */
	uint32_t hist_pos;      /* next slot to overwrite */
};

/* ---- options ---------------------------------------------------------------- */

void bn_sampler_opts_default(struct bn_sampler_opts *o)
{
	o->temperature = 0.8f;
	o->top_k = 40;
	o->top_p = 0.95f;
	o->min_p = 0.05f;
	o->repeat_penalty = 1.0f;
	o->repeat_window = 64;
	o->seed = 0;
}

int bn_sampler_opts_check(const struct bn_sampler_opts *o, struct bn_error *err)
{
	/* written as !(in range) so that NaN fails every check */
	if (!(o->temperature >= 0.0f && o->temperature <= BN_SAMPLER_MAX_TEMPERATURE))
		return bn_err_set(err, -ERANGE, "option temperature: %g is out of range [0, %g]",
				  (double)o->temperature, (double)BN_SAMPLER_MAX_TEMPERATURE);
	if (!(o->top_p > 0.0f && o->top_p <= 1.0f))
		return bn_err_set(err, -ERANGE, "option top_p: %g is out of range (0, 1]",
				  (double)o->top_p);
	if (!(o->min_p >= 0.0f && o->min_p <= 1.0f))
		return bn_err_set(err, -ERANGE, "option min_p: %g is out of range [0, 1]",
				  (double)o->min_p);
	if (!(o->repeat_penalty > 0.0f && o->repeat_penalty <= BN_SAMPLER_MAX_REPEAT_PENALTY))
		return bn_err_set(err, -ERANGE, "option repeat_penalty: %g is out of range (0, %g]",
				  (double)o->repeat_penalty, (double)BN_SAMPLER_MAX_REPEAT_PENALTY);
	if (o->repeat_window > BN_SAMPLER_MAX_REPEAT_WINDOW)
		return bn_err_set(err, -ERANGE, "option repeat_window: %u is out of range [0, %u]",
				  o->repeat_window, BN_SAMPLER_MAX_REPEAT_WINDOW);
	return 0;
}

/* ---- life cycle -------------------------------------------------------------- */

int bn_sampler_new(struct bn_sampler **out, const struct bn_sampler_opts *o, uint32_t n_vocab,
		   struct bn_error *err)
{
	*out = NULL;
	int rc = bn_sampler_opts_check(o, err);
	if (rc < 0)
		return rc;
	if (n_vocab == 0 || n_vocab > INT32_MAX)
		return bn_err_set(err, -EINVAL, "sampler: vocabulary size %u is out of range", n_vocab);
	struct bn_sampler *s = calloc(1, sizeof(*s));
	if (!s)
		return bn_err_set(err, -ENOMEM, "sampler: out of memory");
	s->o = *o;
	s->n_vocab = n_vocab;
	s->cands = malloc((size_t)n_vocab * sizeof(*s->cands));
	s->sorted = malloc((size_t)n_vocab * sizeof(*s->sorted));
	s->w = malloc((size_t)n_vocab * sizeof(*s->w));
	s->seen = calloc(n_vocab, 1);
	if (o->repeat_window)
		s->hist = malloc((size_t)o->repeat_window * sizeof(*s->hist));
	if (!s->cands || !s->sorted || !s->w || !s->seen || (o->repeat_window && !s->hist)) {
		bn_sampler_free(s);
		return bn_err_set(err, -ENOMEM, "sampler: out of memory for %u tokens", n_vocab);
	}
	bn_sampler_reset(s);
	*out = s;
	return 0;
}

void bn_sampler_free(struct bn_sampler *s)
{
	if (!s)
		return;
	free(s->cands);
	free(s->sorted);
	free(s->w);
	free(s->seen);
	free(s->hist);
	free(s);
}

void bn_sampler_reset(struct bn_sampler *s)
{
	s->n_hist = 0;
	s->hist_pos = 0;
	bn_rng_seed(&s->rng, s->o.seed);
}

void bn_sampler_accept(struct bn_sampler *s, int32_t tok)
{
	if (tok < 0 || (uint32_t)tok >= s->n_vocab || s->o.repeat_window == 0)
		return;
	s->hist[s->hist_pos] = tok;
	s->hist_pos = (s->hist_pos + 1) % s->o.repeat_window;
	if (s->n_hist < s->o.repeat_window)
		s->n_hist++;
}

/* ---- candidate order: logit descending, then id ascending (a total order) ---- */

static inline bool better(struct cand a, struct cand b)
{
	return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

/* Restores a heap whose root is its best element (root_is_best) or its worst one. */
static void sift_down(struct cand *h, size_t n, size_t i, bool root_is_best)
{
	struct cand v = h[i];
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && (root_is_best ? better(h[c + 1], h[c]) : better(h[c], h[c + 1])))
			c++;
		if (root_is_best ? !better(h[c], v) : !better(v, h[c]))
			break;
		h[i] = h[c];
		i = c;
	}
	h[i] = v;
}

/* The k best of c[0..n) into out[0..k), best first, in O(n log k): a heap of the k best
 * so far with the worst at its root rejects most candidates with one comparison. */
static void select_top_k(const struct cand *c, size_t n, struct cand *out, size_t k)
{
	for (size_t i = 0; i < k; i++)
		out[i] = c[i];
	for (size_t i = k / 2; i-- > 0;)
		sift_down(out, k, i, false);
	for (size_t i = k; i < n; i++) {
		if (better(c[i], out[0])) {
			out[0] = c[i];
			sift_down(out, k, 0, false);
		}
	}
	/* heapsort: moving the worst to the end each time leaves the best first */
	for (size_t m = k; m > 1; m--) {
		struct cand t = out[0];
		out[0] = out[m - 1];
		out[m - 1] = t;
		sift_down(out, m - 1, 0, false);
	}
}

static void build_cands(struct bn_sampler *s, const float *logits)
{
	struct cand *c = s->cands;
	for (uint32_t i = 0; i < s->n_vocab; i++) {
		float l = logits[i];
		c[i].logit = isnan(l) ? -INFINITY : l;
		c[i].id = (int32_t)i;
	}
	float pen = s->o.repeat_penalty;
	if (pen == 1.0f || s->n_hist == 0)
		return;
	for (uint32_t j = 0; j < s->n_hist; j++) {
		int32_t t = s->hist[j];
		if (s->seen[t])
			continue;
		s->seen[t] = 1;
		if (c[t].logit > 0.0f)
			c[t].logit /= pen;
		else
			c[t].logit *= pen;
	}
	for (uint32_t j = 0; j < s->n_hist; j++)
		s->seen[s->hist[j]] = 0;
}

/* Draws from w[0..n) (unnormalised, sum total, summed in this order) and returns the
 * chosen index. A weight of 0 is never chosen. */
static size_t draw(const double *w, size_t n, double total, double r)
{
	double u = r * total, acc = 0.0;
	size_t last = 0;
	for (size_t i = 0; i < n; i++) {
		if (w[i] <= 0.0)
			continue;
		acc += w[i];
		last = i;
		if (acc > u)
			return i;
	}
	return last;   /* r * total rounded up to total */
}

int32_t bn_sampler_sample(struct bn_sampler *s, const float *logits)
{
	const size_t n = s->n_vocab;
	if (s->o.temperature == 0.0f && (s->o.repeat_penalty == 1.0f || s->n_hist == 0)) {
		/* plain argmax needs no copy; NaN never compares greater */
		size_t best = 0;
		float bl = isnan(logits[0]) ? -INFINITY : logits[0];
		for (size_t i = 1; i < n; i++)
			if (logits[i] > bl) {
				bl = logits[i];
				best = i;
			}
		return (int32_t)best;
	}
	build_cands(s, logits);
	struct cand *c = s->cands;

	if (s->o.temperature == 0.0f) {
		size_t best = 0;
		for (size_t i = 1; i < n; i++)
			if (c[i].logit > c[best].logit)
				best = i;
		return c[best].id;
	}

	const double r = bn_rng_double(&s->rng);
	const double T = s->o.temperature;
	const double top_p = s->o.top_p, min_p = s->o.min_p;
	const bool cut = top_p < 1.0 || min_p > 0.0;
	double *w = s->w;

	if (s->o.top_k > 0 && s->o.top_k < n) {
		/* small sorted set: weights, cuts and the draw all in sorted order */
		const size_t k = s->o.top_k;
		struct cand *sc = s->sorted;
		select_top_k(c, n, sc, k);
		double lmax = sc[0].logit;
		if (lmax == -INFINITY)
			return sc[0].id;
		double z = 0.0;
		for (size_t j = 0; j < k; j++) {
			w[j] = exp(((double)sc[j].logit - lmax) / T);
			z += w[j];
		}
		size_t kept = k;
		double total = z;
		if (cut) {
			double cum = 0.0;
			size_t j;
			for (j = 0; j < k; j++) {
				if (j > 0 && w[j] < min_p)   /* w[0] == 1: the ratio to the best */
					break;
				cum += w[j];
				if (top_p < 1.0 && cum >= top_p * z) {
					j++;
					break;
				}
			}
			kept = j;
			total = cum;
		}
		return sc[draw(w, kept, total, r)].id;
	}

	/* the whole vocabulary: the normaliser needs no order */
	float lmaxf = -INFINITY;
	size_t imax = 0;
	for (size_t i = 0; i < n; i++)
		if (c[i].logit > lmaxf) {
			lmaxf = c[i].logit;
			imax = i;
		}
	if (lmaxf == -INFINITY)
		return c[imax].id;
	const double lmax = lmaxf;
	double z = 0.0;
	for (size_t i = 0; i < n; i++) {
		w[i] = exp(((double)c[i].logit - lmax) / T);
		z += w[i];
	}
	if (!cut)
		return c[draw(w, n, z, r)].id;

	/* Cuts need the best candidates in order, but usually only a few of them. Tokens
	 * under the min-p bar or of weight 0 can never be drawn: drop them in one pass, then
	 * heapify (O(n)) and pop only until top-p or min-p ends the set. */
	size_t hn = 0;
	for (size_t i = 0; i < n; i++)
		if (w[i] > 0.0 && w[i] >= min_p)
			c[hn++] = c[i];
	for (size_t i = hn / 2; i-- > 0;)
		sift_down(c, hn, i, true);
	struct cand *sc = s->sorted;
	size_t kept = 0;
	double cum = 0.0;
	while (hn > 0) {
		struct cand top = c[0];
		double wt = exp(((double)top.logit - lmax) / T);   /* the same value as w[id] */
		sc[kept] = top;
		w[kept] = wt;   /* id-order weights are no longer needed */
		kept++;
		cum += wt;
		c[0] = c[--hn];
		if (hn > 0)
			sift_down(c, hn, 0, true);
		if (top_p < 1.0 && cum >= top_p * z)
			break;
	}
	return sc[draw(w, kept, cum, r)].id;
}

const char *bn_stop_reason_name(enum bn_stop_reason r)
{
	switch (r) {
	case BN_STOP_NONE: return "none";
	case BN_STOP_EOG: return "stop";
	case BN_STOP_LENGTH: return "length";
	case BN_STOP_STRING: return "stop-string";
	case BN_STOP_CANCELLED: return "cancelled";
	case BN_STOP_CONTEXT_FULL: return "context-full";
	case BN_STOP_ERROR: return "error";
	}
	return "unknown";
}
