/* Kernel plugin throughput beside this machine's read bandwidth (not a test).
 *
 *   bench/bench-kernels [--runs N] [--threads-only 1|2] [--m M] [--heads] [plugin ...]
 *
 * Ternary GEMV and LM head (m = 1, or M activation rows: M sequences decoding together) over the 2B-4T projection shapes of 30 distinct layers (~520 MB of
 * I2_S weights, far beyond the caches, cycled like decode does) and the F16 LM head
 * (2560 x 128256, 657 MB), per plugin, one thread and two threads (each half of every
 * matrix's rows, a barrier per matrix as in the engine's pool), and the same head as Q8_0
 * (349 MB: q8_gemm on activations quantized per 32-block). --heads: the two heads only.
 * Read bandwidth: an AVX2
 * streaming sum over 1 GB, measured in the same run. Figures are medians of --runs runs.
 * Also per plugin: the prefill GEMM (m = 128 activation rows over the seven projections of
 * one layer, rows split like the engine's pool; GMAC/s and the token rate those GEMMs alone
 * would allow over 30 layers) and the one-thread GEMV compute ceiling (2560 x 512 weights,
 * L2-resident, best of 20). */
#include <errno.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bitnet/kernel.h"
#include "cpu.h"
#include "kernels.h"
#include "stats.h"

#define N_LAYERS 30
#define HIDDEN 2560
#define FFN 6912
#define VOCAB 128256

struct mat {
	size_t k, rows;
	const uint8_t *w;   /* [rows][k/4] codes */
};

static const size_t shape[7][2] = {   /* k x rows: q, k, v, o, gate, up, down */
	{ HIDDEN, HIDDEN }, { HIDDEN, 640 }, { HIDDEN, 640 }, { HIDDEN, HIDDEN },
	{ HIDDEN, FFN }, { HIDDEN, FFN }, { FFN, HIDDEN },
};

static struct mat mats[N_LAYERS * 7];
static size_t n_mats, ternary_bytes;
static uint8_t *ternary_buf;   /* all matrices back to back */
static uint16_t *lm_head;      /* [VOCAB][HIDDEN] f16 */
static uint8_t *q8_head;       /* [VOCAB][HIDDEN/32] Q8_0 blocks */
#define Q8_ROW_BYTES (HIDDEN / BN_Q8_0_BLOCK * BN_Q8_0_BLOCK_BYTES)
#define PP_M 128
#define TG_MMAX 16
static int8_t q_act[TG_MMAX * FFN];   /* [m][FFN] int8 activations */
static size_t tg_m = 1;       /* activation rows of the ternary job */
static int8_t *q_pp;           /* [PP_M][FFN] int8 activations for the prefill GEMM */
static float *y_pp;            /* [PP_M][FFN] f32 prefill outputs */
static float pp_scale[PP_M];   /* [PP_M] */
static int32_t pp_sum[PP_M];   /* [PP_M] */
static uint16_t x16[TG_MMAX * HIDDEN];   /* [m][HIDDEN] f16 activations */
static float y_out[TG_MMAX][VOCAB];   /* [m][rows] */
static int8_t xq[TG_MMAX * HIDDEN];     /* [m][HIDDEN] Q8_0 activations */
static uint16_t xd[TG_MMAX * HIDDEN / BN_Q8_0_BLOCK];   /* [m][HIDDEN/32] their f16 scales */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void fill(void *p, size_t bytes, uint64_t seed)
{
	uint64_t *u = p;
	for (size_t i = 0; i < bytes / 8; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		u[i] = seed;
	}
}

/* ---- read bandwidth ---------------------------------------------------------------- */

#define BW_BYTES ((size_t)1 << 30)
static uint8_t *bw_buf;   /* [1 GB] */
static volatile int64_t bw_sink;

__attribute__((target("avx2"))) static int64_t stream_sum(const uint8_t *p, size_t bytes)
{
	__m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
	for (size_t i = 0; i < bytes; i += 128) {
		a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(p + i)));
		a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(p + i + 32)));
		a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(p + i + 64)));
		a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(p + i + 96)));
	}
	a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
	int64_t l[4];   /* [4] lanes */
	_mm256_storeu_si256((__m256i *)l, a0);
	return l[0] + l[1] + l[2] + l[3];
}

/* ---- threads ----------------------------------------------------------------------- */

enum job { JOB_BW, JOB_TERNARY, JOB_LMHEAD, JOB_PREFILL, JOB_Q8HEAD };

struct worker {
	pthread_t th;
	int id, nthreads;
	enum job job;
	const struct bn_kernel_ops *ops;
	pthread_barrier_t *bar;
};

