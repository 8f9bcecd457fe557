/* bitnet convert: a Hugging Face BitNetForCausalLM (or BitNet-quantized LlamaForCausalLM)
 * checkpoint to GGUF (lib/convert.c). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "convert.h"
#include "error.h"
#include "gguf.h"
#include "mkmodel.h"
#include "requant.h"
#include "tools.h"

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: bitnet convert HF_DIR OUT.gguf [--type i2_s|tq2_0|tq1_0] [--head f16|q8_0]\n"
	        "                      [--tokenizer tokenizer.json] [--quiet]\n"
	        "Converts a BitNetForCausalLM checkpoint (config.json, tokenizer.json, model.safetensors\n"
	        "or a sharded model.safetensors.index.json; packed U8 + weight_scale or BF16/F16/F32\n"
	        "master weights) to a bitnet-b1.58 GGUF with an F16 embedding and F32 norms, or a\n"
	        "LlamaForCausalLM checkpoint with quantization_config.quant_method \"bitnet\" to a\n"
	        "llama GGUF (q/k rows permuted for llama.cpp's interleaved RoPE). --head q8_0 also\n"
	        "writes the LM head as a Q8_0 output.weight (what bitnet requant writes).\n");
}

int cmd_convert(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "type", required_argument, NULL, 't' },
		{ "tokenizer", required_argument, NULL, 'k' },
		{ "head", required_argument, NULL, 'H' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct bn_convert_opts o = { 0 };
	bool quiet = false;
	int c;
	optind = 1;
	opterr = 1;
	while ((c = getopt_long(argc, argv, "t:k:qh", lopts, NULL)) != -1) {
		switch (c) {
		case 't': {
			int t = bn_mkmodel_parse_type(optarg);
			if (t != BN_TYPE_I2_S && t != BN_TYPE_TQ2_0 && t != BN_TYPE_TQ1_0) {
				tool_error("convert", "option --type: '%s' is not i2_s, tq2_0 or tq1_0", optarg);
				return 2;
			}
			o.wtype = (uint32_t)t;
			break;
		}
		case 'k': o.tokenizer_json = optarg; break;
		case 'H': {
			int t = bn_requant_parse_head(optarg);
			if (t < 0) {
				tool_error("convert", "option --head: '%s' is not f16 or q8_0", optarg);
				return 2;
			}
			o.head_type = (uint32_t)t;
			break;
		}
		case 'q': quiet = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (argc - optind != 2) {
		tool_error("convert", "expected HF_DIR and OUT.gguf");
		usage(stderr);
		return 2;
	}
	o.hf_dir = argv[optind];
	o.out = argv[optind + 1];
	struct tool_progress prog = { "convert", -1 };
	bool show = !quiet && isatty(STDERR_FILENO);
	if (show) {
		o.progress = tool_show_progress;
		o.user = &prog;
	}

	struct bn_error err = { 0 };
	struct bn_convert_report rep;
	int rc = bn_convert(&o, &rep, &err);
	if (show && prog.last_pct >= 0 && prog.last_pct < 100)
		fputc('\n', stderr);
	if (rc) {
		tool_error("convert", "%s", err.msg);
		return 1;
	}
	if (quiet)
		return 0;
	printf("wrote %s: %s from %s, %u layers, hidden %u, ff %u, heads %u/%u, vocab %u, ctx %u, "
	       "%s projections from %s%s%s%s, %u tensors from %u file%s, %" PRIu64 " bytes\n", o.out,
	       rep.arch, rep.hf_class, rep.n_layer,
	       rep.n_embd, rep.n_ff, rep.n_head, rep.n_head_kv, rep.n_vocab, rep.n_ctx,
	       bn_ggml_type_name(o.wtype ? o.wtype : BN_TYPE_I2_S), rep.form ? rep.form : "none",
	       rep.linear_class ? " (" : "", rep.linear_class ? rep.linear_class : "",
	       rep.linear_class ? ")" : "", rep.n_tensors, rep.n_files, rep.n_files == 1 ? "" : "s",
	       rep.bytes);
	if (rep.n_pad_tokens)
		printf("note: %u unused [PAD] tokens added to reach the embedding's %u rows\n",
		       rep.n_pad_tokens, rep.n_vocab);
	if (rep.n_scales_rounded)
		printf("note: %u projection scales rounded to f16 (largest relative change %.3g)\n",
		       rep.n_scales_rounded, rep.max_scale_rel_change);
	if (rep.n_zero_tensors)
		printf("note: %u projections have all-zero ternary weights\n", rep.n_zero_tensors);
	if (rep.untied_head || rep.head_type == BN_TYPE_Q8_0)
		printf("note: %s LM head written as output.weight (%s)\n",
		       rep.untied_head ? "untied" : "tied", bn_ggml_type_name(rep.head_type));
	long kb = tool_peak_rss_kb();
	if (kb > 0)
		printf("peak RSS %ld KiB\n", kb);
	return 0;
}
