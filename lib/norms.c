#include "config.h"

#include <errno.h>
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "model.h"
#include "norms.h"

#ifdef HAVE_INIPARSER_INIPARSER_H
#include <iniparser/iniparser.h>
#else
#include <iniparser.h>
#endif

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

static int norms_gate(struct bn_model *m, const struct bn_model_opts *opts, struct bn_error *err)
{
	enum bn_gate gate = (enum bn_gate)opts->gate;
	if (gate == BN_GATE_NONE)
		return 0;
	struct bn_norm_policy pol;
	int rc = opts->policy ? bn_norm_policy_load(opts->policy, &pol, err)
	                      : bn_norm_policy_builtin(m, &pol, err);
	if (rc)
		return rc;
	struct bn_norm_report *r;
	size_t n;
	int bad = bn_norms_report(m, &pol, &r, &n, err);
	if (bad < 0) {
		bn_norm_policy_free(&pol);
		return bad;
	}
	bool fatal = gate == BN_GATE_STRICT || opts->strict;
	const char *first = NULL;
	for (size_t i = 0; i < n; i++) {
		if (r[i].verdict != BN_NORM_LOW && r[i].verdict != BN_NORM_HIGH)
			continue;
		const struct bn_norm_rule *ru = &pol.rules[r[i].rule];
		bn_log(fatal ? BN_LOG_ERR : BN_LOG_WARNING, "norm gate (%s): %s rms %.6g is %s "
		       "(allowed %g..%g)", pol.name, r[i].tensor, r[i].st.rms,
		       bn_norm_verdict_name(r[i].verdict), ru->min, ru->max);
		if (!first)
			first = r[i].tensor;
	}
	if (bad && fatal)
		rc = bn_err_set(err, -EBADMSG, "%s: %d norm tensor%s out of range under %s (first: %s); "
		                "gate is %s%s", m->path, bad, bad == 1 ? "" : "s", pol.name, first,
		                bn_gate_name(gate), opts->strict ? " in strict mode" : "");
	free(r);
	bn_norm_policy_free(&pol);
	return rc;
}

int bn_norms_apply_load_opts(struct bn_model *m, const struct bn_model_opts *opts,
                             struct bn_error *err)
{
	int rc = bn_norms_rescale(m, opts, err);
	return rc ? rc : norms_gate(m, opts, err);
}

int bn_norms_rescale(struct bn_model *m, const struct bn_model_opts *opts, struct bn_error *err)
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
		if (hp->sub_norms && (rc = rescale_one(m, name, &L->attn_sub_norm, hp->n_embd, err)))
			return rc;
		snprintf(name, sizeof(name), "blk.%u.ffn_norm.weight", l);
		if ((rc = rescale_one(m, name, &L->ffn_norm, hp->n_embd, err)))
			return rc;
		snprintf(name, sizeof(name), "blk.%u.ffn_sub_norm.weight", l);
		if (hp->sub_norms && (rc = rescale_one(m, name, &L->ffn_sub_norm, hp->n_ff, err)))
			return rc;
	}
	return rescale_one(m, "output_norm.weight", &m->output_norm, hp->n_embd, err);
}

