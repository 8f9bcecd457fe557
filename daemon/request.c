/* Requests: option checking, prompt rendering and tokenizing, the FIFO queue, the
 * per-request objects with their unicast Text/Finished signals, and cancellation. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "bitnetd.h"
#include "bus.h"
#include "error.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "options.h"
#include "stop.h"
#include "tokenizer.h"

bool bd_utf8_ok(const char *s, size_t len)
{
	return bn_stop_utf8_valid(s, len);
}

/* ---- the live request list ---------------------------------------------------------- */

struct bd_request *bd_request_find(const char *path)
{
	for (struct bd_request *r = bd.all; r; r = r->all_next)
		if (!strcmp(r->path, path))
			return r;
	return NULL;
}

void bd_request_list_children(char *buf, size_t len)
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

static unsigned owner_requests(const char *owner)
{
	unsigned n = 0;
	for (struct bd_request *r = bd.all; r; r = r->all_next)
		n += !strcmp(r->owner, owner);
	return n;
}

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

/* The last requests removed, for an accurate answer to a late call on one. */
#define GONE_KEEP 256
static struct {
	uint32_t id;
	enum bn_stop_reason reason;
	int rc;
} gone[GONE_KEEP];
static unsigned n_gone;

bool bd_request_gone_text(const char *path, char *buf, size_t len)
{
	size_t pl = strlen(BD_REQ_PATH);
	if (strncmp(path, BD_REQ_PATH "/", pl + 1))
		return false;
	char *end;
	unsigned long id = strtoul(path + pl + 1, &end, 10);
	if (*end || end == path + pl + 1 || id > UINT32_MAX)
		return false;
	for (unsigned i = 0; i < GONE_KEEP && i < n_gone; i++) {
		unsigned k = (n_gone - 1 - i) % GONE_KEEP;
		if (gone[k].id != id)
			continue;
		snprintf(buf, len, "request %lu already ended (%s%s%s); ended requests are removed and "
		         "their Finished signal went to the caller", id, bn_stop_reason_name(gone[k].reason),
		         gone[k].rc ? ": " : "", gone[k].rc ? bn_strerror(gone[k].rc) : "");
		return true;
	}
	if (id > bd.next_id)
		snprintf(buf, len, "no request %lu: not created yet (the last is %u)", id, bd.next_id);
	else
		snprintf(buf, len, "request %lu ended long ago and was removed", id);
	return true;
}

static void request_unlink(struct bd_request *r)
{
	gone[n_gone % GONE_KEEP].id = r->id;
	gone[n_gone % GONE_KEEP].reason = r->st.reason;
	gone[n_gone % GONE_KEEP].rc = r->rc;
	n_gone++;
	for (struct bd_request **pp = &bd.all; *pp; pp = &(*pp)->all_next)
		if (*pp == r) {
			*pp = r->all_next;
			break;
		}
	if (!r->http && !owner_requests(r->owner))
		owner_watch(r->owner, false);
}

/* ---- Generate / Chat / Tokenize ------------------------------------------------------ */

static int not_ready(struct bn_error *err)
{
	if (bd.state == BD_STOPPING)
		return bn_err_set(err, -EALREADY, "the daemon is stopping");
	if (!bd.loaded)
		return bn_err_set(err, -EALREADY, "the daemon is still loading its model");
	return 0;
}

static int check_prompt(const char *what, const char *s, size_t len, bool allow_empty,
                        struct bn_error *err)
{
	if (!bd_utf8_ok(s, len))
		return bn_err_set(err, -EILSEQ, "%s is not valid UTF-8", what);
	if (!len && !allow_empty)
		return bn_err_set(err, -EINVAL, "%s is empty", what);
	if (len > bd.cfg.max_prompt_bytes)
		return bn_err_set(err, -E2BIG, "%s of %zu bytes exceeds max_prompt_bytes %u", what, len,
		                  bd.cfg.max_prompt_bytes);
	return 0;
}

