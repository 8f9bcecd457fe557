/* bitnet mkmodel: write a synthetic BitNet b1.58 GGUF (lib/mkmodel.c does the work). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "error.h"
#include "gguf.h"
#include "mkmodel.h"
#include "tools.h"

/* Models at least this big show progress even when stderr is not a terminal. */
#define BIG_MODEL (256ull << 20)

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: bitnet mkmodel [--preset tiny|small|2b4t] [--hidden H] [--ff F] [--layers L]\n"
	        "                      [--heads N] [--kv-heads K] [--vocab V] [--ctx C]\n"
	        "                      [--type i2_s|tq2_0|tq1_0|f16|bf16|f32] [--embd-type f16|bf16|f32]\n"
	        "                      [--arch bitnet-b1.58|bitnet-25|bitnet|llama] [--untied | --head q8_0]\n"
	        "                      [--seed S] [--gamma-rms R] [--scale-tensors]\n"
	        "                      [--tokenizer tokenizer.json] [--name NAME]\n"
	        "                      [--rope-base B] [--eps E] [--quiet] --out FILE\n"
	        "Writes a synthetic model with random ternary weights. Explicit options override the\n"
	        "preset's values (default shape: tiny). With --tokenizer and no --vocab, the vocab size\n"
	        "is the tokenizer's. --untied adds an output.weight head with its own random rows;\n"
	        "--head q8_0 adds an output.weight holding the embedding's rows in Q8_0 (what\n"
	        "`bitnet requant --head q8_0` writes); with neither the head is tied to the embedding.\n");
}

static int parse_u32(const char *opt, const char *s, uint32_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v > UINT32_MAX) {
		tool_error("mkmodel", "option --%s: '%s' is not an unsigned 32-bit integer",
		        opt, s);
		return -EINVAL;
	}
	*out = (uint32_t)v;
	return 0;
}

