/* bitnetctl: the command-line client of bitnetd (org.bitnetd.Daemon1 on D-Bus). */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <dbus/dbus.h>
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "0"
#endif

#define NAME "org.bitnetd.Daemon1"
#define PATH "/org/bitnetd/Daemon1"
#define IFACE_MANAGER NAME ".Manager"
#define IFACE_REQUEST NAME ".Request"

/* A request that sends nothing for this long is checked on: a bus drops the signals of a
 * reader too slow for it, Finished included, and a waiting client would wait forever. */
#define SILENCE_S 5.0

/* exit codes (bitnetctl(1)) */
enum {
	EX_OK = 0, EX_FAIL = 1, EX_USAGE = 2, EX_NODAEMON = 3, EX_BUSY = 4, EX_REJECTED = 5,
	EX_DENIED = 6, EX_GENFAIL = 7, EX_CANCELLED = 130,
};

static DBusConnection *conn;
static const char *bus_desc = "the system bus";
static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

static void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die_usage(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("bitnetctl: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputs(" (see bitnetctl --help)\n", stderr);
	va_end(ap);
	exit(EX_USAGE);
}

/* One line naming the cause, and an exit code that tells the causes apart. */
static int report(const DBusError *e)
{
	const char *n = e->name ? e->name : "";
	int code = EX_FAIL;
	if (!strcmp(n, DBUS_ERROR_SERVICE_UNKNOWN) || !strcmp(n, DBUS_ERROR_NAME_HAS_NO_OWNER)) {
		fprintf(stderr, "bitnetctl: bitnetd is not running (nobody owns %s on %s)\n", NAME,
		        bus_desc);
		return EX_NODAEMON;
	}
	if (!strcmp(n, DBUS_ERROR_NO_REPLY) || !strcmp(n, DBUS_ERROR_TIMEOUT)) {
		fprintf(stderr, "bitnetctl: bitnetd did not answer: %s\n", e->message);
		return EX_NODAEMON;
	}
	if (!strcmp(n, NAME ".Error.Busy"))
		code = EX_BUSY;
	else if (!strcmp(n, DBUS_ERROR_INVALID_ARGS) || !strcmp(n, NAME ".Error.ContextFull"))
		code = EX_REJECTED;
	else if (!strcmp(n, DBUS_ERROR_ACCESS_DENIED))
		code = EX_DENIED;
	else if (!strcmp(n, NAME ".Error.NotReady"))
		code = EX_NODAEMON;
	const char *short_name = strrchr(n, '.');
	fprintf(stderr, "bitnetctl: %s (%s)\n", e->message ? e->message : "error",
	        short_name ? short_name + 1 : n);
	return code;
}

static void connect_bus(int type, const char *address)
{
	DBusError e;
	dbus_error_init(&e);
	if (type == 2) {
		bus_desc = address;
		conn = dbus_connection_open_private(address, &e);
		if (conn && !dbus_bus_register(conn, &e)) {
			dbus_connection_close(conn);
			dbus_connection_unref(conn);
			conn = NULL;
		}
	} else {
		bus_desc = type == 0 ? "the system bus" : "the session bus";
		conn = dbus_bus_get_private(type == 0 ? DBUS_BUS_SYSTEM : DBUS_BUS_SESSION, &e);
	}
	if (!conn) {
		fprintf(stderr, "bitnetctl: cannot connect to %s: %s\n", bus_desc, e.message);
		exit(EX_NODAEMON);
	}
	dbus_connection_set_exit_on_disconnect(conn, FALSE);
}

static int bus_type;
static const char *bus_address;

static DBusMessage *call(DBusMessage *m, int timeout_ms, int *rc)
{
	if (!conn)
		connect_bus(bus_type, bus_address);
	DBusError e;
	dbus_error_init(&e);
	DBusMessage *r = dbus_connection_send_with_reply_and_block(conn, m, timeout_ms, &e);
	dbus_message_unref(m);
	if (!r) {
		*rc = report(&e);
		dbus_error_free(&e);
	}
	return r;
}

static DBusMessage *new_call(const char *path, const char *iface, const char *method)
{
	DBusMessage *m = dbus_message_new_method_call(NAME, path, iface, method);
	if (!m) {
		fprintf(stderr, "bitnetctl: out of memory\n");
		exit(EX_FAIL);
	}
	return m;
}

/* ---- options a{sv} ------------------------------------------------------------------- */

struct gen_opts {
	bool has_max, has_temp, has_topk, has_topp, has_minp, has_rep, has_seed;
	uint32_t max_tokens, top_k;
	double temperature, top_p, min_p, repeat_penalty;
	uint64_t seed;
	const char *stops[64];
	int n_stops;
	const char *template_name, *system;
	bool json;
};

static void dict_add(DBusMessageIter *d, const char *k, int type, const void *v)
{
	DBusMessageIter e, var;
	char sig[2] = { (char)type, 0 };
	dbus_message_iter_open_container(d, DBUS_TYPE_DICT_ENTRY, NULL, &e);
	dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &k);
	dbus_message_iter_open_container(&e, DBUS_TYPE_VARIANT, sig, &var);
	dbus_message_iter_append_basic(&var, type, v);
	dbus_message_iter_close_container(&e, &var);
	dbus_message_iter_close_container(d, &e);
}

