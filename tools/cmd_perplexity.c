/* bitnet perplexity: the perplexity of a model on a text file, by the method of llama.cpp's
 * perplexity tool, so that the figures can be set side by side: the tokenized file is cut
 * into chunks of ctx tokens (a new chunk every stride tokens); each chunk is decoded from an
 * empty cache, its first token replaced by BOS when the vocabulary adds one, and only the
 * second half of each chunk is scored (those tokens see at least ctx/2 tokens of context):
 * the negative log-likelihood of token j+1 under the logits at position j, for
 * ctx/2 <= j < ctx - 1. The perplexity is exp(mean NLL); its error is the standard error of
 * the mean NLL carried through the exponential (ppl * stderr). */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "error.h"
#include "kernels.h"
#include "pool.h"
#include "tokenizer.h"
#include "tools.h"
#include "vocab.h"

#define PPL_DEFAULT_CTX 512

static void perplexity_usage(FILE *f)
{
	fprintf(f, "usage: bitnet perplexity --model M --file TEXT [--ctx 512] [--stride N] [--batch B]\n"
	           "                         [--json] [--threads N] [--plugin NAME] [--cpus LIST]\n"
	           "  --ctx N     tokens per chunk (default 512, or the model's context if smaller)\n"
	           "  --stride N  a chunk starts every N tokens (default: ctx, chunks do not overlap)\n"
	           "  --batch B   tokens per forward pass (default: ctx, at most 512)\n"
	           "  prints the running perplexity after each chunk on stderr and the result on\n"
	           "  stdout (--json: one object)\n");
}

/* Mean and spread of the per-token NLL (Welford: no cancellation over many tokens). */
struct nll_acc {
	uint64_t n;
	double mean, m2;
};

static void nll_add(struct nll_acc *a, double x)
{
	a->n++;
	double d = x - a->mean;
	a->mean += d / (double)a->n;
	a->m2 += d * (x - a->mean);
}

/* Standard error of the mean (sample variance over n - 1); 0 for fewer than two tokens. */
static double nll_stderr(const struct nll_acc *a)
{
	return a->n > 1 ? sqrt(a->m2 / (double)(a->n - 1) / (double)a->n) : 0;
}

/* -log softmax(row)[target], in double. row: [V]. NAN when a logit is not finite. */
static double token_nll(const float *row, uint32_t V, int32_t target)
{
	double mx = -INFINITY;
	for (uint32_t v = 0; v < V; v++) {
		if (!isfinite(row[v]))
			return NAN;
		if (row[v] > mx)
			mx = row[v];
	}
	double s = 0;
	for (uint32_t v = 0; v < V; v++)
		s += exp((double)row[v] - mx);
	return -((double)row[target] - mx - log(s));
}

struct ppl_cfg {
	const char *file;
	uint32_t chunk, stride, batch;
	bool json;
};

struct ppl_res {
	size_t n_tokens;              /* tokens of the file (with BOS when added) */
	uint32_t n_chunks;
	struct nll_acc acc;
};

/* Decodes every chunk and scores its second half. ids: [n_ids] the tokenized file. */
static int ppl_run(struct tool_engine *e, const struct ppl_cfg *cfg, const int32_t *ids,
                   size_t n_ids, int32_t bos, struct ppl_res *res, struct bn_error *err)
{
	uint32_t V = bn_model_hparams(e->model)->n_vocab, C = cfg->chunk, B = cfg->batch;
	uint32_t first = C / 2, n_score = C - 1 - first;
	uint32_t rows = B < n_score ? B : n_score;
	int32_t *tok = malloc(C * sizeof(int32_t));                  /* [C] the chunk */
	uint32_t *pos = malloc(B * sizeof(uint32_t));                /* [B] */
	uint32_t *seq = calloc(B, sizeof(uint32_t));                 /* [B] */
	bool *want = malloc(B * sizeof(bool));                       /* [B] */
	float *logits = malloc((size_t)rows * V * sizeof(float));    /* [rows][V] */
	int rc = 0;
	if (!tok || !pos || !seq || !want || !logits) {
		rc = bn_err_set(err, -ENOMEM, "out of memory for %u rows of %u logits", rows, V);
		goto out;
	}
	for (uint32_t k = 0; k < res->n_chunks && !rc; k++) {
		size_t start = (size_t)k * cfg->stride;
		memcpy(tok, ids + start, C * sizeof(int32_t));
		if (bos >= 0)
			tok[0] = bos;   /* every chunk reads as the start of a document */
		bn_ctx_seq_clear(e->ctx, 0);
		for (uint32_t p0 = 0; p0 < C && !rc; p0 += B) {
			uint32_t nb = C - p0 < B ? C - p0 : B;
			for (uint32_t i = 0; i < nb; i++) {
				pos[i] = p0 + i;
				want[i] = pos[i] >= first && pos[i] < C - 1;
			}
			struct bn_batch b = { nb, tok + p0, pos, seq, want };
			if ((rc = bn_decode(e->ctx, &b, logits, err)))
				break;
			for (uint32_t i = 0, r = 0; i < nb; i++) {
				if (!want[i])
					continue;
				double nll = token_nll(logits + (size_t)r++ * V, V, tok[pos[i] + 1]);
				if (!isfinite(nll)) {
					rc = bn_err_set(err, -EDOM, "chunk %u, position %u: the logits are not "
					                "finite", k + 1, pos[i]);
					break;
				}
				nll_add(&res->acc, nll);
			}
		}
		if (!rc)
			fprintf(stderr, "[%u] %.4f\n", k + 1, exp(res->acc.mean));
	}
out:
	free(tok);
	free(pos);
	free(seq);
	free(want);
	free(logits);
	return rc;
}