static int parse_u64(const char *opt, const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || end == s || *end || s[0] == '-') {
		tool_error("mkmodel", "option --%s: '%s' is not an unsigned 64-bit integer",
		        opt, s);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

static int parse_f32(const char *opt, const char *s, float *out)
{
	char *end;
	errno = 0;
	float v = strtof(s, &end);
	if (errno || end == s || *end || !isfinite(v)) {
		tool_error("mkmodel", "option --%s: '%s' is not a finite number", opt, s);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

enum {
	O_HIDDEN = 256, O_FF, O_LAYERS, O_HEADS, O_KV_HEADS, O_VOCAB, O_CTX, O_TYPE, O_EMBD_TYPE,
	O_ARCH, O_SEED, O_GAMMA, O_SCALE, O_TOKENIZER, O_NAME, O_ROPE, O_EPS, O_PRESET, O_UNTIED,
	O_HEAD,
};

static const struct option lopts[] = {
	{ "preset", required_argument, NULL, O_PRESET },
	{ "hidden", required_argument, NULL, O_HIDDEN },
	{ "ff", required_argument, NULL, O_FF },
	{ "layers", required_argument, NULL, O_LAYERS },
	{ "heads", required_argument, NULL, O_HEADS },
	{ "kv-heads", required_argument, NULL, O_KV_HEADS },
	{ "vocab", required_argument, NULL, O_VOCAB },
	{ "ctx", required_argument, NULL, O_CTX },
	{ "type", required_argument, NULL, O_TYPE },
	{ "embd-type", required_argument, NULL, O_EMBD_TYPE },
	{ "head", required_argument, NULL, O_HEAD },
	{ "arch", required_argument, NULL, O_ARCH },
	{ "seed", required_argument, NULL, O_SEED },
	{ "gamma-rms", required_argument, NULL, O_GAMMA },
	{ "scale-tensors", no_argument, NULL, O_SCALE },
	{ "untied", no_argument, NULL, O_UNTIED },
	{ "tokenizer", required_argument, NULL, O_TOKENIZER },
	{ "name", required_argument, NULL, O_NAME },
	{ "rope-base", required_argument, NULL, O_ROPE },
	{ "eps", required_argument, NULL, O_EPS },
	{ "out", required_argument, NULL, 'o' },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* Returned by mkmodel_parse to go on; anything else is the exit status. */
#define MKMODEL_GO (-1)

/* The command line. Explicit values are collected apart and applied over the preset
 * afterwards (mkmodel_resolve), so their order on the command line does not matter. */
struct mkmodel_args {
	struct bn_mkmodel_opts set;      /* explicit values over the defaults */
	struct { bool hidden, ff, layers, heads, kv_heads, vocab, ctx; } given;
	const char *preset, *out;
	bool quiet;
};

/* The long name of option c, for messages; NULL for one getopt did not know. */
static const char *opt_name(int c)
{
	const char *name = NULL;
	for (const struct option *l = lopts; l->name; l++)
		if (l->val == c)
			name = l->name;
	return name;
}

static int parse_type(const char *opt, const char *s, uint32_t *out)
{
	int t = bn_mkmodel_parse_type(s);
	if (t < 0) {
		tool_error("mkmodel", "option --%s: unknown type '%s'", opt, s);
		return -EINVAL;
	}
	*out = (uint32_t)t;
	return 0;
}

static int parse_head(const char *s, uint32_t *out)
{
	/* Q8_0 is the only head type of its own; without --head the head is tied */
	if (strcasecmp(s, "q8_0")) {
		tool_error("mkmodel", "option --head: '%s' is not q8_0 (leave it out for a "
		           "tied f16 head)", s);
		return -EINVAL;
	}
	*out = BN_TYPE_Q8_0;
	return 0;
}

/* One option (c, with its argument s) into *a. -EINVAL once the error is reported; an
 * option getopt did not know (it has said so) adds the usage. */
static int mkmodel_option(struct mkmodel_args *a, int c, const char *s)
{
	const char *name = opt_name(c);
	struct bn_mkmodel_opts *o = &a->set;
	switch (c) {
	case O_PRESET: a->preset = s; return 0;
	case O_HIDDEN: a->given.hidden = true; return parse_u32(name, s, &o->hidden);
	case O_FF: a->given.ff = true; return parse_u32(name, s, &o->ff);
	case O_LAYERS: a->given.layers = true; return parse_u32(name, s, &o->layers);
	case O_HEADS: a->given.heads = true; return parse_u32(name, s, &o->heads);
	case O_KV_HEADS: a->given.kv_heads = true; return parse_u32(name, s, &o->kv_heads);
	case O_VOCAB: a->given.vocab = true; return parse_u32(name, s, &o->vocab);
	case O_CTX: a->given.ctx = true; return parse_u32(name, s, &o->ctx);
	case O_TYPE: return parse_type(name, s, &o->wtype);
	case O_EMBD_TYPE: return parse_type(name, s, &o->embd_type);
	case O_HEAD: return parse_head(s, &o->head_type);
	case O_ARCH: o->arch = s; return 0;
	case O_SEED: return parse_u64(name, s, &o->seed);
	case O_GAMMA: return parse_f32(name, s, &o->gamma_rms);
	case O_SCALE: o->scale_tensors = true; return 0;
	case O_UNTIED: o->untied = true; return 0;
	case O_TOKENIZER: o->tokenizer_json = s; return 0;
	case O_NAME: o->name = s; return 0;
	case O_ROPE: return parse_f32(name, s, &o->rope_base);
	case O_EPS: return parse_f32(name, s, &o->eps);
	case 'o': a->out = s; return 0;
	case 'q': a->quiet = true; return 0;
	default: usage(stderr); return -EINVAL;
	}
}

/* Reads the command line into *a. The first bad option ends it, so its message is the
 * one shown. */
static int mkmodel_parse(int argc, char **argv, struct mkmodel_args *a)
{
	memset(a, 0, sizeof *a);
	bn_mkmodel_defaults(&a->set);
	int c;
	optind = 1;
	opterr = 1;
	while ((c = getopt_long(argc, argv, "o:qh", lopts, NULL)) != -1) {
		if (c == 'h') {
			usage(stdout);
			return 0;
		}
		if (mkmodel_option(a, c, optarg))
			return 2;
	}
	if (optind < argc) {
		tool_error("mkmodel", "unexpected argument '%s'", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (!a->out) {
		tool_error("mkmodel", "--out FILE is required");
		usage(stderr);
		return 2;
	}
	return MKMODEL_GO;
}

/* The options to write: the preset (default: tiny) under the explicit values, checked as a
 * whole; -EINVAL once the error is reported. */
static int mkmodel_resolve(const struct mkmodel_args *a, struct bn_mkmodel_opts *o)
{
	const struct bn_mkmodel_opts *set = &a->set;
	*o = *set;
	if (a->preset && bn_mkmodel_preset(o, a->preset)) {
		tool_error("mkmodel", "option --preset: unknown preset '%s' (tiny, small, 2b4t)",
		        a->preset);
		return -EINVAL;
	}
	if (a->given.hidden) o->hidden = set->hidden;
	if (a->given.ff) o->ff = set->ff;
	if (a->given.layers) o->layers = set->layers;
	if (a->given.heads) o->heads = set->heads;
	if (a->given.kv_heads) o->kv_heads = set->kv_heads;
	if (a->given.ctx) o->ctx = set->ctx;
	/* vocab 0: the tokenizer's, unless given */
	o->vocab = a->given.vocab ? set->vocab : (o->tokenizer_json ? 0 : o->vocab);

	struct bn_error err = { 0 };
	if (bn_mkmodel_validate(o, &err)) {
		tool_error("mkmodel", "%s", err.msg);
		return -EINVAL;
	}
	return 0;
}

/* Writes the model with a progress line where one is worth it; the exit status. */
static int mkmodel_write(const struct bn_mkmodel_opts *o, const char *out, bool quiet)
{
	/* the total is only known here without a tokenizer; with one, assume big enough to
	 * be worth a progress line only on a terminal */
	uint64_t total = bn_mkmodel_data_bytes(o);
	bool show = !quiet && (isatty(STDERR_FILENO) || total >= BIG_MODEL);
	struct tool_progress prog = { "mkmodel", -1 };
	struct bn_error err = { 0 };
	if (bn_mkmodel_write(o, out, show ? tool_show_progress : NULL, &prog, &err)) {
		/* end the progress line the error cut short */
		if (show && prog.last_pct >= 0 && prog.last_pct < 100)
			fputc('\n', stderr);
		tool_error("mkmodel", "%s", err.msg);
		return 1;
	}
	return 0;
}

static void print_summary(const struct bn_mkmodel_opts *o, const char *out)
{
	char vocab[32] = "tokenizer's vocab";
	if (o->vocab)
		snprintf(vocab, sizeof vocab, "vocab %u", o->vocab);
	printf("wrote %s: %s, hidden %u, ff %u, %u layers, %u/%u heads, %s, %s, head %s, "
	       "seed %" PRIu64 "\n", out, o->arch, o->hidden, o->ff, o->layers, o->heads,
	       o->kv_heads, vocab, bn_ggml_type_name(o->wtype),
	       o->untied ? "untied" : o->head_type ? bn_ggml_type_name(o->head_type) : "tied",
	       o->seed);
}

int cmd_mkmodel(int argc, char **argv)
{
	struct mkmodel_args a;
	int rc = mkmodel_parse(argc, argv, &a);
	if (rc != MKMODEL_GO)
		return rc;
	struct bn_mkmodel_opts o;
	if (mkmodel_resolve(&a, &o))
		return 2;
	if ((rc = mkmodel_write(&o, a.out, a.quiet)))
		return rc;
	if (!a.quiet)
		print_summary(&o, a.out);
	return 0;
}
