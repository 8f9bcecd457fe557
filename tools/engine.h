/* Opening the engine the same way in every verb: model, kernel plugin, pool, context. */
#ifndef BN_TOOLS_ENGINE_H
#define BN_TOOLS_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "bitnet/bitnet.h"

struct bn_tokenizer;

struct tool_engine_opts {
	const char *model;
	const char *plugin;        /* NULL/auto */
	const char *plugin_dir;    /* NULL: the build tree's or installed default */
	unsigned threads;          /* 0 auto */
	const char *cpus;
	bool smt;
	uint32_t n_ctx, n_seq, n_batch;
	bool strict, rescale_gamma, mlock;
	int gate;                  /* enum bn_gate */
	const char *policy;
	int numa;                  /* enum bn_numa */
	const char *tokenizer;     /* a tokenizer.json instead of the model's vocabulary */
};

struct tool_engine {
	const char *tokenizer;     /* opts' --tokenizer */
	struct bn_model *model;
	struct bn_kernel *kernel;
	struct bn_pool *pool;
	struct bn_ctx *ctx;
};

/* Common long options, to splice into each verb's getopt table: returns true when the
 * option was one of them (and stores it). Option codes 1000..1099 are reserved for these. */
#define TOOL_ENGINE_LONGOPTS \
	{ "model", required_argument, NULL, 'm' }, \
	{ "threads", required_argument, NULL, 't' }, \
	{ "plugin", required_argument, NULL, 1000 }, \
	{ "plugin-dir", required_argument, NULL, 1001 }, \
	{ "cpus", required_argument, NULL, 1002 }, \
	{ "ctx", required_argument, NULL, 1003 }, \
	{ "strict", no_argument, NULL, 1004 }, \
	{ "rescale-gamma", no_argument, NULL, 1005 }, \
	{ "smt", no_argument, NULL, 1006 }, \
	{ "mlock", no_argument, NULL, 1007 }, \
	{ "gate", required_argument, NULL, 1008 }, \
	{ "policy", required_argument, NULL, 1009 }, \
	{ "numa", required_argument, NULL, 1010 }, \
	{ "tokenizer", required_argument, NULL, 1011 }

void tool_engine_opts_init(struct tool_engine_opts *o);
/* `--plugin auto` times the plugins on the model (bn_calibrate, cached) unless
 * BITNET_CALIBRATE=0, which keeps the static priority. */
bool tool_calibrate_enabled(void);
/* BITNET_CPU_DISABLE, when set, must name known features: prints an error and returns -1. */
int tool_check_cpu_env(const char *verb);
/* Handles options 'm', 't' and 1000..1099; returns 1 if handled, 0 if not, -1 on a bad value. */
int tool_engine_opt(const char *verb, struct tool_engine_opts *o, int c, const char *arg);
/* Opens everything; prints one error line naming the cause and returns non-zero on failure. */
int tool_engine_open(const char *verb, const struct tool_engine_opts *o, struct tool_engine *e);
void tool_engine_close(struct tool_engine *e);
/* The model's tokenizer, or --tokenizer's; prints the error and returns non-zero. */
int tool_engine_tokenizer(const char *verb, const struct tool_engine *e, struct bn_tokenizer **out);

#endif