static void append_opts(DBusMessageIter *it, const struct gen_opts *o)
{
	DBusMessageIter d;
	dbus_message_iter_open_container(it, DBUS_TYPE_ARRAY, "{sv}", &d);
	if (o->has_max)
		dict_add(&d, "max_tokens", DBUS_TYPE_UINT32, &o->max_tokens);
	if (o->has_temp)
		dict_add(&d, "temperature", DBUS_TYPE_DOUBLE, &o->temperature);
	if (o->has_topk)
		dict_add(&d, "top_k", DBUS_TYPE_UINT32, &o->top_k);
	if (o->has_topp)
		dict_add(&d, "top_p", DBUS_TYPE_DOUBLE, &o->top_p);
	if (o->has_minp)
		dict_add(&d, "min_p", DBUS_TYPE_DOUBLE, &o->min_p);
	if (o->has_rep)
		dict_add(&d, "repeat_penalty", DBUS_TYPE_DOUBLE, &o->repeat_penalty);
	if (o->has_seed)
		dict_add(&d, "seed", DBUS_TYPE_UINT64, &o->seed);
	if (o->template_name)
		dict_add(&d, "template", DBUS_TYPE_STRING, &o->template_name);
	if (o->system)
		dict_add(&d, "system", DBUS_TYPE_STRING, &o->system);
	if (o->n_stops) {
		DBusMessageIter e, var, a;
		const char *k = "stop";
		dbus_message_iter_open_container(&d, DBUS_TYPE_DICT_ENTRY, NULL, &e);
		dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &k);
		dbus_message_iter_open_container(&e, DBUS_TYPE_VARIANT, "as", &var);
		dbus_message_iter_open_container(&var, DBUS_TYPE_ARRAY, "s", &a);
		for (int i = 0; i < o->n_stops; i++)
			dbus_message_iter_append_basic(&a, DBUS_TYPE_STRING, &o->stops[i]);
		dbus_message_iter_close_container(&var, &a);
		dbus_message_iter_close_container(&e, &var);
		dbus_message_iter_close_container(&d, &e);
	}
	dbus_message_iter_close_container(it, &d);
}

static double parse_double(const char *opt, const char *s)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (!*s || *end || errno)
		die_usage("%s '%s': expected a number", opt, s);
	return v;
}

static uint64_t parse_u64(const char *opt, const char *s, uint64_t max)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (!*s || *end || errno || s[0] == '-' || v > max)
		die_usage("%s '%s': expected an integer from 0 to %llu", opt, s, (unsigned long long)max);
	return v;
}

enum { G_MAX = 1000, G_TEMP, G_TOPK, G_TOPP, G_MINP, G_REP, G_SEED, G_GREEDY, G_STOP, G_TEMPLATE,
       G_SYSTEM, G_JSON };