/* Roles and contents of a Chat, whichever door they came through. */
static int check_messages(const struct bn_chat_msg *msgs, size_t n, struct bn_error *err)
{
	size_t total = 0;
	for (size_t i = 0; i < n; i++) {
		const char *role = msgs[i].role;
		if (!role || !msgs[i].content)
			return bn_err_set(err, -EINVAL, "message %zu: no %s", i, role ? "content" : "role");
		if (!bd_utf8_ok(role, strlen(role)) || (strcmp(role, "system") && strcmp(role, "user") &&
		                                        strcmp(role, "assistant")))
			return bn_err_set(err, -EINVAL, "message %zu: role '%s' is not system, user or "
			                  "assistant", i, bd_utf8_ok(role, strlen(role)) ? role : "(invalid UTF-8)");
		size_t cl = strlen(msgs[i].content);
		if (!bd_utf8_ok(msgs[i].content, cl))
			return bn_err_set(err, -EILSEQ, "message %zu: content is not valid UTF-8", i);
		total += cl;
	}
	if (!n)
		return bn_err_set(err, -EINVAL, "messages: the list is empty");
	if (total > bd.cfg.max_prompt_bytes)
		return bn_err_set(err, -E2BIG, "messages of %zu bytes exceed max_prompt_bytes %u", total,
		                  bd.cfg.max_prompt_bytes);
	return 0;
}

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

/* A request's prompt as the engine gets it. */
struct prompt {
	char *rendered;          /* owned: the chat rendering, NULL for a raw prompt */
	const char *text;        /* [len] what is tokenized */
	size_t len;
	bool add_bos;
	struct bn_chat_span *specials;   /* owned: [n_specials] the template's special tokens */
	size_t n_specials;
	int32_t *ids;            /* [n_ids] owned */
	size_t n_ids;
};

/* Renders (chat formats) and tokenizes; adds the format's default stop string to o. */
static int prompt_make(struct bd_model *m, bool chat, const char *raw,
                       const struct bn_chat_msg *msgs, size_t n_msgs, struct bd_req_opts *o,
                       struct prompt *p, struct bn_error *err)
{
	enum bn_chat_format fmt = BN_CHAT_RAW;
	if (o->template_name) {
		bool is_auto;
		bn_chat_format_parse(o->template_name, &fmt, &is_auto);
		if (is_auto)
			fmt = m->chat_fmt;
	} else if (chat) {
		fmt = m->chat_fmt;
	}
	if (!chat && fmt == BN_CHAT_RAW && o->system)
		return bn_err_set(err, -EINVAL, "option system: needs a chat template (template is "
		                      "raw)");
	int rc;
	if (fmt == BN_CHAT_RAW && !chat) {
		p->text = raw;
		p->len = strlen(raw);
		p->add_bos = bn_tokenizer_add_bos(m->tok);
	} else {
		struct bn_chat_msg one = { "user", raw };
		if ((rc = bn_chat_render_spans(fmt, chat ? msgs : &one, chat ? n_msgs : 1, o->system,
		                               &p->rendered, &p->specials, &p->n_specials, err)))
			return rc;
		p->text = p->rendered;
		p->len = strlen(p->rendered);
		/* only the template's own special tokens are parsed: contents are text */
		p->add_bos = !bn_chat_adds_bos(fmt) && bn_tokenizer_add_bos(m->tok);
		const char *def = bn_chat_default_stop(fmt);
		if (def && o->n_stops < BN_STOP_MAX_STRINGS)
			o->stops[o->n_stops++] = def;
	}
	if ((rc = bn_tokenize_marked(m->tok, p->text, p->len, p->specials, p->n_specials,
	                             p->add_bos, &p->ids, &p->n_ids, err)))
		return rc;
	if (!p->n_ids)
		return bn_err_set(err, -EINVAL, "the prompt gives no tokens");
	if (p->n_ids >= bd.info.n_ctx) {
		bd.cnt.rejected++;
		bd_props_changed(BD_PROP_COUNTERS);
		return bn_err_set(err, -ENOSPC, "prompt of %zu tokens does not fit the context of "
		                      "%u tokens (one position is needed to generate)", p->n_ids,
		                      bd.info.n_ctx);
	}
	return 0;
}

