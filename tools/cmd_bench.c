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
#include "profile.h"
#include "stats.h"
#include "tools.h"

static void bench_usage(FILE *f)
{
	fprintf(f, "usage: bitnet bench --model M [-p 128] [-n 64] [-r 5] [--threads N] [--cpus LIST]\n"
	           "                    [--plugin NAME] [--parallel K] [--profile] [--json]\n");
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
	double m = bn_median(t, (size_t)reps);
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
	return b + bn_model_head_bytes(m);
}

struct bench_cfg {
	unsigned long np, ng, reps, par;
	bool json, profile;
};

struct bench_res {
	double pp, tg;                /* medians, t/s */
	double bw, bpt;               /* read GB/s; weight bytes per generated token */
	struct bn_profile prof;       /* --profile: one extra generation round */
	double alone_ternary, alone_head;   /* GB/s of the streaming ops on their own */
};

/* Rep 0 is the warm-up; with cfg->profile one more generation round runs profiled. */
static int bench_measure(struct tool_engine *e, const struct bench_cfg *cfg, struct bench_res *res,
                         struct bn_error *err)
{
	const struct bn_hparams *hp = bn_model_hparams(e->model);
	uint32_t V = hp->n_vocab, B = (uint32_t)(cfg->np > cfg->par ? cfg->np : cfg->par);
	uint32_t par = (uint32_t)cfg->par;
	int32_t *tok = malloc(B * sizeof(int32_t));           /* [B] */
	uint32_t *pos = malloc(B * sizeof(uint32_t)), *seq = malloc(B * sizeof(uint32_t));
	bool *want = malloc(B * sizeof(bool));
	float *logits = malloc((size_t)par * V * sizeof(float));   /* [par][V] */
	double *pp = calloc(cfg->reps, sizeof(double)), *tg = calloc(cfg->reps, sizeof(double));
	int rc = 0;
	if (!tok || !pos || !seq || !want || !logits || !pp || !tg) {
		rc = bn_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (uint32_t i = 0; i < B; i++)
		tok[i] = (int32_t)((i * 7919u + 13u) % V);
	unsigned long rounds = cfg->reps + 1 + (cfg->profile && cfg->ng ? 1 : 0);
	for (unsigned long rep = 0; rep < rounds && !rc; rep++) {
		bool prof = rep == cfg->reps + 1;
		if (cfg->np && !prof) {
			bn_ctx_seq_clear(e->ctx, 0);
			for (uint32_t i = 0; i < cfg->np; i++) {
				pos[i] = i;
				seq[i] = 0;
			}
			struct bn_batch b = { (uint32_t)cfg->np, tok, pos, seq, NULL };
			double t0 = bn_now();
			rc = bn_decode(e->ctx, &b, logits, err);
			if (rep)
				pp[rep - 1] = (double)cfg->np / (bn_now() - t0);
		}
		if (cfg->ng && !rc) {
			for (uint32_t s = 0; s < par; s++)
				bn_ctx_seq_clear(e->ctx, s);
			if (prof)
				bn_ctx_set_profile(e->ctx, &res->prof);
			double t0 = bn_now();
			for (unsigned long g = 0; g < cfg->ng && !rc; g++) {
				for (uint32_t s = 0; s < par; s++) {
					pos[s] = (uint32_t)g;
					seq[s] = s;
					want[s] = true;
					tok[s] = (int32_t)((g * 31 + s * 17 + 1) % V);
				}
				struct bn_batch b = { par, tok, pos, seq, want };
				rc = bn_decode(e->ctx, &b, logits, err);
			}
			bn_ctx_set_profile(e->ctx, NULL);
			if (rep && !prof)
				tg[rep - 1] = (double)cfg->ng * par / (bn_now() - t0);
		}
	}
	if (!rc && cfg->profile && cfg->ng)
		rc = bn_ctx_stream_probe(e->ctx, 5, &res->alone_ternary, &res->alone_head);
	if (rc)
		goto out;
	res->bw = read_bandwidth(e->pool, 5);
	res->pp = cfg->np ? bn_median(pp, cfg->reps) : 0;
	res->tg = cfg->ng ? bn_median(tg, cfg->reps) : 0;
	res->bpt = bytes_per_token(e->model);
out:
	free(tok);
	free(pos);
	free(seq);
	free(want);
	free(logits);
	free(pp);
	free(tg);
	return rc;
}

/* Ternary projections of the profile, summed. */
static void prof_ternary(const struct bn_profile *p, double *sec, double *bytes)
{
	static const enum bn_prof_op t[] = { BN_PROF_QKV, BN_PROF_WO, BN_PROF_GATEUP, BN_PROF_DOWN };
	*sec = *bytes = 0;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		*sec += p->seconds[t[i]];
		*bytes += p->bytes[t[i]];
	}
}

