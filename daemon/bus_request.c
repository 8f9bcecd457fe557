/* The D-Bus door of requests: Generate, Chat and Tokenize calls, the per-request objects
 * at BD_REQ_PATH/N with their unicast Text and Finished signals and Cancel, and watching
 * callers leave the bus. It translates D-Bus into request.c's interface and back, nothing
 * more (design.md, "Serving"). */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitnetd.h"
#include "bus.h"
#include "error.h"
#include "options.h"
#include "request.h"
#include "tokenizer.h"
#include "worker.h"

static void request_path(const struct bd_request *r, char *buf, size_t len)
{
	snprintf(buf, len, BD_REQ_PATH "/%u", r->id);
}

/* ---- the request objects ------------------------------------------------------------- */

static void *request_find(const char *path)
{
	char p[64];
	for (struct bd_request *r = bd.all; r; r = r->all_next) {
		request_path(r, p, sizeof(p));
		if (!strcmp(p, path))
			return r;
	}
	return NULL;
}

static void request_children(char *buf, size_t len)
{
	size_t n = 0;
	buf[0] = '\0';
	for (struct bd_request *r = bd.all; r; r = r->all_next) {
		int k = snprintf(buf + n, len - n, "%s%u", n ? " " : "", r->id);
		if (k < 0 || (size_t)k >= len - n)
			break;
		n += (size_t)k;
	}
}

/* For a request path that names no live object: what became of it, in buf. */
static bool request_gone(const char *path, char *buf, size_t len)
{
	size_t pl = strlen(BD_REQ_PATH);
	if (strncmp(path, BD_REQ_PATH "/", pl + 1))
		return false;
	char *end;
	unsigned long id = strtoul(path + pl + 1, &end, 10);
	if (*end || end == path + pl + 1 || id > UINT32_MAX)
		return false;
	enum bn_stop_reason reason;
	int rc;
	if (bd_request_ended((uint32_t)id, &reason, &rc))
		snprintf(buf, len, "request %lu already ended (%s%s%s); ended requests are removed and "
		         "their Finished signal went to the caller", id, bn_stop_reason_name(reason),
		         rc ? ": " : "", rc ? bn_strerror(rc) : "");
	else if (id > bd.next_id)
		snprintf(buf, len, "no request %lu: not created yet (the last is %u)", id, bd.next_id);
	else
		snprintf(buf, len, "request %lu ended long ago and was removed", id);
	return true;
}

static unsigned owner_requests(const char *owner)
{
	unsigned n = 0;
	for (struct bd_request *r = bd.all; r; r = r->all_next)
		n += !strcmp(r->owner, owner);
	return n;
}

/* A caller's first request subscribes to its leaving the bus; its last one unsubscribes. */
static void owner_watch(const char *owner, bool add)
{
	char rule[256];
	snprintf(rule, sizeof(rule), "type='signal',sender='" DBUS_SERVICE_DBUS "',interface='"
	         DBUS_INTERFACE_DBUS "',member='NameOwnerChanged',arg0='%s'", owner);
	/* no DBusError: sent without waiting for the reply */
	if (add)
		dbus_bus_add_match(bd.conn, rule, NULL);
	else
		dbus_bus_remove_match(bd.conn, rule, NULL);
}

static void send_text(struct bd_request *r, const char *s)
{
	char path[64];
	request_path(r, path, sizeof(path));
	DBusMessage *m = dbus_message_new_signal(path, BD_IFACE_REQUEST, "Text");
	if (!m)
		return;
	dbus_message_set_destination(m, r->owner);
	dbus_message_append_args(m, DBUS_TYPE_STRING, &s, DBUS_TYPE_INVALID);
	bd_send(m);
}

