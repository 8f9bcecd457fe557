/* Request options; the table is the one man/org.bitnetd.Daemon1.5 documents. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "options.h"
#include "chat.h"
#include "sampler.h"


enum opt_kind { O_MAX_TOKENS, O_TEMPERATURE, O_TOP_K, O_TOP_P, O_MIN_P, O_REPEAT, O_SEED, O_STOP,
	        O_TEMPLATE, O_SYSTEM, O_ADD_BOS, O_PARSE_SPECIAL };

struct opt_spec {
	const char *name;
	const char *sig;
	enum opt_kind kind;
	double min, max;
};

/* Generate and Chat share these; man/org.bitnetd.Daemon1.5 lists the same table. */
static const struct opt_spec gen_opts[] = {
	{ "max_tokens", "u", O_MAX_TOKENS, 1, 0 /* max_tokens_limit */ },
	{ "temperature", "d", O_TEMPERATURE, 0, BN_SAMPLER_MAX_TEMPERATURE },
	{ "top_k", "u", O_TOP_K, 0, 1u << 24 },
	{ "top_p", "d", O_TOP_P, 0, 1 },          /* (0, 1] */
	{ "min_p", "d", O_MIN_P, 0, 1 },
	{ "repeat_penalty", "d", O_REPEAT, 0, BN_SAMPLER_MAX_REPEAT_PENALTY },   /* (0, 10] */
	{ "seed", "t", O_SEED, 0, 0 },
	{ "stop", "as", O_STOP, 0, 0 },
	{ "template", "s", O_TEMPLATE, 0, 0 },
	{ "system", "s", O_SYSTEM, 0, 0 },
	{ NULL, NULL, 0, 0, 0 },
};

static const struct opt_spec tok_opts[] = {
	{ "add_bos", "b", O_ADD_BOS, 0, 0 },
	{ "parse_special", "b", O_PARSE_SPECIAL, 0, 0 },
	{ NULL, NULL, 0, 0, 0 },
};

/* The D-Bus variant's value, read once whatever its type; the spec says which member counts. */
struct opt_value {
	dbus_uint32_t u;
	double x;
	dbus_bool_t b;
	const char *str;        /* points into the message */
};

static void opts_defaults(const struct bd_config *cfg, struct bd_req_opts *o)
{
	memset(o, 0, sizeof(*o));
	bn_sampler_opts_default(&o->gen.sampling);
	o->gen.sampling.temperature = (float)cfg->temperature;
	o->gen.sampling.top_k = cfg->top_k;
	o->gen.sampling.top_p = (float)cfg->top_p;
	o->gen.sampling.min_p = (float)cfg->min_p;
	o->gen.sampling.repeat_penalty = (float)cfg->repeat_penalty;
	o->gen.max_tokens = cfg->max_tokens;
}

/* Sets *out to key's spec, or fails naming every option the table knows. */
static int opt_find(const struct opt_spec *table, const char *key, const struct opt_spec **out,
                    struct bn_error *err)
{
	const struct opt_spec *s = table;
	while (s->name && strcmp(s->name, key))
		s++;
	*out = s;
	if (s->name)
		return 0;
	char known[256] = "";   /* "a, b, c": both tables' names fit with room to spare */
	size_t n = 0;
	for (const struct opt_spec *k = table; k->name && n < sizeof(known); k++)
		n += (size_t)snprintf(known + n, sizeof(known) - n, "%s%s", k->name,
		                      k[1].name ? ", " : "");   /* a longer table is cut, not overrun */
	return bn_err_set(err, -EINVAL, "option '%s': unknown (known options: %s)", key, known);
}

static int opt_check_sig(DBusMessageIter *v, const struct opt_spec *s, const char *key,
                         struct bn_error *err)
{
	char *sig = dbus_message_iter_get_signature(v);
	int rc = 0;
	if (!sig || strcmp(sig, s->sig))
		rc = bn_err_set(err, -EINVAL, "option %s: expected type '%s', got '%s'", key, s->sig,
		                sig ? sig : "?");
	dbus_free(sig);
	return rc;
}

