/* bitnet trace: the RMS, min, max and mean of the activations after every op of every layer
 * at every position (lib/trace.h), as a table or JSON; --compare holds them against another
 * trace (another plugin, --rescale-gamma, or tools/train/ref.py trace, the numpy reference)
 * and names the first op where the two part.
 *
 * JSON (also what ref.py trace writes):
 *   { "format": "bitnet-trace-1", "model": PATH, "plugin": NAME, "rescale_gamma": BOOL,
 *     "n_layer": L, "tokens": [ids],
 *     "trace": [ { "layer": l, "op": NAME, "rms": [per position], "min": [..], "max": [..],
 *                  "mean": [..] }, ... ] }
 * in pass order: layers 0..L-1 with attn_norm .. layer_out, then layer L with out_norm and
 * logits. */
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
#include "tokenizer.h"
#include "tools.h"
#include "trace.h"
#include "vocab.h"

#define TRACE_FORMAT "bitnet-trace-1"

static void trace_usage(FILE *f)
{
	fprintf(f, "usage: bitnet trace --model M (--tokens 1,2,3 | --prompt TEXT) [--json]\n"
	           "                    [--compare OTHER.json] [--tolerance X] [engine options]\n"
	           "  per layer, op and position: RMS, min, max and mean of the activations\n"
	           "  --json         print the trace as one JSON object\n"
	           "  --compare F    report the first (layer, op, position) whose RMS differs from\n"
	           "                 F's by more than the tolerance (exit 1) or that they match;\n"
	           "                 without --tokens/--prompt, F's tokens are used\n"
	           "  --tolerance X  relative, default 1e-3\n");
}

struct stat4 {
	double rms, min, max, mean;
};

struct tracer {
	uint32_t n_layer, n_tok;
	struct stat4 *st;             /* [n_layer + 1][BN_TRACE_N][n_tok] */
	bool *seen;                   /* [n_layer + 1][BN_TRACE_N][n_tok] */
};

static size_t tr_index(const struct tracer *t, uint32_t layer, unsigned op, uint32_t i)
{
	return ((size_t)layer * BN_TRACE_N + op) * t->n_tok + i;
}

static void tr_sink(void *user, uint32_t layer, enum bn_trace_op op, uint32_t i, const float *x,
                    size_t n)
{
	struct tracer *t = user;
	if (layer > t->n_layer || (unsigned)op >= BN_TRACE_N || i >= t->n_tok || !n)
		return;
	double sum = 0, sq = 0, mn = x[0], mx = x[0];
	for (size_t e = 0; e < n; e++) {
		double v = x[e];
		sum += v;
		sq += v * v;
		mn = v < mn ? v : mn;
		mx = v > mx ? v : mx;
	}
	size_t k = tr_index(t, layer, op, i);
	t->st[k] = (struct stat4){ sqrt(sq / (double)n), mn, mx, sum / (double)n };
	t->seen[k] = true;
}

/* The (layer, op) pairs of a pass, in order. */
static bool tr_next(const struct tracer *t, uint32_t *layer, unsigned *op)
{
	if (*layer < t->n_layer) {
		if (++*op <= BN_TRACE_LAYER_OUT)
			return true;
		/* after the last layer come the final ops, as layer n_layer */
		*op = ++*layer < t->n_layer ? BN_TRACE_ATTN_NORM : BN_TRACE_OUT_NORM;
		return true;
	}
	return ++*op < BN_TRACE_N;
}

static void tr_first(const struct tracer *t, uint32_t *layer, unsigned *op)
{
	*layer = 0;
	*op = t->n_layer ? BN_TRACE_ATTN_NORM : BN_TRACE_OUT_NORM;
}

