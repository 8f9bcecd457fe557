/* bitnet run: generate text from a prompt, streaming to stdout. */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "chat.h"
#include "engine.h"
#include "error.h"
#include "generate.h"
#include "gguf.h"
#include "kernels.h"
#include "model.h"
#include "pool.h"
#include "tokenizer.h"
#include "tools.h"
#include "vocab.h"

static volatile sig_atomic_t run_interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	run_interrupted = 1;
}

static bool run_cancelled(void *user)
{
	(void)user;
	return run_interrupted;
}

struct run_ids {
	int32_t *v;       /* [n] generated ids, for --json */
	size_t n, cap;
};

static void run_token(void *user, int32_t id)
{
	struct run_ids *r = user;
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 64;
		int32_t *nv = realloc(r->v, cap * sizeof(*nv));
		if (!nv)
			return;
		r->v = nv;
		r->cap = cap;
	}
	r->v[r->n++] = id;
}

static int run_text(void *user, const char *text, size_t len)
{
	(void)user;
	fwrite(text, 1, len, stdout);
	fflush(stdout);
	return 0;
}

static void run_usage(FILE *f)
{
	fprintf(f,
	        "usage: bitnet run --model M (--prompt P | --prompt-file F | --tokens IDS) [options]\n"
	        "  --tokens 1,2,3        the prompt as token ids (no template, no BOS added)\n"
	        "  --template raw|chat|bitnet|llama3|instruct|auto   prompt format (default auto;\n"
	        "                       bitnet is another name for chat)\n"
	        "  --system S            system message (chat formats)\n"
	        "  --max-tokens N        generated tokens at most (default 128; 0: until the context is full)\n"
	        "  --temperature T --top-k K --top-p P --min-p P --repeat-penalty R --seed S\n"
	        "  --greedy              temperature 0 (argmax, ties to the lowest id)\n"
	        "  --stop STR            stop string (repeatable; not printed)\n"
	        "  --threads N --cpus LIST --plugin NAME --plugin-dir DIR --ctx N\n"
	        "  --strict --rescale-gamma --json\n"
	        "environment: BITNET_SEED (default seed), BITNET_STRICT_MODE=1, BITNET_RESCALE_GAMMA_ON_LOAD=1\n");
}

static bool parse_float(const char *opt, const char *s, float lo, float hi, float *out)
{
	char *end;
	errno = 0;
	float v = strtof(s, &end);
	if (!*s || *end || errno || !(v >= lo && v <= hi)) {
		tool_error("run", "%s '%s': expected a number in %g..%g", opt, s, (double)lo, (double)hi);
		return false;
	}
	*out = v;
	return true;
}

/* Returned by the steps below to go on; anything else is the exit status. */
#define RUN_GO (-1)

enum { O_PROMPT = 1100, O_PFILE, O_TEMPLATE, O_SYSTEM, O_MAXTOK, O_TEMP, O_TOPK, O_TOPP,
       O_MINP, O_REP, O_SEED, O_GREEDY, O_STOP, O_JSON, O_HELP, O_TOKENS };

/* What the command line asks for. */
struct run_opts {
	struct tool_engine_opts eo;
	struct bn_gen_opts go;        /* go.stops is set once the template's stop is known */
	const char *prompt, *pfile, *tmpl, *system, *tokens;
	const char *stops[64];        /* [n_stops] --stop strings, then the template's */
	size_t n_stops;
	bool json, seed_set;
	enum bn_chat_format fmt;      /* --template; auto is resolved against the model */
	bool is_auto;
};

/* One run, from the prompt text to the generated ids. */
struct run {
	char *pbuf;                   /* --prompt-file's contents, owned */
	const char *prompt;           /* [plen] */
	size_t plen;
	struct tool_engine e;
	double t_load;                /* seconds to open the engine */
	struct bn_tokenizer *tok;
	int32_t *ids;                 /* [n_ids] the prompt */
	size_t n_ids;
	struct run_ids out;           /* what was generated, for --json */
	struct bn_gen_stats st;
	long rss_kb;                  /* before the first token */
	struct bn_error err;
};

static int run_seed_arg(struct run_opts *o, const char *arg)
{
	char *end;
	errno = 0;
	o->go.sampling.seed = strtoull(arg, &end, 10);
	if (!*arg || *end || errno || arg[0] == '-') {
		tool_error("run", "--seed '%s': expected an unsigned 64-bit integer", arg);
		return 2;
	}
	o->seed_set = true;
	return RUN_GO;
}

