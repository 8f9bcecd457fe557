/* bitnet: the offline tool. One verb per file; each returns the process exit status. */
#ifndef BN_TOOLS_H
#define BN_TOOLS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct bn_error;

int cmd_inspect(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_mkmodel(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_requant(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_kernels(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_trace(int argc, char **argv);

/* Shared helpers (tools/bitnet.c). */
void tool_log_to_stderr(int verbose);
/* Prints "bitnet VERB: message" to stderr. */
void tool_error(const char *verb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Parses "1,2,3" into a malloc'd array. Returns 0 or -EINVAL. */
int tool_parse_tokens(const char *s, int32_t **out, uint32_t *n);
/* All of f (or of the file at path), NUL-terminated, its length in *len with any NUL bytes
 * in it; the buffer is the caller's to free. 0, or a negative errno (ENOMEM; a read error's,
 * or EIO; the path variant's fopen's). */
int tool_read_all(FILE *f, char **out, size_t *len);
int tool_read_path(const char *path, char **out, size_t *len);
/* Resident set size of this process in KiB (VmRSS), -1 if unknown. */
long tool_rss_kb(void);
/* Its peak (VmHWM), likewise. */
long tool_peak_rss_kb(void);
/* The model's load-time corrections as a JSON array (tools/cmd_inspect.c; run --json too). */
struct json_object;
struct bn_model;
struct json_object *tool_corrections_json(const struct bn_model *m);
/* A "\rbitnet VERB: 42% (x / y MiB)" line on stderr for long writes (mkmodel, convert,
 * requant): a bn_*_progress callback with user = a struct tool_progress { verb, -1 }. */
struct tool_progress {
	const char *verb;
	int last_pct;                /* -1 before the first report */
};
void tool_show_progress(void *user, uint64_t done, uint64_t total);
/* Parses a non-negative integer option value with range check; prints the error. */
bool tool_parse_uint(const char *verb, const char *opt, const char *s, unsigned long min,
                     unsigned long max, unsigned long *out);

#endif
