#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(HAVE_INIPARSER_INIPARSER_H)
#include <iniparser/iniparser.h>
#else
#include <iniparser.h>
#endif

#include "conf.h"
#include "cpu.h"
#include "kernels.h"
#include "log.h"
#include "norms.h"
#include "pool.h"
#include "tokjson.h"

enum key_type { K_STR, K_UINT, K_DOUBLE, K_BOOL, K_ENUM, K_LEVEL };

struct key {
	const char *section, *name;
	enum key_type type;
	size_t off;              /* offset in struct bd_config */
	size_t size;             /* K_STR/K_ENUM: buffer size */
	double min, max;         /* K_UINT, K_DOUBLE (inclusive) */
	const char *choices;     /* K_ENUM: space-separated */
	const char *def;         /* default, as it would be written in the file */
	const char *help;
};

#define OFF(f) offsetof(struct bd_config, f)
#define SZ(f) sizeof(((struct bd_config *)0)->f)

/* The one key table: defaults, ranges, the check and bitnetd.conf(5) all follow it. */
static const struct key keys[] = {
	{ "model", "path", K_STR, OFF(model_path), SZ(model_path), 0, 0, NULL, "",
	  "GGUF model file (absolute path); required" },
	{ "model", "context", K_UINT, OFF(context), 0, 0, 1u << 22, NULL, "0",
	  "context length in tokens of each slot; 0 uses the model's training context" },
	{ "model", "kv_type", K_ENUM, OFF(kv_type), SZ(kv_type), 0, 0, "f16", "f16",
	  "KV cache element type" },
	{ "model", "template", K_ENUM, OFF(template_name), SZ(template_name), 0, 0,
	  "auto chat bitnet llama3 instruct raw", "auto", "chat format used by Chat()" },
	{ "model", "strict", K_BOOL, OFF(strict), 0, 0, 0, NULL, "false",
	  "refuse any weight correction or built-in kernel fallback" },
	{ "model", "rescale_gamma", K_BOOL, OFF(rescale_gamma), 0, 0, 0, NULL, "false",
	  "experimental: multiply norm weights by sqrt(len) at load (reported in Corrections)" },
	{ "model", "gate", K_ENUM, OFF(gate), SZ(gate), 0, 0, "none warn strict", "warn",
	  "norm-statistics gate at load: warn logs out-of-range norms, strict refuses the model" },
	{ "model", "gate_policy", K_STR, OFF(gate_policy), SZ(gate_policy), 0, 0, NULL, "",
	  "INI rule file for the gate (see bitnet(1) inspect --ln-stats); empty for the built-in rules" },
	{ "model", "tokenizer", K_STR, OFF(tokenizer), SZ(tokenizer), 0, 0, NULL, "",
	  "a tokenizer.json to use instead of the model's vocabulary; empty for the model's" },
	{ "engine", "plugin", K_STR, OFF(plugin), SZ(plugin), 0, 0, NULL, "auto",
	  "kernel plugin name, or auto for the best one this CPU runs" },
	{ "engine", "calibrate", K_BOOL, OFF(calibrate), 0, 0, 0, NULL, "true",
	  "with plugin = auto, time every runnable plugin variant on the model at load and take the "
	  "fastest (cached in the cache directory); false takes the highest priority" },
	{ "engine", "plugin_dir", K_STR, OFF(plugin_dir), SZ(plugin_dir), 0, 0, NULL, "",
	  "absolute directory of kernel plugins; empty for the installed one" },
	{ "engine", "threads", K_UINT, OFF(threads), 0, 0, 1024, NULL, "0",
	  "worker threads; 0 is one per usable physical core" },
	{ "engine", "cpus", K_STR, OFF(cpus), SZ(cpus), 0, 0, NULL, "auto",
	  "CPUs the workers may use, e.g. 0-3,8; auto for all allowed" },
	{ "engine", "smt", K_BOOL, OFF(smt), 0, 0, 0, NULL, "false",
	  "also use SMT (hyper-thread) siblings" },
	{ "engine", "prefault", K_BOOL, OFF(prefault), 0, 0, 0, NULL, "true",
	  "read every page of the model at load, so that the first request does not wait for page "
	  "faults (skipped with mlock or numa, which fault the pages in themselves)" },
	{ "engine", "mlock", K_BOOL, OFF(mlock), 0, 0, 0, NULL, "false",
	  "lock the model's weights in memory" },
	{ "engine", "numa", K_ENUM, OFF(numa), SZ(numa), 0, 0, "off interleave bind", "off",
	  "NUMA placement of the weights: interleave over, or bind to, the workers' nodes (off "
	  "leaves pages where they are)" },
	{ "server", "slots", K_UINT, OFF(slots), 0, 1, 256, NULL, "4",
	  "requests generated at once, each in its own sequence of context positions (KV memory "
	  "grows with slots x context; it is committed as it fills)" },
	{ "server", "step_tokens", K_UINT, OFF(step_tokens), 0, 1, 16384, NULL, "64",
	  "tokens per scheduler step: every running request's next token plus chunks of new "
	  "prompts; smaller keeps streams flowing while a long prompt is read" },
	{ "server", "max_queue", K_UINT, OFF(max_queue), 0, 0, 4096, NULL, "16",
	  "requests that may wait for a free slot; more get Busy" },
	{ "server", "max_prompt_bytes", K_UINT, OFF(max_prompt_bytes), 0, 1, 64u << 20, NULL, "1048576",
	  "longest prompt (or chat messages together) in bytes" },
	{ "server", "max_tokens_limit", K_UINT, OFF(max_tokens_limit), 0, 1, 1u << 22, NULL, "4096",
	  "largest max_tokens a client may ask for" },
	{ "server", "max_tokens", K_UINT, OFF(max_tokens), 0, 1, 1u << 22, NULL, "256",
	  "max_tokens when the client does not give it" },
	{ "server", "temperature", K_DOUBLE, OFF(temperature), 0, 0, 100, NULL, "0.8",
	  "default sampling temperature (0: greedy)" },
	{ "server", "top_k", K_UINT, OFF(top_k), 0, 0, 1u << 24, NULL, "40", "default top-k (0: off)" },
	{ "server", "top_p", K_DOUBLE, OFF(top_p), 0, 1e-9, 1, NULL, "0.95", "default top-p (1: off)" },
	{ "server", "min_p", K_DOUBLE, OFF(min_p), 0, 0, 1, NULL, "0.05", "default min-p (0: off)" },
	{ "server", "repeat_penalty", K_DOUBLE, OFF(repeat_penalty), 0, 1e-6, 10, NULL, "1.0",
	  "default repetition penalty (1: off)" },
	{ "http", "listen", K_STR, OFF(http_listen), SZ(http_listen), 0, 0, NULL, "",
	  "addresses of the OpenAI-compatible HTTP listener, e.g. 127.0.0.1:8080 [::1]:8080; empty "
	  "for none (without api_key_file only loopback addresses are allowed)" },
	{ "http", "api_key_file", K_STR, OFF(http_api_key_file), SZ(http_api_key_file), 0, 0, NULL,
	  "", "file of API keys, one per line, for Authorization: Bearer; empty for no keys" },
	{ "http", "max_body_bytes", K_UINT, OFF(http_max_body_bytes), 0, 1024, 256u << 20, NULL,
	  "4194304", "largest HTTP request body" },
	{ "http", "max_connections", K_UINT, OFF(http_max_connections), 0, 1, 4096, NULL, "64",
	  "HTTP connections at once (each has a thread)" },
	{ "http", "timeout", K_UINT, OFF(http_timeout), 0, 1, 3600, NULL, "60",
	  "seconds an HTTP client may stay silent before it is dropped" },
	{ "log", "level", K_LEVEL, OFF(log_level), 0, 0, 0, "err warning notice info debug", "info",
	  "most verbose level logged" },
};

