/* bitnet: offline verbs on the same engine as bitnetd. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "log.h"
#include "tools.h"

static const struct {
	const char *name;
	int (*fn)(int, char **);
	const char *help;
} verbs[] = {
	{ "inspect", cmd_inspect, "show a model's hyper-parameters, tokenizer and tensors" },
	{ "logits", cmd_logits, "write the logits of a token list" },
	{ "mkmodel", cmd_mkmodel, "write a synthetic BitNet model" },
	{ "convert", cmd_convert, "convert a Hugging Face BitNet checkpoint to GGUF" },
	{ "requant", cmd_requant, "rewrite a model's LM head as q8_0 (or f16)" },
	{ "tokenize", cmd_tokenize, "text to token ids" },
	{ "detokenize", cmd_detokenize, "token ids to text" },
	{ "run", cmd_run, "generate text from a prompt" },
	{ "kernels", cmd_kernels, "list kernel plugins and what this CPU can run" },
	{ "bench", cmd_bench, "prompt and generation speed" },
	{ "perplexity", cmd_perplexity, "perplexity of a model on a text file" },
	{ "trace", cmd_trace, "activation statistics per layer and op; compare two traces" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: bitnet VERB [options]   (bitnet VERB --help for a verb's options)\n\nverbs:\n");
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		fprintf(f, "  %-11s %s\n", verbs[i].name, verbs[i].help);
}

static void stderr_sink(int level, const char *msg, void *user)
{
	(void)user;
	const char *tag = level <= BN_LOG_ERR ? "error: " : level == BN_LOG_WARNING ? "warning: " : "";
	fprintf(stderr, "bitnet: %s%s\n", tag, msg);
}

void tool_log_to_stderr(int verbose)
{
	bn_log_set_sink(stderr_sink, NULL);
	bn_log_set_level(verbose > 1 ? BN_LOG_DEBUG : verbose ? BN_LOG_INFO : BN_LOG_WARNING);
}

void tool_error(const char *verb, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "bitnet %s: ", verb);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

int tool_parse_tokens(const char *s, int32_t **out, uint32_t *n)
{
	size_t cap = 16, cnt = 0;
	int32_t *v = malloc(cap * sizeof(*v));
	if (!v)
		return -ENOMEM;
	const char *p = s;
	while (*p) {
		char *end;
		errno = 0;
		long x = strtol(p, &end, 10);
		if (end == p || errno || x < INT32_MIN || x > INT32_MAX || (*end && *end != ',')) {
			free(v);
			return -EINVAL;
		}
		if (cnt == cap) {
			cap *= 2;
			int32_t *nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				free(v);
				return -ENOMEM;
			}
			v = nv;
		}
		v[cnt++] = (int32_t)x;
		p = *end ? end + 1 : end;
	}
	if (!cnt) {
		free(v);
		return -EINVAL;
	}
	*out = v;
	*n = (uint32_t)cnt;
	return 0;
}

bool tool_parse_uint(const char *verb, const char *opt, const char *s, unsigned long min,
                     unsigned long max, unsigned long *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (!*s || *end || errno || s[0] == '-' || v < min || v > max) {
		tool_error(verb, "%s '%s': expected an integer in %lu..%lu", opt, s, min, max);
		return false;
	}
	*out = v;
	return true;
}

/* Reads f to its end into a buffer of cap bytes to start with, doubled as it fills. */
static int read_all_from(FILE *f, size_t cap, char **out, size_t *len)
{
	size_t n = 0;
	char *b = malloc(cap);   /* [cap]: the text and its NUL */
	if (!b)
		return -ENOMEM;
	errno = 0;
	for (;;) {
		if (n == cap) {
			char *nb = realloc(b, cap *= 2);
			if (!nb) {
				free(b);
				return -ENOMEM;
			}
			b = nb;
		}
		size_t got = fread(b + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		int e = errno ? errno : EIO;   /* reading a directory gives EISDIR */
		free(b);
		return -e;
	}
	b[n] = '\0';   /* n < cap here: the loop grows the buffer before each read */
	*out = b;
	*len = n;
	return 0;
}

int tool_read_all(FILE *f, char **out, size_t *len)
{
	return read_all_from(f, 4096, out, len);
}

int tool_read_path(const char *path, char **out, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return -errno;
	/* a regular file is read in one go; a pipe or a device grows the buffer */
	struct stat st;
	size_t cap = fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 65536;
	int rc = read_all_from(f, cap, out, len);
	fclose(f);
	return rc;
}

static long status_kb(const char *field)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	size_t n = strlen(field);
	long kb = -1;
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, field, n))
			kb = strtol(line + n, NULL, 10);
	if (f)
		fclose(f);
	return kb;
}

long tool_rss_kb(void)
{
	return status_kb("VmRSS:");
}

long tool_peak_rss_kb(void)
{
	return status_kb("VmHWM:");
}

void tool_show_progress(void *user, uint64_t done, uint64_t total)
{
	struct tool_progress *p = user;
	int pct = total ? (int)(done * 100 / total) : 100;
	if (pct == p->last_pct)
		return;
	p->last_pct = pct;
	fprintf(stderr, "\rbitnet %s: %3d%% (%" PRIu64 " / %" PRIu64 " MiB)", p->verb, pct,
	        done >> 20, total >> 20);
	if (done >= total)
		fputc('\n', stderr);
	fflush(stderr);
}

int main(int argc, char **argv)
{
	/* BITNET_LOG=info|debug shows the library's log (kernel calibration, corrections) */
	const char *lv = getenv("BITNET_LOG");
	tool_log_to_stderr(lv && !strcmp(lv, "debug") ? 2 : lv && !strcmp(lv, "info") ? 1 : 0);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("bitnet %s\n", PACKAGE_VERSION);
		return 0;
	}
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (!strcmp(argv[1], verbs[i].name))
			return verbs[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "bitnet: unknown verb '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
