/* bitnet bench: prompt processing and generation speed, like llama-bench, beside this
 * machine's read bandwidth measured in the same run (decode is a memory-streaming problem:
 * the ratio of the two is the figure that matters). */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "engine.h"
#include "error.h"
#include "generate.h"
#include "kernels.h"
#include "model.h"
#include "pool.h"
#include "tools.h"

static void bench_usage(FILE *f)
{
	fprintf(f, "usage: bitnet bench --model M [-p 128] [-n 64] [-r 5] [--threads N] [--cpus LIST]\n"
	           "                    [--plugin NAME] [--parallel K] [--json]\n");
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmp_d);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Read bandwidth: every pool worker sums its slice of a buffer far larger than the caches. */
struct bw_job {
	const uint64_t *buf;          /* [n] */
	size_t n;
	uint64_t sink[64];
};

static void bw_worker(void *arg, unsigned idx, unsigned nth)
{
	struct bw_job *j = arg;
	size_t lo, hi;
	bn_pool_split(j->n, 64, idx, nth, &lo, &hi);
	uint64_t a = 0, b = 0, c = 0, d = 0;
	for (size_t i = lo; i + 4 <= hi; i += 4) {
		a ^= j->buf[i];
		b ^= j->buf[i + 1];
		c ^= j->buf[i + 2];
		d ^= j->buf[i + 3];
	}
	j->sink[idx % 64] = a ^ b ^ c ^ d;
}

static double read_bandwidth(struct bn_pool *pool, int reps)
{
	size_t bytes = (size_t)1 << 30;
	uint64_t *buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		return 0;
	for (size_t i = 0; i < bytes / 8; i++)
		buf[i] = i * 0x9e3779b97f4a7c15ull;
	struct bw_job j = { buf, bytes / 8, { 0 } };
	double *t = calloc((size_t)reps + 1, sizeof(double));
	bn_pool_run(pool, bw_worker, &j);   /* warm-up */
	for (int r = 0; r < reps; r++) {
		double t0 = bn_now();
		bn_pool_run(pool, bw_worker, &j);
		t[r] = (double)bytes / (bn_now() - t0) / 1e9;
	}
	double m = median(t, reps);
	free(t);
	munmap(buf, bytes);
	return m;
}

/* Bytes one decode step reads: every projection and the LM head (the KV cache is small). */
static double bytes_per_token(const struct bn_model *m)
{
	double b = 0;
	for (uint32_t l = 0; l < m->hp.n_layer; l++) {
		const struct bn_layer *L = &m->layers[l];
		const struct bn_tmat *w[] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->wgate, &L->wup, &L->wdown };
		for (int i = 0; i < 7; i++)
			b += (double)w[i]->rows * w[i]->k / 4;
	}
	size_t es = m->head_type == BN_TYPE_F32 ? 4 : 2;
	return b + (double)m->hp.n_vocab * m->hp.n_embd * es;
}

