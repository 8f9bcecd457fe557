/* bitnet logits: the logits of a token list, one sequence, as a binary file:
 * int32 n_tokens, int32 n_vocab, float32 logits[n_tokens][n_vocab], little endian. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "error.h"
#include "tools.h"

static void logits_usage(FILE *f)
{
	fprintf(f, "usage: bitnet logits --model M --tokens 1,2,3 [--mode seq|batch] [--threads N]\n"
	           "                     [--plugin NAME] [--plugin-dir DIR] [--cpus LIST] --out FILE\n");
}

int cmd_logits(int argc, char **argv)
{
	static const struct option lo[] = {
		TOOL_ENGINE_LONGOPTS,
		{ "tokens", required_argument, NULL, 'k' },
		{ "mode", required_argument, NULL, 'M' },
		{ "out", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct tool_engine_opts eo;
	tool_engine_opts_init(&eo);
	const char *tokens = NULL, *out = NULL, *mode = "seq";
	int c, r;
	while ((c = getopt_long(argc, argv, "m:t:k:o:h", lo, NULL)) != -1) {
		if ((r = tool_engine_opt("logits", &eo, c, optarg))) {
			if (r < 0)
				return 2;
			continue;
		}
		switch (c) {
		case 'k': tokens = optarg; break;
		case 'M': mode = optarg; break;
		case 'o': out = optarg; break;
		case 'h': logits_usage(stdout); return 0;
		default: logits_usage(stderr); return 2;
		}
	}
	if (!tokens || !out || optind != argc) {
		logits_usage(stderr);
		return 2;
	}
	bool batch = !strcmp(mode, "batch");
	if (!batch && strcmp(mode, "seq")) {
		tool_error("logits", "--mode '%s': expected seq or batch", mode);
		return 2;
	}
	int32_t *tok;
	uint32_t n;
	if (tool_parse_tokens(tokens, &tok, &n)) {
		tool_error("logits", "--tokens '%s': expected comma-separated integers", tokens);
		return 2;
	}
	eo.n_batch = batch ? n : 1;
	struct tool_engine e;
	if ((r = tool_engine_open("logits", &eo, &e))) {
		free(tok);
		return r;
	}
	uint32_t V = bn_model_hparams(e.model)->n_vocab;
	float *logits = malloc((size_t)n * V * sizeof(float));   /* [n][V] */
	uint32_t *pos = malloc(n * sizeof(uint32_t)), *seq = calloc(n, sizeof(uint32_t));
	bool *want = malloc(n * sizeof(bool));
	struct bn_error err = { 0 };
	int rc = 0;
	if (!logits || !pos || !seq || !want) {
		tool_error("logits", "out of memory");
		rc = 1;
		goto done;
	}
	for (uint32_t i = 0; i < n; i++) {
		pos[i] = i;
		want[i] = true;
	}
	if (batch) {
		struct bn_batch b = { n, tok, pos, seq, want };
		rc = bn_decode(e.ctx, &b, logits, &err);
	} else {
		for (uint32_t i = 0; i < n && !rc; i++) {
			struct bn_batch b = { 1, tok + i, pos + i, seq, NULL };
			rc = bn_decode(e.ctx, &b, logits + (size_t)i * V, &err);
		}
	}
	if (rc) {
		tool_error("logits", "%s", err.msg);
		rc = 1;
		goto done;
	}
	/* little endian on every host this builds for (x86-64, aarch64) */
	FILE *f = fopen(out, "wb");
	int32_t hdr[2] = { (int32_t)n, (int32_t)V };
	bool ok = f && fwrite(hdr, sizeof(hdr), 1, f) == 1 &&
	          fwrite(logits, sizeof(float), (size_t)n * V, f) == (size_t)n * V;
	if ((f && fclose(f)) || !ok) {
		tool_error("logits", "cannot write %s: %s", out, strerror(errno));
		rc = 1;
	}
done:
	free(logits);
	free(pos);
	free(seq);
	free(want);
	free(tok);
	tool_engine_close(&e);
	return rc;
}