/* The request object with owned copies of everything the generation thread reads. */
/* A live request for p and o, owned by the caller until request_enqueue. */
static struct bd_request *request_new(const char *owner, struct bd_model *m, struct prompt *p,
                                      const struct bd_req_opts *o)
{
	struct bd_request *r = calloc(1, sizeof(*r));
	if (!r || !(r->owner = strdup(owner)) || !(r->text = malloc(p->len + 1)) ||
	    (o->n_stops && !(r->stops = calloc(o->n_stops, sizeof(char *)))))
		goto fail;
	memcpy(r->text, p->text, p->len);
	r->text[p->len] = '\0';
	r->text_len = p->len;
	r->add_bos = p->add_bos;
	r->specials = p->specials;
	r->n_specials = p->n_specials;
	p->specials = NULL;
	for (size_t i = 0; i < o->n_stops; i++, r->n_stops++)
		if (!(r->stops[i] = strdup(o->stops[i])))
			goto fail;
	r->gen = o->gen;
	r->gen.stops = (const char *const *)r->stops;
	r->gen.n_stops = r->n_stops;
	r->ids = p->ids;
	r->n_ids = p->n_ids;
	p->ids = NULL;
	r->m = bd_model_ref(m);
	atomic_init(&r->cancel, false);
	r->state = BD_REQ_QUEUED;
	return r;
fail:
	bd_request_free(r);
	return NULL;
}

/* Gives r its id and object path and queues it for the generation thread. */
static void request_enqueue(struct bd_request *r)
{
	r->id = ++bd.next_id;
	snprintf(r->path, sizeof(r->path), BD_REQ_PATH "/%u", r->id);
	r->t_queued = bn_now();
	if (!r->http && !owner_requests(r->owner))
		owner_watch(r->owner, true);
	r->all_next = bd.all;
	bd.all = r;
	pthread_mutex_lock(&bd.lock);
	if (bd.qtail)
		bd.qtail->next = r;
	else
		bd.qhead = r;
	bd.qtail = r;
	bd.n_queued++;
	pthread_cond_signal(&bd.cond);
	pthread_mutex_unlock(&bd.lock);
	bn_log(BN_LOG_INFO, "request %u from %s: %zu prompt tokens, max_tokens %u", r->id, r->owner,
	       r->n_ids, r->gen.max_tokens);
	bd_props_changed(BD_PROP_QUEUE);
}

static int check_busy(struct bn_error *err)
{
	pthread_mutex_lock(&bd.lock);
	/* queued requests beyond the free slots are the ones that wait */
	bool full = bd.n_running + bd.n_queued >= bd.info.slots + bd.cfg.max_queue;
	uint32_t queued = bd.n_queued, running = bd.n_running;
	pthread_mutex_unlock(&bd.lock);
	if (!full)
		return 0;
	bd.cnt.rejected++;
	bd_props_changed(BD_PROP_COUNTERS);
	return bn_err_set(err, -EAGAIN, "daemon busy: %u requests queued (max_queue %u), %u of %u "
	                  "slots running", queued, bd.cfg.max_queue, running, bd.info.slots);
}