static int opt_read_value(DBusMessageIter *v, const char *key, struct opt_value *val,
                          struct bn_error *err)
{
	memset(val, 0, sizeof(*val));
	int vt = dbus_message_iter_get_arg_type(v);
	if (vt == DBUS_TYPE_UINT32)
		dbus_message_iter_get_basic(v, &val->u);
	else if (vt == DBUS_TYPE_DOUBLE)
		dbus_message_iter_get_basic(v, &val->x);
	else if (vt == DBUS_TYPE_BOOLEAN)
		dbus_message_iter_get_basic(v, &val->b);
	else if (vt == DBUS_TYPE_STRING)
		dbus_message_iter_get_basic(v, &val->str);
	if (vt == DBUS_TYPE_DOUBLE && !isfinite(val->x))
		return bn_err_set(err, -ERANGE, "option %s: %g is not a finite number", key, val->x);
	return 0;
}

/* The integer options: max_tokens and top_k. */
static int opt_apply_count(const struct opt_spec *s, dbus_uint32_t u, const struct bd_config *cfg,
                           struct bd_req_opts *o, struct bn_error *err)
{
	if (s->kind == O_MAX_TOKENS) {
		if (u < 1 || u > cfg->max_tokens_limit)
			return bn_err_set(err, -ERANGE, "option max_tokens: %u is outside [1, %u] "
			                  "(max_tokens_limit)", u, cfg->max_tokens_limit);
		o->gen.max_tokens = u;
		return 0;
	}
	if (u > s->max)
		return bn_err_set(err, -ERANGE, "option top_k: %u is outside [0, %.0f]", u, s->max);
	o->gen.sampling.top_k = u;
	return 0;
}

/* The sampler's doubles; each kept as a float, so a positive one must stay positive there. */
static int opt_apply_real(const struct opt_spec *s, double x, struct bd_req_opts *o,
                          struct bn_error *err)
{
	struct bn_sampler_opts *so = &o->gen.sampling;
	switch (s->kind) {
	case O_TEMPERATURE:
		if (x < s->min || x > s->max)
			return bn_err_set(err, -ERANGE, "option temperature: %g is outside [0, %g]", x,
			                  s->max);
		so->temperature = (float)x;
		return 0;
	case O_TOP_P:
		if (!(x > 0 && x <= 1))
			return bn_err_set(err, -ERANGE, "option top_p: %g is outside (0, 1]", x);
		if (!((float)x > 0))   /* the sampler works in float: 5e-324 would become 0 */
			return bn_err_set(err, -ERANGE, "option top_p: %g is too small (the smallest "
			                  "value kept is %g)", x, (double)FLT_TRUE_MIN);
		so->top_p = (float)x;
		return 0;
	case O_MIN_P:
		if (x < 0 || x > 1)
			return bn_err_set(err, -ERANGE, "option min_p: %g is outside [0, 1]", x);
		so->min_p = (float)x;
		return 0;
	default:   /* O_REPEAT */
		if (!(x > 0 && x <= s->max))
			return bn_err_set(err, -ERANGE, "option repeat_penalty: %g is outside "
			                  "(0, %g]", x, s->max);
		if (!((float)x > 0))
			return bn_err_set(err, -ERANGE, "option repeat_penalty: %g is too small (the "
			                  "smallest value kept is %g)", x, (double)FLT_TRUE_MIN);
		so->repeat_penalty = (float)x;
		return 0;
	}
}

/* The strings stay in the message, which outlives the request's options. */
static int opt_apply_stop(DBusMessageIter *v, struct bd_req_opts *o, struct bn_error *err)
{
	DBusMessageIter a;
	dbus_message_iter_recurse(v, &a);
	for (; dbus_message_iter_get_arg_type(&a) == DBUS_TYPE_STRING; dbus_message_iter_next(&a)) {
		const char *st;
		dbus_message_iter_get_basic(&a, &st);
		size_t l = strlen(st);
		if (o->n_stops == BN_STOP_MAX_STRINGS)
			return bn_err_set(err, -E2BIG, "option stop: more than %d strings",
			                  BN_STOP_MAX_STRINGS);
		if (!l || l > BN_STOP_MAX_LEN)
			return bn_err_set(err, -EINVAL, "option stop: string %zu is %s", o->n_stops,
			                  l ? "longer than 1024 bytes" : "empty");
		if (!bn_stop_utf8_valid(st, l))
			return bn_err_set(err, -EILSEQ, "option stop: string %zu is not valid UTF-8",
			                  o->n_stops);
		o->stops[o->n_stops++] = st;
	}
	return 0;
}

