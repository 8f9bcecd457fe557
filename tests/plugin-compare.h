/* Op-level comparison of a kernel plugin's ops table against the scalar reference.
 * Shared by tests/check_plugins.c (Check, plugins found in the build tree or linked through
 * SIMDe) and tests/neon-driver.c (standalone, cross-compiled and run under qemu-aarch64).
 * Exactness required (kernel.h): quantize_i8 q/scale/sum, ternary_gemm y, rmsnorm y and
 * attn_head out identical to the bit (memcmp); f16_gemm within 1e-5 relative of a double
 * reference, relative to sum_j |w_j x_j| (the magnitude f32 rounding errors scale with);
 * q8_gemm identical to the bit, and batch-invariant (a row alone = the row in a batch).
 * Every output buffer carries guard values around the written range; they must survive. */
#ifndef BN_PLUGIN_COMPARE_H
#define BN_PLUGIN_COMPARE_H

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitnet/kernel.h"

struct pc_ctx {
	const struct bn_kernel_ops *ref;   /* scalar reference */
	const struct bn_kernel_ops *ops;   /* plugin under test */
	const char *label;                 /* "avx2 (avx2)" for messages */
	int small;                         /* 1: emulated ISA, keep sizes moderate */
	uint64_t rng;
	unsigned fails;
	unsigned checks;
};