static const struct option gen_lo[] = {
	{ "max-tokens", required_argument, NULL, G_MAX },
	{ "temperature", required_argument, NULL, G_TEMP },
	{ "top-k", required_argument, NULL, G_TOPK },
	{ "top-p", required_argument, NULL, G_TOPP },
	{ "min-p", required_argument, NULL, G_MINP },
	{ "repeat-penalty", required_argument, NULL, G_REP },
	{ "seed", required_argument, NULL, G_SEED },
	{ "greedy", no_argument, NULL, G_GREEDY },
	{ "stop", required_argument, NULL, G_STOP },
	{ "template", required_argument, NULL, G_TEMPLATE },
	{ "system", required_argument, NULL, G_SYSTEM },
	{ "json", no_argument, NULL, G_JSON },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static bool gen_opt(struct gen_opts *o, int c, const char *a)
{
	switch (c) {
	case G_MAX: o->has_max = true; o->max_tokens = (uint32_t)parse_u64("--max-tokens", a, UINT32_MAX); break;
	case G_TEMP: o->has_temp = true; o->temperature = parse_double("--temperature", a); break;
	case G_TOPK: o->has_topk = true; o->top_k = (uint32_t)parse_u64("--top-k", a, UINT32_MAX); break;
	case G_TOPP: o->has_topp = true; o->top_p = parse_double("--top-p", a); break;
	case G_MINP: o->has_minp = true; o->min_p = parse_double("--min-p", a); break;
	case G_REP: o->has_rep = true; o->repeat_penalty = parse_double("--repeat-penalty", a); break;
	case G_SEED: o->has_seed = true; o->seed = parse_u64("--seed", a, UINT64_MAX); break;
	case G_GREEDY: o->has_temp = true; o->temperature = 0; break;
	case G_STOP:
		if (o->n_stops == 64)
			die_usage("too many --stop strings (at most 64)");
		o->stops[o->n_stops++] = a;
		break;
	case G_TEMPLATE: o->template_name = a; break;
	case G_SYSTEM: o->system = a; break;
	case G_JSON: o->json = true; break;
	default: return false;
	}
	return true;
}

/* ---- streaming a request ----------------------------------------------------------------- */

struct result {
	char *text;            /* [len] everything received, for --json and chat history */
	size_t len, cap;
	char reason[32];
	json_object *stats;
};

static void result_append(struct result *r, const char *s, size_t n)
{
	if (r->len + n + 1 > r->cap) {
		size_t cap = (r->len + n + 1) * 2;
		char *p = realloc(r->text, cap);
		if (!p)
			return;
		r->text = p;
		r->cap = cap;
	}
	memcpy(r->text + r->len, s, n);
	r->len += n;
	r->text[r->len] = '\0';
}

static json_object *variant_json(DBusMessageIter *v)
{
	switch (dbus_message_iter_get_arg_type(v)) {
	case DBUS_TYPE_STRING: {
		const char *s;
		dbus_message_iter_get_basic(v, &s);
		return json_object_new_string(s);
	}
	case DBUS_TYPE_UINT32: {
		dbus_uint32_t u;
		dbus_message_iter_get_basic(v, &u);
		return json_object_new_int64(u);
	}
	case DBUS_TYPE_UINT64: {
		dbus_uint64_t u;
		dbus_message_iter_get_basic(v, &u);
		return json_object_new_uint64(u);
	}
	case DBUS_TYPE_DOUBLE: {
		double d;
		dbus_message_iter_get_basic(v, &d);
		return json_object_new_double(d);
	}
	case DBUS_TYPE_BOOLEAN: {
		dbus_bool_t b;
		dbus_message_iter_get_basic(v, &b);
		return json_object_new_boolean(b);
	}
	case DBUS_TYPE_VARIANT: {
		DBusMessageIter in;
		dbus_message_iter_recurse(v, &in);
		return variant_json(&in);
	}
	case DBUS_TYPE_ARRAY: {
		DBusMessageIter a;
		dbus_message_iter_recurse(v, &a);
		if (dbus_message_iter_get_arg_type(&a) == DBUS_TYPE_DICT_ENTRY) {
			json_object *o = json_object_new_object();
			for (; dbus_message_iter_get_arg_type(&a) == DBUS_TYPE_DICT_ENTRY;
			     dbus_message_iter_next(&a)) {
				DBusMessageIter e;
				const char *k;
				dbus_message_iter_recurse(&a, &e);
				dbus_message_iter_get_basic(&e, &k);
				dbus_message_iter_next(&e);
				json_object_object_add(o, k, variant_json(&e));
			}
			return o;
		}
		json_object *arr = json_object_new_array();
		for (; dbus_message_iter_get_arg_type(&a) != DBUS_TYPE_INVALID; dbus_message_iter_next(&a))
			json_object_array_add(arr, variant_json(&a));
		return arr;
	}
	case DBUS_TYPE_STRUCT: {
		DBusMessageIter s;
		json_object *arr = json_object_new_array();
		dbus_message_iter_recurse(v, &s);
		for (; dbus_message_iter_get_arg_type(&s) != DBUS_TYPE_INVALID; dbus_message_iter_next(&s))
			json_object_array_add(arr, variant_json(&s));
		return arr;
	}
	}
	return NULL;
}

/* What one request's stream trusts: signals of the request object from the daemon's unique
 * name, and the bus's own NameOwnerChanged. Any local user may send a signal addressed to
 * us (a destination bypasses match rules), so the path alone proves nothing. */
struct stream {
	char path[256];           /* the request object */
	char daemon[256];         /* bitnetd's unique name: the sender of its reply */
	bool warned;              /* about a signal from someone else, said once */
	bool probe_warned;        /* that the request cannot be checked on, said once */
	double heard;             /* now_s() when the daemon last showed the request is alive */
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A method call to the daemon's unique name, so that a daemon started since (whose request
 * numbers start again at 1) can never answer for the one that has our request. */
static DBusMessage *daemon_call(const struct stream *st, const char *path, const char *iface,
                                const char *method)
{
	DBusMessage *m = dbus_message_new_method_call(st->daemon, path, iface, method);
	if (!m) {
		fprintf(stderr, "bitnetctl: out of memory\n");
		exit(EX_FAIL);
	}
	return m;
}

/* Maps the errors of a call to the daemon that matter here: it left the bus, it does not
 * answer, or the object is gone. */
static int call_errno(const DBusError *e)
{
	const char *n = e->name ? e->name : "";
	if (!strcmp(n, DBUS_ERROR_SERVICE_UNKNOWN) || !strcmp(n, DBUS_ERROR_NAME_HAS_NO_OWNER) ||
	    !strcmp(n, DBUS_ERROR_DISCONNECTED))
		return -ESRCH;
	if (!strcmp(n, DBUS_ERROR_NO_REPLY) || !strcmp(n, DBUS_ERROR_TIMEOUT))
		return -ETIMEDOUT;
	if (!strcmp(n, DBUS_ERROR_UNKNOWN_OBJECT))
		return -ENOENT;
	return -EIO;
}

/* Whether the request object still exists: 0, or -ENOENT (it finished), -ESRCH (the daemon
 * left the bus), -ETIMEDOUT (no answer), -EIO (anything else, in *e). The Request interface
 * has no properties; GetAll is the cheapest call the bus policy allows on it. */
static int request_probe(const struct stream *st, DBusError *e)
{
	DBusMessage *m = daemon_call(st, st->path, DBUS_INTERFACE_PROPERTIES, "GetAll");
	const char *iface = IFACE_REQUEST;
	dbus_message_append_args(m, DBUS_TYPE_STRING, &iface, DBUS_TYPE_INVALID);
	DBusMessage *r = dbus_connection_send_with_reply_and_block(conn, m, 25000, e);
	dbus_message_unref(m);
	if (r) {
		dbus_message_unref(r);
		return 0;
	}
	return call_errno(e);
}

/* The daemon's State property into buf: 0, or a negative errno as call_errno. */
static int daemon_state(const struct stream *st, char *buf, size_t len)
{
	DBusMessage *m = daemon_call(st, PATH, DBUS_INTERFACE_PROPERTIES, "Get");
	const char *iface = IFACE_MANAGER, *prop = "State";
	dbus_message_append_args(m, DBUS_TYPE_STRING, &iface, DBUS_TYPE_STRING, &prop,
	                         DBUS_TYPE_INVALID);
	DBusError e;
	dbus_error_init(&e);
	DBusMessage *r = dbus_connection_send_with_reply_and_block(conn, m, 5000, &e);
	dbus_message_unref(m);
	int rc = 0;
	if (!r) {
		rc = call_errno(&e);
		dbus_error_free(&e);
		return rc;
	}
	DBusMessageIter it, v;
	const char *s;
	if (dbus_message_iter_init(r, &it) && dbus_message_iter_get_arg_type(&it) == DBUS_TYPE_VARIANT) {
		dbus_message_iter_recurse(&it, &v);
		if (dbus_message_iter_get_arg_type(&v) == DBUS_TYPE_STRING) {
			dbus_message_iter_get_basic(&v, &s);
			snprintf(buf, len, "%s", s);
		} else {
			rc = -EIO;
		}
	} else {
		rc = -EIO;
	}
	dbus_message_unref(r);
	return rc;
}

static void cancel_request(const struct stream *st)
{
	DBusMessage *m = daemon_call(st, st->path, IFACE_REQUEST, "Cancel");
	DBusError e;
	dbus_error_init(&e);
	DBusMessage *r = dbus_connection_send_with_reply_and_block(conn, m, 5000, &e);
	dbus_message_unref(m);
	if (!r && e.message)
		fprintf(stderr, "bitnetctl: cancelling: %s\n", e.message);
	if (r)
		dbus_message_unref(r);
	dbus_error_free(&e);
}

static unsigned stats_generated(const struct result *res)
{
	json_object *g = NULL;
	if (!json_object_object_get_ex(res->stats, "generated_tokens", &g))
		return 0;
	return (unsigned)json_object_get_int64(g);
}

/* Says who a signal that is not ours came from, once per stream: someone on this bus is
 * trying to feed us text, and the user should know. The content is not repeated. */
static void ignore_signal(struct stream *st, DBusMessage *s)
{
	if (st->warned)
		return;
	st->warned = true;
	const char *from = dbus_message_get_sender(s);
	fprintf(stderr, "bitnetctl: ignoring a %s signal from %s, which is not bitnetd (%s)\n",
	        dbus_message_get_member(s) ? dbus_message_get_member(s) : "?",
	        from ? from : "an unknown sender", st->daemon);
}

/* A Finished with reason cancelled that Ctrl-C did not ask for: the daemon cancels at stop
 * (and when the caller leaves the bus, which cannot be us here). Ask it why, briefly. */
static int explain_cancelled(const struct stream *st, const struct result *res)
{
	char state[32] = "";
	int s = daemon_state(st, state, sizeof(state));
	unsigned n = stats_generated(res);
	if (s == -ESRCH || s == -ETIMEDOUT || (!s && !strcmp(state, "stopping"))) {
		fprintf(stderr, "bitnetctl: bitnetd is stopping: it cancelled the request after %u "
		        "generated tokens\n", n);
		return EX_NODAEMON;
	}
	fprintf(stderr, "bitnetctl: bitnetd cancelled the request after %u generated tokens%s%s%s\n",
	        n, s ? "" : " (daemon state: ", s ? "" : state, s ? "" : ")");
	return EX_FAIL;
}

static int left_bus(bool print, const struct result *res)
{
	if (print)
		fputc('\n', stdout);
	fprintf(stderr, "bitnetctl: bitnetd left the bus before the request finished (%zu bytes "
	        "of text received)\n", res->len);
	return EX_NODAEMON;
}

/* A stream function's answer while the stream goes on; any other is bitnetctl's exit code. */
#define STREAM_GOING (-1)

/* Sends the Generate/Chat call m; st gets the request object and the daemon's unique name. */
static int stream_begin(DBusMessage *m, struct stream *st)
{
	char owner_rule[256];
	/* the daemon going away must end the wait */
	snprintf(owner_rule, sizeof(owner_rule), "type='signal',sender='" DBUS_SERVICE_DBUS
	         "',member='NameOwnerChanged',arg0='" NAME "'");
	int rc = EX_OK;
	if (!conn)
		connect_bus(bus_type, bus_address);
	dbus_bus_add_match(conn, owner_rule, NULL);
	DBusMessage *r = call(m, 60000, &rc);
	if (!r)
		return rc;
	/* the bus stamps every message's sender: the reply's is the daemon's unique name */
	const char *p, *daemon = dbus_message_get_sender(r);
	if (!dbus_message_get_args(r, NULL, DBUS_TYPE_OBJECT_PATH, &p, DBUS_TYPE_INVALID) ||
	    !daemon || strlen(p) >= sizeof(st->path) || strlen(daemon) >= sizeof(st->daemon)) {
		fprintf(stderr, "bitnetctl: unexpected reply from bitnetd\n");
		dbus_message_unref(r);
		return EX_FAIL;
	}
	snprintf(st->path, sizeof(st->path), "%s", p);
	snprintf(st->daemon, sizeof(st->daemon), "%s", daemon);
	dbus_message_unref(r);
	return STREAM_GOING;
}

/* After SILENCE_S without a word: is the request still there? If not, its Finished was
 * lost, or is queued ahead of the answer (*lost: read what is queued, then give up). */
static int stream_probe(struct stream *st, bool print, const struct result *res, bool *lost)
{
	DBusError e;
	dbus_error_init(&e);
	int pr = request_probe(st, &e);
	int rc = STREAM_GOING;
	st->heard = now_s();
	if (pr == -ESRCH) {
		rc = left_bus(print, res);
	} else if (pr == -ETIMEDOUT) {
		if (print)
			fputc('\n', stdout);
		fprintf(stderr, "bitnetctl: bitnetd sent nothing for %.0f s and did not "
		        "answer about request %s: %s\n", SILENCE_S, st->path, e.message);
		rc = EX_NODAEMON;
	} else if (pr == -EIO && !st->probe_warned) {
		/* cannot tell; keep waiting, as before this check existed */
		fprintf(stderr, "bitnetctl: cannot check on request %s: %s\n", st->path, e.message);
		st->probe_warned = true;
	}
	dbus_error_free(&e);
	*lost = pr == -ENOENT;
	return rc;
}

/* Whether the NameOwnerChanged s says bitnetd left; one not from the bus is reported. */
static bool daemon_left(struct stream *st, DBusMessage *s)
{
	const char *n, *o, *nw;
	if (!dbus_message_has_sender(s, DBUS_SERVICE_DBUS)) {
		ignore_signal(st, s);
		return false;
	}
	return dbus_message_get_args(s, NULL, DBUS_TYPE_STRING, &n, DBUS_TYPE_STRING, &o,
	                             DBUS_TYPE_STRING, &nw, DBUS_TYPE_INVALID) &&
	       !strcmp(n, NAME) && !strcmp(o, st->daemon) && !*nw;
}

/* A signal on one of bitnetd's interfaces that bitnetd did not send. */
static bool from_impostor(const struct stream *st, DBusMessage *s)
{
	const char *si = dbus_message_get_interface(s);
	return dbus_message_get_type(s) == DBUS_MESSAGE_TYPE_SIGNAL && si &&
	       !strncmp(si, NAME ".", strlen(NAME ".")) && !dbus_message_has_sender(s, st->daemon);
}

static void on_text(struct stream *st, DBusMessage *s, bool print, struct result *res)
{
	const char *t;
	st->heard = now_s();
	if (dbus_message_get_args(s, NULL, DBUS_TYPE_STRING, &t, DBUS_TYPE_INVALID)) {
		if (print) {
			fputs(t, stdout);
			fflush(stdout);
		}
		result_append(res, t, strlen(t));
	}
}

/* The exit code for the receipt in res; a cancellation or an error is explained here. */
static int finished_exit(const struct stream *st, const struct result *res)
{
	if (!strcmp(res->reason, "cancelled")) {
		if (!interrupted)
			return explain_cancelled(st, res);
		fprintf(stderr, "bitnetctl: cancelled after %u generated tokens\n",
		        stats_generated(res));
		return EX_CANCELLED;
	}
	if (!strcmp(res->reason, "error")) {
		json_object *e = NULL;
		json_object_object_get_ex(res->stats, "error", &e);
		fprintf(stderr, "bitnetctl: generation failed: %s\n",
		        e ? json_object_get_string(e) : "unknown error");
		return EX_GENFAIL;
	}
	return EX_OK;
}

/* Finished(s reason, a{sv} stats) into res; a receipt without a reason counts as an error. */
static int on_finished(const struct stream *st, DBusMessage *s, bool print, struct result *res)
{
	DBusMessageIter it;
	const char *reason = "error";
	if (dbus_message_iter_init(s, &it) && dbus_message_iter_get_arg_type(&it) == DBUS_TYPE_STRING) {
		dbus_message_iter_get_basic(&it, &reason);
		dbus_message_iter_next(&it);
		res->stats = variant_json(&it);
	}
	snprintf(res->reason, sizeof(res->reason), "%s", reason);
	if (print)
		fputc('\n', stdout);
	fflush(stdout);
	return finished_exit(st, res);
}

/* One message popped from the connection; s stays the caller's to unref. */
static int stream_message(struct stream *st, DBusMessage *s, bool print, struct result *res)
{
	/* libdbus makes this one itself; it has no sender */
	if (dbus_message_is_signal(s, DBUS_INTERFACE_LOCAL, "Disconnected") &&
	    !dbus_message_get_sender(s)) {
		fprintf(stderr, "bitnetctl: lost the connection to %s\n", bus_desc);
		return EX_NODAEMON;
	}
	if (dbus_message_is_signal(s, DBUS_INTERFACE_DBUS, "NameOwnerChanged"))
		return daemon_left(st, s) ? left_bus(print, res) : STREAM_GOING;
	if (from_impostor(st, s)) {
		ignore_signal(st, s);
		return STREAM_GOING;
	}
	const char *sp = dbus_message_get_path(s);
	if (!sp || strcmp(sp, st->path))
		return STREAM_GOING;
	if (dbus_message_is_signal(s, IFACE_REQUEST, "Text"))
		on_text(st, s, print, res);
	else if (dbus_message_is_signal(s, IFACE_REQUEST, "Finished"))
		return on_finished(st, s, print, res);
	return STREAM_GOING;
}

static int lost_finished(const struct stream *st, bool print, const struct result *res)
{
	if (print)
		fputc('\n', stdout);
	fprintf(stderr, "bitnetctl: request %s ended, but its Finished signal never "
	        "arrived: the bus dropped it (a reader too slow for the stream?), and "
	        "perhaps text with it; %zu bytes of text received, the end unknown\n",
	        st->path, res->len);
	return EX_FAIL;
}

/* Sends a Generate/Chat call and streams its Text signals until Finished. */
static int stream(DBusMessage *m, bool print, struct result *res)
{
	struct stream st = { .warned = false };
	int rc = stream_begin(m, &st);
	if (rc != STREAM_GOING)
		return rc;
	bool cancel_sent = false;
	st.heard = now_s();
	for (;;) {
		if (interrupted && !cancel_sent) {
			cancel_request(&st);
			cancel_sent = true;
		}
		bool lost = false;
		if (now_s() - st.heard >= SILENCE_S) {
			rc = stream_probe(&st, print, res, &lost);
			if (rc != STREAM_GOING)
				return rc;
		}
		if (!dbus_connection_read_write(conn, lost ? 0 : 200)) {
			fprintf(stderr, "bitnetctl: lost the connection to %s\n", bus_desc);
			return EX_NODAEMON;
		}
		DBusMessage *s;
		while ((s = dbus_connection_pop_message(conn))) {
			rc = stream_message(&st, s, print, res);
			dbus_message_unref(s);
			if (rc != STREAM_GOING)
				return rc;
		}
		if (lost)
			return lost_finished(&st, print, res);
	}
}

static void print_json(const struct result *res, int rc)
{
	json_object *j = json_object_new_object();
	json_object_object_add(j, "text", json_object_new_string(res->text ? res->text : ""));
	json_object_object_add(j, "reason", json_object_new_string(res->reason));
	json_object_object_add(j, "stats", res->stats ? json_object_get(res->stats) : NULL);
	json_object_object_add(j, "exit_code", json_object_new_int(rc));
	printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN |
	                                                     JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(j);
}

/* All of standard input, NUL-terminated, its length in *len (NUL bytes in it included), or
 * NULL with a message. */
static char *read_stdin(size_t *len)
{
	size_t n = 0, cap = 4096;
	char *b = malloc(cap);   /* [cap] */
	size_t k;
	while (b && (k = fread(b + n, 1, cap - n - 1, stdin)) > 0) {
		n += k;
		if (n + 1 == cap) {
			char *nb = realloc(b, cap *= 2);
			if (!nb) {
				free(b);
				b = NULL;
			} else {
				b = nb;
			}
		}
	}
	if (!b) {
		fprintf(stderr, "bitnetctl: out of memory reading standard input\n");
		return NULL;
	}
	/* a read error is not the end of the text: sending what came before it would truncate */
	if (ferror(stdin)) {
		fprintf(stderr, "bitnetctl: cannot read standard input: %s\n", strerror(errno));
		free(b);
		return NULL;
	}
	b[n] = '\0';
	*len = n;
	return b;
}

/* Text for the daemon must be one D-Bus string: valid UTF-8 without U+0000. A NUL byte
 * would end the string early and send a truncated prompt without a word, so it is refused,
 * like invalid UTF-8 (exit 5), naming where it is. Returns 0 or the exit code. */
static int text_check(const char *what, const char *s, size_t len)
{
	const char *z = memchr(s, '\0', len);
	if (z) {
		fprintf(stderr, "bitnetctl: %s has a NUL byte at offset %zu, which D-Bus strings "
		        "cannot carry\n", what, (size_t)(z - s));
		return EX_REJECTED;
	}
	if (!dbus_validate_utf8(s, NULL)) {
		fprintf(stderr, "bitnetctl: %s is not valid UTF-8\n", what);
		return EX_REJECTED;
	}
	return 0;
}

static int cmd_generate(int argc, char **argv)
{
	struct gen_opts o = { 0 };
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", gen_lo, NULL)) != -1) {
		if (c == 'h') {
			printf("usage: bitnetctl generate [--max-tokens N] [--temperature T] [--top-k K] "
			       "[--top-p P] [--min-p P]\n       [--repeat-penalty R] [--seed S] [--greedy] "
			       "[--stop STR]... [--template T] [--system S] [--json] PROMPT|-\n");
			return 0;
		}
		if (!gen_opt(&o, c, optarg))
			die_usage("generate: unknown option");
	}
	if (optind != argc - 1)
		die_usage("generate: give one PROMPT, or - to read it from standard input");
	char *buf = NULL;
	const char *prompt = argv[optind];
	size_t len = strlen(prompt);
	if (!strcmp(prompt, "-") && !(prompt = buf = read_stdin(&len)))
		return EX_FAIL;
	int rc = text_check("the prompt", prompt, len);
	if (rc) {
		free(buf);
		return rc;
	}
	DBusMessage *m = new_call(PATH, IFACE_MANAGER, "Generate");
	DBusMessageIter it;
	dbus_message_iter_init_append(m, &it);
	dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &prompt);
	append_opts(&it, &o);
	struct result res = { 0 };
	rc = stream(m, !o.json, &res);
	if (o.json && res.reason[0])
		print_json(&res, rc);
	free(res.text);
	json_object_put(res.stats);
	free(buf);
	return rc;
}

