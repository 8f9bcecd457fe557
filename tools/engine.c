#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "calibrate.h"
#include "cpu.h"
#include "engine.h"
#include "error.h"
#include "gguf.h"
#include "kernels.h"
#include "log.h"
#include "norms.h"
#include "pool.h"
#include "tokjson.h"
#include "tools.h"

void tool_engine_opts_init(struct tool_engine_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->n_seq = 1;
	const char *s = getenv("BITNET_STRICT_MODE");
	o->strict = s && !strcmp(s, "1");
	const char *r = getenv("BITNET_RESCALE_GAMMA_ON_LOAD");
	o->rescale_gamma = r && !strcmp(r, "1");
}

bool tool_calibrate_enabled(void)
{
	const char *s = getenv("BITNET_CALIBRATE");
	return !s || strcmp(s, "0");
}

int tool_check_cpu_env(const char *verb)
{
	const char *off;
	uint64_t mask;
	if (bn_cpu_disable_env(&off, &mask) < 0) {
		tool_error(verb, "BITNET_CPU_DISABLE='%s': not a list of feature names (see bitnet "
		           "kernels)", off);
		return -1;
	}
	return 0;
}

int tool_engine_opt(const char *verb, struct tool_engine_opts *o, int c, const char *arg)
{
	unsigned long v;
	switch (c) {
	case 'm':
		o->model = arg;
		return 1;
	case 't':
		if (!strcmp(arg, "auto")) {
			o->threads = 0;
			return 1;
		}
		if (!tool_parse_uint(verb, "--threads", arg, 1, 1024, &v))
			return -1;
		o->threads = (unsigned)v;
		return 1;
	case 1000:
		o->plugin = arg;
		return 1;
	case 1001:
		o->plugin_dir = arg;
		return 1;
	case 1002:
		o->cpus = arg;
		return 1;
	case 1003:
		if (!tool_parse_uint(verb, "--ctx", arg, 1, 1u << 22, &v))
			return -1;
		o->n_ctx = (uint32_t)v;
		return 1;
	case 1004:
		o->strict = true;
		return 1;
	case 1005:
		o->rescale_gamma = true;
		return 1;
	case 1006:
		o->smt = true;
		return 1;
	case 1007:
		o->mlock = true;
		return 1;
	case 1008: {
		enum bn_gate g;
		if (bn_gate_parse(arg, &g)) {
			tool_error(verb, "--gate '%s': expected none, warn or strict", arg);
			return -1;
		}
		o->gate = (int)g;
		return 1;
	}
	case 1009:
		o->policy = arg;
		return 1;
	case 1011:
		o->tokenizer = arg;
		return 1;
	case 1010: {
		enum bn_numa n;
		if (bn_numa_parse(arg, &n)) {
			tool_error(verb, "--numa '%s': expected off, interleave or bind", arg);
			return -1;
		}
		o->numa = (int)n;
		return 1;
	}
	}
	return 0;
}

int tool_engine_open(const char *verb, const struct tool_engine_opts *o, struct tool_engine *e)
{
	struct bn_error err = { 0 };
	memset(e, 0, sizeof(*e));
	e->tokenizer = o->tokenizer;
	if (!o->model) {
		tool_error(verb, "--model is required");
		return 2;
	}
	if (tool_check_cpu_env(verb))
		return 2;
	struct bn_model_opts mo = { .mlock = o->mlock, .rescale_gamma = o->rescale_gamma,
	                            .strict = o->strict, .gate = o->gate, .policy = o->policy };
	if (bn_model_load(&e->model, o->model, &mo, &err))
		goto fail;
	struct bn_pool_opts po;
	bn_pool_opts_default(&po);
	po.threads = o->threads;
	po.cpus = o->cpus;
	po.smt = o->smt;
	if (bn_pool_new(&e->pool, &po, &err))
		goto fail;
	const struct bn_gguf *g = bn_model_gguf(e->model);
	if (bn_pool_place(e->pool, g->base, g->size, (enum bn_numa)o->numa, &err))
		goto fail;
	const char *dir = o->plugin_dir ? o->plugin_dir : bn_kernel_default_dir();
	char cache[512];
	if (bn_kernel_load_for(&e->kernel, dir, o->plugin, bn_cpu_features(), e->model, e->pool,
	                       tool_calibrate_enabled(), bn_calib_default_cache(cache, sizeof(cache)),
	                       NULL, &err))
		goto fail;
	if (o->strict && e->kernel->n_fallback) {
		bn_err_set(&err, -ENOEXEC, "kernel plugin '%s' lacks %u ops and strict mode refuses "
		           "the built-in fallback", e->kernel->info.name, e->kernel->n_fallback);
		goto fail;
	}
	struct bn_ctx_opts co = { .n_ctx = o->n_ctx, .n_seq = o->n_seq, .n_batch = o->n_batch };
	if (bn_ctx_new(&e->ctx, e->model, e->kernel, e->pool, &co, &err))
		goto fail;
	return 0;
fail:
	tool_error(verb, "%s", err.msg);
	tool_engine_close(e);
	return 1;
}

void tool_engine_close(struct tool_engine *e)
{
	bn_ctx_free(e->ctx);
	bn_pool_free(e->pool);
	bn_kernel_unload(e->kernel);
	bn_model_free(e->model);
	memset(e, 0, sizeof(*e));
}

int tool_engine_tokenizer(const char *verb, const struct tool_engine *e, struct bn_tokenizer **out)
{
	struct bn_error err = { 0 };
	if (bn_tokenizer_for(out, bn_model_gguf(e->model), bn_model_hparams(e->model)->n_vocab,
	                     e->tokenizer, &err)) {
		tool_error(verb, "%s", err.msg);
		return 1;
	}
	return 0;
}
