/* bitnet inspect: what a model file holds, validated by the same loader the daemon uses. */
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitnet/bitnet.h"
#include "error.h"
#include "gguf.h"
#include "model.h"
#include "norms.h"
#include "tools.h"

static void inspect_usage(FILE *f)
{
	fprintf(f, "usage: bitnet inspect [--json] MODEL\n"
	           "       bitnet inspect --ln-stats [--gate none|warn|strict] [--policy FILE] [--json]\n"
	           "                      [--rescale-gamma] [--strict] MODEL\n"
	           "--ln-stats exit status: 0, or 8 when --gate strict finds a norm out of range\n");
}

json_object *tool_corrections_json(const struct bn_model *m)
{
	json_object *cs = json_object_new_array();
	for (size_t i = 0; i < m->n_corrections; i++) {
		const struct bn_correction *cr = &m->corrections[i];
		json_object *o = json_object_new_object();
		json_object_object_add(o, "tensor", json_object_new_string(cr->tensor));
		json_object_object_add(o, "kind", json_object_new_string(cr->kind));
		json_object_object_add(o, "factor", json_object_new_double(cr->factor));
		json_object_object_add(o, "rms_before", json_object_new_double(cr->rms_before));
		json_object_object_add(o, "rms_after", json_object_new_double(cr->rms_after));
		json_object_array_add(cs, o);
	}
	return cs;
}

/* --ln-stats: per-norm statistics and verdicts; returns the exit status. */
static int ln_stats(const struct bn_model *m, enum bn_gate gate, const char *policy, bool json)
{
	struct bn_error err = { 0 };
	struct bn_norm_policy pol;
	if (policy ? bn_norm_policy_load(policy, &pol, &err) : bn_norm_policy_builtin(m, &pol, &err)) {
		tool_error("inspect", "%s", err.msg);
		return 1;
	}
	struct bn_norm_report *r;
	size_t n;
	int bad = bn_norms_report(m, &pol, &r, &n, &err);
	if (bad < 0) {
		tool_error("inspect", "%s", err.msg);
		bn_norm_policy_free(&pol);
		return 1;
	}
	int status = gate == BN_GATE_STRICT && bad ? 8 : 0;
	if (json) {
		json_object *j = json_object_new_object(), *ts = json_object_new_array();
		json_object_object_add(j, "path", json_object_new_string(m->path));
		json_object_object_add(j, "architecture", json_object_new_string(m->hp.arch_name));
		json_object_object_add(j, "weight_type", json_object_new_string(bn_model_weight_type(m)));
		json_object_object_add(j, "ruleset", json_object_new_string(pol.name));
		json_object_object_add(j, "gate", json_object_new_string(bn_gate_name(gate)));
		for (size_t i = 0; i < n; i++) {
			json_object *o = json_object_new_object();
			json_object_object_add(o, "tensor", json_object_new_string(r[i].tensor));
			json_object_object_add(o, "length", json_object_new_int64((int64_t)r[i].st.n));
			json_object_object_add(o, "rms", json_object_new_double(r[i].st.rms));
			json_object_object_add(o, "mean", json_object_new_double(r[i].st.mean));
			json_object_object_add(o, "min", json_object_new_double(r[i].st.min));
			json_object_object_add(o, "max", json_object_new_double(r[i].st.max));
			json_object_object_add(o, "rms_ratio", json_object_new_double(r[i].st.ratio));
			if (r[i].rule >= 0) {
				json_object_object_add(o, "rule", json_object_new_string(pol.rules[r[i].rule].section));
				json_object_object_add(o, "rule_min", json_object_new_double(pol.rules[r[i].rule].min));
				json_object_object_add(o, "rule_max", json_object_new_double(pol.rules[r[i].rule].max));
			}
			json_object_object_add(o, "verdict", json_object_new_string(bn_norm_verdict_name(r[i].verdict)));
			json_object_array_add(ts, o);
		}
		json_object_object_add(j, "tensors", ts);
		json_object_object_add(j, "out_of_range", json_object_new_int(bad));
		json_object_object_add(j, "passed", json_object_new_boolean(bad == 0));
		json_object_object_add(j, "corrections", tool_corrections_json(m));
		puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(j);
	} else {
		printf("model: %s (%s, %s)\nrule set: %s\n\n", m->path, m->hp.arch_name,
		       bn_model_weight_type(m), pol.name);
		printf("%-28s %6s %10s %10s %10s %10s %11s  %s\n", "tensor", "length", "rms", "mean",
		       "min", "max", "rms*sqrt(n)", "verdict");
		for (size_t i = 0; i < n; i++)
			printf("%-28s %6zu %10.6g %10.6g %10.6g %10.6g %11.5g  %s\n", r[i].tensor,
			       r[i].st.n, r[i].st.rms, r[i].st.mean, r[i].st.min, r[i].st.max,
			       r[i].st.ratio, bn_norm_verdict_name(r[i].verdict));
		for (size_t i = 0; i < m->n_corrections; i++)
			printf("correction: %s %s x%.6g (rms %.6g -> %.6g)\n", m->corrections[i].tensor,
			       m->corrections[i].kind, (double)m->corrections[i].factor,
			       (double)m->corrections[i].rms_before, (double)m->corrections[i].rms_after);
		printf("\n%d of %zu norm tensors out of range\n", bad, n);
	}
	if (gate != BN_GATE_NONE)
		for (size_t i = 0; i < n; i++)
			if (r[i].verdict == BN_NORM_LOW || r[i].verdict == BN_NORM_HIGH)
				fprintf(stderr, "bitnet inspect: %s: %s rms %.6g is %s (allowed %g..%g under %s)\n",
				        gate == BN_GATE_STRICT ? "error" : "warning", r[i].tensor, r[i].st.rms,
				        bn_norm_verdict_name(r[i].verdict), pol.rules[r[i].rule].min,
				        pol.rules[r[i].rule].max, pol.name);
	free(r);
	bn_norm_policy_free(&pol);
	return status;
}

