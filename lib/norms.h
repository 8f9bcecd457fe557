/* Norm-weight statistics, gates, and the experimental gamma rescale (issue 4). */
#ifndef BN_NORMS_H
#define BN_NORMS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct bn_model;
struct bn_model_opts;

struct bn_norm_stat {
	double rms, mean, min, max;
	double ratio;             /* rms / (1/sqrt(n)) */
	size_t n;
};

enum bn_gate { BN_GATE_NONE = 0, BN_GATE_WARN = 1, BN_GATE_STRICT = 2 };

struct bn_norm_rule {
	char section[64];         /* rule name (INI section) */
	char pattern[128];        /* fnmatch(3) pattern over tensor names */
	double min, max;          /* allowed RMS range, inclusive */
};

struct bn_norm_policy {
	char name[96];            /* "builtin:bitnet-i2_s", "builtin:generic" or the file */
	struct bn_norm_rule *rules;   /* [n]; the first matching rule applies */
	size_t n;
};

enum bn_norm_verdict { BN_NORM_OK = 0, BN_NORM_LOW = 1, BN_NORM_HIGH = 2, BN_NORM_NORULE = 3 };

struct bn_norm_report {
	char tensor[64];
	struct bn_norm_stat st;
	int rule;                 /* index into the policy's rules, -1 when none matched */
	enum bn_norm_verdict verdict;
};

/* Statistics of w: [n] f32, accumulated in double. */
void bn_norm_stat_compute(const float *w, size_t n, struct bn_norm_stat *s);

/* The rescale experiment alone (rescale_gamma; refused under strict). */
int bn_norms_rescale(struct bn_model *m, const struct bn_model_opts *opts, struct bn_error *err);
/* Applies load-time options that touch norm weights: rescale_gamma, then the gate. */
int bn_norms_apply_load_opts(struct bn_model *m, const struct bn_model_opts *opts,
                             struct bn_error *err);

int bn_gate_parse(const char *s, enum bn_gate *out);
const char *bn_gate_name(enum bn_gate g);
const char *bn_norm_verdict_name(enum bn_norm_verdict v);

/* The built-in rule set for this model: bitnet-b1.58/bitnet-25 I2_S files get the BitNet
 * ranges (a low attn_norm RMS is how the model was trained); anything else the generic
 * 0.8-1.2. */
int bn_norm_policy_builtin(const struct bn_model *m, struct bn_norm_policy *out,
                           struct bn_error *err);
/* An INI rule file: one section per rule with keys pattern, min, max. */
int bn_norm_policy_load(const char *path, struct bn_norm_policy *out, struct bn_error *err);
void bn_norm_policy_free(struct bn_norm_policy *p);

/* Statistics and verdicts for every norm tensor of the model as it will run (after any
 * correction), in file order. *out is malloc'd [*n]. Returns the count out of range. */
int bn_norms_report(const struct bn_model *m, const struct bn_norm_policy *p,
                    struct bn_norm_report **out, size_t *n, struct bn_error *err);

void *bn_model_alloc_owned(struct bn_model *m, size_t bytes);

#endif