static void pc_fail(struct pc_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pc_fail(struct pc_ctx *c, const char *fmt, ...)
{
	c->fails++;
	if (c->fails > 20)
		return;
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "FAIL %s: ", c->label);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static uint64_t pc_u64(struct pc_ctx *c)
{
	uint64_t x = c->rng;   /* xorshift64* */
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	c->rng = x;
	return x * UINT64_C(2685821657736338717);
}

static double pc_unif(struct pc_ctx *c)   /* [0, 1) */
{
	return (double)(pc_u64(c) >> 11) * 0x1p-53;
}

static double pc_gauss(struct pc_ctx *c)
{
	double u = pc_unif(c), v = pc_unif(c);
	return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

static void *pc_alloc(size_t bytes)
{
	void *p = malloc(bytes ? bytes : 1);
	if (!p) {
		fprintf(stderr, "out of memory (%zu bytes)\n", bytes);
		exit(99);
	}
	return p;
}

/* ---- quantize_i8 ---------------------------------------------------------------- */

enum { QK_GAUSS, QK_ZERO, QK_TINY, QK_HUGE, QK_TIES, QK_TIES2, QK_AMAX_TIES, QK_NKINDS };

static void pc_quantize_case(struct pc_ctx *c, size_t n, int kind)
{
	float *x = pc_alloc(n * sizeof(float));          /* [n] */
	int8_t *q1 = pc_alloc(n + 64), *q2 = pc_alloc(n + 64);   /* [n] + guard */
	double mag = pow(10.0, -3.0 + 6.0 * pc_unif(c));
	for (size_t i = 0; i < n; i++) {
		switch (kind) {
		case QK_GAUSS: x[i] = (float)(pc_gauss(c) * mag); break;
		case QK_ZERO: x[i] = (i & 1) ? -0.0f : 0.0f; break;
		case QK_TINY: x[i] = (float)(pc_gauss(c) * 1e-7); break;
		case QK_HUGE: x[i] = (float)(pc_gauss(c) * 1e30); break;
		case QK_TIES:   /* amax 127 gives s = 1 exactly: halves are exact ties */
			x[i] = (float)((double)(int)(pc_u64(c) % 254) - 127.0 + 0.5);
			break;
		case QK_TIES2:  /* amax 63.5 gives s = 2: quarter values tie after scaling */
			x[i] = (float)(((double)(int)(pc_u64(c) % 254) - 127.0) * 0.25 + 0.125);
			break;
		default:        /* many elements at +-amax, rest random */
			x[i] = (pc_u64(c) & 3) ? (float)(pc_gauss(c) * 0.3) : ((i & 1) ? 1.0f : -1.0f);
			break;
		}
	}
	if (kind == QK_TIES && n)
		x[pc_u64(c) % n] = -127.0f;
	if (kind == QK_TIES2 && n)
		x[pc_u64(c) % n] = 63.5f;
	memset(q1, 0x5a, n + 64);
	memset(q2, 0x5a, n + 64);
	float s1 = -1, s2 = -2;
	int32_t sum1 = -1, sum2 = -2;
	c->ref->quantize_i8(x, n, q1, &s1, &sum1);
	c->ops->quantize_i8(x, n, q2, &s2, &sum2);
	c->checks++;
	if (memcmp(q1, q2, n + 64) || memcmp(&s1, &s2, sizeof(float)) || sum1 != sum2) {
		size_t i = 0;
		while (i < n + 64 && q1[i] == q2[i])
			i++;
		pc_fail(c, "quantize_i8 n=%zu kind=%d: scale %a/%a sum %d/%d first q diff at %zu",
		        n, kind, s1, s2, sum1, sum2, i);
	}
	free(x);
	free(q1);
	free(q2);
}

static void pc_quantize(struct pc_ctx *c)
{
	static const size_t ns[] = { 128, 256, 384, 2560, 6912, 8192, 1, 7, 31, 33, 100, 129 };
	for (size_t a = 0; a < sizeof(ns) / sizeof(ns[0]); a++)
		for (int kind = 0; kind < QK_NKINDS; kind++)
			pc_quantize_case(c, ns[a], kind);
}

/* ---- ternary_gemm ---------------------------------------------------------------- */

enum { TK_RANDOM, TK_EXTREME_NEG, TK_EXTREME_POS, TK_ZERO_ROWS, TK_MAX_NEG };
/* TK_MAX_NEG: every code 2 and every q -128, the largest magnitude a sum can reach */

/* Weight rows [r0, r0 + rows) of a matrix with two more rows after them, y rows one wider. */
static void pc_ternary_case_at(struct pc_ctx *c, size_t k, size_t r0, size_t rows, size_t m,
                               int kind)
{
	size_t r1 = r0 + rows, total = r1 + 2, ldy = r1 + 3;
	size_t rb = k / 4;
	uint8_t *w = pc_alloc(total * rb);                /* [total][k/4] codes */
	int8_t *q = pc_alloc(m * k);                      /* [m][k] */
	float *qscale = pc_alloc(m * sizeof(float));      /* [m] */
	int32_t *qsum = pc_alloc(m * sizeof(int32_t));    /* [m] */
	size_t ny = m * ldy;
	float *y1 = pc_alloc(ny * sizeof(float)), *y2 = pc_alloc(ny * sizeof(float));  /* [m][ldy] */
	for (size_t i = 0; i < total * rb; i++)
		w[i] = (uint8_t)pc_u64(c);   /* codes 0..3, 3 included */
	if (kind == TK_EXTREME_NEG || kind == TK_EXTREME_POS)
		for (size_t i = 0; i < total * rb; i++)   /* codes 2 (or 3 sometimes) everywhere */
			w[i] = (pc_u64(c) & 7) ? 0xaa : (uint8_t)(0xaa | (pc_u64(c) & 0x55));
	if (kind == TK_MAX_NEG)
		memset(w, 0xaa, total * rb);
	for (size_t i = 0; i < m; i++) {
		int32_t s = 0;
		for (size_t j = 0; j < k; j++) {
			int8_t v;
			switch (kind) {
			case TK_EXTREME_NEG:
			case TK_MAX_NEG: v = -128; break;
			case TK_EXTREME_POS: v = 127; break;
			case TK_ZERO_ROWS: v = (i & 1) ? 0 : (int8_t)pc_u64(c); break;
			default: v = (int8_t)pc_u64(c); break;
			}
			q[i * k + j] = v;
			s += v;
		}
		qsum[i] = s;
		qscale[i] = (float)(127.0 / (0.01 + 10.0 * pc_unif(c)));
	}
	float wscale = (float)(0.001 + pc_unif(c));
	for (size_t i = 0; i < ny; i++)
		y1[i] = y2[i] = (float)i + 0.25f;   /* guard values outside [r0, r1) */
	c->ref->ternary_gemm(w, k, r0, r1, wscale, q, qscale, qsum, m, y1, ldy);
	c->ops->ternary_gemm(w, k, r0, r1, wscale, q, qscale, qsum, m, y2, ldy);
	c->checks++;
	if (memcmp(y1, y2, ny * sizeof(float))) {
		size_t i = 0;
		while (i < ny && !memcmp(&y1[i], &y2[i], sizeof(float)))
			i++;
		pc_fail(c, "ternary_gemm k=%zu rows=[%zu,%zu) m=%zu kind=%d: y[%zu][%zu] %a vs %a",
		        k, r0, r1, m, kind, i / ldy, i % ldy, y1[i], y2[i]);
	}
	free(w);
	free(q);
	free(qscale);
	free(qsum);
	free(y1);
	free(y2);
}

static void pc_ternary_case(struct pc_ctx *c, size_t k, size_t rows, size_t m, int kind)
{
	size_t r0 = rows > 1 ? (size_t)(pc_u64(c) % 5) : (size_t)(pc_u64(c) % 2);
	pc_ternary_case_at(c, k, r0, rows, m, kind);
}

/* Prefill sizes. Tiled paths (AMX: 16 x 16 blocks, two 16-row panels at a time, 128
 * activations per pass, 2048-element k chunks) leave edge rows and activations to other
 * code; row counts and activation counts off multiples of 16 and 32, from row ranges not
 * starting at 0, reach every edge. */
static void pc_ternary_prefill(struct pc_ctx *c)
{
	static const size_t ks[] = { 256, 2560, 6912 };
	static const size_t ms[] = { 17, 31, 32, 33, 48, 100, 128, 300 };
	static const size_t rowss[] = { 53, 19, 35, 70, 16 };   /* 32+16+5, 16+3, 32+3, 64+6, 16 */
	for (size_t a = 0; a < sizeof(ks) / sizeof(ks[0]); a++) {
		if (c->small && a)   /* emulated: the shortest rows give the same edges */
			break;
		for (size_t e = 0; e < sizeof(ms) / sizeof(ms[0]); e++) {
			size_t k = ks[a], m = ms[e], rows = rowss[(a + e) % 5];
			if (!c->small && k * rows * m > (size_t)48 << 20)
				k = 2560;   /* the biggest m with the longest rows: bounded time */
			size_t r0 = 1 + (size_t)(pc_u64(c) % 7);
			pc_ternary_case_at(c, k, r0, rows, m, TK_RANDOM);
		}
	}
	pc_ternary_case_at(c, 256, 3, 35, 33, TK_ZERO_ROWS);
	pc_ternary_case_at(c, 2560, 5, 19, 17, TK_EXTREME_POS);
	/* every int16 lane of a 64-step segment at exactly -32768 (the AVX2 GEMM's bound) */
	pc_ternary_case_at(c, 4096, 1, 9, 9, TK_MAX_NEG);
	if (!c->small)   /* int32 tile sums at the extremes */
		pc_ternary_case_at(c, 32768, 1, 35, 17, TK_EXTREME_NEG);
}

static void pc_ternary(struct pc_ctx *c)
{
	static const size_t ks[] = { 128, 256, 384, 2560, 6912, 8192 };
	static const size_t rowss[] = { 1, 3, 17, 129 };
	static const size_t ms[] = { 1, 2, 3, 4, 5, 7, 8, 13, 16 };
	for (size_t a = 0; a < 6; a++) {
		for (size_t b = 0; b < 4; b++) {
			for (size_t e = 0; e < sizeof(ms) / sizeof(ms[0]); e++) {
				size_t k = ks[a], rows = rowss[b], m = ms[e];
				/* keep the long rows x many rows x many activations cases few */
				if (k * rows * m > (c->small ? (size_t)1 << 20 : (size_t)1 << 24) && e % 4)
					continue;
				pc_ternary_case(c, k, rows, m, TK_RANDOM);
			}
		}
	}
	for (size_t a = 0; a < 6; a++) {
		pc_ternary_case(c, ks[a], 5, 1, TK_EXTREME_NEG);
		pc_ternary_case(c, ks[a], 5, 3, TK_EXTREME_POS);
		pc_ternary_case(c, ks[a], 3, 6, TK_ZERO_ROWS);
	}
	pc_ternary_case(c, 32768, 2, 4, TK_EXTREME_NEG);   /* int16 stage must not overflow */
	pc_ternary_case(c, 32768, 5, 1, TK_EXTREME_POS);
	/* few-sequence VNNI paths keep fields in place (products scaled by up to 64) up to
	 * k = 2^22, where a lane reaches -2^31, and fall back above: both sides of the edge */
	pc_ternary_case(c, (size_t)1 << 22, 2, 2, TK_MAX_NEG);
	pc_ternary_case(c, ((size_t)1 << 22) + 128, 2, 2, TK_MAX_NEG);
	pc_ternary_prefill(c);
}

/* ---- f16_gemm --------------------------------------------------------------------- */

static uint16_t pc_f16(struct pc_ctx *c, double sigma)
{
	return bn_f32_to_f16((float)(pc_gauss(c) * sigma));
}

static void pc_f16_case(struct pc_ctx *c, size_t k, size_t rows, size_t m)
{
	size_t r0 = (size_t)(pc_u64(c) % 4), r1 = r0 + rows, total = r1 + 1, ldy = r1 + 2;
	uint16_t *w = pc_alloc(total * k * 2);   /* [total][k] f16 */
	uint16_t *x = pc_alloc(m * k * 2);       /* [m][k] f16 */
	size_t ny = m * ldy;
	float *y = pc_alloc(ny * sizeof(float));   /* [m][ldy] */
	for (size_t i = 0; i < total * k; i++)
		w[i] = pc_f16(c, 0.02);
	for (size_t i = 0; i < m * k; i++)
		x[i] = pc_f16(c, 1.5);
	for (size_t i = 0; i < ny; i++)
		y[i] = (float)i + 0.25f;
	c->ops->f16_gemm(w, k, r0, r1, x, m, y, ldy);
	c->checks++;
	for (size_t i = 0; i < m; i++) {
		for (size_t r = 0; r < ldy; r++) {
			float got = y[i * ldy + r];
			if (r < r0 || r >= r1) {
				if (got != (float)(i * ldy + r) + 0.25f) {
					pc_fail(c, "f16_gemm k=%zu m=%zu wrote y[%zu][%zu] outside [%zu,%zu)",
					        k, m, i, r, r0, r1);
					goto out;
				}
				continue;
			}
			double ref = 0.0, mag = 0.0;
			for (size_t j = 0; j < k; j++) {
				double p = (double)bn_f16_to_f32(w[r * k + j]) *
				           (double)bn_f16_to_f32(x[i * k + j]);
				ref += p;
				mag += fabs(p);
			}
			if (!(fabs((double)got - ref) <= 1e-5 * mag + 1e-30)) {
				pc_fail(c, "f16_gemm k=%zu rows=[%zu,%zu) m=%zu y[%zu][%zu]=%.9g ref %.9g "
				        "(sum|wx| %.3g)", k, r0, r1, m, i, r, got, ref, mag);
				goto out;
			}
		}
	}
	/* Batch invariance: each activation row alone, and the rows split at another place,
	 * give the same logits bit for bit (the engine's seq and batch paths must agree). */
	float *y1 = pc_alloc(ldy * sizeof(float));   /* [ldy] */
	for (size_t i = 0; i < m; i++) {
		size_t a = r0 + (r1 - r0) / 3;
		c->ops->f16_gemm(w, k, r0, a, x + i * k, 1, y1, ldy);
		c->ops->f16_gemm(w, k, a, r1, x + i * k, 1, y1, ldy);
		c->checks++;
		if (memcmp(y1 + r0, y + i * ldy + r0, (r1 - r0) * sizeof(float))) {
			pc_fail(c, "f16_gemm k=%zu m=%zu: activation row %zu alone differs from the "
			        "batch (not batch-invariant)", k, m, i);
			break;
		}
	}
	free(y1);
out:
	free(w);
	free(x);
	free(y);
}

static void pc_f16gemm(struct pc_ctx *c)
{
	static const size_t ks[] = { 128, 2560, 8192, 100, 7, 24, 10000 };
	static const size_t rowss[] = { 1, 3, 17, 129 };
	static const size_t ms[] = { 1, 2, 3, 5, 16 };
	for (size_t a = 0; a < sizeof ks / sizeof ks[0]; a++)
		for (size_t b = 0; b < 4; b++)
			for (size_t e = 0; e < 5; e++) {
				if (ks[a] * rowss[b] * ms[e] > (c->small ? (size_t)1 << 19 : (size_t)1 << 23))
					continue;
				pc_f16_case(c, ks[a], rowss[b], ms[e]);
			}
}

/* ---- rmsnorm ---------------------------------------------------------------------- */

static void pc_rmsnorm_case(struct pc_ctx *c, size_t n, double mag, int alias)
{
	float *x = pc_alloc(n * sizeof(float)), *w = pc_alloc(n * sizeof(float));   /* [n] */
	float *y1 = pc_alloc((n + 8) * sizeof(float)), *y2 = pc_alloc((n + 8) * sizeof(float));
	for (size_t i = 0; i < n; i++) {
		x[i] = (float)(pc_gauss(c) * mag * ((i % 97) ? 1.0 : 1e4));
		w[i] = (float)(0.5 + pc_unif(c));
	}
	for (size_t i = 0; i < n + 8; i++)
		y1[i] = y2[i] = -3.0f;
	float eps = (pc_u64(c) & 1) ? 1e-5f : 1e-6f;
	c->ref->rmsnorm(x, w, n, eps, y1);
	if (alias) {
		memcpy(y2, x, n * sizeof(float));
		c->ops->rmsnorm(y2, w, n, eps, y2);
	} else {
		c->ops->rmsnorm(x, w, n, eps, y2);
	}
	c->checks++;
	if (memcmp(y1, y2, (n + 8) * sizeof(float))) {
		size_t i = 0;
		while (!memcmp(&y1[i], &y2[i], sizeof(float)))
			i++;
		pc_fail(c, "rmsnorm n=%zu mag=%g alias=%d: y[%zu] %a vs %a", n, mag, alias, i,
		        y1[i], y2[i]);
	}
	free(x);
	free(w);
	free(y1);
	free(y2);
}

static void pc_rmsnorm(struct pc_ctx *c)
{
	static const size_t ns[] = { 2560, 6912, 128, 7, 33, 1, 8192 };
	for (size_t a = 0; a < sizeof(ns) / sizeof(ns[0]); a++) {
		pc_rmsnorm_case(c, ns[a], 1.0, 0);
		pc_rmsnorm_case(c, ns[a], 1e-3, 1);
		pc_rmsnorm_case(c, ns[a], 30.0, 0);
		pc_rmsnorm_case(c, ns[a], 1e-19, 0);   /* eps dominates */
	}
}

/* ---- attn_head -------------------------------------------------------------------- */

/* g queries against shared keys and values: the plugin's attn_head per query (group 0) or
 * its attn_group for all g (group 1) gives, bit for bit, what the reference's attn_head gives
 * each query alone (and, for attn_group, the same softmax weights in scratch). */
static void pc_attn_case(struct pc_ctx *c, size_t g, size_t hd, size_t n, double sigma,
                         int peaked, int group)
{
	if (group && !c->ops->attn_group)
		return;
	size_t stride = hd * 2 + 8 * (pc_u64(c) % 2), no = g * hd + 4;
	uint16_t *q16 = pc_alloc(g * hd * 2);                /* [g][hd] f16 */
	uint16_t *k = pc_alloc(n * stride * 2 + 2), *v = pc_alloc(n * stride * 2 + 2);  /* [n][stride] */
	float *o1 = pc_alloc(no * sizeof(float)), *o2 = pc_alloc(no * sizeof(float));   /* [g][hd] + 4 */
	float *s1 = pc_alloc(g * n * sizeof(float)), *s2 = pc_alloc(g * n * sizeof(float));  /* [g][n] */
	for (size_t d = 0; d < g * hd; d++)
		q16[d] = pc_f16(c, sigma);
	for (size_t i = 0; i < n * stride; i++) {
		k[i] = pc_f16(c, sigma);
		v[i] = pc_f16(c, 1.0);
	}
	if (peaked && n > 2)   /* one key aligned with the last query: softmax close to one-hot */
		memcpy(k + (n / 2) * stride, q16 + (g - 1) * hd, hd * 2);
	for (size_t d = 0; d < no; d++)
		o1[d] = o2[d] = 7.0f;
	float scale = 1.0f / sqrtf((float)hd);
	for (size_t i = 0; i < g; i++) {
		c->ref->attn_head(q16 + i * hd, k, v, stride, n, hd, scale, o1 + i * hd, s1 + i * n);
		if (!group)
			c->ops->attn_head(q16 + i * hd, k, v, stride, n, hd, scale, o2 + i * hd,
			                  s2 + i * n);
	}
	if (group)
		c->ops->attn_group(q16, g, k, v, stride, n, hd, scale, o2, s2);
	const char *op = group ? "attn_group" : "attn_head";
	c->checks++;
	if (memcmp(o1, o2, no * sizeof(float))) {
		size_t d = 0;
		while (!memcmp(&o1[d], &o2[d], sizeof(float)))
			d++;
		pc_fail(c, "%s g=%zu hd=%zu n=%zu sigma=%g peaked=%d: out[%zu][%zu] %a vs %a", op, g,
		        hd, n, sigma, peaked, d / hd, d % hd, o1[d], o2[d]);
	} else if (group && memcmp(s1, s2, g * n * sizeof(float))) {
		pc_fail(c, "%s g=%zu hd=%zu n=%zu: softmax weights differ from attn_head's", op, g, hd,
		        n);
	}
	free(q16);
	free(k);
	free(v);
	free(o1);
	free(o2);
	free(s1);
	free(s2);
}

static void pc_attn(struct pc_ctx *c)
{
	static const size_t hds[] = { 64, 128, 40, 100 };
	static const size_t ns[] = { 1, 2, 7, 33, 300, 1000 };
	for (size_t a = 0; a < 4; a++)
		for (size_t b = 0; b < 6; b++) {
			if (c->small && ns[b] > 300)
				continue;
			pc_attn_case(c, 1, hds[a], ns[b], 1.0, 0, 0);
			pc_attn_case(c, 1, hds[a], ns[b], 3.0, 1, 0);
			pc_attn_case(c, 1, hds[a], ns[b], 0.05, 0, 0);
			for (size_t g = 1; g <= 5; g++)
				pc_attn_case(c, g, hds[a], ns[b], g == 4 ? 3.0 : 1.0, g == 4, 1);
		}
	pc_attn_case(c, 4, 128, 600, 0.05, 0, 1);   /* several position blocks */
	pc_attn_case(c, 2, 300, 40, 1.0, 0, 1);     /* longer than the plugins' group path */
}

/* ---- q8_gemm ---------------------------------------------------------------------- */

enum { Q8_RANDOM, Q8_EXTREME, Q8_SCALES, Q8_NKINDS };
/* Q8_RANDOM: activations through bn_q8_0_quantize_block, weights random int8 with random
 * f16 scales. Q8_EXTREME: every weight -128 or 127 against activations +-127 (the largest
 * block sums; int16 pair sums at their bound). Q8_SCALES: zero, subnormal, negative and
 * the largest finite scales (no infinities: NaN payloads are not part of the contract). */

static uint16_t pc_q8_scale(struct pc_ctx *c, int kind)
{
	if (kind != Q8_SCALES)
		return bn_f32_to_f16((float)(pow(2.0, -12.0 + 10.0 * pc_unif(c)) *
		                             ((pc_u64(c) & 1) ? 1.0 : -1.0)));
	switch (pc_u64(c) % 6) {
	case 0: return 0x0000;                               /* 0 */
	case 1: return (uint16_t)(1 + pc_u64(c) % 0x3ff);    /* subnormal */
	case 2: return 0x7bff;                               /* 65504 */
	case 3: return 0xfbff;                               /* -65504 */
	default: return bn_f32_to_f16((float)pc_gauss(c));
	}
}

/* Weight rows [r0, r0 + rows) of a matrix with two more rows after them, y rows one wider. */
static void pc_q8_case(struct pc_ctx *c, size_t k, size_t r0, size_t rows, size_t m, int kind)
{
	size_t r1 = r0 + rows, total = r1 + 2, ldy = r1 + 3, nb = k / BN_Q8_0_BLOCK;
	size_t rb = nb * BN_Q8_0_BLOCK_BYTES;
	uint8_t *w = pc_alloc(total * rb);                 /* [total][k/32] blocks */
	int8_t *xq = pc_alloc(m * k);                      /* [m][k] */
	uint16_t *xd = pc_alloc(m * nb * 2);               /* [m][k/32] f16 */
	float *xf = pc_alloc(k * sizeof(float));           /* [k] */
	size_t ny = m * ldy;
	float *y1 = pc_alloc(ny * sizeof(float)), *y2 = pc_alloc(ny * sizeof(float));  /* [m][ldy] */
	for (size_t r = 0; r < total; r++) {
		for (size_t b = 0; b < nb; b++) {
			uint8_t *blk = w + r * rb + b * BN_Q8_0_BLOCK_BYTES;
			uint16_t d = pc_q8_scale(c, kind);
			blk[0] = (uint8_t)d;
			blk[1] = (uint8_t)(d >> 8);
			for (size_t j = 0; j < BN_Q8_0_BLOCK; j++)
				blk[2 + j] = kind == Q8_EXTREME ? ((pc_u64(c) & 1) ? 0x80 : 0x7f)
				                                : (uint8_t)pc_u64(c);
		}
	}
	for (size_t i = 0; i < m; i++) {
		double mag = pow(10.0, -3.0 + 5.0 * pc_unif(c));
		for (size_t b = 0; b < nb; b++) {
			int8_t *q = xq + i * k + b * BN_Q8_0_BLOCK;
			if (kind == Q8_EXTREME) {
				for (size_t j = 0; j < BN_Q8_0_BLOCK; j++)
					q[j] = (pc_u64(c) & 1) ? 127 : -127;
				xd[i * nb + b] = pc_q8_scale(c, Q8_RANDOM);
				continue;
			}
			for (size_t j = 0; j < BN_Q8_0_BLOCK; j++)
				xf[j] = (float)(pc_gauss(c) * mag);
			xd[i * nb + b] = bn_q8_0_quantize_block(xf, q);
			if (kind == Q8_SCALES && (pc_u64(c) & 3) == 0)
				xd[i * nb + b] = pc_q8_scale(c, kind);
		}
	}
	for (size_t i = 0; i < ny; i++)
		y1[i] = y2[i] = (float)i + 0.25f;   /* guard values outside [r0, r1) */
	c->ref->q8_gemm(w, k, r0, r1, xq, xd, m, y1, ldy);
	c->ops->q8_gemm(w, k, r0, r1, xq, xd, m, y2, ldy);
	c->checks++;
	if (memcmp(y1, y2, ny * sizeof(float))) {
		size_t i = 0;
		while (i < ny && !memcmp(&y1[i], &y2[i], sizeof(float)))
			i++;
		pc_fail(c, "q8_gemm k=%zu rows=[%zu,%zu) m=%zu kind=%d: y[%zu][%zu] %a vs %a",
		        k, r0, r1, m, kind, i / ldy, i % ldy, y1[i], y2[i]);
		goto out;
	}
	/* batch invariance: each activation alone, over rows split at an odd place */
	float *ya = pc_alloc(ldy * sizeof(float));   /* [ldy] */
	for (size_t i = 0; i < m; i++) {
		size_t a = r0 + (r1 - r0) / 3;
		c->ops->q8_gemm(w, k, r0, a, xq + i * k, xd + i * nb, 1, ya, ldy);
		c->ops->q8_gemm(w, k, a, r1, xq + i * k, xd + i * nb, 1, ya, ldy);
		c->checks++;
		if (memcmp(ya + r0, y2 + i * ldy + r0, (r1 - r0) * sizeof(float))) {
			pc_fail(c, "q8_gemm k=%zu m=%zu: activation row %zu alone differs from the batch "
			        "(not batch-invariant)", k, m, i);
			break;
		}
	}
	free(ya);
out:
	free(w);
	free(xq);
	free(xd);
	free(xf);
	free(y1);
	free(y2);
}

static void pc_q8gemm(struct pc_ctx *c)
{
	static const size_t ks[] = { 32, 64, 96, 256, 2560, 8192 };
	static const size_t rowss[] = { 1, 3, 7, 8, 9, 17, 33, 130 };
	for (size_t a = 0; a < sizeof(ks) / sizeof(ks[0]); a++)
		for (size_t b = 0; b < sizeof(rowss) / sizeof(rowss[0]); b++)
			for (size_t m = 1; m <= 5; m++) {
				if (ks[a] * rowss[b] * m > (c->small ? (size_t)1 << 19 : (size_t)1 << 23))
					continue;
				size_t r0 = (size_t)(pc_u64(c) % 5);   /* odd starts too */
				pc_q8_case(c, ks[a], r0, rowss[b], m, Q8_RANDOM);
			}
	for (size_t m = 1; m <= 5; m++) {
		pc_q8_case(c, 2560, 1 + m, 19, m, Q8_EXTREME);
		pc_q8_case(c, 160, 3, 23, m, Q8_SCALES);
	}
	pc_q8_case(c, 2560, 7, 41, 8, Q8_RANDOM);
	if (!c->small)
		pc_q8_case(c, 2560, 5, 515, 16, Q8_RANDOM);
}

/* Runs every op comparison; returns the number of failures. */
static unsigned pc_run_all(struct pc_ctx *c)
{
	pc_quantize(c);
	pc_ternary(c);
	pc_f16gemm(c);
	pc_rmsnorm(c);
	pc_attn(c);
	pc_q8gemm(c);
	return c->fails;
}

#endif