static void send_finished(struct bd_request *r)
{
	char path[64];
	request_path(r, path, sizeof(path));
	DBusMessage *m = dbus_message_new_signal(path, BD_IFACE_REQUEST, "Finished");
	if (!m)
		return;
	dbus_message_set_destination(m, r->owner);
	const char *reason = bn_stop_reason_name(r->st.reason);
	DBusMessageIter it, d;
	dbus_message_iter_init_append(m, &it);
	dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &reason);
	dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{sv}", &d);
	dbus_uint32_t u = r->st.n_prompt ? r->st.n_prompt : (dbus_uint32_t)r->n_ids;
	bd_dict_add(&d, "prompt_tokens", DBUS_TYPE_UINT32, &u);
	u = r->st.n_gen;
	bd_dict_add(&d, "generated_tokens", DBUS_TYPE_UINT32, &u);
	bd_dict_add(&d, "prompt_seconds", DBUS_TYPE_DOUBLE, &r->st.prompt_s);
	bd_dict_add(&d, "generation_seconds", DBUS_TYPE_DOUBLE, &r->st.gen_s);
	bd_dict_add(&d, "prompt_tokens_per_second", DBUS_TYPE_DOUBLE, &r->st.prompt_tps);
	bd_dict_add(&d, "tokens_per_second", DBUS_TYPE_DOUBLE, &r->st.gen_tps);
	/* serving: where the time went, and what the prefix cache saved */
	u = r->n_cached;
	bd_dict_add(&d, "cached_tokens", DBUS_TYPE_UINT32, &u);
	u = r->slot;
	bd_dict_add(&d, "slot", DBUS_TYPE_UINT32, &u);
	bd_dict_add(&d, "queue_seconds", DBUS_TYPE_DOUBLE, &r->queue_s);
	bd_dict_add(&d, "first_token_seconds", DBUS_TYPE_DOUBLE, &r->first_token_s);
	bd_dict_add(&d, "token_gap_p50_seconds", DBUS_TYPE_DOUBLE, &r->gap_p50);
	bd_dict_add(&d, "token_gap_p95_seconds", DBUS_TYPE_DOUBLE, &r->gap_p95);
	bd_dict_add(&d, "token_gap_max_seconds", DBUS_TYPE_DOUBLE, &r->gap_max);
	const char *k = r->kernel;
	bd_dict_add(&d, "kernel", DBUS_TYPE_STRING, &k);
	dbus_uint64_t seed = r->gen.sampling.seed;
	bd_dict_add(&d, "seed", DBUS_TYPE_UINT64, &seed);
	/* the receipt: enough to reproduce and audit the result (strings checked as UTF-8) */
	const char *sv = r->kernel_variant;
	bd_dict_add(&d, "kernel_variant", DBUS_TYPE_STRING, &sv);
	u = r->threads;
	bd_dict_add(&d, "threads", DBUS_TYPE_UINT32, &u);
	sv = r->cpus;
	bd_dict_add(&d, "cpus", DBUS_TYPE_STRING, &sv);
	dbus_bool_t b = r->strict;
	bd_dict_add(&d, "strict", DBUS_TYPE_BOOLEAN, &b);
	u = r->n_corrections;
	bd_dict_add(&d, "corrections", DBUS_TYPE_UINT32, &u);
	sv = bd_utf8_ok(r->model_path, strlen(r->model_path)) ? r->model_path : "";
	bd_dict_add(&d, "model", DBUS_TYPE_STRING, &sv);
	dbus_uint64_t sz = r->model_size;
	bd_dict_add(&d, "model_size", DBUS_TYPE_UINT64, &sz);
	sv = r->arch;
	bd_dict_add(&d, "architecture", DBUS_TYPE_STRING, &sv);
	u = r->file_type;
	bd_dict_add(&d, "file_type", DBUS_TYPE_UINT32, &u);
	sv = r->weight_type;
	bd_dict_add(&d, "weight_type", DBUS_TYPE_STRING, &sv);
	sv = r->head_type;
	bd_dict_add(&d, "head_type", DBUS_TYPE_STRING, &sv);
	sv = r->header_sha256;
	bd_dict_add(&d, "model_header_sha256", DBUS_TYPE_STRING, &sv);
	if (r->rc) {
		const char *e = bd_utf8_ok(r->err, strlen(r->err)) ? r->err : "error";
		bd_dict_add(&d, "error", DBUS_TYPE_STRING, &e);
		const char *en = bn_error_dbus_name(r->rc);
		bd_dict_add(&d, "error_name", DBUS_TYPE_STRING, &en);
	}
	dbus_message_iter_close_container(&it, &d);
	bd_send(m);
}