#define N_KEYS (sizeof(keys) / sizeof(keys[0]))

static const char *level_names[] = { [BN_LOG_ERR] = "err", [BN_LOG_WARNING] = "warning",
                                     [BN_LOG_NOTICE] = "notice", [BN_LOG_INFO] = "info",
                                     [BN_LOG_DEBUG] = "debug" };

static bool in_choices(const char *choices, const char *v)
{
	size_t n = strlen(v);
	for (const char *p = choices; *p;) {
		const char *e = strchr(p, ' ');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		if (l == n && !strncmp(p, v, n))
			return true;
		p += l;
		while (*p == ' ')
			p++;
	}
	return false;
}

/* Stores value v of key k into c; on a bad value writes why into why. */
static int key_set(const struct key *k, struct bd_config *c, const char *v, char *why, size_t wl)
{
	char *base = (char *)c + k->off;
	char *end;
	switch (k->type) {
	case K_STR:
		if (strlen(v) >= k->size) {
			snprintf(why, wl, "longer than %zu bytes", k->size - 1);
			return -1;
		}
		strcpy(base, v);
		return 0;
	case K_ENUM:
		if (!in_choices(k->choices, v) || strlen(v) >= k->size) {
			snprintf(why, wl, "'%s' is not one of: %s", v, k->choices);
			return -1;
		}
		strcpy(base, v);
		return 0;
	case K_LEVEL:
		for (int i = BN_LOG_ERR; i <= BN_LOG_DEBUG; i++)
			if (!strcasecmp(v, level_names[i])) {
				*(int *)(void *)base = i;
				return 0;
			}
		snprintf(why, wl, "'%s' is not one of: %s", v, k->choices);
		return -1;
	case K_BOOL:
		if (!strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcmp(v, "1") ||
		    !strcasecmp(v, "on")) {
			*(bool *)(void *)base = true;
			return 0;
		}
		if (!strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcmp(v, "0") ||
		    !strcasecmp(v, "off")) {
			*(bool *)(void *)base = false;
			return 0;
		}
		snprintf(why, wl, "'%s' is not a boolean (true/false, yes/no, on/off, 1/0)", v);
		return -1;
	case K_UINT: {
		errno = 0;
		unsigned long long x = strtoull(v, &end, 10);
		if (!*v || *end || errno || v[0] == '-' || v[0] == '+' || x < k->min || x > k->max) {
			snprintf(why, wl, "'%s' is not an integer in [%.0f, %.0f]", v, k->min, k->max);
			return -1;
		}
		*(uint32_t *)(void *)base = (uint32_t)x;
		return 0;
	}
	case K_DOUBLE: {
		errno = 0;
		double x = strtod(v, &end);
		if (!*v || *end || errno || !isfinite(x) || x < k->min || x > k->max) {
			snprintf(why, wl, "'%s' is not a number in [%g, %g]", v, k->min, k->max);
			return -1;
		}
		*(double *)(void *)base = x;
		return 0;
	}
	}
	return -1;
}