int bn_gate_parse(const char *s, enum bn_gate *out)
{
	static const char *const names[] = { "none", "warn", "strict" };
	for (int i = 0; i < 3; i++) {
		if (!strcmp(s, names[i])) {
			*out = (enum bn_gate)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *bn_gate_name(enum bn_gate g)
{
	return g == BN_GATE_STRICT ? "strict" : g == BN_GATE_WARN ? "warn" : "none";
}

const char *bn_norm_verdict_name(enum bn_norm_verdict v)
{
	switch (v) {
	case BN_NORM_OK: return "ok";
	case BN_NORM_LOW: return "low";
	case BN_NORM_HIGH: return "high";
	default: return "no-rule";
	}
}

static int policy_add(struct bn_norm_policy *p, const char *section, const char *pattern,
                      double min, double max)
{
	struct bn_norm_rule *r = realloc(p->rules, (p->n + 1) * sizeof(*r));
	if (!r)
		return -ENOMEM;
	p->rules = r;
	r = &r[p->n++];
	memset(r, 0, sizeof(*r));
	snprintf(r->section, sizeof(r->section), "%s", section);
	snprintf(r->pattern, sizeof(r->pattern), "%s", pattern);
	r->min = min;
	r->max = max;
	return 0;
}

int bn_norm_policy_builtin(const struct bn_model *m, struct bn_norm_policy *out,
                           struct bn_error *err)
{
	memset(out, 0, sizeof(*out));
	bool bitnet = (m->hp.arch == BN_ARCH_BITNET_B158 || m->hp.arch == BN_ARCH_BITNET_25) &&
	              m->proj_type == BN_TYPE_I2_S;
	int rc = 0;
	if (bitnet) {
		snprintf(out->name, sizeof(out->name), "builtin:bitnet-i2_s");
		/* attn_norm: RMS about 1/sqrt(hidden) is how BitNet b1.58 was trained. */
		rc = policy_add(out, "attn_norm", "blk.*.attn_norm.weight", 0.01, 2.0);
		rc = rc ? rc : policy_add(out, "ffn_norm", "blk.*.ffn_norm.weight", 0.5, 2.0);
		rc = rc ? rc : policy_add(out, "output_norm", "output_norm.weight", 0.5, 2.0);
		rc = rc ? rc : policy_add(out, "attn_sub_norm", "blk.*.attn_sub_norm.weight", 0.25, 2.0);
		rc = rc ? rc : policy_add(out, "ffn_sub_norm", "blk.*.ffn_sub_norm.weight", 0.25, 2.0);
	} else {
		snprintf(out->name, sizeof(out->name), "builtin:generic");
		rc = policy_add(out, "generic", "*", 0.8, 1.2);
	}
	if (rc) {
		bn_norm_policy_free(out);
		return bn_err_set(err, rc, "out of memory");
	}
	return 0;
}

int bn_norm_policy_load(const char *path, struct bn_norm_policy *out, struct bn_error *err)
{
	memset(out, 0, sizeof(*out));
	dictionary *d = iniparser_load(path);
	if (!d)
		return bn_err_set(err, -ENOENT, "policy file %s cannot be read or parsed", path);
	snprintf(out->name, sizeof(out->name), "%s", path);
	int rc = 0, ns = iniparser_getnsec(d);
	for (int i = 0; i < ns && !rc; i++) {
		const char *sec = iniparser_getsecname(d, i);
		char key[192];
		int nk = iniparser_getsecnkeys(d, sec);
		const char **keys = nk > 0 ? calloc((size_t)nk, sizeof(*keys)) : NULL;
		if (nk > 0 && keys && iniparser_getseckeys(d, sec, keys)) {
			for (int k = 0; k < nk && !rc; k++) {
				const char *kn = strchr(keys[k], ':');
				kn = kn ? kn + 1 : keys[k];
				if (strcmp(kn, "pattern") && strcmp(kn, "min") && strcmp(kn, "max"))
					rc = bn_err_set(err, -EINVAL, "policy %s: section [%s]: unknown key '%s' "
					                "(pattern, min, max)", path, sec, kn);
			}
		}
		free(keys);
		if (rc)
			break;
		snprintf(key, sizeof(key), "%s:pattern", sec);
		const char *pat = iniparser_getstring(d, key, NULL);
		if (!pat || !*pat) {
			rc = bn_err_set(err, -EINVAL, "policy %s: section [%s] has no pattern", path, sec);
			break;
		}
		double lim[2];
		const char *names[2] = { "min", "max" };
		for (int k = 0; k < 2 && !rc; k++) {
			snprintf(key, sizeof(key), "%s:%s", sec, names[k]);
			const char *v = iniparser_getstring(d, key, NULL);
			char *end;
			lim[k] = v ? strtod(v, &end) : NAN;
			if (!v || !*v || *end || !isfinite(lim[k]) || lim[k] < 0)
				rc = bn_err_set(err, -EINVAL, "policy %s: section [%s]: %s '%s' is not a "
				                "non-negative number", path, sec, names[k], v ? v : "(missing)");
		}
		if (!rc && lim[0] > lim[1])
			rc = bn_err_set(err, -EINVAL, "policy %s: section [%s]: min %g > max %g", path, sec,
			                lim[0], lim[1]);
		if (!rc && policy_add(out, sec, pat, lim[0], lim[1]))
			rc = bn_err_set(err, -ENOMEM, "out of memory");
	}
	iniparser_freedict(d);
	if (!rc && !out->n)
		rc = bn_err_set(err, -EINVAL, "policy %s defines no rule", path);
	if (rc)
		bn_norm_policy_free(out);
	return rc;
}

void bn_norm_policy_free(struct bn_norm_policy *p)
{
	free(p->rules);
	p->rules = NULL;
	p->n = 0;
}

static int report_add(struct bn_norm_report **r, size_t *n, size_t *cap, const char *name,
                      const float *w, size_t len, const struct bn_norm_policy *p)
{
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 64;
		struct bn_norm_report *nr = realloc(*r, nc * sizeof(*nr));
		if (!nr)
			return -ENOMEM;
		*r = nr;
		*cap = nc;
	}
	struct bn_norm_report *e = &(*r)[(*n)++];
	memset(e, 0, sizeof(*e));
	snprintf(e->tensor, sizeof(e->tensor), "%s", name);
	bn_norm_stat_compute(w, len, &e->st);
	e->rule = -1;
	e->verdict = BN_NORM_NORULE;
	for (size_t i = 0; i < p->n; i++) {
		if (fnmatch(p->rules[i].pattern, name, 0))
			continue;
		e->rule = (int)i;
		e->verdict = e->st.rms < p->rules[i].min ? BN_NORM_LOW
		           : e->st.rms > p->rules[i].max ? BN_NORM_HIGH : BN_NORM_OK;
		break;
	}
	return 0;
}

int bn_norms_report(const struct bn_model *m, const struct bn_norm_policy *p,
                    struct bn_norm_report **out, size_t *n, struct bn_error *err)
{
	struct bn_norm_report *r = NULL;
	size_t cnt = 0, cap = 0;
	char name[64];
	int rc = 0;
	for (uint32_t l = 0; l < m->hp.n_layer && !rc; l++) {
		const struct bn_layer *L = &m->layers[l];
		const struct { const char *t; const float *w; size_t len; } v[] = {
			{ "attn_norm", L->attn_norm, m->hp.n_embd },
			{ "attn_sub_norm", L->attn_sub_norm, m->hp.n_embd },
			{ "ffn_norm", L->ffn_norm, m->hp.n_embd },
			{ "ffn_sub_norm", L->ffn_sub_norm, m->hp.n_ff },
		};
		for (size_t i = 0; i < 4 && !rc; i++) {
			if (!v[i].w)
				continue;   /* no sub-norms in a llama layer */
			snprintf(name, sizeof(name), "blk.%u.%s.weight", l, v[i].t);
			rc = report_add(&r, &cnt, &cap, name, v[i].w, v[i].len, p);
		}
	}
	if (!rc)
		rc = report_add(&r, &cnt, &cap, "output_norm.weight", m->output_norm, m->hp.n_embd, p);
	if (rc) {
		free(r);
		return bn_err_set(err, rc, "out of memory");
	}
	int bad = 0;
	for (size_t i = 0; i < cnt; i++)
		bad += r[i].verdict == BN_NORM_LOW || r[i].verdict == BN_NORM_HIGH;
	*out = r;
	*n = cnt;
	return bad;
}