static void ppl_print(const struct tool_engine *e, const struct ppl_cfg *cfg,
                      const struct ppl_res *r)
{
	double nll = r->acc.mean, se = nll_stderr(&r->acc), ppl = exp(nll);
	if (cfg->json) {
		json_object *j = json_object_new_object();
		json_object_object_add(j, "model", json_object_new_string(bn_model_path(e->model)));
		json_object_object_add(j, "plugin", json_object_new_string(e->kernel->info.name));
		json_object_object_add(j, "file", json_object_new_string(cfg->file));
		json_object_object_add(j, "ctx", json_object_new_int64(cfg->chunk));
		json_object_object_add(j, "stride", json_object_new_int64(cfg->stride));
		json_object_object_add(j, "batch", json_object_new_int64(cfg->batch));
		json_object_object_add(j, "tokens", json_object_new_int64((int64_t)r->n_tokens));
		json_object_object_add(j, "chunks", json_object_new_int64(r->n_chunks));
		json_object_object_add(j, "tokens_scored", json_object_new_int64((int64_t)r->acc.n));
		json_object_object_add(j, "nll_mean", json_object_new_double(nll));
		json_object_object_add(j, "nll_stderr", json_object_new_double(se));
		json_object_object_add(j, "ppl", json_object_new_double(ppl));
		json_object_object_add(j, "ppl_stderr", json_object_new_double(ppl * se));
		puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY |
		                                        JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(j);
		return;
	}
	printf("perplexity %.4f +/- %.4f (mean NLL %.6f +/- %.6f; %u chunk%s of %u tokens, %llu "
	       "tokens scored)\n", ppl, ppl * se, nll, se, r->n_chunks, r->n_chunks == 1 ? "" : "s",
	       cfg->chunk, (unsigned long long)r->acc.n);
}

/* Returned by the steps below to go on; anything else is the exit status. */
#define PPL_GO (-1)

