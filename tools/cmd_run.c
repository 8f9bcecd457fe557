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
	        "  --template raw|chat|llama3|instruct|auto   prompt format (default auto)\n"
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

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap + 1);
	while (buf) {
		size_t r = fread(buf + n, 1, cap - n, f);
		n += r;
		if (n < cap)
			break;
		char *nb = realloc(buf, cap * 2 + 1);
		if (!nb) {
			free(buf);
			buf = NULL;
			break;
		}
		buf = nb;
		cap *= 2;
	}
	if (ferror(f)) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	if (buf) {
		buf[n] = '\0';
		*len = n;
	}
	return buf;
}

int cmd_run(int argc, char **argv)
{
	enum { O_PROMPT = 1100, O_PFILE, O_TEMPLATE, O_SYSTEM, O_MAXTOK, O_TEMP, O_TOPK, O_TOPP,
	       O_MINP, O_REP, O_SEED, O_GREEDY, O_STOP, O_JSON, O_HELP, O_TOKENS };
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
	struct tool_engine_opts eo;
	tool_engine_opts_init(&eo);
	struct bn_gen_opts go = { 0 };
	bn_sampler_opts_default(&go.sampling);
	go.max_tokens = 128;
	const char *prompt = NULL, *pfile = NULL, *tmpl = "auto", *system = NULL, *tokens = NULL;
	const char *stops[64];
	size_t n_stops = 0;
	bool json = false, seed_set = false;
	unsigned long v;
	int c, r;
	while ((c = getopt_long(argc, argv, "m:t:p:n:s:h", lo, NULL)) != -1) {
		if ((r = tool_engine_opt("run", &eo, c, optarg))) {
			if (r < 0)
				return 2;
			continue;
		}
		switch (c) {
		case 'p':
		case O_PROMPT: prompt = optarg; break;
		case O_PFILE: pfile = optarg; break;
		case O_TEMPLATE: tmpl = optarg; break;
		case O_SYSTEM: system = optarg; break;
		case 'n':
		case O_MAXTOK:
			if (!tool_parse_uint("run", "--max-tokens", optarg, 0, 1u << 24, &v))
				return 2;
			go.max_tokens = (uint32_t)v;
			break;
		case O_TEMP:
			if (!parse_float("--temperature", optarg, 0.0f, 100.0f, &go.sampling.temperature))
				return 2;
			break;
		case O_TOPK:
			if (!tool_parse_uint("run", "--top-k", optarg, 0, 1u << 24, &v))
				return 2;
			go.sampling.top_k = (uint32_t)v;
			break;
		case O_TOPP:
			if (!parse_float("--top-p", optarg, 1e-9f, 1.0f, &go.sampling.top_p))
				return 2;
			break;
		case O_MINP:
			if (!parse_float("--min-p", optarg, 0.0f, 1.0f, &go.sampling.min_p))
				return 2;
			break;
		case O_REP:
			if (!parse_float("--repeat-penalty", optarg, 1e-6f, 10.0f, &go.sampling.repeat_penalty))
				return 2;
			break;
		case 's':
		case O_SEED: {
			char *end;
			errno = 0;
			go.sampling.seed = strtoull(optarg, &end, 10);
			if (!*optarg || *end || errno || optarg[0] == '-') {
				tool_error("run", "--seed '%s': expected an unsigned 64-bit integer", optarg);
				return 2;
			}
			seed_set = true;
			break;
		}
		case O_GREEDY: go.sampling.temperature = 0.0f; break;
		case O_STOP:
			if (n_stops == sizeof(stops) / sizeof(stops[0])) {
				tool_error("run", "too many --stop strings (at most 64)");
				return 2;
			}
			stops[n_stops++] = optarg;
			break;
		case O_JSON: json = true; break;
		case O_TOKENS: tokens = optarg; break;
		case 'h':
		case O_HELP: run_usage(stdout); return 0;
		default: run_usage(stderr); return 2;
		}
	}
	if (optind != argc || (!!prompt + !!pfile + !!tokens) != 1) {
		run_usage(stderr);
		return 2;
	}
	if (!seed_set) {
		const char *es = getenv("BITNET_SEED");
		if (es && *es) {
			char *end;
			errno = 0;
			go.sampling.seed = strtoull(es, &end, 10);
			if (*end || errno) {
				tool_error("run", "BITNET_SEED '%s': expected an unsigned 64-bit integer", es);
				return 2;
			}
		} else if (getrandom(&go.sampling.seed, sizeof(go.sampling.seed), 0) != sizeof(go.sampling.seed)) {
			go.sampling.seed = 0;
		}
	}
	enum bn_chat_format fmt;
	bool is_auto;
	if (bn_chat_format_parse(tmpl, &fmt, &is_auto)) {
		tool_error("run", "--template '%s': expected raw, chat, llama3, instruct or auto", tmpl);
		return 2;
	}
	struct bn_error err = { 0 };
	if (bn_sampler_opts_check(&go.sampling, &err)) {
		tool_error("run", "%s", err.msg);
		return 2;
	}
	size_t plen = 0;
	char *pbuf = NULL;
	if (pfile) {
		pbuf = read_file(pfile, &plen);
		if (!pbuf) {
			tool_error("run", "cannot read --prompt-file %s: %s", pfile, strerror(errno));
			return 1;
		}
		prompt = pbuf;
	} else if (prompt) {
		plen = strlen(prompt);
	}

	struct tool_engine e;
	struct bn_tokenizer *tok = NULL;
	int32_t *ids = NULL;
	size_t n_ids = 0;
	int rc = 0;
	double t_load = bn_now();
	if ((r = tool_engine_open("run", &eo, &e))) {
		free(pbuf);
		return r;
	}
	t_load = bn_now() - t_load;
	const struct bn_hparams *hp = bn_model_hparams(e.model);
	if (tool_engine_tokenizer("run", &e, &tok)) {
		rc = 1;
		goto out;
	}
	if (is_auto) {
		struct bn_gguf_str t;
		char *embedded = NULL;
		if (!bn_gguf_get_str(bn_model_gguf(e.model), "tokenizer.chat_template", &t))
			embedded = strndup(t.ptr, t.len);
		fmt = bn_chat_auto(hp->arch_name, embedded);
		free(embedded);
	}
	if (tokens) {
		uint32_t nt;
		rc = tool_parse_tokens(tokens, &ids, &nt);
		n_ids = nt;
		if (rc)
			rc = bn_err_set(&err, -EINVAL, "--tokens '%s': expected comma-separated integers", tokens);
		for (size_t i = 0; !rc && i < n_ids; i++)
			if (ids[i] < 0 || (uint32_t)ids[i] >= hp->n_vocab)
				rc = bn_err_set(&err, -EINVAL, "--tokens: id %d is outside the vocabulary (%u)",
				                ids[i], hp->n_vocab);
	} else if (fmt == BN_CHAT_RAW) {
		rc = bn_tokenize(tok, prompt, plen, bn_tokenizer_add_bos(tok), false, &ids, &n_ids, &err);
	} else {
		struct bn_chat_msg msg = { "user", prompt };
		rc = bn_chat_tokenize(tok, fmt, &msg, 1, system,
		                      !bn_chat_adds_bos(fmt) && bn_tokenizer_add_bos(tok), &ids, &n_ids,
		                      &err);
		const char *def = bn_chat_default_stop(fmt);
		if (def && n_stops < sizeof(stops) / sizeof(stops[0]))
			stops[n_stops++] = def;
	}
	if (rc) {
		tool_error("run", "%s", err.msg);
		rc = 1;
		goto out;
	}
	go.stops = stops;
	go.n_stops = n_stops;

	struct sigaction sa = { 0 };
	sa.sa_handler = on_sigint;
	sigaction(SIGINT, &sa, NULL);
	struct run_ids out_ids = { 0 };
	struct bn_gen_io io = { run_text, run_cancelled, run_token, &out_ids };
	struct bn_gen_stats st;
	long rss_kb = tool_rss_kb();
	rc = bn_generate(e.ctx, 0, tok, ids, n_ids, &go, &io, &st, &err);
	fflush(stdout);
	if (st.n_gen)
		fputc('\n', stdout);
	if (rc) {
		tool_error("run", "%s", err.msg);
		rc = 1;
	}
	if (!rc || st.n_gen)
		fprintf(stderr, "bitnet run: prompt %u tokens in %.3f s (%.2f tokens/s), generated %u "
		        "tokens in %.3f s (%.2f tokens/s), stop: %s\n", st.n_prompt, st.prompt_s,
		        st.prompt_tps, st.n_gen, st.gen_s, st.gen_tps, bn_stop_reason_name(st.reason));
	if (json) {
		json_object *j = json_object_new_object();
		struct bn_model_identity id;
		bn_model_identity(e.model, &id);
		json_object_object_add(j, "model", json_object_new_string(id.path));
		json_object_object_add(j, "model_size", json_object_new_int64((int64_t)id.size));
		json_object_object_add(j, "architecture", json_object_new_string(id.arch));
		json_object_object_add(j, "file_type", json_object_new_int64(id.file_type));
		json_object_object_add(j, "weight_type", json_object_new_string(id.weight_type));
		json_object_object_add(j, "head_type", json_object_new_string(id.head_type));
		json_object_object_add(j, "model_header_sha256", json_object_new_string(id.header_sha256));
		json_object_object_add(j, "template", json_object_new_string(tokens ? "none (token ids)"
		                                                              : bn_chat_format_name(fmt)));
		json_object_object_add(j, "load_seconds", json_object_new_double(t_load));
		json_object_object_add(j, "rss_kb_before_first_token", json_object_new_int64(rss_kb));
		json_object_object_add(j, "model_bytes_copied",
		                       json_object_new_int64((int64_t)bn_model_bytes_copied(e.model)));
		json_object_object_add(j, "prompt_tokens", json_object_new_int64(st.n_prompt));
		json_object_object_add(j, "generated_tokens", json_object_new_int64(st.n_gen));
		json_object_object_add(j, "stop_reason", json_object_new_string(bn_stop_reason_name(st.reason)));
		json_object_object_add(j, "prompt_seconds", json_object_new_double(st.prompt_s));
		json_object_object_add(j, "generation_seconds", json_object_new_double(st.gen_s));
		json_object_object_add(j, "prompt_tokens_per_second", json_object_new_double(st.prompt_tps));
		json_object_object_add(j, "generation_tokens_per_second", json_object_new_double(st.gen_tps));
		json_object_object_add(j, "plugin", json_object_new_string(e.kernel->info.name));
		json_object_object_add(j, "plugin_variant", json_object_new_string(e.kernel->variant));
		json_object_object_add(j, "plugin_abi", json_object_new_int64(e.kernel->info.abi_major * 1000 +
		                                                                 e.kernel->info.abi_minor));
		json_object_object_add(j, "threads", json_object_new_int64(bn_pool_size(e.pool)));
		json_object_object_add(j, "cpus", json_object_new_string(bn_pool_cpus(e.pool)));
		json_object_object_add(j, "strict", json_object_new_boolean(eo.strict));
		char seed[32];
		snprintf(seed, sizeof(seed), "%llu", (unsigned long long)go.sampling.seed);
		json_object_object_add(j, "seed", json_object_new_string(seed));
		json_object *oi = json_object_new_array();
		for (size_t i = 0; i < out_ids.n; i++)
			json_object_array_add(oi, json_object_new_int(out_ids.v[i]));
		json_object_object_add(j, "output_ids", oi);
		json_object *cs = json_object_new_array();
		for (size_t i = 0; i < e.model->n_corrections; i++) {
			const struct bn_correction *cr = &e.model->corrections[i];
			json_object *o = json_object_new_object();
			json_object_object_add(o, "tensor", json_object_new_string(cr->tensor));
			json_object_object_add(o, "kind", json_object_new_string(cr->kind));
			json_object_object_add(o, "factor", json_object_new_double(cr->factor));
			json_object_object_add(o, "rms_before", json_object_new_double(cr->rms_before));
			json_object_object_add(o, "rms_after", json_object_new_double(cr->rms_after));
			json_object_array_add(cs, o);
		}
		json_object_object_add(j, "corrections", cs);
		if (rc)
			json_object_object_add(j, "error", json_object_new_string(err.msg));
		printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(j);
	}
	if (!rc && st.reason == BN_STOP_CANCELLED)
		rc = 130;
	free(out_ids.v);
out:
	free(ids);
	bn_tokenizer_free(tok);
	tool_engine_close(&e);
	free(pbuf);
	return rc;
}
