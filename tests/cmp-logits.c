/* cmp-logits A.bin B.bin: compares two logits files (int32 n_tok, int32 n_vocab, f32
 * [n_tok][n_vocab]) by the golden README's rules: per position max_j|a-b| / max_j|b| <=
 * --max-rel, the median of that over positions <= --median, argmax identical everywhere.
 * B is the reference. Exit 0 on pass, 1 on fail, 2 on bad input. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct logits {
	int32_t n, v;
	float *d;   /* [n][v] */
};

static int load(const char *path, struct logits *l)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "cmp-logits: cannot open %s\n", path);
		return -1;
	}
	int32_t h[2];
	if (fread(h, sizeof(h), 1, f) != 1 || h[0] <= 0 || h[1] <= 0 || h[0] > 1 << 20 ||
	    h[1] > 1 << 24) {
		fprintf(stderr, "cmp-logits: %s: bad header\n", path);
		fclose(f);
		return -1;
	}
	l->n = h[0];
	l->v = h[1];
	l->d = malloc((size_t)h[0] * h[1] * sizeof(float));
	if (!l->d || fread(l->d, sizeof(float), (size_t)h[0] * h[1], f) != (size_t)h[0] * h[1]) {
		fprintf(stderr, "cmp-logits: %s: truncated\n", path);
		fclose(f);
		return -1;
	}
	fclose(f);
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static size_t argmax(const float *v, size_t n)
{
	size_t best = 0;
	for (size_t i = 1; i < n; i++)
		if (v[i] > v[best])
			best = i;
	return best;
}

int main(int argc, char **argv)
{
	double max_rel = 1e-2, med_tol = 1e-4;
	const char *files[2] = { NULL, NULL };
	int nf = 0, quiet = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--max-rel") && i + 1 < argc)
			max_rel = atof(argv[++i]);
		else if (!strcmp(argv[i], "--median") && i + 1 < argc)
			med_tol = atof(argv[++i]);
		else if (!strcmp(argv[i], "-q"))
			quiet = 1;
		else if (nf < 2)
			files[nf++] = argv[i];
		else
			nf = 3;
	}
	if (nf != 2) {
		fprintf(stderr, "usage: cmp-logits [--max-rel X] [--median X] [-q] ENGINE.bin REFERENCE.bin\n");
		return 2;
	}
	struct logits a, b;
	if (load(files[0], &a) || load(files[1], &b))
		return 2;
	if (a.n != b.n || a.v != b.v) {
		fprintf(stderr, "cmp-logits: shapes differ: %dx%d vs %dx%d\n", a.n, a.v, b.n, b.v);
		return 1;
	}
	double *rel = malloc((size_t)a.n * sizeof(double));
	int top1 = 0, worst_pos = 0;
	double worst = 0, min_cos = 1;
	for (int i = 0; i < a.n; i++) {
		const float *x = a.d + (size_t)i * a.v, *y = b.d + (size_t)i * b.v;
		double md = 0, mb = 0, dot = 0, nx = 0, ny = 0;
		for (int j = 0; j < a.v; j++) {
			double d = fabs((double)x[j] - y[j]);
			if (!(d <= md))
				md = isnan(d) ? INFINITY : d > md ? d : md;
			if (fabs(y[j]) > mb)
				mb = fabs(y[j]);
			dot += (double)x[j] * y[j];
			nx += (double)x[j] * x[j];
			ny += (double)y[j] * y[j];
		}
		rel[i] = mb > 0 ? md / mb : md;
		double cs = dot / (sqrt(nx) * sqrt(ny) + 1e-300);
		if (cs < min_cos)
			min_cos = cs;
		if (rel[i] > worst) {
			worst = rel[i];
			worst_pos = i;
		}
		size_t ax = argmax(x, (size_t)a.v), ay = argmax(y, (size_t)b.v);
		if (ax == ay)
			top1++;
		else if (!quiet)
			fprintf(stderr, "position %d: argmax %zu, reference %zu\n", i, ax, ay);
	}
	double *sorted = malloc((size_t)a.n * sizeof(double));
	memcpy(sorted, rel, (size_t)a.n * sizeof(double));
	qsort(sorted, (size_t)a.n, sizeof(double), cmp_double);
	double median = a.n % 2 ? sorted[a.n / 2] : (sorted[a.n / 2 - 1] + sorted[a.n / 2]) / 2;
	int pass = worst <= max_rel && median <= med_tol && top1 == a.n;
	printf("%s positions=%d top1=%d/%d max_rel=%.1e (pos %d) median_rel=%.1e min_cos=%.6f\n",
	       pass ? "PASS" : "FAIL", a.n, top1, a.n, worst, worst_pos, median, min_cos);
	free(rel);
	free(sorted);
	free(a.d);
	free(b.d);
	return pass ? 0 : 1;
}