int cmd_bench(int argc, char **argv)
{
	static const struct option lo[] = {
		TOOL_ENGINE_LONGOPTS,
		{ "n-prompt", required_argument, NULL, 'p' },
		{ "n-gen", required_argument, NULL, 'n' },
		{ "repetitions", required_argument, NULL, 'r' },
		{ "parallel", required_argument, NULL, 'P' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct tool_engine_opts eo;
	tool_engine_opts_init(&eo);
	unsigned long np = 128, ng = 64, reps = 5, par = 1;
	bool json = false;
	int c, r;
	while ((c = getopt_long(argc, argv, "m:t:p:n:r:jh", lo, NULL)) != -1) {
		if ((r = tool_engine_opt("bench", &eo, c, optarg))) {
			if (r < 0)
				return 2;
			continue;
		}
		switch (c) {
		case 'p':
			if (!tool_parse_uint("bench", "-p", optarg, 0, 65536, &np))
				return 2;
			break;
		case 'n':
			if (!tool_parse_uint("bench", "-n", optarg, 0, 65536, &ng))
				return 2;
			break;
		case 'r':
			if (!tool_parse_uint("bench", "-r", optarg, 1, 1000, &reps))
				return 2;
			break;
		case 'P':
			if (!tool_parse_uint("bench", "--parallel", optarg, 1, 64, &par))
				return 2;
			break;
		case 'j': json = true; break;
		case 'h': bench_usage(stdout); return 0;
		default: bench_usage(stderr); return 2;
		}
	}
	if (optind != argc || (!np && !ng)) {
		bench_usage(stderr);
		return 2;
	}
	eo.n_seq = (uint32_t)par;
	eo.n_batch = (uint32_t)(np > par ? np : par);
	if (!eo.n_ctx)
		eo.n_ctx = (uint32_t)(np + ng + 1 > 512 ? np + ng + 1 : 512);
	struct tool_engine e;
	if ((r = tool_engine_open("bench", &eo, &e)))
		return r;
	const struct bn_hparams *hp = bn_model_hparams(e.model);
	uint32_t V = hp->n_vocab, B = (uint32_t)(np > par ? np : par);
	int32_t *tok = malloc(B * sizeof(int32_t));           /* [B] */
	uint32_t *pos = malloc(B * sizeof(uint32_t)), *seq = malloc(B * sizeof(uint32_t));
	bool *want = malloc(B * sizeof(bool));
	float *logits = malloc((size_t)par * V * sizeof(float));   /* [par][V] */
	double *pp = calloc(reps, sizeof(double)), *tg = calloc(reps, sizeof(double));
	struct bn_error err = { 0 };
	int rc = 0;
	if (!tok || !pos || !seq || !want || !logits || !pp || !tg) {
		tool_error("bench", "out of memory");
		rc = 1;
		goto out;
	}
	for (uint32_t i = 0; i < B; i++)
		tok[i] = (int32_t)((i * 7919u + 13u) % V);
	fprintf(stderr, "bitnet bench: %s, %s, plugin %s (%s), %u threads on CPU %s%s%s\n",
	        bn_model_path(e.model), bn_model_weight_type(e.model), e.kernel->info.name,
	        e.kernel->variant, bn_pool_size(e.pool), bn_pool_cpus(e.pool),
	        eo.numa ? ", numa " : "", eo.numa ? bn_numa_name((enum bn_numa)eo.numa) : "");
	for (unsigned long rep = 0; rep <= reps && !rc; rep++) {   /* rep 0 is the warm-up */
		if (np) {
			bn_ctx_seq_clear(e.ctx, 0);
			for (uint32_t i = 0; i < np; i++) {
				pos[i] = i;
				seq[i] = 0;
			}
			struct bn_batch b = { (uint32_t)np, tok, pos, seq, NULL };
			double t0 = bn_now();
			rc = bn_decode(e.ctx, &b, logits, &err);
			if (rep)
				pp[rep - 1] = (double)np / (bn_now() - t0);
		}
		if (ng && !rc) {
			for (uint32_t s = 0; s < par; s++)
				bn_ctx_seq_clear(e.ctx, s);
			double t0 = bn_now();
			for (unsigned long g = 0; g < ng && !rc; g++) {
				for (uint32_t s = 0; s < par; s++) {
					pos[s] = (uint32_t)g;
					seq[s] = s;
					want[s] = true;
					tok[s] = (int32_t)((g * 31 + s * 17 + 1) % V);
				}
				struct bn_batch b = { (uint32_t)par, tok, pos, seq, want };
				rc = bn_decode(e.ctx, &b, logits, &err);
			}
			if (rep)
				tg[rep - 1] = (double)ng * par / (bn_now() - t0);
		}
	}
	if (rc) {
		tool_error("bench", "%s", err.msg);
		rc = 1;
		goto out;
	}
	double bw = read_bandwidth(e.pool, 5);
	double mpp = np ? median(pp, (int)reps) : 0, mtg = ng ? median(tg, (int)reps) : 0;
	double bpt = bytes_per_token(e.model);
	double eff = par == 1 ? bpt * mtg / 1e9 : bpt * mtg / par / 1e9;   /* weight bytes streamed */
	if (json) {
		json_object *j = json_object_new_object();
		json_object_object_add(j, "model", json_object_new_string(bn_model_path(e.model)));
		json_object_object_add(j, "weight_type", json_object_new_string(bn_model_weight_type(e.model)));
		json_object_object_add(j, "plugin", json_object_new_string(e.kernel->info.name));
		json_object_object_add(j, "plugin_variant", json_object_new_string(e.kernel->variant));
		json_object_object_add(j, "threads", json_object_new_int64(bn_pool_size(e.pool)));
		json_object_object_add(j, "cpus", json_object_new_string(bn_pool_cpus(e.pool)));
		json_object_object_add(j, "n_prompt", json_object_new_int64((int64_t)np));
		json_object_object_add(j, "n_gen", json_object_new_int64((int64_t)ng));
		json_object_object_add(j, "parallel", json_object_new_int64((int64_t)par));
		json_object_object_add(j, "repetitions", json_object_new_int64((int64_t)reps));
		json_object_object_add(j, "pp_tokens_per_second", json_object_new_double(mpp));
		json_object_object_add(j, "tg_tokens_per_second", json_object_new_double(mtg));
		json_object_object_add(j, "bytes_per_token", json_object_new_double(bpt));
		json_object_object_add(j, "effective_gb_per_second", json_object_new_double(eff));
		json_object_object_add(j, "read_bandwidth_gb_per_second", json_object_new_double(bw));
		json_object_object_add(j, "bandwidth_ratio", json_object_new_double(bw > 0 ? eff / bw : 0));
		json_object_object_add(j, "tg_ceiling_tokens_per_second",
		                       json_object_new_double(bpt > 0 ? bw * 1e9 / bpt : 0));
		puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY));
		json_object_put(j);
	} else {
		printf("%-10s %8s %8s %12s %12s %10s %10s %8s\n", "plugin", "threads", "parallel",
		       np ? "pp t/s" : "", ng ? "tg t/s" : "", "GB/s", "read GB/s", "ratio");
		printf("%-10s %8u %8lu %12.2f %12.2f %10.2f %10.2f %7.1f%%\n", e.kernel->info.name,
		       bn_pool_size(e.pool), par, mpp, mtg, eff, bw, bw > 0 ? 100 * eff / bw : 0);
		printf("pp%lu median of %lu, tg%lu median of %lu; %.3f GB read per generated token; "
		       "bandwidth ceiling %.2f t/s\n", np, reps, ng, reps, bpt / 1e9,
		       bpt > 0 ? bw * 1e9 / bpt : 0);
	}
out:
	free(tok);
	free(pos);
	free(seq);
	free(want);
	free(logits);
	free(pp);
	free(tg);
	tool_engine_close(&e);
	return rc;
}