struct history {
	char **role, **content;   /* [n] */
	size_t n, cap;
};

static void history_add(struct history *h, const char *role, const char *content)
{
	if (h->n == h->cap) {
		h->cap = h->cap ? h->cap * 2 : 16;
		h->role = realloc(h->role, h->cap * sizeof(char *));
		h->content = realloc(h->content, h->cap * sizeof(char *));
		if (!h->role || !h->content) {
			fprintf(stderr, "bitnetctl: out of memory\n");
			exit(EX_FAIL);
		}
	}
	h->role[h->n] = strdup(role);
	h->content[h->n] = strdup(content);
	h->n++;
}

static int chat_turn(struct history *h, const struct gen_opts *o, struct result *res)
{
	DBusMessage *m = new_call(PATH, IFACE_MANAGER, "Chat");
	DBusMessageIter it, a, s;
	dbus_message_iter_init_append(m, &it);
	dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "(ss)", &a);
	for (size_t i = 0; i < h->n; i++) {
		dbus_message_iter_open_container(&a, DBUS_TYPE_STRUCT, NULL, &s);
		dbus_message_iter_append_basic(&s, DBUS_TYPE_STRING, &h->role[i]);
		dbus_message_iter_append_basic(&s, DBUS_TYPE_STRING, &h->content[i]);
		dbus_message_iter_close_container(&a, &s);
	}
	dbus_message_iter_close_container(&it, &a);
	append_opts(&it, o);
	return stream(m, !o->json, res);
}