static int opt_apply_template(const char *str, struct bd_req_opts *o, struct bn_error *err)
{
	enum bn_chat_format f;
	bool is_auto;
	bool utf8 = bn_stop_utf8_valid(str, strlen(str));
	/* an invalid name is echoed back only when it is printable as UTF-8 */
	if (!utf8 || bn_chat_format_parse(str, &f, &is_auto))
		return bn_err_set(err, -EINVAL, "option template: '%s' is not one of raw, chat, "
		                  "bitnet, llama3, instruct, auto", utf8 ? str : "(invalid UTF-8)");
	o->template_name = str;
	return 0;
}

static int opt_apply_system(const char *str, const struct bd_config *cfg, struct bd_req_opts *o,
                            struct bn_error *err)
{
	if (!bn_stop_utf8_valid(str, strlen(str)))
		return bn_err_set(err, -EILSEQ, "option system: not valid UTF-8");
	if (strlen(str) > cfg->max_prompt_bytes)
		return bn_err_set(err, -E2BIG, "option system: %zu bytes exceeds max_prompt_bytes %u",
		                  strlen(str), cfg->max_prompt_bytes);
	o->system = str;
	return 0;
}

static int opt_apply(const struct opt_spec *s, DBusMessageIter *v, const struct opt_value *val,
                     const struct bd_config *cfg, struct bd_req_opts *o, struct bn_error *err)
{
	switch (s->kind) {
	case O_MAX_TOKENS:
	case O_TOP_K:
		return opt_apply_count(s, val->u, cfg, o, err);
	case O_TEMPERATURE:
	case O_TOP_P:
	case O_MIN_P:
	case O_REPEAT:
		return opt_apply_real(s, val->x, o, err);
	case O_SEED:
		dbus_message_iter_get_basic(v, &o->gen.sampling.seed);
		o->seed_set = true;
		return 0;
	case O_STOP:
		return opt_apply_stop(v, o, err);
	case O_TEMPLATE:
		return opt_apply_template(val->str, o, err);
	case O_SYSTEM:
		return opt_apply_system(val->str, cfg, o, err);
	case O_ADD_BOS:
		o->add_bos = val->b;
		o->add_bos_set = true;
		return 0;
	case O_PARSE_SPECIAL:
		o->parse_special = val->b;
		return 0;
	}
	return 0;
}

/* One {sv} entry of the dict at d: looked up, type-checked, range-checked, stored. */
static int opt_parse_entry(DBusMessageIter *d, const struct opt_spec *table,
                           const struct bd_config *cfg, struct bd_req_opts *o, struct bn_error *err)
{
	DBusMessageIter e, v;
	const char *key;
	dbus_message_iter_recurse(d, &e);
	dbus_message_iter_get_basic(&e, &key);
	dbus_message_iter_next(&e);
	dbus_message_iter_recurse(&e, &v);
	const struct opt_spec *s;
	int rc = opt_find(table, key, &s, err);
	if (rc)
		return rc;
	rc = opt_check_sig(&v, s, key, err);
	if (rc)
		return rc;
	struct opt_value val;
	rc = opt_read_value(&v, key, &val, err);
	if (rc)
		return rc;
	return opt_apply(s, &v, &val, cfg, o, err);
}

int bd_opts_parse(DBusMessageIter *it, enum bd_opts_table t, const struct bd_config *cfg,
                  struct bd_req_opts *o, struct bn_error *err)
{
	const struct opt_spec *table = t == BD_OPTS_TOKENIZE ? tok_opts : gen_opts;
	opts_defaults(cfg, o);
	DBusMessageIter d;
	dbus_message_iter_recurse(it, &d);
	for (; dbus_message_iter_get_arg_type(&d) == DBUS_TYPE_DICT_ENTRY; dbus_message_iter_next(&d)) {
		int rc = opt_parse_entry(&d, table, cfg, o, err);
		if (rc)
			return rc;
	}
	return 0;
}