static json_object *jstr(struct bn_gguf_str s)
{
	return json_object_new_string_len(s.ptr, (int)(s.len > 4096 ? 4096 : s.len));
}

static void tokenizer_summary(const struct bn_gguf *g, json_object *j, FILE *txt)
{
	struct bn_gguf_str model = { 0, "" }, pre = { 0, "" };
	bn_gguf_get_str(g, "tokenizer.ggml.model", &model);
	bool has_pre = !bn_gguf_get_str(g, "tokenizer.ggml.pre", &pre);
	const struct bn_gguf_kv *toks = bn_gguf_find_kv(g, "tokenizer.ggml.tokens");
	const struct bn_gguf_kv *merges = bn_gguf_find_kv(g, "tokenizer.ggml.merges");
	uint32_t bos = 0, eos = 0, eot = 0;
	int hb = !bn_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &bos);
	int he = !bn_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &eos);
	int ht = !bn_gguf_get_u32(g, "tokenizer.ggml.eot_token_id", &eot);
	unsigned long long nt = toks ? (unsigned long long)toks->arr_n : 0;
	unsigned long long nm = merges ? (unsigned long long)merges->arr_n : 0;
	if (j) {
		json_object *t = json_object_new_object();
		json_object_object_add(t, "model", jstr(model));
		json_object_object_add(t, "pre", has_pre ? jstr(pre) : NULL);
		json_object_object_add(t, "tokens", json_object_new_int64((int64_t)nt));
		json_object_object_add(t, "merges", json_object_new_int64((int64_t)nm));
		json_object_object_add(t, "bos", hb ? json_object_new_int64(bos) : NULL);
		json_object_object_add(t, "eos", he ? json_object_new_int64(eos) : NULL);
		json_object_object_add(t, "eot", ht ? json_object_new_int64(eot) : NULL);
		json_object_object_add(j, "tokenizer", t);
	} else {
		fprintf(txt, "tokenizer: %.*s, pre-tokenizer %.*s, %llu tokens, %llu merges",
		        (int)model.len, model.ptr, has_pre ? (int)pre.len : 9,
		        has_pre ? pre.ptr : "(missing)", nt, nm);
		if (hb)
			fprintf(txt, ", bos %u", bos);
		if (he)
			fprintf(txt, ", eos %u", eos);
		if (ht)
			fprintf(txt, ", eot %u", eot);
		fputc('\n', txt);
	}
}

/* Returned by inspect_parse to go on; anything else is the exit status. */
#define INSPECT_GO (-1)

struct inspect_opts {
	const char *path;             /* the model file */
	bool json, lnstats;
	enum bn_gate gate;
	const char *policy;
	struct bn_model_opts mo;
};