/* One turn from the command line. */
static int chat_once(struct history *h, const struct gen_opts *o, const char *msg)
{
	if (!dbus_validate_utf8(msg, NULL)) {
		fprintf(stderr, "bitnetctl: the message is not valid UTF-8\n");
		return EX_REJECTED;
	}
	history_add(h, "user", msg);
	struct result res = { 0 };
	int rc = chat_turn(h, o, &res);
	if (o->json && res.reason[0])
		print_json(&res, rc);
	free(res.text);
	json_object_put(res.stats);
	return rc;
}

/* One line of input as a turn; the reply joins the history, a failed turn is forgotten. */
static int chat_line(struct history *h, const struct gen_opts *o, const char *line)
{
	history_add(h, "user", line);
	struct result res = { 0 };
	int rc = chat_turn(h, o, &res);
	if (o->json && res.reason[0])
		print_json(&res, rc);
	if (rc == EX_OK)
		history_add(h, "assistant", res.text ? res.text : "");
	else
		free(h->role[--h->n]), free(h->content[h->n]);
	free(res.text);
	json_object_put(res.stats);
	return rc;
}

/* Turns read line by line from standard input until /exit, end of input or the daemon goes. */
static int chat_interactive(struct history *h, const struct gen_opts *o)
{
	bool tty = isatty(0);
	char *line = NULL;
	size_t cap = 0;
	int rc = EX_OK;
	for (;;) {
		if (tty) {
			fputs("> ", stderr);
			fflush(stderr);
		}
		interrupted = 0;
		ssize_t n = getline(&line, &cap, stdin);
		if (n < 0)
			break;
		while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (!n)
			continue;
		if (text_check("that line", line, (size_t)n))
			continue;   /* said why; the conversation goes on */
		if (!strcmp(line, "/exit") || !strcmp(line, "/quit"))
			break;
		rc = chat_line(h, o, line);
		if (rc == EX_NODAEMON)
			break;
		if (rc == EX_CANCELLED)
			rc = EX_OK;   /* Ctrl-C ends the reply, not the conversation */
	}
	/* Ctrl-C at the prompt ends the conversation as end of input does */
	if (ferror(stdin) && !interrupted) {
		fprintf(stderr, "bitnetctl: cannot read standard input: %s\n", strerror(errno));
		rc = EX_FAIL;
	}
	free(line);
	return rc;
}

