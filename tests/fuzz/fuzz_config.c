/* Fuzz target for the daemon's configuration reader (daemon/config.c bd_config_load, over
 * iniparser). bd_config_load takes a path, so the input goes through a memfd
 * (/proc/self/fd/N). Each input is read twice: unknown sections and keys as warnings,
 * then as errors (strict_unknown).
 *
 * Contract (daemon/bitnetd.h): the return is -1 (unreadable or unparsable: an error
 * logged, the defaults kept) or the number of errors, each of them logged at error level;
 * 0 means usable: an absolute model path, a plugin name, max_tokens within
 * max_tokens_limit. Whatever the return, every value stored is one the key table allows
 * (a bad value is reported and not stored), strings are terminated within their buffers,
 * and strict mode counts at least the errors of the lenient one.
 *
 *   scripts/fuzz.sh config 60           (libFuzzer, see tests/fuzz/README)
 *   build/tests/fuzz/fuzz_config FILE|DIR...    (replay; -DBN_FUZZ_STANDALONE) */
#include "fuzz_common.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "conf.h"
#include "log.h"

static int n_err, n_warn;

static void sink(int level, const char *msg, void *user)
{
	FUZZ_CHECK(msg[0] != '\0');
	if (level <= BN_LOG_ERR)
		n_err++;
	else if (level == BN_LOG_WARNING)
		n_warn++;
	FUZZ_NOTE("  <%d> %s\n", level, msg);
}

static bool in_words(const char *words, const char *v)
{
	size_t n = strlen(v);
	for (const char *p = words; *p;) {
		size_t l = strcspn(p, " ");
		if (l == n && strncmp(p, v, n) == 0)
			return true;
		p += l;
		p += strspn(p, " ");
	}
	return false;
}

#define TERMINATED(field) (memchr((field), '\0', sizeof(field)) != NULL)

/* The key table's ranges (daemon/config.c, man/bitnetd.conf.5). */
static void check_values(const struct bd_config *c)
{
	FUZZ_CHECK(TERMINATED(c->model_path) && TERMINATED(c->kv_type) &&
		   TERMINATED(c->template_name) && TERMINATED(c->gate) &&
		   TERMINATED(c->gate_policy) && TERMINATED(c->plugin) &&
		   TERMINATED(c->plugin_dir) && TERMINATED(c->cpus) && TERMINATED(c->numa));
	FUZZ_CHECK(in_words("f16", c->kv_type));
	FUZZ_CHECK(in_words("auto chat bitnet llama3 instruct raw", c->template_name));
	FUZZ_CHECK(in_words("none warn strict", c->gate));
	FUZZ_CHECK(in_words("off interleave bind", c->numa));
	FUZZ_CHECK(c->context <= (1u << 22) && c->threads <= 1024);
	FUZZ_CHECK(c->slots >= 1 && c->slots <= 256);
	FUZZ_CHECK(c->step_tokens >= 1 && c->step_tokens <= 16384);
	FUZZ_CHECK(c->max_queue <= 4096);
	FUZZ_CHECK(c->max_prompt_bytes >= 1 && c->max_prompt_bytes <= (64u << 20));
	FUZZ_CHECK(c->max_tokens_limit >= 1 && c->max_tokens_limit <= (1u << 22));
	FUZZ_CHECK(c->max_tokens >= 1 && c->max_tokens <= (1u << 22));
	FUZZ_CHECK(isfinite(c->temperature) && c->temperature >= 0 && c->temperature <= 100);
	FUZZ_CHECK(c->top_k <= (1u << 24));
	FUZZ_CHECK(isfinite(c->top_p) && c->top_p >= 1e-9 && c->top_p <= 1);
	FUZZ_CHECK(isfinite(c->min_p) && c->min_p >= 0 && c->min_p <= 1);
	FUZZ_CHECK(isfinite(c->repeat_penalty) && c->repeat_penalty >= 1e-6 &&
		   c->repeat_penalty <= 10);
	FUZZ_CHECK(c->log_level >= BN_LOG_ERR && c->log_level <= BN_LOG_DEBUG);
}

static int load(const char *path, bool strict, struct bd_config *c)
{
	n_err = n_warn = 0;
	memset(c, 0xa5, sizeof(*c));   /* the loader starts from the defaults */
	int rc = bd_config_load(c, path, strict);
	FUZZ_NOTE("strict=%d: %d (%d errors, %d warnings logged)\n", strict, rc, n_err, n_warn);
	FUZZ_CHECK(rc >= -1);
	check_values(c);
	if (rc == -1) {
		FUZZ_CHECK(n_err >= 1);
		struct bd_config d;
		bd_config_defaults(&d);
		FUZZ_CHECK(memcmp(&d, c, sizeof(d)) == 0);
	} else {
		FUZZ_CHECK(n_err >= rc);   /* every error logged */
	}
	if (rc == 0) {
		FUZZ_CHECK(c->model_path[0] == '/');
		FUZZ_CHECK(c->plugin[0] != '\0');
		FUZZ_CHECK(c->plugin_dir[0] == '\0' || c->plugin_dir[0] == '/');
		FUZZ_CHECK(c->max_tokens <= c->max_tokens_limit);
	}
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool init;
	if (!init) {
		bn_log_set_sink(sink, NULL);
		bn_log_set_level(BN_LOG_DEBUG);
		init = true;
	}
	const char *path = fuzz_memfd_path(data, size);
	struct bd_config lenient, strict;
	int a = load(path, false, &lenient);
	int b = load(path, true, &strict);
	FUZZ_CHECK((a == -1) == (b == -1));
	FUZZ_CHECK(b >= a);
	/* unknown names do not change what is stored */
	FUZZ_CHECK(memcmp(&lenient, &strict, sizeof(lenient)) == 0);
	return 0;
}

#ifdef BN_FUZZ_STANDALONE
int main(int argc, char **argv)
{
	return fuzz_replay_main(argc, argv);
}
#endif