/* One line per (layer, op): a trace of many tokens stays readable and greppable. */
static void tr_json(const struct tool_engine *e, const struct tracer *t, const int32_t *tok,
                    bool rescale_gamma)
{
	const int fl = JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE;
	json_object *j = json_object_new_object(), *toks = json_object_new_array();
	json_object_object_add(j, "format", json_object_new_string(TRACE_FORMAT));
	json_object_object_add(j, "model", json_object_new_string(bn_model_path(e->model)));
	json_object_object_add(j, "plugin", json_object_new_string(e->kernel->info.name));
	json_object_object_add(j, "rescale_gamma", json_object_new_boolean(rescale_gamma));
	json_object_object_add(j, "n_layer", json_object_new_int64(t->n_layer));
	for (uint32_t i = 0; i < t->n_tok; i++)
		json_object_array_add(toks, json_object_new_int64(tok[i]));
	json_object_object_add(j, "tokens", toks);
	const char *head = json_object_to_json_string_ext(j, fl);
	printf("%.*s,\"trace\":[\n", (int)strlen(head) - 1, head);   /* without its '}' */
	json_object_put(j);
	uint32_t l;
	unsigned op;
	tr_first(t, &l, &op);
	bool more;
	do {
		json_object *o = json_object_new_object(), *a[4];
		static const char *const names[4] = { "rms", "min", "max", "mean" };
		json_object_object_add(o, "layer", json_object_new_int64(l));
		json_object_object_add(o, "op", json_object_new_string(bn_trace_op_name(op)));
		for (int s = 0; s < 4; s++)
			a[s] = json_object_new_array();
		for (uint32_t i = 0; i < t->n_tok; i++) {
			const struct stat4 *st = &t->st[tr_index(t, l, op, i)];
			json_object_array_add(a[0], json_object_new_double(st->rms));
			json_object_array_add(a[1], json_object_new_double(st->min));
			json_object_array_add(a[2], json_object_new_double(st->max));
			json_object_array_add(a[3], json_object_new_double(st->mean));
		}
		for (int s = 0; s < 4; s++)
			json_object_object_add(o, names[s], a[s]);
		more = tr_next(t, &l, &op);
		printf("%s%s\n", json_object_to_json_string_ext(o, fl), more ? "," : "");
		json_object_put(o);
	} while (more);
	printf("]}\n");
}

/* "0".."L-1", "out" for the final ops. buf: [16] */
static const char *layer_name(const struct tracer *t, uint32_t l, char *buf)
{
	if (l < t->n_layer)
		snprintf(buf, 16, "%u", l);
	else
		snprintf(buf, 16, "out");
	return buf;
}

static void tr_table(const struct tracer *t)
{
	printf("%-5s %-14s %5s %13s %13s %13s %13s\n", "layer", "op", "pos", "rms", "min", "max",
	       "mean");
	uint32_t l;
	unsigned op;
	tr_first(t, &l, &op);
	do {
		char ls[16];
		layer_name(t, l, ls);
		for (uint32_t i = 0; i < t->n_tok; i++) {
			const struct stat4 *st = &t->st[tr_index(t, l, op, i)];
			printf("%-5s %-14s %5u %13.6g %13.6g %13.6g %13.6g\n", ls, bn_trace_op_name(op), i,
			       st->rms, st->min, st->max, st->mean);
		}
	} while (tr_next(t, &l, &op));
}

/* ---- the other trace ------------------------------------------------------------------ */

static bool json_int(json_object *o, const char *key, int64_t *v)
{
	json_object *x;
	if (!json_object_object_get_ex(o, key, &x) || !json_object_is_type(x, json_type_int))
		return false;
	*v = json_object_get_int64(x);
	return true;
}

/* Reads the tokens of a trace file: a malloc'd array [*n]. Prints the error. */
static int other_tokens(const char *path, json_object *j, int32_t **out, uint32_t *n)
{
	json_object *toks;
	if (!json_object_object_get_ex(j, "tokens", &toks) ||
	    !json_object_is_type(toks, json_type_array) || !json_object_array_length(toks)) {
		tool_error("trace", "%s: no \"tokens\" array", path);
		return -EINVAL;
	}
	size_t cnt = json_object_array_length(toks);
	int32_t *v = malloc(cnt * sizeof(int32_t));   /* [cnt] */
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < cnt; i++) {
		json_object *x = json_object_array_get_idx(toks, i);
		int64_t id = json_object_get_int64(x);
		if (!json_object_is_type(x, json_type_int) || id < 0 || id > INT32_MAX) {
			tool_error("trace", "%s: tokens[%zu] is not a token id", path, i);
			free(v);
			return -EINVAL;
		}
		v[i] = (int32_t)id;
	}
	*out = v;
	*n = (uint32_t)cnt;
	return 0;
}

/* The rms array of (layer, op) in the other trace, or NULL. */
static json_object *other_rms(json_object *arr, uint32_t layer, const char *op)
{
	size_t n = json_object_array_length(arr);
	for (size_t k = 0; k < n; k++) {
		json_object *o = json_object_array_get_idx(arr, k), *name, *rms;
		int64_t l;
		if (json_int(o, "layer", &l) && l == layer && json_object_object_get_ex(o, "op", &name) &&
		    json_object_is_type(name, json_type_string) &&
		    !strcmp(json_object_get_string(name), op) && json_object_object_get_ex(o, "rms", &rms) &&
		    json_object_is_type(rms, json_type_array))
			return rms;
	}
	return NULL;
}