static int cmd_chat(int argc, char **argv)
{
	struct gen_opts o = { 0 };
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", gen_lo, NULL)) != -1) {
		if (c == 'h') {
			printf("usage: bitnetctl chat [generate's options] [MESSAGE]\n"
			       "  without MESSAGE: interactive, one line per turn, /exit or end of input quits\n");
			return 0;
		}
		if (!gen_opt(&o, c, optarg))
			die_usage("chat: unknown option");
	}
	if (optind < argc - 1)
		die_usage("chat: give at most one MESSAGE");
	struct history h = { 0 };
	int rc = optind == argc - 1 ? chat_once(&h, &o, argv[optind]) : chat_interactive(&h, &o);
	for (size_t i = 0; i < h.n; i++) {
		free(h.role[i]);
		free(h.content[i]);
	}
	free(h.role);
	free(h.content);
	return rc;
}

static DBusMessage *get_all(int *rc)
{
	DBusMessage *m = new_call(PATH, DBUS_INTERFACE_PROPERTIES, "GetAll");
	const char *iface = IFACE_MANAGER;
	dbus_message_append_args(m, DBUS_TYPE_STRING, &iface, DBUS_TYPE_INVALID);
	return call(m, 10000, rc);
}

static json_object *props_json(DBusMessage *r)
{
	DBusMessageIter it;
	dbus_message_iter_init(r, &it);
	return variant_json(&it);
}