void bd_config_defaults(struct bd_config *c)
{
	memset(c, 0, sizeof(*c));
	char why[160];
	for (size_t i = 0; i < N_KEYS; i++)
		key_set(&keys[i], c, keys[i].def, why, sizeof(why));
}

static const struct key *key_find(const char *section, const char *name)
{
	for (size_t i = 0; i < N_KEYS; i++)
		if (!strcmp(keys[i].section, section) && !strcmp(keys[i].name, name))
			return &keys[i];
	return NULL;
}

static bool section_known(const char *s)
{
	for (size_t i = 0; i < N_KEYS; i++)
		if (!strcmp(keys[i].section, s))
			return true;
	return false;
}

/* iniparser reports syntax errors through a printf-like callback; keep the last ones. */
static char ini_errbuf[1024];

static int ini_error(const char *fmt, ...)
{
	size_t l = strlen(ini_errbuf);
	va_list ap;
	va_start(ap, fmt);
	if (l < sizeof(ini_errbuf) - 1)
		vsnprintf(ini_errbuf + l, sizeof(ini_errbuf) - l, fmt, ap);
	va_end(ap);
	return 0;
}

/* ini_errbuf as one line, without the trailing newlines iniparser writes */
static const char *ini_errors(void)
{
	size_t l = strlen(ini_errbuf);
	while (l && ini_errbuf[l - 1] == '\n')
		ini_errbuf[--l] = '\0';
	for (char *p = ini_errbuf; (p = strchr(p, '\n'));)
		*p = ' ';
	return ini_errbuf;
}