/* One of run's own options (not the engine's). */
static int run_opt(struct run_opts *o, int c, const char *arg)
{
	struct bn_sampler_opts *so = &o->go.sampling;
	unsigned long v;
	switch (c) {
	case 'p':
	case O_PROMPT: o->prompt = arg; break;
	case O_PFILE: o->pfile = arg; break;
	case O_TEMPLATE: o->tmpl = arg; break;
	case O_SYSTEM: o->system = arg; break;
	case 'n':
	case O_MAXTOK:
		if (!tool_parse_uint("run", "--max-tokens", arg, 0, 1u << 24, &v))
			return 2;
		o->go.max_tokens = (uint32_t)v;
		break;
	case O_TEMP:
		if (!parse_float("--temperature", arg, 0.0f, 100.0f, &so->temperature))
			return 2;
		break;
	case O_TOPK:
		if (!tool_parse_uint("run", "--top-k", arg, 0, 1u << 24, &v))
			return 2;
		so->top_k = (uint32_t)v;
		break;
	case O_TOPP:
		if (!parse_float("--top-p", arg, 1e-9f, 1.0f, &so->top_p))
			return 2;
		break;
	case O_MINP:
		if (!parse_float("--min-p", arg, 0.0f, 1.0f, &so->min_p))
			return 2;
		break;
	case O_REP:
		if (!parse_float("--repeat-penalty", arg, 1e-6f, 10.0f, &so->repeat_penalty))
			return 2;
		break;
	case 's':
	case O_SEED: return run_seed_arg(o, arg);
	case O_GREEDY: so->temperature = 0.0f; break;
	case O_STOP:
		if (o->n_stops == sizeof(o->stops) / sizeof(o->stops[0])) {
			tool_error("run", "too many --stop strings (at most 64)");
			return 2;
		}
		o->stops[o->n_stops++] = arg;
		break;
	case O_JSON: o->json = true; break;
	case O_TOKENS: o->tokens = arg; break;
	case 'h':
	case O_HELP: run_usage(stdout); return 0;
	default: run_usage(stderr); return 2;
	}
	return RUN_GO;
}

/* Without --seed: BITNET_SEED, else a random one. */
static int run_default_seed(struct run_opts *o)
{
	uint64_t *seed = &o->go.sampling.seed;
	const char *es = getenv("BITNET_SEED");
	if (es && *es) {
		char *end;
		errno = 0;
		*seed = strtoull(es, &end, 10);
		if (*end || errno) {
			tool_error("run", "BITNET_SEED '%s': expected an unsigned 64-bit integer", es);
			return 2;
		}
	} else if (getrandom(seed, sizeof(*seed), 0) != sizeof(*seed)) {
		*seed = 0;
	}
	return RUN_GO;
}

static int run_parse(int argc, char **argv, struct run_opts *o)
{
	static const struct option lo[] = {
		TOOL_ENGINE_LONGOPTS,
		{ "prompt", required_argument, NULL, O_PROMPT },
		{ "prompt-file", required_argument, NULL, O_PFILE },
		{ "template", required_argument, NULL, O_TEMPLATE },
		{ "system", required_argument, NULL, O_SYSTEM },
		{ "max-tokens", required_argument, NULL, O_MAXTOK },
		{ "temperature", required_argument, NULL, O_TEMP },
		{ "top-k", required_argument, NULL, O_TOPK },
		{ "top-p", required_argument, NULL, O_TOPP },
		{ "min-p", required_argument, NULL, O_MINP },
		{ "repeat-penalty", required_argument, NULL, O_REP },
		{ "seed", required_argument, NULL, O_SEED },
		{ "greedy", no_argument, NULL, O_GREEDY },
		{ "stop", required_argument, NULL, O_STOP },
		{ "json", no_argument, NULL, O_JSON },
		{ "tokens", required_argument, NULL, O_TOKENS },
		{ "help", no_argument, NULL, O_HELP },
		{ 0 }
	};
	memset(o, 0, sizeof(*o));
	tool_engine_opts_init(&o->eo);
	bn_sampler_opts_default(&o->go.sampling);
	o->go.max_tokens = 128;
	o->tmpl = "auto";
	int c, r;
	while ((c = getopt_long(argc, argv, "m:t:p:n:s:h", lo, NULL)) != -1) {
		if ((r = tool_engine_opt("run", &o->eo, c, optarg))) {
			if (r < 0)
				return 2;
			continue;
		}
		if ((r = run_opt(o, c, optarg)) != RUN_GO)
			return r;
	}
	if (optind != argc || (!!o->prompt + !!o->pfile + !!o->tokens) != 1) {
		run_usage(stderr);
		return 2;
	}
	if (!o->seed_set && (r = run_default_seed(o)) != RUN_GO)
		return r;
	if (bn_chat_format_parse(o->tmpl, &o->fmt, &o->is_auto)) {
		tool_error("run", "--template '%s': expected raw, chat, llama3, instruct or auto", o->tmpl);
		return 2;
	}
	struct bn_error err = { 0 };
	if (bn_sampler_opts_check(&o->go.sampling, &err)) {
		tool_error("run", "%s", err.msg);
		return 2;
	}
	return RUN_GO;
}