static const char *jstr(json_object *o, const char *k)
{
	json_object *v;
	return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : "?";
}

static int cmd_status(int argc, char **argv)
{
	bool json = argc > 1 && !strcmp(argv[1], "--json");
	if (argc > 1 + json)
		die_usage("status: the only option is --json");
	int rc = EX_OK;
	DBusMessage *r = get_all(&rc);
	if (!r)
		return rc;
	json_object *p = props_json(r);
	dbus_message_unref(r);
	if (json) {
		printf("%s\n", json_object_to_json_string_ext(p, JSON_C_TO_STRING_PRETTY |
		                                                     JSON_C_TO_STRING_NOSLASHESCAPE));
	} else {
		json_object *model = NULL, *corr = NULL;
		json_object_object_get_ex(p, "Model", &model);
		json_object_object_get_ex(p, "Corrections", &corr);
		printf("State:       %s\n", jstr(p, "State"));
		printf("Version:     %s\n", jstr(p, "Version"));
		printf("Model:       %s (%s, %s weights, %s head, context %s)\n", jstr(model, "path"),
		       jstr(model, "architecture"), jstr(model, "weight_type"), jstr(model, "head_type"),
		       jstr(p, "Context"));
		printf("Kernel:      %s\n", jstr(p, "Kernel"));
		printf("CPUs:        %s (%s threads); features: %s\n", jstr(p, "Cpus"), jstr(p, "Threads"),
		       jstr(p, "CpuFeatures"));
		printf("Slots:       %s of %s busy, %s tokens a step; %s waiting (max_queue %s)\n",
		       jstr(p, "SlotsBusy"), jstr(p, "Slots"), jstr(p, "StepTokens"),
		       jstr(p, "QueueDepth"), jstr(p, "MaxQueue"));
		json_object *kb = NULL;
		json_object_object_get_ex(p, "KvBytes", &kb);
		printf("KV cache:    %s of %s positions held, %.1f MiB reserved\n", jstr(p, "KvPositions"),
		       jstr(p, "KvCapacity"), kb ? (double)json_object_get_int64(kb) / 1048576.0 : 0.0);
		printf("Prefix:      %s requests reused %s cached prompt tokens\n",
		       jstr(p, "PrefixCacheHits"), jstr(p, "PrefixCachedTokens"));
		printf("Requests:    %s served, %s rejected, %s cancelled, %s failed\n",
		       jstr(p, "RequestsServed"), jstr(p, "RequestsRejected"), jstr(p, "RequestsCancelled"),
		       jstr(p, "RequestsFailed"));
		printf("Tokens:      %s in, %s out\n", jstr(p, "TokensIn"), jstr(p, "TokensOut"));
		size_t nc = corr ? json_object_array_length(corr) : 0;
		printf("Corrections: %s\n", nc ? "" : "none");
		for (size_t i = 0; i < nc; i++) {
			json_object *c = json_object_array_get_idx(corr, i);
			printf("  %s %s x%s\n", json_object_get_string(json_object_array_get_idx(c, 0)),
			       json_object_get_string(json_object_array_get_idx(c, 1)),
			       json_object_get_string(json_object_array_get_idx(c, 2)));
		}
		const char *le = jstr(p, "LastReloadError");
		if (*le && strcmp(le, "?"))
			printf("Last reload: failed: %s\n", le);
	}
	json_object_put(p);
	return EX_OK;
}