static int ppl_parse(int argc, char **argv, struct tool_engine_opts *eo, struct ppl_cfg *cfg)
{
	static const struct option lo[] = {
		TOOL_ENGINE_LONGOPTS,
		{ "file", required_argument, NULL, 'f' },
		{ "stride", required_argument, NULL, 's' },
		{ "batch", required_argument, NULL, 'b' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	tool_engine_opts_init(eo);
	memset(cfg, 0, sizeof(*cfg));
	unsigned long v;
	int c, r;
	while ((c = getopt_long(argc, argv, "m:t:f:jh", lo, NULL)) != -1) {
		if ((r = tool_engine_opt("perplexity", eo, c, optarg))) {
			if (r < 0)
				return 2;
			continue;
		}
		switch (c) {
		case 'f': cfg->file = optarg; break;
		case 's':
			if (!tool_parse_uint("perplexity", "--stride", optarg, 1, 1u << 30, &v))
				return 2;
			cfg->stride = (uint32_t)v;
			break;
		case 'b':
			if (!tool_parse_uint("perplexity", "--batch", optarg, 1, 65536, &v))
				return 2;
			cfg->batch = (uint32_t)v;
			break;
		case 'j': cfg->json = true; break;
		case 'h': perplexity_usage(stdout); return 0;
		default: perplexity_usage(stderr); return 2;
		}
	}
	if (!cfg->file || optind != argc) {
		perplexity_usage(stderr);
		return 2;
	}
	/* Position ctx/2 .. ctx-2 are scored: fewer than 3 tokens a chunk scores nothing. */
	if (eo->n_ctx && eo->n_ctx < 3) {
		tool_error("perplexity", "--ctx %u: a chunk needs at least 3 tokens (its second half "
		           "is scored)", eo->n_ctx);
		return 2;
	}
	/* The context holds one chunk; its batch size is the most tokens of one pass. */
	uint32_t want_batch = cfg->batch ? cfg->batch : PPL_DEFAULT_CTX;
	if (eo->n_ctx && want_batch > eo->n_ctx)
		want_batch = eo->n_ctx;
	eo->n_batch = want_batch;
	return PPL_GO;
}

/* The file as the model's tokens. */
struct ppl_text {
	struct bn_vocab vocab;
	struct bn_tokenizer *tok;
	int32_t *ids;                 /* [n_ids] */
	size_t n_ids;
	int32_t bos;                  /* -1: the tokenizer adds none */
};

/* Tokenizes text [len] with the model's vocabulary; 0, or 1 after printing why. */
static int ppl_tokenize(const struct tool_engine *e, const struct ppl_cfg *cfg, const char *text,
                        size_t len, struct ppl_text *t)
{
	const struct bn_hparams *hp = bn_model_hparams(e->model);
	struct bn_error err = { 0 };
	if (bn_vocab_from_gguf(&t->vocab, bn_model_gguf(e->model), &err) ||
	    bn_tokenizer_new(&t->tok, &t->vocab, hp->arch_name, &err)) {
		tool_error("perplexity", "%s: %s", bn_model_path(e->model), err.msg);
		return 1;
	}
	bool add_bos = bn_tokenizer_add_bos(t->tok);
	t->bos = add_bos ? bn_tokenizer_bos(t->tok) : -1;
	if (bn_tokenize(t->tok, text, len, add_bos, false, &t->ids, &t->n_ids, &err)) {
		tool_error("perplexity", "%s: %s", cfg->file, err.msg);
		return 1;
	}
	for (size_t i = 0; i < t->n_ids; i++) {
		if (t->ids[i] < 0 || (uint32_t)t->ids[i] >= hp->n_vocab) {
			tool_error("perplexity", "%s: token %d is outside the model's vocabulary (%u)",
			           cfg->file, t->ids[i], hp->n_vocab);
			return 1;
		}
	}
	return 0;
}

/* Chunk, stride and batch for n_ids tokens, announced on stderr; 0, or 1 after printing
 * why the text cannot be scored. */
static int ppl_plan(const struct tool_engine *e, uint32_t ctx_opt, struct ppl_cfg *cfg,
                    size_t n_ids, struct ppl_res *res)
{
	const struct bn_hparams *hp = bn_model_hparams(e->model);
	cfg->chunk = ctx_opt;
	if (!cfg->chunk) {
		uint32_t nc = bn_ctx_n_ctx(e->ctx);
		cfg->chunk = nc < PPL_DEFAULT_CTX ? nc : PPL_DEFAULT_CTX;
	}
	if (cfg->chunk < 3) {
		tool_error("perplexity", "the model's context of %u tokens is too short to score",
		           cfg->chunk);
		return 1;
	}
	if (hp->n_ctx_train && cfg->chunk > hp->n_ctx_train)
		fprintf(stderr, "bitnet perplexity: warning: --ctx %u exceeds the model's training "
		        "context of %u\n", cfg->chunk, hp->n_ctx_train);
	cfg->stride = cfg->stride ? cfg->stride : cfg->chunk;
	cfg->batch = bn_ctx_n_batch(e->ctx) < cfg->chunk ? bn_ctx_n_batch(e->ctx) : cfg->chunk;
	res->n_tokens = n_ids;
	if (n_ids < cfg->chunk) {
		tool_error("perplexity", "%s: %zu tokens are fewer than one chunk of %u (--ctx); "
		           "give a longer text or a smaller --ctx", cfg->file, n_ids, cfg->chunk);
		return 1;
	}
	res->n_chunks = (uint32_t)((n_ids - cfg->chunk) / cfg->stride + 1);
	fprintf(stderr, "bitnet perplexity: %s: %zu tokens, %u chunk%s of %u (stride %u, %u "
	        "scored each), plugin %s, %u thread%s\n", cfg->file, n_ids, res->n_chunks,
	        res->n_chunks == 1 ? "" : "s", cfg->chunk, cfg->stride, cfg->chunk - 1 - cfg->chunk / 2,
	        e->kernel->info.name, bn_pool_size(e->pool), bn_pool_size(e->pool) == 1 ? "" : "s");
	return 0;
}

int cmd_perplexity(int argc, char **argv)
{
	struct tool_engine_opts eo;
	struct ppl_cfg cfg;
	int rc = ppl_parse(argc, argv, &eo, &cfg);
	if (rc != PPL_GO)
		return rc;
	size_t len = 0;
	char *text = NULL;
	if ((rc = tool_read_path(cfg.file, &text, &len))) {
		tool_error("perplexity", "cannot read --file %s: %s", cfg.file, strerror(-rc));
		return 1;
	}
	struct tool_engine e;
	if ((rc = tool_engine_open("perplexity", &eo, &e))) {
		free(text);
		return rc;
	}
	struct ppl_text t = { 0 };
	struct ppl_res res;
	memset(&res, 0, sizeof(res));
	struct bn_error err = { 0 };
	if (!(rc = ppl_tokenize(&e, &cfg, text, len, &t)) &&
	    !(rc = ppl_plan(&e, eo.n_ctx, &cfg, t.n_ids, &res))) {
		if ((rc = ppl_run(&e, &cfg, t.ids, t.n_ids, t.bos, &res, &err))) {
			tool_error("perplexity", "%s", err.msg);
			rc = 1;
		} else {
			ppl_print(&e, &cfg, &res);
		}
	}
	free(t.ids);
	bn_tokenizer_free(t.tok);
	bn_vocab_free(&t.vocab);
	free(text);
	tool_engine_close(&e);
	return rc;
}
