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

/* Statistics of w: [n] f32, accumulated in double. */
void bn_norm_stat_compute(const float *w, size_t n, struct bn_norm_stat *s);

/* Applies load-time options that touch norm weights (rescale_gamma, strict). */
int bn_norms_apply_load_opts(struct bn_model *m, const struct bn_model_opts *opts,
                             struct bn_error *err);

void *bn_model_alloc_owned(struct bn_model *m, size_t bytes);

#endif