/* The prompt text: --prompt, or --prompt-file read whole. */
static int run_read_prompt(const struct run_opts *o, struct run *r)
{
	if (o->pfile) {
		int rc = tool_read_path(o->pfile, &r->pbuf, &r->plen);
		if (rc) {
			tool_error("run", "cannot read --prompt-file %s: %s", o->pfile, strerror(-rc));
			return 1;
		}
		r->prompt = r->pbuf;
	} else if (o->prompt) {
		r->prompt = o->prompt;
		r->plen = strlen(o->prompt);
	}
	return RUN_GO;
}

/* --template auto: the model's embedded template or its architecture decides. */
static enum bn_chat_format run_auto_template(const struct bn_model *model)
{
	struct bn_gguf_str t;
	char *embedded = NULL;
	if (!bn_gguf_get_str(bn_model_gguf(model), "tokenizer.chat_template", &t))
		embedded = strndup(t.ptr, t.len);
	enum bn_chat_format fmt = bn_chat_auto(bn_model_hparams(model)->arch_name, embedded);
	free(embedded);
	return fmt;
}

/* The prompt's ids: --tokens as given, or the text tokenized raw or in the chat format
 * (which adds the format's stop string to o's). 0, or 1 after printing why. */
static int run_prompt_ids(struct run_opts *o, struct run *r)
{
	const struct bn_hparams *hp = bn_model_hparams(r->e.model);
	int rc;
	if (o->tokens) {
		uint32_t nt = 0;
		rc = tool_parse_tokens(o->tokens, &r->ids, &nt);
		r->n_ids = nt;
		if (rc)
			rc = bn_err_set(&r->err, -EINVAL, "--tokens '%s': expected comma-separated integers",
			                o->tokens);
		for (size_t i = 0; !rc && i < r->n_ids; i++)
			if (r->ids[i] < 0 || (uint32_t)r->ids[i] >= hp->n_vocab)
				rc = bn_err_set(&r->err, -EINVAL, "--tokens: id %d is outside the vocabulary (%u)",
				                r->ids[i], hp->n_vocab);
	} else if (o->fmt == BN_CHAT_RAW) {
		rc = bn_tokenize(r->tok, r->prompt, r->plen, bn_tokenizer_add_bos(r->tok), false, &r->ids,
		                 &r->n_ids, &r->err);
	} else {
		struct bn_chat_msg msg = { "user", r->prompt };
		rc = bn_chat_tokenize(r->tok, o->fmt, &msg, 1, o->system,
		                      !bn_chat_adds_bos(o->fmt) && bn_tokenizer_add_bos(r->tok), &r->ids,
		                      &r->n_ids, &r->err);
		const char *def = bn_chat_default_stop(o->fmt);
		if (def && o->n_stops < sizeof(o->stops) / sizeof(o->stops[0]))
			o->stops[o->n_stops++] = def;
	}
	if (rc) {
		tool_error("run", "%s", r->err.msg);
		return 1;
	}
	o->go.stops = o->stops;
	o->go.n_stops = o->n_stops;
	return 0;
}

/* Generates with the text streamed to stdout (Ctrl-C stops it), then the summary line on
 * stderr. 0, or 1 after printing the error. */
static int run_generate(const struct run_opts *o, struct run *r)
{
	struct sigaction sa = { 0 };
	sa.sa_handler = on_sigint;
	sigaction(SIGINT, &sa, NULL);
	struct bn_gen_io io = { run_text, run_cancelled, run_token, &r->out };
	struct bn_gen_stats *st = &r->st;
	r->rss_kb = tool_rss_kb();
	int rc = bn_generate(r->e.ctx, 0, r->tok, r->ids, r->n_ids, &o->go, &io, st, &r->err);
	fflush(stdout);
	if (st->n_gen)
		fputc('\n', stdout);
	if (rc) {
		tool_error("run", "%s", r->err.msg);
		rc = 1;
	}
	if (!rc || st->n_gen)
		fprintf(stderr, "bitnet run: prompt %u tokens in %.3f s (%.2f tokens/s), generated %u "
		        "tokens in %.3f s (%.2f tokens/s), stop: %s\n", st->n_prompt, st->prompt_s,
		        st->prompt_tps, st->n_gen, st->gen_s, st->gen_tps, bn_stop_reason_name(st->reason));
	return rc;
}