static void run_job(struct worker *wk)
{
	int id = wk->id, nt = wk->nthreads;
	if (wk->job == JOB_BW) {
		size_t part = BW_BYTES / (size_t)nt;
		bw_sink += stream_sum(bw_buf + part * (size_t)id, part);
		return;
	}
	if (wk->job == JOB_TERNARY) {
		float qscale[TG_MMAX];
		int32_t qsum[TG_MMAX];
		for (size_t a = 0; a < TG_MMAX; a++) {
			qscale[a] = 1.0f;
			qsum[a] = 0;
		}
		for (size_t i = 0; i < n_mats; i++) {
			const struct mat *m = &mats[i];
			size_t half = (m->rows / (size_t)nt + 15) & ~(size_t)15;
			size_t r0 = half * (size_t)id, r1 = id == nt - 1 ? m->rows : r0 + half;
			wk->ops->ternary_gemm(m->w, m->k, r0, r1, 0.5f, q_act, qscale, qsum, tg_m,
			                      y_pp, m->rows);
			if (nt > 1)
				pthread_barrier_wait(wk->bar);
		}
		return;
	}
	if (wk->job == JOB_PREFILL) {
		for (size_t i = 0; i < 7; i++) {   /* layer 0's projections */
			const struct mat *m = &mats[i];
			size_t half = (m->rows / (size_t)nt + 15) & ~(size_t)15;
			size_t r0 = half * (size_t)id, r1 = id == nt - 1 ? m->rows : r0 + half;
			wk->ops->ternary_gemm(m->w, m->k, r0, r1, 0.5f, q_pp, pp_scale, pp_sum, PP_M,
			                      y_pp, m->rows);
			if (nt > 1)
				pthread_barrier_wait(wk->bar);
		}
		return;
	}
	size_t half = (VOCAB / (size_t)nt + 15) & ~(size_t)15;
	size_t r0 = half * (size_t)id, r1 = id == nt - 1 ? VOCAB : r0 + half;
	if (wk->job == JOB_Q8HEAD)
		wk->ops->q8_gemm(q8_head, HIDDEN, r0, r1, xq, xd, tg_m, y_out[0], VOCAB);
	else
		wk->ops->f16_gemm(lm_head, HIDDEN, r0, r1, x16, tg_m, y_out[0], VOCAB);
}

static void *worker_main(void *arg)
{
	run_job(arg);
	return NULL;
}

/* Seconds for one pass of job on nt threads. */
static double time_job(enum job job, const struct bn_kernel_ops *ops, int nt)
{
	struct worker wk[2];
	pthread_barrier_t bar;
	pthread_barrier_init(&bar, NULL, (unsigned)nt);
	for (int i = 0; i < nt; i++)
		wk[i] = (struct worker){ .id = i, .nthreads = nt, .job = job, .ops = ops, .bar = &bar };
	double t0 = now();
	for (int i = 1; i < nt; i++)
		pthread_create(&wk[i].th, NULL, worker_main, &wk[i]);
	run_job(&wk[0]);
	for (int i = 1; i < nt; i++)
		pthread_join(wk[i].th, NULL);
	double t = now() - t0;
	pthread_barrier_destroy(&bar);
	return t;
}

static double layer_macs(void)   /* multiply-adds of one layer's GEMMs at m = PP_M */
{
	double macs = 0;
	for (size_t i = 0; i < 7; i++)
		macs += (double)shape[i][0] * (double)shape[i][1] * PP_M;
	return macs;
}

/* One-thread ternary GEMV on 2560 x 512 weights that stay in L2: the compute ceiling. */
static double gemv_ceiling(const struct bn_kernel_ops *ops)
{
	const struct mat *m = &mats[0];   /* the first 512 rows of layer 0's q */
	float qscale[TG_MMAX];
	int32_t qsum[TG_MMAX];
	for (size_t a = 0; a < TG_MMAX; a++) {
		qscale[a] = 1.0f;
		qsum[a] = 0;
	}
	double best = 1e30;
	for (int r = 0; r < 20; r++) {
		double t0 = now();
		ops->ternary_gemm(m->w, m->k, 0, 512, 0.5f, q_act, qscale, qsum, tg_m, y_pp, 512);
		double t = now() - t0;
		if (t < best)
			best = t;
	}
	return (double)m->k / 4 * 512 / best * 1e-9;
}