/* Logs "path: [sec] key: message" at level; returns 1 for an error, 0 for a warning. */
static int problem(int level, const char *path, const char *sec, const char *key,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int problem(int level, const char *path, const char *sec, const char *key,
                   const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	bn_log(level, "%s: [%s] %s: %s", path, sec, key, msg);
	return level == BN_LOG_ERR;
}

/* The model file as far as it can be known without loading it: a readable regular file
 * that begins with the GGUF magic. */
static int check_model_file(const struct bd_config *c, const char *path)
{
	const char *m = c->model_path;
	if (m[0] != '/')
		return 0;   /* already reported */
	/* O_NONBLOCK: a FIFO named here must not hang the check */
	int fd = open(m, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return problem(BN_LOG_ERR, path, "model", "path", "'%s': %s", m, strerror(errno));
	struct stat st;
	unsigned char magic[4];
	ssize_t n = 0;
	int bad = 0;
	if (fstat(fd, &st))
		bad = problem(BN_LOG_ERR, path, "model", "path", "'%s': %s", m, strerror(errno));
	else if (!S_ISREG(st.st_mode))
		bad = problem(BN_LOG_ERR, path, "model", "path", "'%s': not a regular file", m);
	else if ((n = pread(fd, magic, sizeof(magic), 0)) < 0)
		bad = problem(BN_LOG_ERR, path, "model", "path", "'%s': %s", m, strerror(errno));
	else if (n < (ssize_t)sizeof(magic) || memcmp(magic, "GGUF", sizeof(magic)))
		bad = problem(BN_LOG_ERR, path, "model", "path", "'%s': not a GGUF file (it does not "
		              "begin with the magic GGUF)", m);
	close(fd);
	return bad;
}

/* The gate's rule file, read with the same parser the model load uses. With gate = none
 * it is never read, so a problem is only a warning then. */
static int check_gate_policy(const struct bd_config *c, const char *path)
{
	const char *f = c->gate_policy;
	if (!f[0])
		return 0;
	int level = strcmp(c->gate, "none") ? BN_LOG_ERR : BN_LOG_WARNING;
	const char *unused = level == BN_LOG_ERR ? "" : " (unused with gate = none)";
	/* the daemon runs in / under systemd: a relative name would check another file */
	if (f[0] != '/')
		return problem(BN_LOG_ERR, path, "model", "gate_policy", "'%s' is not an absolute path", f);
	int fd = open(f, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return problem(level, path, "model", "gate_policy", "'%s': %s%s", f, strerror(errno),
		               unused);
	struct stat st;
	int st_rc = fstat(fd, &st);
	close(fd);
	if (st_rc || !S_ISREG(st.st_mode))
		return problem(level, path, "model", "gate_policy", "'%s': not a regular file%s", f,
		               unused);
	struct bn_norm_policy pol;
	struct bn_error err = { 0 };
	ini_errbuf[0] = '\0';
	if (bn_norm_policy_load(f, &pol, &err)) {
		const char *why = ini_errors();
		return problem(level, path, "model", "gate_policy", "'%s': %s%s%s%s", f, err.msg,
		               *why ? " (" : "", why, *why ? ")" : "");
	}
	bn_norm_policy_free(&pol);
	return 0;
}

/* A tokenizer.json in place of the model's vocabulary: read in full (its size against the
 * embedding is the load's check: that needs the model). */
static int check_tokenizer(const struct bd_config *c, const char *path)
{
	const char *f = c->tokenizer;
	if (!f[0])
		return 0;
	if (f[0] != '/')
		return problem(BN_LOG_ERR, path, "model", "tokenizer", "'%s' is not an absolute path", f);
	struct bn_vocab v;
	struct bn_error err = { 0 };
	memset(&v, 0, sizeof(v));
	if (bn_tokjson_load(f, &v, &err))
		return problem(BN_LOG_ERR, path, "model", "tokenizer", "%s", err.msg);
	bn_vocab_free(&v);
	return 0;
}

/* A plugin name is the X of kernel-X.so inside plugin_dir, nothing that reaches outside it. */
static bool plugin_name_ok(const char *n)
{
	size_t l = strlen(n);
	if (!l || l >= sizeof(((struct bn_kernel_info *)0)->name))
		return false;
	for (const char *p = n; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		      *p == '-' || *p == '_'))
			return false;
	return true;
}

/* The kernel plugin, as bn_kernel_load will see it: the directory, the name, whether this
 * CPU runs it and, under strict, whether it has every op. */
static int check_plugin(const struct bd_config *c, const char *path)
{
	int errors = 0;
	bool is_auto = !strcmp(c->plugin, "auto");
	bool name_ok = true;
	if (c->plugin[0] && !is_auto && !plugin_name_ok(c->plugin)) {
		errors += problem(BN_LOG_ERR, path, "engine", "plugin", "'%s' is not a plugin name "
		                  "(letters, digits, '-' and '_', at most 31; plugins load only from "
		                  "plugin_dir)", c->plugin);
		name_ok = false;
	}
	const char *dir = c->plugin_dir[0] ? c->plugin_dir : bn_kernel_default_dir();
	if (dir[0] != '/')
		return errors;   /* already reported */
	char what[4200];
	if (c->plugin_dir[0])
		snprintf(what, sizeof(what), "'%s'", dir);
	else
		snprintf(what, sizeof(what), "empty, the installed directory '%s'", dir);
	struct stat st;
	if (stat(dir, &st))
		return errors + problem(BN_LOG_ERR, path, "engine", "plugin_dir", "%s: %s", what,
		                        strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return errors + problem(BN_LOG_ERR, path, "engine", "plugin_dir", "%s: not a directory",
		                        what);
	uint64_t cpu = bn_cpu_features();
	struct bn_kernel_info *list = NULL;
	size_t n = 0;
	struct bn_error err = { 0 };
	if (bn_kernel_scan(dir, cpu, &list, &n, &err))
		return errors + problem(BN_LOG_ERR, path, "engine", "plugin_dir", "%s", err.msg);
	char avail[512] = "";   /* usable plugin names, ", " separated */
	size_t al = 0;
	for (size_t i = 0; i < n; i++) {
		if (!list[i].usable)
			continue;
		int w = snprintf(avail + al, sizeof(avail) - al, "%s%s", al ? ", " : "", list[i].name);
		if (w > 0 && (size_t)w < sizeof(avail) - al)
			al += (size_t)w;
	}
	if (is_auto || !c->plugin[0]) {
		if (c->plugin[0] && !al)
			errors += problem(BN_LOG_ERR, path, "engine", "plugin", "'auto': no usable kernel "
			                  "plugin in %s (%zu found)", dir, n);
		free(list);
		return errors;
	}
	if (!name_ok) {
		free(list);
		return errors;
	}
	size_t i;
	for (i = 0; i < n && strcmp(list[i].name, c->plugin); i++)
		;
	if (i == n) {
		errors += problem(BN_LOG_ERR, path, "engine", "plugin", "'%s': no such kernel plugin in "
		                  "%s (available on this CPU: %s)", c->plugin, dir, al ? avail : "none");
	} else if (!list[i].usable) {
		errors += problem(BN_LOG_ERR, path, "engine", "plugin", "'%s' (%s/%s) cannot be used: %s "
		                  "(available on this CPU: %s)", c->plugin, dir, list[i].file,
		                  list[i].problem, al ? avail : "none");
	} else {
		struct bn_kernel *k;
		if (bn_kernel_load(&k, dir, c->plugin, cpu, &err)) {
			errors += problem(BN_LOG_ERR, path, "engine", "plugin", "'%s': %s", c->plugin,
			                  err.msg);
		} else {
			if (c->strict && k->n_fallback)
				errors += problem(BN_LOG_ERR, path, "engine", "plugin", "'%s' lacks %u ops and "
				                  "[model] strict refuses the built-in fallback", c->plugin,
				                  k->n_fallback);
			bn_kernel_unload(k);
		}
	}
	free(list);
	return errors;
}

/* The worker pool's CPU choice (bn_pool_plan: the same as at load, without threads). */
static int check_cpus(const struct bd_config *c, const char *path, bool strict)
{
	/* the options exactly as the generation thread builds them */
	struct bn_pool_opts po;
	bn_pool_opts_default(&po);
	po.threads = c->threads;
	po.cpus = strcmp(c->cpus, "auto") ? c->cpus : NULL;
	po.smt = c->smt;
	bool listed = po.cpus && *po.cpus;
	unsigned n_workers, n_cores;
	struct bn_error err = { 0 };
	int rc = bn_pool_plan(&po, &n_workers, &n_cores, &err);
	if (rc == -EIO)
		return problem(BN_LOG_ERR, path, "engine", "cpus", "'%s': cannot be checked: %s",
		               c->cpus, err.msg);
	if (rc) {
		/* err names the value: "cpus = '...': why" */
		bn_log(BN_LOG_ERR, "%s: [engine] %s", path, err.msg);
		return 1;
	}
	if (n_workers <= n_cores)
		return 0;
	const char *unit = c->smt ? "usable CPU" : "usable core";
	if (listed)
		return problem(BN_LOG_ERR, path, "engine", "threads", "%u is more than the %u %s%s that "
		               "cpus = %s%s gives: workers would share cores (at most %u, or 0 for one "
		               "per core)", c->threads, n_cores, unit, n_cores == 1 ? "" : "s", c->cpus,
		               c->smt ? " with smt" : "", n_cores);
	/* at start the pool says this itself */
	if (strict)
		problem(BN_LOG_WARNING, path, "engine", "threads", "%u is more than the %u %s%s this "
		        "process may use: workers will share cores", c->threads, n_cores, unit,
		        n_cores == 1 ? "" : "s");
	return 0;
}

int bd_config_load(struct bd_config *c, const char *path, bool strict_unknown)
{
	bd_config_defaults(c);
	FILE *f = fopen(path, "r");
	if (!f) {
		bn_log(BN_LOG_ERR, "%s: cannot read the configuration: %s", path, strerror(errno));
		return -1;
	}
	fclose(f);
	ini_errbuf[0] = '\0';
	iniparser_set_error_callback(ini_error);
	dictionary *d = iniparser_load(path);
	if (!d) {
		const char *why = ini_errors();
		bn_log(BN_LOG_ERR, "%s: cannot parse the configuration: %s", path,
		       *why ? why : "syntax error");
		return -1;
	}
	int errors = 0;
	/* iniparser lower-cases names; every entry is "section" (no value) or "section:key". */
	for (int i = 0; i < d->size; i++) {
		const char *name = d->key[i];
		if (!name)
			continue;
		const char *colon = strchr(name, ':');
		/* iniparser files a key written before any section header under "" (":key") */
		if (colon == name || (!colon && d->val[i])) {
			const char *kn = colon ? colon + 1 : name;
			bn_log(strict_unknown ? BN_LOG_ERR : BN_LOG_WARNING, "%s: key '%s' is outside any "
			       "section (write it under its [section])%s", path, kn,
			       strict_unknown ? "" : " (ignored)");
			errors += strict_unknown;
			continue;
		}
		if (!colon) {
			if (!section_known(name)) {
				bn_log(strict_unknown ? BN_LOG_ERR : BN_LOG_WARNING,
				       "%s: unknown section [%s]%s", path, name,
				       strict_unknown ? "" : " (ignored)");
				errors += strict_unknown;
			}
			continue;
		}
		char sec[64];
		size_t sl = (size_t)(colon - name);
		if (sl >= sizeof(sec))
			sl = sizeof(sec) - 1;
		memcpy(sec, name, sl);
		sec[sl] = '\0';
		if (!section_known(sec))
			continue;   /* reported with the section */
		const struct key *k = key_find(sec, colon + 1);
		if (!k) {
			bn_log(strict_unknown ? BN_LOG_ERR : BN_LOG_WARNING, "%s: [%s] unknown key '%s'%s",
			       path, sec, colon + 1, strict_unknown ? "" : " (ignored)");
			errors += strict_unknown;
			continue;
		}
		char why[256];
		const char *v = d->val[i] ? d->val[i] : "";
		if (key_set(k, c, v, why, sizeof(why))) {
			bn_log(BN_LOG_ERR, "%s: [%s] %s: %s", path, sec, k->name, why);
			errors++;
		}
	}
	iniparser_freedict(d);
	if (!c->model_path[0]) {
		bn_log(BN_LOG_ERR, "%s: [model] path: not set (the GGUF model to serve)", path);
		errors++;
	} else if (c->model_path[0] != '/') {
		bn_log(BN_LOG_ERR, "%s: [model] path: '%s' is not an absolute path", path, c->model_path);
		errors++;
	}
	if (c->plugin_dir[0] && c->plugin_dir[0] != '/') {
		bn_log(BN_LOG_ERR, "%s: [engine] plugin_dir: '%s' is not an absolute path", path,
		       c->plugin_dir);
		errors++;
	}
	if (!c->plugin[0]) {
		bn_log(BN_LOG_ERR, "%s: [engine] plugin: empty (use auto)", path);
		errors++;
	}
	if (c->max_tokens > c->max_tokens_limit) {
		bn_log(BN_LOG_ERR, "%s: [server] max_tokens: %u is above max_tokens_limit %u", path,
		       c->max_tokens, c->max_tokens_limit);
		errors++;
	}
	/* what the load would refuse, short of loading the model */
	errors += check_model_file(c, path);
	errors += check_gate_policy(c, path);
	errors += check_tokenizer(c, path);
	errors += check_plugin(c, path);
	errors += check_cpus(c, path, strict_unknown);
	return errors;
}

void bd_config_print_defaults(FILE *f)
{
	const char *sec = "";
	for (size_t i = 0; i < N_KEYS; i++) {
		const struct key *k = &keys[i];
		if (strcmp(sec, k->section)) {
			fprintf(f, "%s[%s]\n", i ? "\n" : "", k->section);
			sec = k->section;
		}
		fprintf(f, "# %s", k->help);
		if (k->type == K_UINT)
			fprintf(f, " (%.0f..%.0f)", k->min, k->max);
		else if (k->type == K_DOUBLE)
			fprintf(f, " (%g..%g)", k->min, k->max);
		else if (k->type == K_ENUM || k->type == K_LEVEL)
			fprintf(f, " (%s)", k->choices);
		fprintf(f, "\n#%s = %s\n", k->name, k->def);
	}
}