static void print_profile(const struct bench_cfg *cfg, const struct bench_res *r)
{
	const struct bn_profile *p = &r->prof;
	double n = p->passes ? (double)p->passes : 1, total = p->total > 0 ? p->total : 1;
	printf("\nprofile: tg%lu, %lu sequence%s, %llu passes, %.2f ms a pass\n", cfg->ng, cfg->par,
	       cfg->par == 1 ? "" : "s", (unsigned long long)p->passes, 1e3 * p->total / n);
	printf("%-16s %10s %8s %12s %12s %8s\n", "op", "ms/pass", "%", "dispatches", "wait ms",
	       "GB/s");
	double streaming = 0;
	for (int op = 0; op < BN_PROF_N; op++) {
		char gbs[16] = "";
		if (bn_prof_op_streams(op) && p->seconds[op] > 0) {
			snprintf(gbs, sizeof(gbs), "%.2f", p->bytes[op] / p->seconds[op] / 1e9);
			streaming += p->seconds[op];
		}
		printf("%-16s %10.3f %7.1f%% %12.1f %12.3f %8s\n", bn_prof_op_name(op),
		       1e3 * p->seconds[op] / n, 100 * p->seconds[op] / total, (double)p->calls[op] / n,
		       1e3 * p->wait[op] / n, gbs);
	}
	double ts, tb;
	prof_ternary(p, &ts, &tb);
	double in_t = ts > 0 ? tb / ts / 1e9 : 0;
	double in_h = p->seconds[BN_PROF_HEAD] > 0 ? p->bytes[BN_PROF_HEAD] / p->seconds[BN_PROF_HEAD] / 1e9 : 0;
	printf("ternary projections in the pass %.2f GB/s, alone %.2f GB/s (%.0f %%); lm head in the "
	       "pass %.2f GB/s, alone %.2f GB/s (%.0f %%)\n", in_t, r->alone_ternary,
	       r->alone_ternary > 0 ? 100 * in_t / r->alone_ternary : 0, in_h, r->alone_head,
	       r->alone_head > 0 ? 100 * in_h / r->alone_head : 0);
	printf("outside the weight-streaming ops: %.1f %% of a pass (%.2f ms)\n",
	       100 * (p->total - streaming) / total, 1e3 * (p->total - streaming) / n);
}