static int inspect_parse(int argc, char **argv, struct inspect_opts *o)
{
	static const struct option lo[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "ln-stats", no_argument, NULL, 'l' },
		{ "gate", required_argument, NULL, 'g' },
		{ "policy", required_argument, NULL, 'P' },
		{ "rescale-gamma", no_argument, NULL, 'r' },
		{ "strict", no_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	memset(o, 0, sizeof(*o));
	o->gate = BN_GATE_NONE;
	const char *es = getenv("BITNET_STRICT_MODE"), *er = getenv("BITNET_RESCALE_GAMMA_ON_LOAD");
	o->mo.strict = es && !strcmp(es, "1");
	o->mo.rescale_gamma = er && !strcmp(er, "1");
	int c;
	while ((c = getopt_long(argc, argv, "jh", lo, NULL)) != -1) {
		switch (c) {
		case 'j': o->json = true; break;
		case 'l': o->lnstats = true; break;
		case 'g':
			if (bn_gate_parse(optarg, &o->gate)) {
				tool_error("inspect", "--gate '%s': expected none, warn or strict", optarg);
				return 2;
			}
			break;
		case 'P': o->policy = optarg; break;
		case 'r': o->mo.rescale_gamma = true; break;
		case 's': o->mo.strict = true; break;
		case 'h': inspect_usage(stdout); return 0;
		default: inspect_usage(stderr); return 2;
		}
	}
	if (optind + 1 != argc) {
		inspect_usage(stderr);
		return 2;
	}
	o->path = argv[optind];
	return INSPECT_GO;
}

/* Bytes of every tensor, and of the ternary ones. */
struct tensor_bytes {
	uint64_t total, ternary;
};

static struct tensor_bytes tensor_bytes(const struct bn_gguf *g)
{
	struct tensor_bytes b = { 0, 0 };
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		b.total += g->tensors[i].size;
		if (g->tensors[i].type == BN_TYPE_I2_S || g->tensors[i].type == BN_TYPE_TQ1_0 ||
		    g->tensors[i].type == BN_TYPE_TQ2_0)
			b.ternary += g->tensors[i].size;
	}
	return b;
}

static json_object *hparams_json(const struct bn_hparams *hp)
{
	json_object *h = json_object_new_object();
	json_object_object_add(h, "n_embd", json_object_new_int64(hp->n_embd));
	json_object_object_add(h, "n_ff", json_object_new_int64(hp->n_ff));
	json_object_object_add(h, "n_layer", json_object_new_int64(hp->n_layer));
	json_object_object_add(h, "n_head", json_object_new_int64(hp->n_head));
	json_object_object_add(h, "n_head_kv", json_object_new_int64(hp->n_head_kv));
	json_object_object_add(h, "head_dim", json_object_new_int64(hp->head_dim));
	json_object_object_add(h, "n_vocab", json_object_new_int64(hp->n_vocab));
	json_object_object_add(h, "n_ctx", json_object_new_int64(hp->n_ctx_train));
	json_object_object_add(h, "rope_freq_base", json_object_new_double(hp->rope_base));
	json_object_object_add(h, "rms_eps", json_object_new_double(hp->eps));
	json_object_object_add(h, "ffn", json_object_new_string(hp->silu ? "silu" : "relu2"));
	json_object_object_add(h, "rope", json_object_new_string(hp->rope_interleaved ?
	                                                         "interleaved" : "neox"));
	json_object_object_add(h, "sub_norms", json_object_new_boolean(hp->sub_norms));
	return h;
}

static json_object *tensors_json(const struct bn_gguf *g)
{
	json_object *ts = json_object_new_array();
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		const struct bn_gguf_tensor *t = &g->tensors[i];
		json_object *o = json_object_new_object(), *sh = json_object_new_array();
		json_object_object_add(o, "name", json_object_new_string(t->name));
		json_object_object_add(o, "type", json_object_new_string(bn_ggml_type_name(t->type)));
		for (uint32_t d = 0; d < t->n_dims; d++)
			json_object_array_add(sh, json_object_new_int64((int64_t)t->ne[d]));
		json_object_object_add(o, "shape", sh);
		json_object_object_add(o, "bytes", json_object_new_int64((int64_t)t->size));
		json_object_object_add(o, "offset", json_object_new_int64((int64_t)(g->data_offset + t->offset)));
		json_object_array_add(ts, o);
	}
	return ts;
}