static double rel_diff(double a, double b)
{
	double d = fabs(a - b), s = fmax(fabs(a), fabs(b));
	return d == 0 ? 0 : d / s;
}

/* The other trace's RMS of (layer, op, position i), checked by other_check. */
static double other_value(json_object *arr, uint32_t layer, unsigned op, uint32_t i)
{
	return json_object_get_double(json_object_array_get_idx(
		other_rms(arr, layer, bn_trace_op_name(op)), i));
}

/* Every (layer, op) of this trace has n_tok numbers in the other; prints what is amiss. */
static bool other_check(const struct tracer *t, const char *path, json_object *arr)
{
	uint32_t l;
	unsigned op;
	tr_first(t, &l, &op);
	do {
		const char *name = bn_trace_op_name(op);
		json_object *rms = other_rms(arr, l, name);
		if (!rms || json_object_array_length(rms) != t->n_tok) {
			printf("traces differ: %s has %s for layer %u op %s\n", path,
			       rms ? "another number of positions" : "no entry", l, name);
			return false;
		}
		for (uint32_t i = 0; i < t->n_tok; i++) {
			json_object *x = json_object_array_get_idx(rms, i);
			if (!json_object_is_type(x, json_type_double) && !json_object_is_type(x, json_type_int)) {
				printf("traces differ: %s: layer %u op %s position %u is not a number\n", path,
				       l, name, i);
				return false;
			}
		}
	} while (tr_next(t, &l, &op));
	return true;
}

/* Prints the largest difference of each layer and the first divergence in pass order;
 * returns 0 when every RMS is within tol, 1 when not. */
static int tr_compare(const struct tracer *t, const char *path, json_object *other, double tol)
{
	json_object *arr;
	int64_t nl;
	if (!json_object_object_get_ex(other, "trace", &arr) ||
	    !json_object_is_type(arr, json_type_array)) {
		tool_error("trace", "%s: no \"trace\" array", path);
		return 1;
	}
	if (json_int(other, "n_layer", &nl) && nl != t->n_layer) {
		printf("traces differ: %u layers here, %lld in %s\n", t->n_layer, (long long)nl, path);
		return 1;
	}
	if (!other_check(t, path, arr))
		return 1;
	struct { bool set; uint32_t layer, pos; unsigned op; double a, b, r; } first = { 0 };
	struct { double r; uint32_t pos; unsigned op; } worst = { -1, 0, 0 };
	double worst_all = 0;
	uint32_t l;
	unsigned op;
	char ls[16];
	tr_first(t, &l, &op);
	printf("%-5s %-26s %s\n", "layer", "largest relative RMS diff", "at (op, position)");
	for (bool more = true; more;) {
		for (uint32_t i = 0; i < t->n_tok; i++) {
			double a = t->st[tr_index(t, l, op, i)].rms, b = other_value(arr, l, op, i);
			double r = rel_diff(a, b);
			if (isnan(r))
				r = INFINITY;
			if (r > worst.r) {
				worst.r = r;
				worst.pos = i;
				worst.op = op;
			}
			if (r > tol && !first.set) {
				first.set = true;
				first.layer = l;
				first.op = op;
				first.pos = i;
				first.a = a;
				first.b = b;
				first.r = r;
			}
		}
		uint32_t layer = l;
		more = tr_next(t, &l, &op);
		if (!more || l != layer) {   /* the layer is done */
			printf("%-5s %-26.3g (%s, %u)\n", layer_name(t, layer, ls), worst.r,
			       bn_trace_op_name(worst.op), worst.pos);
			worst_all = fmax(worst_all, worst.r);
			worst.r = -1;
		}
	}
	if (first.set) {
		printf("first divergence: layer %s op %s position %u: rms %.9g here, %.9g in %s "
		       "(relative difference %.3g > %.3g)\n", layer_name(t, first.layer, ls),
		       bn_trace_op_name(first.op), first.pos, first.a, first.b, path, first.r, tol);
		return 1;
	}
	printf("traces match: every RMS within a relative %.3g (largest difference %.3g)\n", tol,
	       worst_all);
	return 0;
}

/* ---- the verb ---------------------------------------------------------------------- */

/* Returned by the steps below to go on; anything else is the exit status. */
#define TRACE_GO (-1)

struct trace_opts {
	struct tool_engine_opts eo;
	const char *tokens, *prompt, *compare;
	bool json;
	double tol;                   /* --tolerance, relative */
};