static void json_profile(json_object *j, const struct bench_res *r)
{
	const struct bn_profile *p = &r->prof;
	double n = p->passes ? (double)p->passes : 1, ts, tb;
	json_object *jp = json_object_new_object(), *ops = json_object_new_array();
	for (int op = 0; op < BN_PROF_N; op++) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "op", json_object_new_string(bn_prof_op_name(op)));
		json_object_object_add(o, "ms_per_pass", json_object_new_double(1e3 * p->seconds[op] / n));
		json_object_object_add(o, "fraction", json_object_new_double(p->total > 0 ? p->seconds[op] / p->total : 0));
		json_object_object_add(o, "dispatches_per_pass", json_object_new_double((double)p->calls[op] / n));
		json_object_object_add(o, "wait_ms_per_pass", json_object_new_double(1e3 * p->wait[op] / n));
		if (bn_prof_op_streams(op))
			json_object_object_add(o, "gb_per_second", json_object_new_double(
				p->seconds[op] > 0 ? p->bytes[op] / p->seconds[op] / 1e9 : 0));
		json_object_array_add(ops, o);
	}
	prof_ternary(p, &ts, &tb);
	json_object_object_add(jp, "passes", json_object_new_int64((int64_t)p->passes));
	json_object_object_add(jp, "ms_per_pass", json_object_new_double(1e3 * p->total / n));
	json_object_object_add(jp, "ops", ops);
	json_object_object_add(jp, "ternary_gb_per_second", json_object_new_double(ts > 0 ? tb / ts / 1e9 : 0));
	json_object_object_add(jp, "ternary_alone_gb_per_second", json_object_new_double(r->alone_ternary));
	json_object_object_add(jp, "head_gb_per_second", json_object_new_double(
		p->seconds[BN_PROF_HEAD] > 0 ? p->bytes[BN_PROF_HEAD] / p->seconds[BN_PROF_HEAD] / 1e9 : 0));
	json_object_object_add(jp, "head_alone_gb_per_second", json_object_new_double(r->alone_head));
	json_object_object_add(j, "profile", jp);
}

static void bench_print(const struct tool_engine *e, const struct bench_cfg *cfg,
                        const struct bench_res *r)
{
	double eff = r->bpt * r->tg / (double)cfg->par / 1e9;   /* weight bytes streamed */
	double ceil_ = r->bpt > 0 ? r->bw * 1e9 / r->bpt : 0;
	if (cfg->json) {
		json_object *j = json_object_new_object();
		json_object_object_add(j, "model", json_object_new_string(bn_model_path(e->model)));
		json_object_object_add(j, "weight_type", json_object_new_string(bn_model_weight_type(e->model)));
		json_object_object_add(j, "head_type", json_object_new_string(bn_model_head_type(e->model)));
		json_object_object_add(j, "plugin", json_object_new_string(e->kernel->info.name));
		json_object_object_add(j, "plugin_variant", json_object_new_string(e->kernel->variant));
		json_object_object_add(j, "threads", json_object_new_int64(bn_pool_size(e->pool)));
		json_object_object_add(j, "cpus", json_object_new_string(bn_pool_cpus(e->pool)));
		json_object_object_add(j, "n_prompt", json_object_new_int64((int64_t)cfg->np));
		json_object_object_add(j, "n_gen", json_object_new_int64((int64_t)cfg->ng));
		json_object_object_add(j, "parallel", json_object_new_int64((int64_t)cfg->par));
		json_object_object_add(j, "repetitions", json_object_new_int64((int64_t)cfg->reps));
		json_object_object_add(j, "pp_tokens_per_second", json_object_new_double(r->pp));
		json_object_object_add(j, "tg_tokens_per_second", json_object_new_double(r->tg));
		json_object_object_add(j, "bytes_per_token", json_object_new_double(r->bpt));
		json_object_object_add(j, "effective_gb_per_second", json_object_new_double(eff));
		json_object_object_add(j, "read_bandwidth_gb_per_second", json_object_new_double(r->bw));
		json_object_object_add(j, "bandwidth_ratio", json_object_new_double(r->bw > 0 ? eff / r->bw : 0));
		json_object_object_add(j, "tg_ceiling_tokens_per_second", json_object_new_double(ceil_));
		if (cfg->profile && cfg->ng)
			json_profile(j, r);
		puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY));
		json_object_put(j);
		return;
	}
	printf("%-10s %8s %8s %12s %12s %10s %10s %8s\n", "plugin", "threads", "parallel",
	       cfg->np ? "pp t/s" : "", cfg->ng ? "tg t/s" : "", "GB/s", "read GB/s", "ratio");
	printf("%-10s %8u %8lu %12.2f %12.2f %10.2f %10.2f %7.1f%%\n", e->kernel->info.name,
	       bn_pool_size(e->pool), cfg->par, r->pp, r->tg, eff, r->bw,
	       r->bw > 0 ? 100 * eff / r->bw : 0);
	printf("pp%lu median of %lu, tg%lu median of %lu; %.3f GB read per generated token "
	       "(%s head %.3f GB); bandwidth ceiling %.2f t/s\n", cfg->np, cfg->reps, cfg->ng,
	       cfg->reps, r->bpt / 1e9, bn_model_head_type(e->model),
	       bn_model_head_bytes(e->model) / 1e9, ceil_);
	if (cfg->profile && cfg->ng)
		print_profile(cfg, r);
}

