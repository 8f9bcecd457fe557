/* Medians of repeated timings: the engine's probes, calibration and `bitnet bench` take
 * the middle of several runs so one slow run does not decide. */
#ifndef BN_STATS_H
#define BN_STATS_H

#include <stddef.h>

/* qsort comparator: ascending doubles. */
int bn_cmp_double(const void *a, const void *b);
/* Sorts v [n > 0] in place; the median, the mean of the middle two when n is even. */
double bn_median(double *v, size_t n);
/* Sorts v [n > 0] in place; v[n / 2], the upper of the middle two when n is even. */
double bn_median_upper(double *v, size_t n);

#endif
