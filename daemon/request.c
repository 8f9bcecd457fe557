/* Requests, whichever door they came through: the checks, prompt rendering and
 * tokenizing, the FIFO queue, cancellation, and the pump that hands each request's text
 * and end to its door (request.h). No protocol here: D-Bus is bus_request.c's, HTTP is
 * http.c's. */
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

#include <dbus/dbus.h>   /* dbus_validate_utf8 only: the pump's check of outgoing text */

#include "bitnetd.h"
#include "error.h"
#include "guard.h"
#include "log.h"
#include "metrics.h"
#include "options.h"
#include "request.h"
#include "stop.h"
#include "tokenizer.h"
#include "worker.h"

bool bd_utf8_ok(const char *s, size_t len)
{
	return bn_stop_utf8_valid(s, len);
}

/* ---- the live request list ---------------------------------------------------------- */

/* The last requests removed, for an accurate answer to a late call on one. */
#define GONE_KEEP 256
static struct {
	uint32_t id;
	enum bn_stop_reason reason;
	int rc;
} gone[GONE_KEEP];
static unsigned n_gone;

bool bd_request_ended(uint32_t id, enum bn_stop_reason *reason, int *rc)
{
	for (unsigned i = 0; i < GONE_KEEP && i < n_gone; i++) {
		unsigned k = (n_gone - 1 - i) % GONE_KEEP;
		if (gone[k].id != id)
			continue;
		*reason = gone[k].reason;
		*rc = gone[k].rc;
		return true;
	}
	return false;
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
}

/* ---- starting ------------------------------------------------------------------------ */

int bd_request_not_ready(struct bn_error *err)
{
	if (bd.state == BD_STOPPING)
		return bn_err_set(err, -EALREADY, "the daemon is stopping");
	if (!bd.loaded)
		return bn_err_set(err, -EALREADY, "the daemon is still loading its model");
	return 0;
}

int bd_request_check_text(const char *what, const char *s, size_t len, bool allow_empty,
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

void bd_request_free(struct bd_request *r)
{
	if (!r)
		return;
	free(r->owner);
	bd_model_unref(r->m);
	free(r->text);
	free(r->specials);
	free(r->ids);
	for (size_t i = 0; i < r->n_stops; i++)
		free(r->stops[i]);
	free(r->stops);
	free(r->out);
	free(r);
}

/* Gives r its id and queues it for the generation thread. */
static void request_enqueue(struct bd_request *r)
{
	r->id = ++bd.next_id;
	r->t_queued = bn_now();
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
	if ((rc = bd_request_not_ready(err)))
		return rc;
	if (st->chat)
		rc = check_messages(st->msgs, st->n_msgs, err);
	else
		rc = bd_request_check_text("the prompt", st->prompt, strlen(st->prompt), false, err);
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
	r->door = st->door;
	r->door_data = st->door_data;
	request_enqueue(r);
	*out = r;
out:
	free(p.ids);
	free(p.rendered);
	free(p.specials);
	return rc;
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

void bd_request_cancel(struct bd_request *r)
{
	pthread_mutex_lock(&bd.lock);
	request_cancel_locked(r);
	pthread_mutex_unlock(&bd.lock);
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

static void (*on_load)(void);   /* bd_requests_on_load */

void bd_requests_pump(void)
{
	struct bd_request *done = NULL;
	unsigned changed = 0;
	pthread_mutex_lock(&bd.lock);
	bool load_done = bd.load_done;
	for (struct bd_request *r = bd.all; r; r = r->all_next) {
		/* a client that went away cancels its request, as leaving the bus does */
		if (r->door->gone && r->state != BD_REQ_DONE && !atomic_load(&r->cancel) &&
		    r->door->gone(r))
			request_cancel_locked(r);
		if (r->out_len) {
			r->out[r->out_len] = '\0';
			char *fixed = NULL;
			const char *t = r->out;
			if (memchr(r->out, '\0', r->out_len) && !(t = fixed = nul_to_fffd(r->out, r->out_len)))
				bn_log(BN_LOG_ERR, "request %u: out of memory: text dropped", r->id);
			/* libdbus's rule for every door: a D-Bus string must pass it */
			else if (dbus_validate_utf8(t, NULL))
				r->door->text(r, t);
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
		r->door->finished(r);
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
	if (load_done && on_load)
		on_load();
}

void bd_requests_on_load(void (*fn)(void))
{
	on_load = fn;
}

void bd_requests_abandon(void)
{
	while (bd.all) {
		struct bd_request *r = bd.all;
		bd.all = r->all_next;
		if (r->door->stopped) {   /* its client waits for an end */
			r->st.reason = BN_STOP_ERROR;
			r->rc = -EALREADY;
			snprintf(r->err, sizeof(r->err), "the daemon stopped");
			r->door->stopped(r);
		}
		bd_request_free(r);
	}
}