static void inspect_json(const struct bn_model *m, const char *path)
{
	const struct bn_gguf *g = bn_model_gguf(m);
	const struct bn_hparams *hp = bn_model_hparams(m);
	struct tensor_bytes b = tensor_bytes(g);
	json_object *j = json_object_new_object();
	json_object_object_add(j, "path", json_object_new_string(path));
	json_object_object_add(j, "file_size", json_object_new_int64((int64_t)g->size));
	json_object_object_add(j, "gguf_version", json_object_new_int(g->version));
	json_object_object_add(j, "architecture", json_object_new_string(hp->arch_name));
	json_object_object_add(j, "hparams", hparams_json(hp));
	json_object_object_add(j, "weight_type", json_object_new_string(bn_model_weight_type(m)));
	json_object_object_add(j, "head_type", json_object_new_string(bn_model_head_type(m)));
	json_object_object_add(j, "head_tied", json_object_new_boolean(bn_model_head_tied(m)));
	tokenizer_summary(g, j, NULL);
	json_object_object_add(j, "tensors", tensors_json(g));
	json_object_object_add(j, "tensor_bytes", json_object_new_int64((int64_t)b.total));
	json_object_object_add(j, "ternary_bytes", json_object_new_int64((int64_t)b.ternary));
	json_object_object_add(j, "corrections", tool_corrections_json(m));
	puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(j);
}

static void inspect_text(const struct bn_model *m, const char *path)
{
	const struct bn_gguf *g = bn_model_gguf(m);
	const struct bn_hparams *hp = bn_model_hparams(m);
	struct tensor_bytes b = tensor_bytes(g);
	printf("file: %s (%zu bytes, GGUF v%u)\n", path, g->size, g->version);
	printf("architecture: %s (FFN %s, %s, RoPE %s)\n", hp->arch_name,
	       hp->silu ? "SiLU" : "squared ReLU", hp->sub_norms ? "sub-norms" : "no sub-norms",
	       hp->rope_interleaved ? "interleaved" : "NEOX");
	printf("width %u, ff %u, layers %u, heads %u / kv %u (head dim %u), vocab %u, context %u\n",
	       hp->n_embd, hp->n_ff, hp->n_layer, hp->n_head, hp->n_head_kv, hp->head_dim,
	       hp->n_vocab, hp->n_ctx_train);
	printf("rope base %g, rms eps %g, projections %s, LM head %s (%s)\n",
	       (double)hp->rope_base, (double)hp->eps, bn_model_weight_type(m),
	       bn_model_head_type(m), bn_model_head_tied(m) ? "tied: token_embd.weight"
	                                                    : "output.weight");
	tokenizer_summary(g, NULL, stdout);
	printf("\n%-32s %-6s %-18s %12s %12s\n", "tensor", "type", "shape", "bytes", "offset");
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		const struct bn_gguf_tensor *t = &g->tensors[i];
		char shape[64] = "";
		size_t u = 0;
		for (uint32_t d = 0; d < t->n_dims && u < sizeof(shape); d++)
			u += (size_t)snprintf(shape + u, sizeof(shape) - u, "%s%llu", d ? " x " : "",
			                      (unsigned long long)t->ne[d]);
		printf("%-32s %-6s %-18s %12llu %12llu\n", t->name, bn_ggml_type_name(t->type), shape,
		       (unsigned long long)t->size,
		       (unsigned long long)(g->data_offset + t->offset));
	}
	printf("\n%llu tensors, %llu bytes (%llu ternary)\n", (unsigned long long)g->n_tensors,
	       (unsigned long long)b.total, (unsigned long long)b.ternary);
}

int cmd_inspect(int argc, char **argv)
{
	struct inspect_opts o;
	int rc = inspect_parse(argc, argv, &o);
	if (rc != INSPECT_GO)
		return rc;
	struct bn_error err = { 0 };
	struct bn_model *m;
	if (bn_model_load(&m, o.path, &o.mo, &err)) {
		tool_error("inspect", "%s", err.msg);
		return 1;
	}
	if (o.lnstats) {
		if (o.mo.strict && o.gate == BN_GATE_WARN)
			o.gate = BN_GATE_STRICT;   /* strict mode turns gate warnings into failures */
		rc = ln_stats(m, o.gate, o.policy, o.json);
	} else if (o.json) {
		inspect_json(m, o.path);
		rc = 0;
	} else {
		inspect_text(m, o.path);
		rc = 0;
	}
	bn_model_free(m);
	return rc;
}