static double gbps(enum job job, const struct bn_kernel_ops *ops, int nt, int runs)
{
	double bytes = job == JOB_BW ? (double)BW_BYTES
	               : job == JOB_TERNARY ? (double)ternary_bytes
	               : job == JOB_PREFILL ? layer_macs()
	               : job == JOB_Q8HEAD ? (double)VOCAB * Q8_ROW_BYTES
	               : (double)VOCAB * HIDDEN * 2.0;
	double v[32];
	time_job(job, ops, nt);   /* warm-up: page faults, frequency */
	for (int r = 0; r < runs; r++)
		v[r] = bytes / time_job(job, ops, nt) * 1e-9;
	return bn_median(v, (size_t)runs);
}

int main(int argc, char **argv)
{
	int runs = 5, only_threads = 0, heads_only = 0;
	const char *names[16];
	int n_names = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--runs") && i + 1 < argc)
			runs = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--threads-only") && i + 1 < argc)
			only_threads = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--heads"))
			heads_only = 1;
		else if (!strcmp(argv[i], "--m") && i + 1 < argc)
			tg_m = (size_t)atoi(argv[++i]);
		else if (n_names < 16)
			names[n_names++] = argv[i];
	}
	if (runs < 1 || runs > 32)
		runs = 5;
	if (tg_m < 1 || tg_m > TG_MMAX) {
		fprintf(stderr, "bench-kernels: --m takes 1 to %d\n", TG_MMAX);
		return 2;
	}
	uint64_t cpu = bn_cpu_features();
	if (!(cpu & BN_CPU_AVX2)) {
		fprintf(stderr, "bench-kernels: the bandwidth probe needs AVX2\n");
		return 1;
	}

	for (size_t l = 0; l < N_LAYERS; l++)
		for (size_t s = 0; s < 7; s++)
			ternary_bytes += shape[s][0] / 4 * shape[s][1];
	if (posix_memalign((void **)&ternary_buf, 64, ternary_bytes) ||
	    posix_memalign((void **)&lm_head, 64, (size_t)VOCAB * HIDDEN * 2) ||
	    posix_memalign((void **)&q8_head, 64, (size_t)VOCAB * Q8_ROW_BYTES) ||
	    posix_memalign((void **)&bw_buf, 64, BW_BYTES)) {
		fprintf(stderr, "bench-kernels: out of memory\n");
		return 1;
	}
	size_t off = 0;
	for (size_t l = 0; l < N_LAYERS; l++)
		for (size_t s = 0; s < 7; s++) {
			mats[n_mats++] = (struct mat){ shape[s][0], shape[s][1], ternary_buf + off };
			off += shape[s][0] / 4 * shape[s][1];
		}
	fill(ternary_buf, ternary_bytes, 1);
	fill(bw_buf, BW_BYTES, 2);
	for (size_t i = 0; i < (size_t)VOCAB * HIDDEN; i++)   /* finite f16 values */
		lm_head[i] = (uint16_t)(0x2000 + (i * 2654435761u >> 7) % 0x1800) |
		             (uint16_t)((i & 1) << 15);
	fill(q8_head, (size_t)VOCAB * Q8_ROW_BYTES, 3);
	for (size_t b = 0; b < (size_t)VOCAB * HIDDEN / BN_Q8_0_BLOCK; b++) {   /* finite scales */
		uint16_t d = bn_f32_to_f16(1e-3f * (float)(1 + b % 97));
		memcpy(q8_head + b * BN_Q8_0_BLOCK_BYTES, &d, 2);
	}
	for (size_t i = 0; i < TG_MMAX * FFN; i++)
		q_act[i] = (int8_t)(i * 37 + i / 11);
	if (posix_memalign((void **)&q_pp, 64, (size_t)PP_M * FFN) ||
	    posix_memalign((void **)&y_pp, 64, (size_t)PP_M * FFN * sizeof(float))) {
		fprintf(stderr, "bench-kernels: out of memory\n");
		return 1;
	}
	for (size_t i = 0; i < (size_t)PP_M * FFN; i++)
		q_pp[i] = (int8_t)(i * 37 + i / 7);
	for (size_t i = 0; i < PP_M; i++)
		pp_scale[i] = 1.0f;
	for (size_t i = 0; i < HIDDEN; i++)
		for (size_t a = 0; a < TG_MMAX; a++)
			x16[a * HIDDEN + i] = bn_f32_to_f16((float)((int)((i + a) % 17) - 8) * 0.1f);
	for (size_t a = 0; a < TG_MMAX; a++)
		for (size_t b = 0; b < HIDDEN / BN_Q8_0_BLOCK; b++) {
			float xf[BN_Q8_0_BLOCK];   /* [32] */
			for (size_t j = 0; j < BN_Q8_0_BLOCK; j++)
				xf[j] = bn_f16_to_f32(x16[a * HIDDEN + b * BN_Q8_0_BLOCK + j]);
			xd[a * (HIDDEN / BN_Q8_0_BLOCK) + b] =
				bn_q8_0_quantize_block(xf, xq + a * HIDDEN + b * BN_Q8_0_BLOCK);
		}

	printf("ternary weights %.1f MB (%zu matrices), %zu activation row%s, LM head %.1f MB "
	       "(f16) / %.1f MB (q8_0), %d runs (median)\n", ternary_bytes / 1e6, n_mats, tg_m,
	       tg_m > 1 ? "s" : "", (double)VOCAB * HIDDEN * 2 / 1e6,
	       (double)VOCAB * Q8_ROW_BYTES / 1e6, runs);
	double bw[3] = { 0 };
	for (int nt = 1; nt <= 2; nt++)
		if (!only_threads || only_threads == nt)
			bw[nt] = gbps(JOB_BW, NULL, nt, runs);
	printf("read bandwidth (AVX2 sum over 1 GB): 1 thread %.1f GB/s, 2 threads %.1f GB/s\n",
	       bw[1], bw[2]);

	struct bn_kernel_info *list;
	size_t n;
	struct bn_error err;
	memset(&err, 0, sizeof(err));
	if (bn_kernel_scan(BN_BUILD_PLUGIN_DIR, cpu, &list, &n, &err)) {
		fprintf(stderr, "bench-kernels: %s\n", err.msg);
		return 1;
	}
	printf("%-22s %8s %14s %14s %14s %14s %14s %14s %12s %10s\n", "plugin/variant", "threads",
	       "ternary GB/s", "% of read bw", "LM head GB/s", "% of read bw", "q8 head GB/s",
	       "% of read bw", "pp128 GMAC/s", "pp tok/s");
	for (size_t i = 0; i < n; i++) {
		if (!list[i].usable)
			continue;
		if (n_names) {
			int want = 0;
			for (int j = 0; j < n_names; j++)
				want |= !strcmp(names[j], list[i].name);
			if (!want)
				continue;
		}
		/* full features, then without AMX, then without AMX and VNNI: every code path */
		uint64_t masks[3] = { cpu, cpu & ~BN_CPU_AMXINT8,
		                      cpu & ~(BN_CPU_AMXINT8 | BN_CPU_AVX512VNNI | BN_CPU_AVXVNNI) };
		char seen[3][32] = { "", "", "" };
		for (int mi = 0; mi < 3; mi++) {
			struct bn_kernel *k;
			if (bn_kernel_load(&k, BN_BUILD_PLUGIN_DIR, list[i].name, masks[mi], &err))
				continue;
			bool dup = false;
			for (int e = 0; e < mi; e++)
				dup |= !strcmp(k->variant, seen[e]);
			snprintf(seen[mi], sizeof(seen[mi]), "%s", k->variant);
			if (dup) {   /* same path again */
				bn_kernel_unload(k);
				continue;
			}
			char label[64];
			snprintf(label, sizeof(label), "%s/%s", list[i].name, k->variant);
			int slow = !strcmp(list[i].name, "scalar");
			for (int nt = 1; nt <= 2; nt++) {
				if (only_threads && only_threads != nt)
					continue;
				int r = slow ? (runs < 3 ? runs : 3) : runs;
				double t = heads_only ? 0 : gbps(JOB_TERNARY, &k->ops, nt, r);
				double h = gbps(JOB_LMHEAD, &k->ops, nt, slow ? 1 : r);
				double h8 = gbps(JOB_Q8HEAD, &k->ops, nt, slow ? 1 : r);
				double g = heads_only ? 0 : gbps(JOB_PREFILL, &k->ops, nt, slow ? 1 : r);
				printf("%-22s %8d %14.2f %13.0f%% %14.2f %13.0f%% %14.2f %13.0f%% %12.1f %10.1f\n",
				       label, nt, t, 100 * t / bw[nt], h, 100 * h / bw[nt], h8,
				       100 * h8 / bw[nt], g, g * 1e9 / (layer_macs() / PP_M * N_LAYERS));
				fflush(stdout);
			}
			if (!heads_only)
				printf("%-22s GEMV compute ceiling (1 thread, 2560 x 512 in L2): %.1f GB/s\n",
				       label, gemv_ceiling(&k->ops));
			bn_kernel_unload(k);
		}
	}
	free(list);
	free(q_pp);
	free(y_pp);
	printf("(sink %lld)\n", (long long)bw_sink);
	return 0;
}