int cmd_bench(int argc, char **argv)
{
	static const struct option lo[] = {
		TOOL_ENGINE_LONGOPTS,
		{ "n-prompt", required_argument, NULL, 'p' },
		{ "n-gen", required_argument, NULL, 'n' },
		{ "repetitions", required_argument, NULL, 'r' },
		{ "parallel", required_argument, NULL, 'P' },
		{ "profile", no_argument, NULL, 'F' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct tool_engine_opts eo;
	tool_engine_opts_init(&eo);
	struct bench_cfg cfg = { .np = 128, .ng = 64, .reps = 5, .par = 1 };
	int c, r;
	while ((c = getopt_long(argc, argv, "m:t:p:n:r:jh", lo, NULL)) != -1) {
		if ((r = tool_engine_opt("bench", &eo, c, optarg))) {
			if (r < 0)
				return 2;
			continue;
		}
		switch (c) {
		case 'p':
			if (!tool_parse_uint("bench", "-p", optarg, 0, 65536, &cfg.np))
				return 2;
			break;
		case 'n':
			if (!tool_parse_uint("bench", "-n", optarg, 0, 65536, &cfg.ng))
				return 2;
			break;
		case 'r':
			if (!tool_parse_uint("bench", "-r", optarg, 1, 1000, &cfg.reps))
				return 2;
			break;
		case 'P':
			if (!tool_parse_uint("bench", "--parallel", optarg, 1, 64, &cfg.par))
				return 2;
			break;
		case 'F': cfg.profile = true; break;
		case 'j': cfg.json = true; break;
		case 'h': bench_usage(stdout); return 0;
		default: bench_usage(stderr); return 2;
		}
	}
	if (optind != argc || (!cfg.np && !cfg.ng)) {
		bench_usage(stderr);
		return 2;
	}
	if (cfg.profile && !cfg.ng) {
		tool_error("bench", "--profile profiles generation: give -n > 0");
		return 2;
	}
	eo.n_seq = (uint32_t)cfg.par;
	eo.n_batch = (uint32_t)(cfg.np > cfg.par ? cfg.np : cfg.par);
	if (!eo.n_ctx)
		eo.n_ctx = (uint32_t)(cfg.np + cfg.ng + 1 > 512 ? cfg.np + cfg.ng + 1 : 512);
	struct tool_engine e;
	if ((r = tool_engine_open("bench", &eo, &e)))
		return r;
	fprintf(stderr, "bitnet bench: %s, %s, %s head, plugin %s (%s), %u threads on CPU %s%s%s\n",
	        bn_model_path(e.model), bn_model_weight_type(e.model), bn_model_head_type(e.model),
	        e.kernel->info.name,
	        e.kernel->variant, bn_pool_size(e.pool), bn_pool_cpus(e.pool),
	        eo.numa ? ", numa " : "", eo.numa ? bn_numa_name((enum bn_numa)eo.numa) : "");
	struct bench_res res;
	memset(&res, 0, sizeof(res));
	struct bn_error err = { 0 };
	int rc = bench_measure(&e, &cfg, &res, &err);
	if (rc)
		tool_error("bench", "%s", err.msg[0] ? err.msg : "out of memory");
	else
		bench_print(&e, &cfg, &res);
	tool_engine_close(&e);
	return rc ? 1 : 0;
}
