#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "model.h"
#include "norms.h"

void bn_norm_stat_compute(const float *w, size_t n, struct bn_norm_stat *s)
{
	double sq = 0.0, sum = 0.0, mn = INFINITY, mx = -INFINITY;
	for (size_t i = 0; i < n; i++) {
		double v = w[i];
		sq += v * v;
		sum += v;
		if (v < mn)
			mn = v;
		if (v > mx)
			mx = v;
	}
	s->n = n;
	s->rms = n ? sqrt(sq / (double)n) : 0.0;
	s->mean = n ? sum / (double)n : 0.0;
	s->min = n ? mn : 0.0;
	s->max = n ? mx : 0.0;
	s->ratio = n ? s->rms * sqrt((double)n) : 0.0;
}

/* The rescale experiment: a norm vector whose RMS is within a factor of 2 of 1/sqrt(n) is
 * multiplied by sqrt(n) into a private copy (the map stays read-only). */
static int rescale_one(struct bn_model *m, const char *name, const float **w, size_t n,
                       struct bn_error *err)
{
	struct bn_norm_stat st;
	bn_norm_stat_compute(*w, n, &st);
	double target = 1.0 / sqrt((double)n);
	if (!(st.rms >= target / 2.0 && st.rms <= target * 2.0))
		return 0;
	float factor = sqrtf((float)n);
	float *copy = bn_model_alloc_owned(m, n * sizeof(float));   /* [n] */
	if (!copy)
		return bn_err_set(err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++)
		copy[i] = (*w)[i] * factor;
	struct bn_norm_stat after;
	bn_norm_stat_compute(copy, n, &after);
	*w = copy;
	struct bn_correction *c = realloc(m->corrections, (m->n_corrections + 1) * sizeof(*c));
	if (!c)
		return bn_err_set(err, -ENOMEM, "out of memory");
	m->corrections = c;
	c = &c[m->n_corrections++];
	memset(c, 0, sizeof(*c));
	snprintf(c->tensor, sizeof(c->tensor), "%s", name);
	snprintf(c->kind, sizeof(c->kind), "rescale_gamma");
	c->factor = factor;
	c->rms_before = (float)st.rms;
	c->rms_after = (float)after.rms;
	bn_log(BN_LOG_WARNING, "rescale_gamma: %s multiplied by %.6g (rms %.6g -> %.6g); this changes "
	       "the model's output", name, (double)factor, st.rms, after.rms);
	return 0;
}

int bn_norms_apply_load_opts(struct bn_model *m, const struct bn_model_opts *opts,
                             struct bn_error *err)
{
	if (!opts->rescale_gamma)
		return 0;
	if (opts->strict)
		return bn_err_set(err, -EPERM, "%s: option rescale_gamma changes the model's weights "
		                  "and is refused in strict mode", m->path);
	const struct bn_hparams *hp = &m->hp;
	char name[96];
	int rc;
	for (uint32_t l = 0; l < hp->n_layer; l++) {
		struct bn_layer *L = &m->layers[l];
		snprintf(name, sizeof(name), "blk.%u.attn_norm.weight", l);
		if ((rc = rescale_one(m, name, &L->attn_norm, hp->n_embd, err)))
			return rc;
		snprintf(name, sizeof(name), "blk.%u.attn_sub_norm.weight", l);
		if ((rc = rescale_one(m, name, &L->attn_sub_norm, hp->n_embd, err)))
			return rc;
		snprintf(name, sizeof(name), "blk.%u.ffn_norm.weight", l);
		if ((rc = rescale_one(m, name, &L->ffn_norm, hp->n_embd, err)))
			return rc;
		snprintf(name, sizeof(name), "blk.%u.ffn_sub_norm.weight", l);
		if ((rc = rescale_one(m, name, &L->ffn_sub_norm, hp->n_ff, err)))
			return rc;
	}
	return rescale_one(m, "output_norm.weight", &m->output_norm, hp->n_embd, err);
}
