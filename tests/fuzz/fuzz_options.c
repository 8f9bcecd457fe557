/* Fuzz target for the request options parser (daemon/options.c bd_opts_parse), fed
 * serialized D-Bus messages as a client could send them: dbus_message_demarshal on the
 * input, then, as the daemon's dispatcher does, the a{sv} argument of a method call is
 * handed to bd_opts_parse with the default configuration (bd_config_defaults). The
 * member name picks the table: Tokenize, else Generate/Chat.
 *
 * A refusal must say why (and name the option). Accepted options are within the ranges
 * that man/org.bitnetd.Daemon1.5 documents and the configuration's limits; strings are
 * well-formed UTF-8 and point into the message.
 *
 *   scripts/fuzz.sh options 60          (libFuzzer, see tests/fuzz/README)
 *   build/tests/fuzz/fuzz_options FILE|DIR...   (replay; -DBN_FUZZ_STANDALONE)
 *   build/tests/fuzz/fuzz_options --seeds DIR   (writes the seed corpus: marshalled
 *                                               Generate, Chat and Tokenize calls) */
#include "fuzz_common.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <dbus/dbus.h>

#include "conf.h"
#include "chat.h"
#include "error.h"
#include "options.h"
#include "sampler.h"
#include "stop.h"

static void check_opts(const struct bd_req_opts *o, enum bd_opts_table t,
		       const struct bd_config *cfg)
{
	const struct bn_sampler_opts *s = &o->gen.sampling;
	FUZZ_CHECK(o->gen.max_tokens >= 1 && o->gen.max_tokens <= cfg->max_tokens_limit);
	FUZZ_CHECK(s->temperature >= 0 && s->temperature <= BN_SAMPLER_MAX_TEMPERATURE);
	FUZZ_CHECK(s->top_k <= (1u << 24));
	FUZZ_CHECK(s->top_p > 0 && s->top_p <= 1);
	FUZZ_CHECK(s->min_p >= 0 && s->min_p <= 1);
	FUZZ_CHECK(s->repeat_penalty > 0 && s->repeat_penalty <= BN_SAMPLER_MAX_REPEAT_PENALTY);
	FUZZ_CHECK(o->n_stops <= BN_STOP_MAX_STRINGS);
	for (size_t i = 0; i < o->n_stops; i++) {
		size_t l = strlen(o->stops[i]);
		FUZZ_CHECK(l >= 1 && l <= BN_STOP_MAX_LEN && fuzz_utf8_valid(o->stops[i], l));
	}
	if (o->template_name) {
		enum bn_chat_format f;
		bool is_auto;
		FUZZ_CHECK(bn_chat_format_parse(o->template_name, &f, &is_auto) == 0);
	}
	if (o->system)
		FUZZ_CHECK(fuzz_utf8_valid(o->system, strlen(o->system)) &&
			   strlen(o->system) <= cfg->max_prompt_bytes);
	if (t == BD_OPTS_TOKENIZE) {
		/* the generation options are not in this table: defaults stay */
		FUZZ_CHECK(o->gen.max_tokens == cfg->max_tokens && o->n_stops == 0 &&
			   !o->template_name && !o->system && !o->seed_set);
		FUZZ_CHECK(s->temperature == (float)cfg->temperature && s->top_k == cfg->top_k &&
			   s->top_p == (float)cfg->top_p && s->min_p == (float)cfg->min_p &&
			   s->repeat_penalty == (float)cfg->repeat_penalty);
	} else {
		FUZZ_CHECK(!o->add_bos_set && !o->add_bos && !o->parse_special);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct bd_config cfg;
	static bool init;
	if (!init) {
		bd_config_defaults(&cfg);
		init = true;
	}
	if (size > (1u << 20))
		return 0;
	DBusError derr;
	dbus_error_init(&derr);
	DBusMessage *msg = dbus_message_demarshal((const char *)data, (int)size, &derr);
	if (!msg) {
		dbus_error_free(&derr);
		return 0;
	}
	if (dbus_message_get_type(msg) == DBUS_MESSAGE_TYPE_METHOD_CALL) {
		const char *member = dbus_message_get_member(msg);
		enum bd_opts_table t = member && strcmp(member, "Tokenize") == 0 ? BD_OPTS_TOKENIZE
										  : BD_OPTS_GENERATE;
		DBusMessageIter it;
		bool more = dbus_message_iter_init(msg, &it);
		for (; more; more = dbus_message_iter_next(&it)) {
			char *sig = dbus_message_iter_get_signature(&it);
			bool dict = sig && strcmp(sig, "a{sv}") == 0;
			dbus_free(sig);
			if (!dict)
				continue;
			struct bd_req_opts o;
			struct bn_error err = { 0 };
			int rc = bd_opts_parse(&it, t, &cfg, &o, &err);
			FUZZ_NOTE("%s: %d %s\n", member ? member : "(no member)", rc, err.msg);
			if (rc != 0) {
				FUZZ_CHECK_ERROR(rc, err);
				FUZZ_CHECK(strstr(err.msg, "option") != NULL);
				/* the message goes into a D-Bus error reply, which must be UTF-8 (the
				 * message strings are: libdbus checked them). bn_err_set's buffer can
				 * cut a long one inside a character: bd_error_reply then sends the
				 * errno's generic text (reported; see tests/fuzz/README). */
				if (strlen(err.msg) < sizeof(err.msg) - 1)
					FUZZ_CHECK(fuzz_utf8_valid(err.msg, strlen(err.msg)));
			} else {
				check_opts(&o, t, &cfg);
			}
			break;   /* the daemon reads one options argument */
		}
	}
	dbus_message_unref(msg);
	return 0;
}

#ifdef BN_FUZZ_STANDALONE
/* ---- seed corpus ---------------------------------------------------------------- */

static void add_entry(DBusMessageIter *dict, const char *key, int type, const char *sig,
		      const void *val)
{
	DBusMessageIter e, v;
	dbus_message_iter_open_container(dict, DBUS_TYPE_DICT_ENTRY, NULL, &e);
	dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &key);
	dbus_message_iter_open_container(&e, DBUS_TYPE_VARIANT, sig, &v);
	if (type == DBUS_TYPE_ARRAY) {
		DBusMessageIter a;
		const char *const *strs = val;
		dbus_message_iter_open_container(&v, DBUS_TYPE_ARRAY, "s", &a);
		for (size_t i = 0; strs[i]; i++)
			dbus_message_iter_append_basic(&a, DBUS_TYPE_STRING, &strs[i]);
		dbus_message_iter_close_container(&v, &a);
	} else {
		dbus_message_iter_append_basic(&v, type, val);
	}
	dbus_message_iter_close_container(&e, &v);
	dbus_message_iter_close_container(dict, &e);
}

