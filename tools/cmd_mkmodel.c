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

int cmd_mkmodel(int argc, char **argv)
{
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
	/* Explicit values are collected apart and applied over the preset afterwards, so
	 * their order on the command line does not matter. */
	struct bn_mkmodel_opts set;      /* explicit values */
	struct { bool hidden, ff, layers, heads, kv_heads, vocab, ctx; } given = { 0 };
	bn_mkmodel_defaults(&set);
	const char *preset = NULL, *out = NULL;
	bool quiet = false;
	int c, rc = 0;

	optind = 1;
	opterr = 1;
	while ((c = getopt_long(argc, argv, "o:qh", lopts, NULL)) != -1) {
		const char *name = NULL;
		for (const struct option *l = lopts; l->name; l++)
			if (l->val == c)
				name = l->name;
		switch (c) {
		case O_PRESET: preset = optarg; break;
		case O_HIDDEN: rc = parse_u32(name, optarg, &set.hidden); given.hidden = true; break;
		case O_FF: rc = parse_u32(name, optarg, &set.ff); given.ff = true; break;
		case O_LAYERS: rc = parse_u32(name, optarg, &set.layers); given.layers = true; break;
		case O_HEADS: rc = parse_u32(name, optarg, &set.heads); given.heads = true; break;
		case O_KV_HEADS: rc = parse_u32(name, optarg, &set.kv_heads); given.kv_heads = true; break;
		case O_VOCAB: rc = parse_u32(name, optarg, &set.vocab); given.vocab = true; break;
		case O_CTX: rc = parse_u32(name, optarg, &set.ctx); given.ctx = true; break;
		case O_TYPE:
		case O_EMBD_TYPE: {
			int t = bn_mkmodel_parse_type(optarg);
			if (t < 0) {
				tool_error("mkmodel", "option --%s: unknown type '%s'", name,
				        optarg);
				rc = -EINVAL;
			} else if (c == O_TYPE) {
				set.wtype = (uint32_t)t;
			} else {
				set.embd_type = (uint32_t)t;
			}
			break;
		}
		case O_HEAD:
			if (strcasecmp(optarg, "q8_0")) {
				tool_error("mkmodel", "option --head: '%s' is not q8_0 (leave it out for a "
				           "tied f16 head)", optarg);
				rc = -EINVAL;
			}
			set.head_type = BN_TYPE_Q8_0;
			break;
		case O_ARCH: set.arch = optarg; break;
		case O_SEED: rc = parse_u64(name, optarg, &set.seed); break;
		case O_GAMMA: rc = parse_f32(name, optarg, &set.gamma_rms); break;
		case O_SCALE: set.scale_tensors = true; break;
		case O_UNTIED: set.untied = true; break;
		case O_TOKENIZER: set.tokenizer_json = optarg; break;
		case O_NAME: set.name = optarg; break;
		case O_ROPE: rc = parse_f32(name, optarg, &set.rope_base); break;
		case O_EPS: rc = parse_f32(name, optarg, &set.eps); break;
		case 'o': out = optarg; break;
		case 'q': quiet = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
		if (rc)
			return 2;
	}
	if (optind < argc) {
		tool_error("mkmodel", "unexpected argument '%s'", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (!out) {
		tool_error("mkmodel", "--out FILE is required");
		usage(stderr);
		return 2;
	}

	struct bn_mkmodel_opts o = set;
	if (preset && bn_mkmodel_preset(&o, preset)) {
		tool_error("mkmodel", "option --preset: unknown preset '%s' (tiny, small, 2b4t)",
		        preset);
		return 2;
	}
	if (given.hidden) o.hidden = set.hidden;
	if (given.ff) o.ff = set.ff;
	if (given.layers) o.layers = set.layers;
	if (given.heads) o.heads = set.heads;
	if (given.kv_heads) o.kv_heads = set.kv_heads;
	if (given.ctx) o.ctx = set.ctx;
	o.vocab = given.vocab ? set.vocab : (o.tokenizer_json ? 0 : o.vocab);

	struct bn_error err = { 0 };
	if (bn_mkmodel_validate(&o, &err)) {
		tool_error("mkmodel", "%s", err.msg);
		return 2;
	}
	/* the total is only known here without a tokenizer; with one, assume big enough to
	 * be worth a progress line only on a terminal */
	uint64_t total = bn_mkmodel_data_bytes(&o);
	bool show = !quiet && (isatty(STDERR_FILENO) || total >= BIG_MODEL);
	struct tool_progress prog = { "mkmodel", -1 };
	rc = bn_mkmodel_write(&o, out, show ? tool_show_progress : NULL, &prog, &err);
	if (rc) {
		if (show && prog.last_pct >= 0 && prog.last_pct < 100)
			fputc('\n', stderr);
		tool_error("mkmodel", "%s", err.msg);
		return 1;
	}
	if (!quiet) {
		char vocab[32] = "tokenizer's vocab";
		if (o.vocab)
			snprintf(vocab, sizeof vocab, "vocab %u", o.vocab);
		printf("wrote %s: %s, hidden %u, ff %u, %u layers, %u/%u heads, %s, %s, head %s, "
		       "seed %" PRIu64 "\n", out, o.arch, o.hidden, o.ff, o.layers, o.heads, o.kv_heads,
		       vocab, bn_ggml_type_name(o.wtype),
		       o.untied ? "untied" : o.head_type ? bn_ggml_type_name(o.head_type) : "tied", o.seed);
	}
	return 0;
}
