/* The configuration (config.c): one table of keys with types, ranges and defaults, read
 * with iniparser. The same table checks the file, prints the defaults and documents the
 * keys. Owns struct bd_config; knows nothing of the rest of the daemon (the fuzz targets
 * link config.c alone). Not named config.h: that is autotools' generated header. */
#ifndef BD_CONF_H
#define BD_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define BD_DEFAULT_CONFIG BN_SYSCONFDIR "/bitnetd.conf"

struct bd_config {
	/* [model] */
	char model_path[4096];
	uint32_t context;            /* 0: the model's training context */
	char kv_type[8];             /* f16 */
	char template_name[16];      /* chat format for Chat(): auto | chat | bitnet | llama3 | instruct | raw */
	bool strict, rescale_gamma;
	char gate[8];                /* norm-statistics gate: none | warn | strict */
	char gate_policy[4096];      /* INI rule file for the gate; empty: built-in rules */
	char tokenizer[4096];        /* a tokenizer.json instead of the model's vocabulary */
	/* [engine] */
	char plugin[32];             /* auto or a plugin name */
	bool calibrate;              /* auto: choose by measurement */
	char plugin_dir[4096];       /* empty: the built-in default */
	uint32_t threads;            /* 0: one per physical core */
	char cpus[256];              /* auto or a list "0-3,8" */
	bool smt, mlock, prefault;
	char numa[12];               /* off | interleave | bind: NUMA placement of the weights */
	/* [server] */
	uint32_t slots;              /* requests generated at once, one context sequence each */
	uint32_t step_tokens;        /* tokens per scheduler step (decode rows + prompt chunks) */
	uint32_t max_queue;          /* requests waiting for a slot */
	uint32_t max_prompt_bytes;
	uint32_t max_tokens_limit;   /* the most a client may ask for */
	uint32_t max_tokens;         /* default when the client does not say */
	double temperature, top_p, min_p, repeat_penalty;
	uint32_t top_k;
	/* [http] */
	char http_listen[512];       /* empty: no HTTP; else "127.0.0.1:8080 [::1]:8080" */
	char http_api_key_file[4096];
	uint32_t http_max_body_bytes;
	uint32_t http_max_connections;
	uint32_t http_timeout;       /* seconds a client may stay silent */
	/* [log] */
	int log_level;               /* BN_LOG_* */
};

void bd_config_defaults(struct bd_config *c);

/* Reads path into c (starting from the defaults) and checks what the load would refuse,
 * short of loading the model: the model file (a regular file with the GGUF magic), the
 * gate policy (parsed), the kernel plugin (scanned in plugin_dir, and opened when named),
 * the CPU list and thread count (bn_pool_plan). Start, reload and --check-config all run
 * it. Every problem is logged (file: [section] key: why). Unknown sections or keys and
 * keys before any section are warnings unless strict_unknown, which makes them errors.
 * Returns the number of errors (0: c is usable), or -1 when the file cannot be read or
 * parsed at all. */
int bd_config_load(struct bd_config *c, const char *path, bool strict_unknown);

/* Prints every key with its default as a commented config file. */
void bd_config_print_defaults(FILE *f);

#endif