/* --json: one line with what ran (model, plugin, threads, seed) and what came of it. */
static void run_receipt(const struct run_opts *o, const struct run *r, int rc)
{
	const struct tool_engine *e = &r->e;
	const struct bn_gen_stats *st = &r->st;
	json_object *j = json_object_new_object();
	struct bn_model_identity id;
	bn_model_identity(e->model, &id);
	json_object_object_add(j, "model", json_object_new_string(id.path));
	json_object_object_add(j, "model_size", json_object_new_int64((int64_t)id.size));
	json_object_object_add(j, "architecture", json_object_new_string(id.arch));
	json_object_object_add(j, "file_type", json_object_new_int64(id.file_type));
	json_object_object_add(j, "weight_type", json_object_new_string(id.weight_type));
	json_object_object_add(j, "head_type", json_object_new_string(id.head_type));
	json_object_object_add(j, "model_header_sha256", json_object_new_string(id.header_sha256));
	json_object_object_add(j, "template", json_object_new_string(o->tokens ? "none (token ids)"
	                                                              : bn_chat_format_name(o->fmt)));
	json_object_object_add(j, "load_seconds", json_object_new_double(r->t_load));
	json_object_object_add(j, "rss_kb_before_first_token", json_object_new_int64(r->rss_kb));
	json_object_object_add(j, "model_bytes_copied",
	                       json_object_new_int64((int64_t)bn_model_bytes_copied(e->model)));
	json_object_object_add(j, "prompt_tokens", json_object_new_int64(st->n_prompt));
	json_object_object_add(j, "generated_tokens", json_object_new_int64(st->n_gen));
	json_object_object_add(j, "stop_reason", json_object_new_string(bn_stop_reason_name(st->reason)));
	json_object_object_add(j, "prompt_seconds", json_object_new_double(st->prompt_s));
	json_object_object_add(j, "generation_seconds", json_object_new_double(st->gen_s));
	json_object_object_add(j, "prompt_tokens_per_second", json_object_new_double(st->prompt_tps));
	json_object_object_add(j, "generation_tokens_per_second", json_object_new_double(st->gen_tps));
	json_object_object_add(j, "plugin", json_object_new_string(e->kernel->info.name));
	json_object_object_add(j, "plugin_variant", json_object_new_string(e->kernel->variant));
	json_object_object_add(j, "plugin_abi", json_object_new_int64(e->kernel->info.abi_major * 1000 +
	                                                                 e->kernel->info.abi_minor));
	json_object_object_add(j, "threads", json_object_new_int64(bn_pool_size(e->pool)));
	json_object_object_add(j, "cpus", json_object_new_string(bn_pool_cpus(e->pool)));
	json_object_object_add(j, "strict", json_object_new_boolean(o->eo.strict));
	char seed[32];
	snprintf(seed, sizeof(seed), "%llu", (unsigned long long)o->go.sampling.seed);
	json_object_object_add(j, "seed", json_object_new_string(seed));
	json_object *oi = json_object_new_array();
	for (size_t i = 0; i < r->out.n; i++)
		json_object_array_add(oi, json_object_new_int(r->out.v[i]));
	json_object_object_add(j, "output_ids", oi);
	json_object_object_add(j, "corrections", tool_corrections_json(e->model));
	if (rc)
		json_object_object_add(j, "error", json_object_new_string(r->err.msg));
	printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(j);
}

int cmd_run(int argc, char **argv)
{
	struct run_opts o;
	struct run r = { 0 };
	int rc = run_parse(argc, argv, &o);
	if (rc != RUN_GO || (rc = run_read_prompt(&o, &r)) != RUN_GO)
		return rc;
	r.t_load = bn_now();
	if ((rc = tool_engine_open("run", &o.eo, &r.e))) {
		free(r.pbuf);
		return rc;
	}
	r.t_load = bn_now() - r.t_load;
	if (tool_engine_tokenizer("run", &r.e, &r.tok)) {
		rc = 1;
		goto out;
	}
	if (o.is_auto)
		o.fmt = run_auto_template(r.e.model);
	if ((rc = run_prompt_ids(&o, &r)))
		goto out;
	rc = run_generate(&o, &r);
	if (o.json)
		run_receipt(&o, &r, rc);
	if (!rc && r.st.reason == BN_STOP_CANCELLED)
		rc = 130;
	free(r.out.v);
out:
	free(r.ids);
	bn_tokenizer_free(r.tok);
	tool_engine_close(&r.e);
	free(r.pbuf);
	return rc;
}