static int cmd_kernels(int argc, char **argv)
{
	(void)argv;
	if (argc > 1)
		die_usage("kernels takes no arguments");
	int rc = EX_OK;
	DBusMessage *r = get_all(&rc);
	if (!r)
		return rc;
	json_object *p = props_json(r), *k = NULL;
	dbus_message_unref(r);
	json_object_object_get_ex(p, "Kernels", &k);
	const char *cur = jstr(p, "Kernel");
	for (size_t i = 0; k && i < json_object_array_length(k); i++) {
		json_object *e = json_object_array_get_idx(k, i);
		const char *name = json_object_get_string(json_object_array_get_idx(e, 0));
		bool usable = json_object_get_boolean(json_object_array_get_idx(e, 2));
		const char *why = json_object_get_string(json_object_array_get_idx(e, 3));
		printf("%c %-10s %-8s %s%s%s\n", !strcmp(name, cur) ? '*' : ' ', name,
		       usable ? "usable" : "unusable",
		       json_object_get_string(json_object_array_get_idx(e, 1)), usable ? "" : ": ",
		       usable ? "" : why);
	}
	json_object_put(p);
	return EX_OK;
}

static int cmd_tokenize(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "bos", no_argument, NULL, 'b' }, { "no-bos", no_argument, NULL, 'n' },
		{ "special", no_argument, NULL, 's' }, { NULL, 0, NULL, 0 },
	};
	int c, bos = -1;
	dbus_bool_t special = FALSE;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (c == 'b' || c == 'n')
			bos = c == 'b';
		else if (c == 's')
			special = TRUE;
		else
			die_usage("tokenize: unknown option");
	}
	if (optind != argc - 1)
		die_usage("tokenize: give one TEXT, or - for standard input");
	char *buf = NULL;
	const char *text = argv[optind];
	size_t len = strlen(text);
	if (!strcmp(text, "-") && !(text = buf = read_stdin(&len)))
		return EX_FAIL;
	int rc = text_check("the text", text, len);
	if (rc) {
		free(buf);
		return rc;
	}
	DBusMessage *m = new_call(PATH, IFACE_MANAGER, "Tokenize");
	DBusMessageIter it, d;
	dbus_message_iter_init_append(m, &it);
	dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &text);
	dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{sv}", &d);
	if (bos >= 0) {
		dbus_bool_t b = bos;
		dict_add(&d, "add_bos", DBUS_TYPE_BOOLEAN, &b);
	}
	if (special)
		dict_add(&d, "parse_special", DBUS_TYPE_BOOLEAN, &special);
	dbus_message_iter_close_container(&it, &d);
	DBusMessage *r = call(m, 60000, &rc);
	free(buf);
	if (!r)
		return rc;
	DBusMessageIter ri, a;
	dbus_message_iter_init(r, &ri);
	dbus_message_iter_recurse(&ri, &a);
	bool first = true;
	for (; dbus_message_iter_get_arg_type(&a) == DBUS_TYPE_UINT32; dbus_message_iter_next(&a)) {
		dbus_uint32_t u;
		dbus_message_iter_get_basic(&a, &u);
		printf("%s%u", first ? "" : " ", u);
		first = false;
	}
	putchar('\n');
	dbus_message_unref(r);
	return EX_OK;
}

static int cmd_reload(int argc, char **argv)
{
	(void)argv;
	if (argc > 1)
		die_usage("reload takes no arguments");
	int rc = EX_OK;
	DBusMessage *r = call(new_call(PATH, IFACE_MANAGER, "Reload"), 600000, &rc);
	if (r)
		dbus_message_unref(r);
	return rc;
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: bitnetctl [--system | --session | --address ADDR] COMMAND [ARGS]\n"
	        "commands:\n"
	        "  generate [options] PROMPT|-   stream a completion (options: generate --help)\n"
	        "  chat [options] [MESSAGE]      chat; interactive without MESSAGE (/exit quits)\n"
	        "  status [--json]               state, model, kernel, CPUs, queue, counters\n"
	        "  tokenize [--bos|--no-bos] [--special] TEXT|-\n"
	        "  reload                        re-read the daemon's configuration (root)\n"
	        "  kernels                       kernel plugins and which one runs\n"
	        "exit codes: 0 ok, 1 failure, 2 usage, 3 daemon not reachable, 4 busy, 5 request\n"
	        "rejected (invalid arguments, context full), 6 access denied, 7 generation failed,\n"
	        "130 cancelled with Ctrl-C\n");
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "system", no_argument, NULL, 'y' }, { "session", no_argument, NULL, 'e' },
		{ "address", required_argument, NULL, 'a' }, { "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' }, { NULL, 0, NULL, 0 },
	};
	int type = 0, c;
	const char *address = NULL;
	/* global options stop at the command; the rest is the command's */
	while ((c = getopt_long(argc, argv, "+h", lo, NULL)) != -1) {
		switch (c) {
		case 'y': type = 0; break;
		case 'e': type = 1; break;
		case 'a': type = 2; address = optarg; break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("bitnetctl %s\n", PACKAGE_VERSION); return 0;
		default: usage(stderr); return EX_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EX_USAGE;
	}
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} cmds[] = {
		{ "generate", cmd_generate }, { "chat", cmd_chat }, { "status", cmd_status },
		{ "tokenize", cmd_tokenize }, { "reload", cmd_reload }, { "kernels", cmd_kernels },
	};
	const char *cmd = argv[optind];
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(cmd, cmds[i].name)) {
			struct sigaction sa = { 0 };
			sa.sa_handler = on_sigint;
			sigaction(SIGINT, &sa, NULL);
			sigaction(SIGTERM, &sa, NULL);
			signal(SIGPIPE, SIG_IGN);
			bus_type = type;
			bus_address = address;
			int rc = cmds[i].fn(argc - optind, argv + optind);
			if (conn) {
				dbus_connection_close(conn);
				dbus_connection_unref(conn);
			}
			return rc;
		}
	fprintf(stderr, "bitnetctl: unknown command '%s'\n", cmd);
	usage(stderr);
	return EX_USAGE;
}