/* One trace: the tokens, the engine that runs them and what the pass reported. */
struct trace_run {
	json_object *other;           /* --compare's trace */
	int32_t *tok;                 /* [n] the tokens traced */
	int32_t *otok;                /* [on] the other trace's tokens */
	uint32_t n, on;
	struct tool_engine e;
	struct bn_vocab vocab;        /* --prompt only */
	struct bn_tokenizer *tk;
	struct bn_error err;
	struct tracer t;
};

static int trace_parse(int argc, char **argv, struct trace_opts *o)
{
	static const struct option lo[] = {
		TOOL_ENGINE_LONGOPTS,
		{ "tokens", required_argument, NULL, 'k' },
		{ "prompt", required_argument, NULL, 'p' },
		{ "json", no_argument, NULL, 'j' },
		{ "compare", required_argument, NULL, 'c' },
		{ "tolerance", required_argument, NULL, 'T' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	memset(o, 0, sizeof(*o));
	tool_engine_opts_init(&o->eo);
	o->tol = 1e-3;
	int c, r;
	while ((c = getopt_long(argc, argv, "m:t:k:p:jh", lo, NULL)) != -1) {
		if ((r = tool_engine_opt("trace", &o->eo, c, optarg))) {
			if (r < 0)
				return 2;
			continue;
		}
		switch (c) {
		case 'k': o->tokens = optarg; break;
		case 'p': o->prompt = optarg; break;
		case 'j': o->json = true; break;
		case 'c': o->compare = optarg; break;
		case 'T': {
			char *end;
			errno = 0;
			o->tol = strtod(optarg, &end);
			if (!*optarg || *end || errno || !(o->tol >= 0) || !isfinite(o->tol)) {
				tool_error("trace", "--tolerance '%s': expected a number >= 0", optarg);
				return 2;
			}
			break;
		}
		case 'h': trace_usage(stdout); return 0;
		default: trace_usage(stderr); return 2;
		}
	}
	if (optind != argc || (o->tokens && o->prompt) || (!o->tokens && !o->prompt && !o->compare)) {
		trace_usage(stderr);
		return 2;
	}
	if (o->json && o->compare) {
		tool_error("trace", "--json and --compare: choose one (write the trace with --json, "
		           "compare a later run against it)");
		return 2;
	}
	return TRACE_GO;
}

/* What is known before the engine opens: the other trace and the tokens of both. */
static int trace_inputs(const struct trace_opts *o, struct trace_run *s)
{
	if (o->compare) {
		s->other = json_object_from_file(o->compare);
		if (!s->other || !json_object_is_type(s->other, json_type_object)) {
			const char *why = s->other ? "not a JSON object" : json_util_get_last_err();
			size_t wl = why ? strcspn(why, "\n") : 0;   /* json-c ends it with a newline */
			tool_error("trace", "cannot read %s: %.*s", o->compare, (int)wl, why ? why : "");
			return 1;
		}
	}
	if (o->tokens && tool_parse_tokens(o->tokens, &s->tok, &s->n)) {
		tool_error("trace", "--tokens '%s': expected comma-separated integers", o->tokens);
		return 2;
	}
	if (s->other && other_tokens(o->compare, s->other, &s->otok, &s->on))
		return 1;
	return TRACE_GO;
}

/* The tokens traced: --tokens, the prompt tokenized, or the other trace's; they must fit
 * one batch and equal the other trace's. */
static int trace_tokens(const struct trace_opts *o, struct trace_run *s)
{
	if (o->prompt) {
		const struct bn_hparams *hp = bn_model_hparams(s->e.model);
		size_t nid = 0;
		if (bn_vocab_from_gguf(&s->vocab, bn_model_gguf(s->e.model), &s->err) ||
		    bn_tokenizer_new(&s->tk, &s->vocab, hp->arch_name, &s->err) ||
		    bn_tokenize(s->tk, o->prompt, strlen(o->prompt), bn_tokenizer_add_bos(s->tk), false,
		                &s->tok, &nid, &s->err)) {
			tool_error("trace", "%s: %s", bn_model_path(s->e.model), s->err.msg);
			return 1;
		}
		s->n = (uint32_t)nid;
	} else if (!o->tokens) {
		s->tok = s->otok;
		s->otok = NULL;
		s->n = s->on;
	}
	if (!s->n || s->n > bn_ctx_n_batch(s->e.ctx)) {
		tool_error("trace", "%u tokens: expected 1..%u", s->n, bn_ctx_n_batch(s->e.ctx));
		return 2;
	}
	if (s->otok && s->on != s->n) {
		tool_error("trace", "%u tokens here, %u in %s: compare traces of the same tokens", s->n,
		           s->on, o->compare);
		return 2;
	}
	for (uint32_t i = 0; s->otok && i < s->n; i++) {
		if (s->otok[i] != s->tok[i]) {
			tool_error("trace", "token %u is %d here, %d in %s: compare traces of the same "
			           "tokens", i, s->tok[i], s->otok[i], o->compare);
			return 2;
		}
	}
	return 0;
}

/* Every point of the pass must have reported (a missed hook is a bug, not a zero). */
static int trace_check_seen(const struct tracer *t)
{
	uint32_t l;
	unsigned op;
	tr_first(t, &l, &op);
	do {
		for (uint32_t i = 0; i < t->n_tok; i++) {
			if (!t->seen[tr_index(t, l, op, i)]) {
				tool_error("trace", "no values for layer %u op %s position %u", l,
				           bn_trace_op_name(op), i);
				return 1;
			}
		}
	} while (tr_next(t, &l, &op));
	return 0;
}

/* Runs the tokens as one batch with the tracer hooked in. 0, or 1 after printing why. */
static int trace_pass(struct trace_run *s)
{
	const struct bn_hparams *hp = bn_model_hparams(s->e.model);
	uint32_t n = s->n;
	struct tracer *t = &s->t;
	t->n_layer = hp->n_layer;
	t->n_tok = n;
	size_t cells = ((size_t)hp->n_layer + 1) * BN_TRACE_N * n;
	t->st = calloc(cells, sizeof(*t->st));
	t->seen = calloc(cells, sizeof(*t->seen));
	float *logits = malloc((size_t)n * hp->n_vocab * sizeof(float));   /* [n][n_vocab] */
	uint32_t *pos = malloc(n * sizeof(uint32_t));                      /* [n] */
	uint32_t *seq = calloc(n, sizeof(uint32_t));                       /* [n] */
	bool *want = malloc(n * sizeof(bool));                             /* [n] */
	int rc = 0;
	if (!t->st || !t->seen || !logits || !pos || !seq || !want) {
		tool_error("trace", "out of memory");
		rc = 1;
		goto out;
	}
	for (uint32_t i = 0; i < n; i++) {
		pos[i] = i;
		want[i] = true;
	}
	struct bn_trace_sink sink = { tr_sink, t };
	bn_ctx_set_trace(s->e.ctx, &sink);
	struct bn_batch b = { n, s->tok, pos, seq, want };
	rc = bn_decode(s->e.ctx, &b, logits, &s->err);
	bn_ctx_set_trace(s->e.ctx, NULL);
	if (rc) {
		tool_error("trace", "%s", s->err.msg);
		rc = 1;
	}
out:
	free(logits);
	free(pos);
	free(seq);
	free(want);
	return rc;
}

/* The comparison, the JSON or the table; 1 when the output cannot be written. */
static int trace_report(const struct trace_opts *o, struct trace_run *s)
{
	int rc = 0;
	if (o->compare)
		rc = tr_compare(&s->t, o->compare, s->other, o->tol);
	else if (o->json)
		tr_json(&s->e, &s->t, s->tok, o->eo.rescale_gamma);
	else
		tr_table(&s->t);
	if (fflush(stdout)) {
		tool_error("trace", "cannot write the output: %s", strerror(errno));
		rc = 1;
	}
	return rc;
}

int cmd_trace(int argc, char **argv)
{
	struct trace_opts o;
	struct trace_run s = { 0 };
	int rc = trace_parse(argc, argv, &o);
	if (rc != TRACE_GO)
		return rc;
	if ((rc = trace_inputs(&o, &s)) != TRACE_GO)
		goto done;
	/* the batch must hold the whole list, known only after tokenizing a prompt */
	o.eo.n_batch = o.prompt ? (uint32_t)strlen(o.prompt) + 2 : o.tokens ? s.n : s.on;
	if (!(rc = tool_engine_open("trace", &o.eo, &s.e)) && !(rc = trace_tokens(&o, &s)) &&
	    !(rc = trace_pass(&s)) && !(rc = trace_check_seen(&s.t)))
		rc = trace_report(&o, &s);
	free(s.t.st);
	free(s.t.seen);
	bn_tokenizer_free(s.tk);
	bn_vocab_free(&s.vocab);
	tool_engine_close(&s.e);
done:
	free(s.tok);
	free(s.otok);
	json_object_put(s.other);
	return rc;
}