struct seed_opt {
	const char *key;
	int type;       /* DBUS_TYPE_*, ARRAY: NULL-terminated strings */
	const char *sig;
	union { dbus_uint32_t u; double d; dbus_uint64_t t; dbus_bool_t b; const char *s;
		const char *const *as; } v;
};

static int write_seed(const char *dir, const char *name, const char *member,
		      const struct seed_opt *opts, size_t n)
{
	DBusMessage *m = dbus_message_new_method_call("org.bitnetd.Daemon1", "/org/bitnetd/Daemon1",
						      "org.bitnetd.Daemon1.Manager", member);
	FUZZ_CHECK(m != NULL);
	dbus_message_set_serial(m, 7);
	DBusMessageIter it, dict;
	dbus_message_iter_init_append(m, &it);
	if (strcmp(member, "Chat") == 0) {
		static const char *const turns[][2] = { { "system", "Answer briefly." },
							{ "user", "What is BitNet?" } };
		DBusMessageIter a, st;
		dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "(ss)", &a);
		for (size_t i = 0; i < 2; i++) {
			dbus_message_iter_open_container(&a, DBUS_TYPE_STRUCT, NULL, &st);
			dbus_message_iter_append_basic(&st, DBUS_TYPE_STRING, &turns[i][0]);
			dbus_message_iter_append_basic(&st, DBUS_TYPE_STRING, &turns[i][1]);
			dbus_message_iter_close_container(&a, &st);
		}
		dbus_message_iter_close_container(&it, &a);
	} else {
		const char *prompt = "The capital of France is";
		dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &prompt);
	}
	dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{sv}", &dict);
	for (size_t i = 0; i < n; i++)
		add_entry(&dict, opts[i].key, opts[i].type, opts[i].sig,
			  opts[i].type == DBUS_TYPE_ARRAY ? (const void *)opts[i].v.as
							  : (const void *)&opts[i].v);
	dbus_message_iter_close_container(&it, &dict);
	char *bytes;
	int len;
	FUZZ_CHECK(dbus_message_marshal(m, &bytes, &len));
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(bytes, 1, (size_t)len, f) != (size_t)len || fclose(f) != 0) {
		perror(path);
		return 1;
	}
	dbus_free(bytes);
	dbus_message_unref(m);
	return 0;
}