/* r has left the live list: its caller's last request ends the watch on it */
static void door_finished(struct bd_request *r)
{
	send_finished(r);
	if (!owner_requests(r->owner))
		owner_watch(r->owner, false);
}

/* a caller that leaves the bus is seen by bus.c's filter, not polled */
static const struct bd_door bus_door = { send_text, door_finished, NULL, NULL };

/* ---- Generate / Chat / Tokenize ------------------------------------------------------ */

/* Chat's a(ss) at it into msgs [n] (pointers into msg); checked by check_messages. */
static int read_messages(DBusMessageIter *it, struct bn_chat_msg **out, size_t *n_out,
                         struct bn_error *err)
{
	DBusMessageIter a, st;
	struct bn_chat_msg *msgs = NULL;   /* [n] */
	size_t n = 0, cap = 0;
	dbus_message_iter_recurse(it, &a);
	for (; dbus_message_iter_get_arg_type(&a) == DBUS_TYPE_STRUCT; dbus_message_iter_next(&a)) {
		if (n == cap) {
			cap = cap ? cap * 2 : 8;
			struct bn_chat_msg *nm = realloc(msgs, cap * sizeof(*nm));
			if (!nm) {
				free(msgs);
				return bn_err_set(err, -ENOMEM, "out of memory");
			}
			msgs = nm;
		}
		dbus_message_iter_recurse(&a, &st);
		dbus_message_iter_get_basic(&st, &msgs[n].role);
		dbus_message_iter_next(&st);
		dbus_message_iter_get_basic(&st, &msgs[n].content);
		n++;
	}
	*out = msgs;
	*n_out = n;
	return 0;
}

DBusMessage *bd_generate(DBusMessage *msg, bool chat)
{
	struct bn_error err = { 0 };
	DBusMessageIter it;
	dbus_message_iter_init(msg, &it);
	struct bd_start st = { dbus_message_get_sender(msg), chat, NULL, NULL, 0, NULL, &bus_door,
	                       NULL };
	struct bn_chat_msg *msgs = NULL;   /* [n_msgs] pointers into msg */
	struct bd_req_opts o;
	struct bd_request *r = NULL;
	int rc;
	if (!chat)
		dbus_message_iter_get_basic(&it, &st.prompt);
	else if ((rc = read_messages(&it, &msgs, &st.n_msgs, &err)))
		return bd_error_reply(msg, rc, "%s", err.msg);
	st.msgs = msgs;
	dbus_message_iter_next(&it);
	if (!(rc = bd_opts_parse(&it, BD_OPTS_GENERATE, &bd.cfg, &o, &err))) {
		st.opts = &o;
		rc = bd_request_start(&st, &r, &err);
	}
	free(msgs);
	if (rc)
		return bd_error_reply(msg, rc, "%s", err.msg);
	if (owner_requests(r->owner) == 1)   /* the caller's first */
		owner_watch(r->owner, true);
	DBusMessage *reply = dbus_message_new_method_return(msg);
	char pbuf[64];
	request_path(r, pbuf, sizeof(pbuf));
	const char *path = pbuf;
	if (reply && dbus_message_append_args(reply, DBUS_TYPE_OBJECT_PATH, &path, DBUS_TYPE_INVALID)) {
		bd_send(reply);
		return NULL;   /* answered: the dispatcher must not reply again */
	}
	if (reply)
		dbus_message_unref(reply);
	/* queued without a reply the caller could use: cancel it quietly */
	pthread_mutex_lock(&bd.lock);
	atomic_store(&r->cancel, true);
	pthread_mutex_unlock(&bd.lock);
	return bd_error_reply(msg, -ENOMEM, "out of memory");
}