int bd_request_start(const struct bd_start *st, struct bd_request **out, struct bn_error *err)
{
	struct prompt p = { 0 };
	struct bd_req_opts *o = st->opts;
	int rc;
	*out = NULL;
	if ((rc = not_ready(err)))
		return rc;
	if (st->chat)
		rc = check_messages(st->msgs, st->n_msgs, err);
	else
		rc = check_prompt("the prompt", st->prompt, strlen(st->prompt), false, err);
	if (rc || (rc = bd_model_check(bd.model, err)) || (rc = check_busy(err)) ||
	    (rc = prompt_make(bd.model, st->chat, st->prompt, st->msgs, st->n_msgs, o, &p, err)))
		goto out;
	if (!o->seed_set && getrandom(&o->gen.sampling.seed, sizeof(o->gen.sampling.seed), 0) !=
	                    (ssize_t)sizeof(o->gen.sampling.seed))
		o->gen.sampling.seed = (uint64_t)bn_now();
	if ((rc = bn_sampler_opts_check(&o->gen.sampling, err))) {
		rc = bn_err_set(err, -ERANGE, "%s", err->msg);
		goto out;
	}
	struct bd_request *r = request_new(st->owner, bd.model, &p, o);
	if (!r) {
		rc = bn_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	r->http = st->http;
	request_enqueue(r);
	*out = r;
out:
	free(p.ids);
	free(p.rendered);
	free(p.specials);
	return rc;
}

DBusMessage *bd_generate(DBusMessage *msg, bool chat)
{
	struct bn_error err = { 0 };
	DBusMessageIter it;
	dbus_message_iter_init(msg, &it);
	struct bd_start st = { dbus_message_get_sender(msg), chat, NULL, NULL, 0, NULL, NULL };
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
	DBusMessage *reply = dbus_message_new_method_return(msg);
	const char *path = r->path;
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
	if ((rc = not_ready(&err)) || (rc = check_prompt("the text", text, len, true, &err)) ||
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

/* ---- cancelling and finishing -------------------------------------------------------- */

/* With bd.lock held: a queued request leaves the queue and is finished as cancelled; a
 * running one is asked to stop at its next token. */
static void request_cancel_locked(struct bd_request *r)
{
	atomic_store(&r->cancel, true);
	if (r->state != BD_REQ_QUEUED)
		return;
	struct bd_request **pp = &bd.qhead, *prev = NULL;
	for (; *pp && *pp != r; prev = *pp, pp = &(*pp)->next)
		;
	if (*pp) {
		*pp = r->next;
		if (bd.qtail == r)
			bd.qtail = prev;
		bd.n_queued--;
	}
	r->next = NULL;
	r->state = BD_REQ_DONE;
	r->st.reason = BN_STOP_CANCELLED;
}

void bd_requests_cancel_owner(const char *owner)
{
	bool any = false;
	pthread_mutex_lock(&bd.lock);
	for (struct bd_request *r = bd.all; r; r = r->all_next)
		if (!owner || !strcmp(r->owner, owner)) {
			request_cancel_locked(r);
			any = true;
		}
	pthread_mutex_unlock(&bd.lock);
	if (any && owner)
		bn_log(BN_LOG_INFO, "%s left the bus: its requests are cancelled", owner);
	if (any)
		bd_requests_pump();
}

static DBusMessage *request_cancel(DBusMessage *msg, void *obj)
{
	struct bd_request *r = obj;
	if (strcmp(dbus_message_get_sender(msg), r->owner))
		return bd_error_reply(msg, -EACCES, "request %u belongs to another client", r->id);
	pthread_mutex_lock(&bd.lock);
	request_cancel_locked(r);
	pthread_mutex_unlock(&bd.lock);
	DBusMessage *reply = dbus_message_new_method_return(msg);
	if (reply)
		bd_send(reply);
	bd_requests_pump();
	return NULL;
}

static void send_text(struct bd_request *r, const char *s)
{
	DBusMessage *m = dbus_message_new_signal(r->path, BD_IFACE_REQUEST, "Text");
	if (!m)
		return;
	dbus_message_set_destination(m, r->owner);
	dbus_message_append_args(m, DBUS_TYPE_STRING, &s, DBUS_TYPE_INVALID);
	bd_send(m);
}

static void send_finished(struct bd_request *r)
{
	DBusMessage *m = dbus_message_new_signal(r->path, BD_IFACE_REQUEST, "Finished");
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

/* D-Bus strings cannot carry U+0000, which a model can generate (a byte token 0x00):
 * each one goes out as U+FFFD, the same wherever the signal boundaries fall. */
static char *nul_to_fffd(const char *s, size_t len)
{
	size_t n = 0;
	for (size_t i = 0; i < len; i++)
		n += s[i] ? 1 : 3;
	char *o = malloc(n + 1), *p = o;
	if (!o)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		if (s[i]) {
			*p++ = s[i];
		} else {
			memcpy(p, "\xef\xbf\xbd", 3);
			p += 3;
		}
	}
	*p = '\0';
	return o;
}

void bd_requests_pump(void)
{
	struct bd_request *done = NULL;
	unsigned changed = 0;
	pthread_mutex_lock(&bd.lock);
	bool load_done = bd.load_done;
	for (struct bd_request *r = bd.all; r; r = r->all_next) {
		/* an HTTP client that went away cancels its request, as leaving the bus does */
		if (r->http && r->state != BD_REQ_DONE && !atomic_load(&r->cancel) &&
		    bd_http_gone(r->http))
			request_cancel_locked(r);
		if (r->out_len) {
			r->out[r->out_len] = '\0';
			char *fixed = NULL;
			const char *t = r->out;
			if (memchr(r->out, '\0', r->out_len) && !(t = fixed = nul_to_fffd(r->out, r->out_len)))
				bn_log(BN_LOG_ERR, "request %u: out of memory: text dropped", r->id);
			else if (dbus_validate_utf8(t, NULL) && r->http)
				bd_http_text(r->http, t);
			else if (dbus_validate_utf8(t, NULL))
				send_text(r, t);
			else
				bn_log(BN_LOG_ERR, "request %u: dropped text that is not valid UTF-8", r->id);
			free(fixed);
			r->out_len = 0;
		}
	}
	/* finished ones leave the list; everything else stays */
	for (struct bd_request **pp = &bd.all; *pp;) {
		struct bd_request *r = *pp;
		if (r->state == BD_REQ_DONE) {
			*pp = r->all_next;
			r->all_next = done;
			done = r;
		} else {
			pp = &r->all_next;
		}
	}
	pthread_mutex_unlock(&bd.lock);
	for (struct bd_request *r = done, *next; r; r = next) {
		next = r->all_next;
		if (r->http)
			bd_http_finished(r->http, r);   /* drops the request's reference */
		else
			send_finished(r);
		bd_metrics_observe(r);
		switch (r->st.reason) {
		case BN_STOP_CANCELLED: bd.cnt.cancelled++; break;
		case BN_STOP_ERROR:
		case BN_STOP_CONTEXT_FULL:
			/* context-full while generating is a served request */
			if (r->rc)
				bd.cnt.failed++;
			else
				bd.cnt.served++;
			break;
		default: bd.cnt.served++; break;
		}
		bd.cnt.tokens_in += r->st.n_prompt;
		bd.cnt.tokens_out += r->st.n_gen;
		bd.cnt.cache_hits += r->n_cached > 0;
		bd.cnt.cached_tokens += r->n_cached;
		bn_log(BN_LOG_INFO, "request %u finished: %s, %u prompt (%u cached) + %u generated "
		       "tokens, %.2f tokens/s, first token after %.3f s", r->id,
		       bn_stop_reason_name(r->st.reason), r->st.n_prompt, r->n_cached, r->st.n_gen,
		       r->st.gen_tps, r->first_token_s);
		r->all_next = NULL;
		request_unlink(r);
		bd_request_free(r);
		changed |= BD_PROP_COUNTERS | BD_PROP_QUEUE;
	}
	pthread_mutex_lock(&bd.lock);
	unsigned active = bd.n_running;
	pthread_mutex_unlock(&bd.lock);
	if (active != bd.n_active) {
		bd.n_active = active;
		changed |= BD_PROP_QUEUE;
	}
	bd_props_changed(changed);
	if (load_done)
		bd_reload_finish();
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

const struct bd_iface bd_request_iface = {
	BD_IFACE_REQUEST, request_methods, request_signals, request_props,
};