static int write_seeds(const char *dir)
{
	static const char *const stops[] = { "\n\nQ:", "</s>", NULL };
	static const char *const no_stops[] = { NULL };
	const struct seed_opt all[] = {
		{ "max_tokens", DBUS_TYPE_UINT32, "u", { .u = 64 } },
		{ "temperature", DBUS_TYPE_DOUBLE, "d", { .d = 0.7 } },
		{ "top_k", DBUS_TYPE_UINT32, "u", { .u = 40 } },
		{ "top_p", DBUS_TYPE_DOUBLE, "d", { .d = 0.9 } },
		{ "min_p", DBUS_TYPE_DOUBLE, "d", { .d = 0.05 } },
		{ "repeat_penalty", DBUS_TYPE_DOUBLE, "d", { .d = 1.1 } },
		{ "seed", DBUS_TYPE_UINT64, "t", { .t = 42 } },
		{ "stop", DBUS_TYPE_ARRAY, "as", { .as = stops } },
		{ "template", DBUS_TYPE_STRING, "s", { .s = "chat" } },
		{ "system", DBUS_TYPE_STRING, "s", { .s = "You are terse." } },
	};
	const struct seed_opt chat[] = {
		{ "template", DBUS_TYPE_STRING, "s", { .s = "llama3" } },
		{ "stop", DBUS_TYPE_ARRAY, "as", { .as = no_stops } },
		{ "temperature", DBUS_TYPE_DOUBLE, "d", { .d = 0 } },
	};
	const struct seed_opt tok[] = {
		{ "add_bos", DBUS_TYPE_BOOLEAN, "b", { .b = 1 } },
		{ "parse_special", DBUS_TYPE_BOOLEAN, "b", { .b = 0 } },
	};
	const struct seed_opt bad_type[] = { { "max_tokens", DBUS_TYPE_INT32, "i", { .u = 5 } } };
	const struct seed_opt bad_range[] = {
		{ "top_p", DBUS_TYPE_DOUBLE, "d", { .d = 1e-320 } },
		{ "max_tokens", DBUS_TYPE_UINT32, "u", { .u = 100000 } },
	};
	const struct seed_opt unknown[] = { { "beam_width", DBUS_TYPE_UINT32, "u", { .u = 4 } } };
	return write_seed(dir, "generate-all", "Generate", all, sizeof(all) / sizeof(all[0])) ||
	       write_seed(dir, "generate-empty", "Generate", NULL, 0) ||
	       write_seed(dir, "chat-llama3", "Chat", chat, sizeof(chat) / sizeof(chat[0])) ||
	       write_seed(dir, "tokenize", "Tokenize", tok, sizeof(tok) / sizeof(tok[0])) ||
	       write_seed(dir, "generate-bad-type", "Generate", bad_type, 1) ||
	       write_seed(dir, "generate-bad-range", "Generate", bad_range, 2) ||
	       write_seed(dir, "tokenize-unknown", "Tokenize", unknown, 1);
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--seeds") == 0)
		return write_seeds(argv[2]);
	return fuzz_replay_main(argc, argv);
}
#endif
