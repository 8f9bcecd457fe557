#include <stdlib.h>

#include "stats.h"

int bn_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

double bn_median(double *v, size_t n)
{
	qsort(v, n, sizeof(double), bn_cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double bn_median_upper(double *v, size_t n)
{
	qsort(v, n, sizeof(double), bn_cmp_double);
	return v[n / 2];
}
