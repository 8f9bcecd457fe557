/* bitnet requant: rewrite a model's LM head in another type (lib/requant.c). */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "gguf.h"
#include "requant.h"
#include "tools.h"

/* Files at least this big show progress even when stderr is not a terminal. */
#define BIG_FILE (256ull << 20)

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: bitnet requant --head q8_0|f16 [--quiet] IN.gguf OUT.gguf\n"
	        "Writes IN with its LM head (output.weight, else the tied token_embd.weight) as an\n"
	        "output.weight of the given type; every other tensor and key is copied unchanged.\n"
	        "q8_0 halves the head's bytes read per generated token (lossy: 8 bits + an f16 scale\n"
	        "per 32 values); f16 converts a bf16 or f32 head. OUT may be IN.\n");
}

int cmd_requant(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "head", required_argument, NULL, 'H' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct bn_requant_opts o = { 0 };
	bool quiet = false;
	int c;
	optind = 1;
	opterr = 1;
	while ((c = getopt_long(argc, argv, "qh", lopts, NULL)) != -1) {
		switch (c) {
		case 'H': {
			int t = bn_requant_parse_head(optarg);
			if (t < 0) {
				tool_error("requant", "option --head: '%s' is not q8_0 or f16", optarg);
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
	if (!o.head_type) {
		tool_error("requant", "--head q8_0|f16 is required");
		usage(stderr);
		return 2;
	}
	if (argc - optind != 2) {
		tool_error("requant", "expected IN.gguf and OUT.gguf");
		usage(stderr);
		return 2;
	}
	o.in = argv[optind];
	o.out = argv[optind + 1];
	FILE *f = fopen(o.in, "rb");
	long size = -1;
	if (f && !fseek(f, 0, SEEK_END))
		size = ftell(f);
	if (f)
		fclose(f);
	struct tool_progress prog = { "requant", -1 };
	bool show = !quiet && (isatty(STDERR_FILENO) || size >= (long)BIG_FILE);
	if (show) {
		o.progress = tool_show_progress;
		o.user = &prog;
	}
	struct bn_error err = { 0 };
	struct bn_requant_report rep;
	int rc = bn_requant(&o, &rep, &err);
	if (show && prog.last_pct >= 0 && prog.last_pct < 100)
		fputc('\n', stderr);
	if (rc) {
		tool_error("requant", "%s", err.msg);
		return 1;
	}
	if (!quiet)
		printf("wrote %s: output.weight %s {%u, %u} (%" PRIu64 " bytes) from %s %s (%" PRIu64
		       " bytes)%s, relative RMS error %.3g; %" PRIu64 " bytes\n", o.out,
		       bn_ggml_type_name(o.head_type), rep.n_embd, rep.n_vocab, rep.head_bytes_out,
		       bn_ggml_type_name(rep.source_type), rep.source, rep.head_bytes_in,
		       rep.replaced ? ", replaced" : ", added (the embedding stays for the input side)",
		       rep.rel_rms_error, rep.bytes);
	return 0;
}