DBusMessage *bd_tokenize(DBusMessage *msg)
{
	struct bn_error err = { 0 };
	DBusMessageIter it;
	dbus_message_iter_init(msg, &it);
	const char *text;
	dbus_message_iter_get_basic(&it, &text);
	size_t len = strlen(text);
	dbus_message_iter_next(&it);
	struct bd_req_opts o;
	int rc;
	if ((rc = bd_request_not_ready(&err)) ||
	    (rc = bd_request_check_text("the text", text, len, true, &err)) ||
	    (rc = bd_opts_parse(&it, BD_OPTS_TOKENIZE, &bd.cfg, &o, &err)))
		return bd_error_reply(msg, rc, "%s", err.msg);
	struct bd_model *m = bd.model;
	int32_t *ids = NULL;
	size_t n = 0;
	bool add_bos = o.add_bos_set ? o.add_bos : bn_tokenizer_add_bos(m->tok);
	rc = bn_tokenize(m->tok, text, len, add_bos, o.parse_special, &ids, &n, &err);
	if (rc)
		return bd_error_reply(msg, rc, "%s", err.msg);
	/* a reply the bus refuses costs the daemon its connection: stay far below its limit
	 * whatever max_prompt_bytes allows */
	if (n > BD_REPLY_MAX / sizeof(dbus_uint32_t)) {
		free(ids);
		return bd_error_reply(msg, -E2BIG, "Tokenize: the text is %zu tokens, a reply of %zu "
		                      "bytes, over the %u-byte bound on a reply; tokenize it in parts", n,
		                      n * sizeof(dbus_uint32_t), BD_REPLY_MAX);
	}
	DBusMessage *r = dbus_message_new_method_return(msg);
	DBusMessageIter o2, a;
	if (r) {
		dbus_message_iter_init_append(r, &o2);
		dbus_message_iter_open_container(&o2, DBUS_TYPE_ARRAY, "u", &a);
		for (size_t i = 0; i < n; i++) {
			dbus_uint32_t u = (dbus_uint32_t)ids[i];
			dbus_message_iter_append_basic(&a, DBUS_TYPE_UINT32, &u);
		}
		dbus_message_iter_close_container(&o2, &a);
	}
	free(ids);
	return r;
}

/* ---- Cancel -------------------------------------------------------------------------- */

static DBusMessage *request_cancel(DBusMessage *msg, void *obj)
{
	struct bd_request *r = obj;
	if (strcmp(dbus_message_get_sender(msg), r->owner))
		return bd_error_reply(msg, -EACCES, "request %u belongs to another client", r->id);
	bd_request_cancel(r);
	DBusMessage *reply = dbus_message_new_method_return(msg);
	if (reply)
		bd_send(reply);
	bd_requests_pump();
	return NULL;
}

static const struct bd_arg no_args[] = { { NULL, NULL } };
static const struct bd_arg text_args[] = { { "chunk", "s" }, { NULL, NULL } };
static const struct bd_arg finished_args[] = { { "reason", "s" }, { "stats", "a{sv}" },
                                               { NULL, NULL } };

static const struct bd_method request_methods[] = {
	{ "Cancel", no_args, no_args, request_cancel },
	{ NULL, NULL, NULL, NULL },
};

static const struct bd_signal request_signals[] = {
	{ "Text", text_args },
	{ "Finished", finished_args },
	{ NULL, NULL },
};

static const struct bd_prop request_props[] = { { NULL, NULL, NULL, 0 } };

static const struct bd_iface request_iface = {
	BD_IFACE_REQUEST, request_methods, request_signals, request_props,
};

const struct bd_bus_subtree bd_request_objects = {
	&request_iface, request_find, request_children, request_gone,
};
