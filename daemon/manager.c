/* The Manager object: Generate, Chat, Tokenize, Reload and the daemon's properties. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bitnetd.h"
#include "bus.h"
#include "cpu.h"
#include "error.h"
#include "kernels.h"
#include "log.h"
#include "manager.h"
#include "model.h"
#include "notify.h"
#include "pool.h"
#include "worker.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "0"
#endif

static DBusMessage *reload_call;              /* Reload() waiting for the load result */
static struct bn_kernel_info *kernels;        /* [n_kernels] the plugin directory's contents */
static size_t n_kernels;

const char *bd_state_name(enum bd_state s)
{
	static const char *names[] = { "loading", "ready", "reloading", "stopping" };
	return (unsigned)s < 4 ? names[s] : "unknown";
}

void bd_set_state(enum bd_state s)
{
	if (bd.state != s) {
		bd.state = s;
		bd_props_changed(BD_PROP_STATE);
	}
}

/* ---- properties ------------------------------------------------------------------------- */

static bool put_str(DBusMessageIter *it, const char *s)
{
	if (!s || !dbus_validate_utf8(s, NULL))
		s = "";
	return dbus_message_iter_append_basic(it, DBUS_TYPE_STRING, &s);
}

static bool put_u32(DBusMessageIter *it, uint32_t v)
{
	dbus_uint32_t u = v;
	return dbus_message_iter_append_basic(it, DBUS_TYPE_UINT32, &u);
}

static bool put_u64(DBusMessageIter *it, uint64_t v)
{
	dbus_uint64_t u = v;
	return dbus_message_iter_append_basic(it, DBUS_TYPE_UINT64, &u);
}

static bool p_version(DBusMessageIter *it, void *o) { (void)o; return put_str(it, PACKAGE_VERSION); }
static bool p_state(DBusMessageIter *it, void *o) { (void)o; return put_str(it, bd_state_name(bd.state)); }
static bool p_kernel(DBusMessageIter *it, void *o) { (void)o; return put_str(it, bd.info.kernel); }
static bool p_threads(DBusMessageIter *it, void *o) { (void)o; return put_u32(it, bd.info.threads); }
static bool p_cpus(DBusMessageIter *it, void *o) { (void)o; return put_str(it, bd.info.cpus); }
static bool p_context(DBusMessageIter *it, void *o) { (void)o; return put_u32(it, bd.info.n_ctx); }
static bool p_maxq(DBusMessageIter *it, void *o) { (void)o; return put_u32(it, bd.cfg.max_queue); }
static bool p_served(DBusMessageIter *it, void *o) { (void)o; return put_u64(it, bd.cnt.served); }
static bool p_rejected(DBusMessageIter *it, void *o) { (void)o; return put_u64(it, bd.cnt.rejected); }
static bool p_cancelled(DBusMessageIter *it, void *o) { (void)o; return put_u64(it, bd.cnt.cancelled); }
static bool p_failed(DBusMessageIter *it, void *o) { (void)o; return put_u64(it, bd.cnt.failed); }
static bool p_tin(DBusMessageIter *it, void *o) { (void)o; return put_u64(it, bd.cnt.tokens_in); }
static bool p_tout(DBusMessageIter *it, void *o) { (void)o; return put_u64(it, bd.cnt.tokens_out); }
static bool p_lasterr(DBusMessageIter *it, void *o) { (void)o; return put_str(it, bd.last_reload_error); }
static bool p_config(DBusMessageIter *it, void *o) { (void)o; return put_str(it, bd.config_path); }

static bool p_slots(DBusMessageIter *it, void *o) { (void)o; return put_u32(it, bd.info.slots); }
static bool p_step(DBusMessageIter *it, void *o) { (void)o; return put_u32(it, bd.info.step_tokens); }
static bool p_kvbytes(DBusMessageIter *it, void *o) { (void)o; return put_u64(it, bd.info.kv_bytes); }
static bool p_hits(DBusMessageIter *it, void *o) { (void)o; return put_u64(it, bd.cnt.cache_hits); }
static bool p_cached(DBusMessageIter *it, void *o) { (void)o; return put_u64(it, bd.cnt.cached_tokens); }

static bool p_kvcap(DBusMessageIter *it, void *o)
{
	(void)o;
	return put_u64(it, (uint64_t)bd.info.slots * bd.info.n_ctx);
}

static bool p_kvpos(DBusMessageIter *it, void *o)
{
	(void)o;
	return put_u64(it, atomic_load(&bd.kv_positions));
}

static bool p_cpufeat(DBusMessageIter *it, void *o)
{
	(void)o;
	char buf[512];
	return put_str(it, bn_cpu_features_str(bd.cpu_features, buf, sizeof(buf)));
}

static bool p_queue(DBusMessageIter *it, void *o)
{
	(void)o;
	pthread_mutex_lock(&bd.lock);
	uint32_t n = bd.n_queued;
	pthread_mutex_unlock(&bd.lock);
	return put_u32(it, n);
}

static bool p_active(DBusMessageIter *it, void *o)
{
	(void)o;
	return put_u32(it, bd.n_active);
}

static bool p_model(DBusMessageIter *it, void *o)
{
	(void)o;
	DBusMessageIter d;
	dbus_message_iter_open_container(it, DBUS_TYPE_ARRAY, "{sv}", &d);
	if (bd.model) {
		const struct bn_model *m = bd.model->model;
		const struct bn_hparams *hp = bn_model_hparams(m);
		const char *s = bn_model_path(m);
		if (dbus_validate_utf8(s, NULL))
			bd_dict_add(&d, "path", DBUS_TYPE_STRING, &s);
		s = hp->arch_name;
		if (dbus_validate_utf8(s, NULL))
			bd_dict_add(&d, "architecture", DBUS_TYPE_STRING, &s);
		s = bn_model_weight_type(m);
		bd_dict_add(&d, "weight_type", DBUS_TYPE_STRING, &s);
		s = bn_model_head_type(m);
		bd_dict_add(&d, "head_type", DBUS_TYPE_STRING, &s);
		s = bn_chat_format_name(bd.model->chat_fmt);
		bd_dict_add(&d, "chat_template", DBUS_TYPE_STRING, &s);
		const struct { const char *k; uint32_t v; } u[] = {
			{ "n_vocab", hp->n_vocab }, { "n_embd", hp->n_embd }, { "n_ff", hp->n_ff },
			{ "n_layer", hp->n_layer }, { "n_head", hp->n_head }, { "n_head_kv", hp->n_head_kv },
			{ "n_ctx_train", hp->n_ctx_train }, { "n_ctx", bd.info.n_ctx },
		};
		for (size_t i = 0; i < sizeof(u) / sizeof(u[0]); i++) {
			dbus_uint32_t x = u[i].v;
			bd_dict_add(&d, u[i].k, DBUS_TYPE_UINT32, &x);
		}
		dbus_uint64_t copied = bn_model_bytes_copied(m);
		bd_dict_add(&d, "bytes_copied", DBUS_TYPE_UINT64, &copied);
		dbus_bool_t b = bd.model->cfg.strict;
		bd_dict_add(&d, "strict", DBUS_TYPE_BOOLEAN, &b);
	}
	return dbus_message_iter_close_container(it, &d);
}

static bool p_kernels(DBusMessageIter *it, void *o)
{
	(void)o;
	DBusMessageIter a, s;
	dbus_message_iter_open_container(it, DBUS_TYPE_ARRAY, "(ssbs)", &a);
	for (size_t i = 0; i < n_kernels; i++) {
		dbus_bool_t usable = kernels[i].usable;
		dbus_message_iter_open_container(&a, DBUS_TYPE_STRUCT, NULL, &s);
		put_str(&s, kernels[i].name);
		put_str(&s, kernels[i].description);
		dbus_message_iter_append_basic(&s, DBUS_TYPE_BOOLEAN, &usable);
		put_str(&s, kernels[i].problem);
		dbus_message_iter_close_container(&a, &s);
	}
	return dbus_message_iter_close_container(it, &a);
}

static bool p_corrections(DBusMessageIter *it, void *o)
{
	(void)o;
	DBusMessageIter a, s;
	dbus_message_iter_open_container(it, DBUS_TYPE_ARRAY, "(ssddd)", &a);
	for (size_t i = 0; bd.model && i < bd.model->model->n_corrections; i++) {
		const struct bn_correction *c = &bd.model->model->corrections[i];
		double f = c->factor, rb = c->rms_before, ra = c->rms_after;
		dbus_message_iter_open_container(&a, DBUS_TYPE_STRUCT, NULL, &s);
		put_str(&s, c->tensor);
		put_str(&s, c->kind);
		dbus_message_iter_append_basic(&s, DBUS_TYPE_DOUBLE, &f);
		dbus_message_iter_append_basic(&s, DBUS_TYPE_DOUBLE, &rb);
		dbus_message_iter_append_basic(&s, DBUS_TYPE_DOUBLE, &ra);
		dbus_message_iter_close_container(&a, &s);
	}
	return dbus_message_iter_close_container(it, &a);
}

static const struct bd_prop manager_props[] = {
	{ "Version", "s", p_version, 0 },
	{ "State", "s", p_state, BD_PROP_STATE },
	{ "ConfigFile", "s", p_config, 0 },
	{ "Model", "a{sv}", p_model, BD_PROP_ENGINE },
	{ "Kernel", "s", p_kernel, BD_PROP_ENGINE },
	{ "Kernels", "a(ssbs)", p_kernels, BD_PROP_ENGINE },
	{ "CpuFeatures", "s", p_cpufeat, 0 },
	{ "Threads", "u", p_threads, BD_PROP_ENGINE },
	{ "Cpus", "s", p_cpus, BD_PROP_ENGINE },
	{ "Context", "u", p_context, BD_PROP_ENGINE },
	{ "MaxQueue", "u", p_maxq, BD_PROP_ENGINE },
	{ "QueueDepth", "u", p_queue, BD_PROP_QUEUE },
	{ "ActiveRequests", "u", p_active, BD_PROP_QUEUE },
	{ "Slots", "u", p_slots, BD_PROP_ENGINE },
	{ "SlotsBusy", "u", p_active, BD_PROP_QUEUE },
	{ "StepTokens", "u", p_step, BD_PROP_ENGINE },
	{ "KvBytes", "t", p_kvbytes, BD_PROP_ENGINE },
	{ "KvPositions", "t", p_kvpos, BD_PROP_LIVE },
	{ "KvCapacity", "t", p_kvcap, BD_PROP_ENGINE },
	{ "PrefixCacheHits", "t", p_hits, BD_PROP_COUNTERS },
	{ "PrefixCachedTokens", "t", p_cached, BD_PROP_COUNTERS },
	{ "RequestsServed", "t", p_served, BD_PROP_COUNTERS },
	{ "RequestsRejected", "t", p_rejected, BD_PROP_COUNTERS },
	{ "RequestsCancelled", "t", p_cancelled, BD_PROP_COUNTERS },
	{ "RequestsFailed", "t", p_failed, BD_PROP_COUNTERS },
	{ "TokensIn", "t", p_tin, BD_PROP_COUNTERS },
	{ "TokensOut", "t", p_tout, BD_PROP_COUNTERS },
	{ "Corrections", "a(ssddd)", p_corrections, BD_PROP_ENGINE },
	{ "LastReloadError", "s", p_lasterr, BD_PROP_ENGINE },
	{ NULL, NULL, NULL, 0 },
};

void bd_props_flush(void)
{
	if (!bd.props_pending || !bd.conn)
		return;
	DBusMessage *m = dbus_message_new_signal(BD_PATH, DBUS_INTERFACE_PROPERTIES, "PropertiesChanged");
	if (!m)
		return;
	const char *iface = BD_IFACE_MANAGER;
	DBusMessageIter it, d, inv;
	dbus_message_iter_init_append(m, &it);
	dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &iface);
	dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{sv}", &d);
	for (const struct bd_prop *p = manager_props; p->name; p++) {
		if (!(p->mask & bd.props_pending))
			continue;
		DBusMessageIter e, v;
		dbus_message_iter_open_container(&d, DBUS_TYPE_DICT_ENTRY, NULL, &e);
		dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &p->name);
		dbus_message_iter_open_container(&e, DBUS_TYPE_VARIANT, p->sig, &v);
		p->get(&v, NULL);
		dbus_message_iter_close_container(&e, &v);
		dbus_message_iter_close_container(&d, &e);
	}
	dbus_message_iter_close_container(&it, &d);
	dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "s", &inv);
	dbus_message_iter_close_container(&it, &inv);
	bd_send(m);
	bd.props_pending = 0;
}

/* ---- loading and reloading ---------------------------------------------------------- */

int bd_load_take(char *why, size_t why_len)
{
	pthread_mutex_lock(&bd.lock);
	int rc = bd.load_rc;
	struct bd_model *m = bd.load_model;
	bd.load_model = NULL;
	bd.load_done = false;
	snprintf(why, why_len, "%s", bd.load_err);
	if (!rc) {
		bd.info = bd.load_info;
		bd.cfg = bd.load_cfg;
	}
	pthread_mutex_unlock(&bd.lock);
	if (rc)
		return rc;
	if (m) {
		bd_model_unref(bd.model);
		bd.model = m;
	}
	bd.loaded = true;
	bn_log_set_level(bd.cfg.log_level);
	free(kernels);
	kernels = NULL;
	n_kernels = 0;
	struct bn_error err = { 0 };
	const char *dir = bd.cfg.plugin_dir[0] ? bd.cfg.plugin_dir : bn_kernel_default_dir();
	if (bn_kernel_scan(dir, bd.cpu_features, &kernels, &n_kernels, &err))
		bn_log(BN_LOG_WARNING, "listing kernel plugins: %s", err.msg);
	bd_props_changed(BD_PROP_ENGINE);
	return 0;
}

void bd_reload_begin(void *reply_to)
{
	DBusMessage *call = reply_to;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	bd_notify("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=Reloading %s",
	          (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000,
	          bd.config_path);
	bn_log(BN_LOG_NOTICE, "reloading %s", bd.config_path);
	struct bd_config c;
	char why[400];
	bd_log_capture(why, sizeof(why));
	int errors = bd_config_load(&c, bd.config_path, false);
	bd_log_capture(NULL, 0);
	if (errors) {
		snprintf(bd.last_reload_error, sizeof(bd.last_reload_error),
		         "configuration not reloaded: %s", why);
		bn_log(BN_LOG_ERR, "%s; still serving with the previous settings", bd.last_reload_error);
		bd_props_changed(BD_PROP_ENGINE);
		if (call)
			bd_send(bd_error_reply(call, -EINVAL, "%s", bd.last_reload_error));
		bd_notify("READY=1\nSTATUS=Ready (reload failed: configuration errors)");
		return;
	}
	if (call)
		reload_call = dbus_message_ref(call);
	bd_set_state(BD_RELOADING);
	bd_worker_load(&c);
}

void bd_reload_finish(void)
{
	char why[512];
	int rc = bd_load_take(why, sizeof(why));
	if (rc) {
		snprintf(bd.last_reload_error, sizeof(bd.last_reload_error), "%s", why);
		bn_log(BN_LOG_ERR, "reload failed: %s; still serving the previous model and settings", why);
	} else {
		bd.last_reload_error[0] = '\0';
		bn_log(BN_LOG_NOTICE, "reloaded: kernel %s, %u threads, %u slots of context %u",
		       bd.info.kernel, bd.info.threads, bd.info.slots, bd.info.n_ctx);
	}
	bd_props_changed(BD_PROP_ENGINE);
	if (reload_call) {
		DBusMessage *r = rc ? bd_error_reply(reload_call, rc, "reload failed: %s", why)
		                    : dbus_message_new_method_return(reload_call);
		bd_send(r);
		dbus_message_unref(reload_call);
		reload_call = NULL;
	}
	if (bd.state == BD_RELOADING)
		bd_set_state(BD_READY);
	bd_notify("READY=1\nSTATUS=Ready: kernel %s, %u threads%s", bd.info.kernel, bd.info.threads,
	          rc ? " (reload failed)" : "");
}

void bd_manager_cleanup(void)
{
	free(kernels);
	kernels = NULL;
	n_kernels = 0;
	if (reload_call) {
		dbus_message_unref(reload_call);
		reload_call = NULL;
	}
	bd_model_unref(bd.model);
	bd.model = NULL;
	bd_model_unref(bd.load_model);   /* a load that finished while stopping */
	bd.load_model = NULL;
}

/* ---- methods ------------------------------------------------------------------------------ */

static DBusMessage *m_generate(DBusMessage *msg, void *o) { (void)o; return bd_generate(msg, false); }
static DBusMessage *m_chat(DBusMessage *msg, void *o) { (void)o; return bd_generate(msg, true); }
static DBusMessage *m_tokenize(DBusMessage *msg, void *o) { (void)o; return bd_tokenize(msg); }

static DBusMessage *m_reload(DBusMessage *msg, void *o)
{
	(void)o;
	if (bd.state != BD_READY)
		return bd_error_reply(msg, -EALREADY, "cannot reload while the daemon is %s",
		                      bd_state_name(bd.state));
	bd_reload_begin(msg);
	return NULL;
}

static const struct bd_arg generate_in[] = { { "prompt", "s" }, { "options", "a{sv}" }, { NULL, NULL } };
static const struct bd_arg chat_in[] = { { "messages", "a(ss)" }, { "options", "a{sv}" }, { NULL, NULL } };
static const struct bd_arg tokenize_in[] = { { "text", "s" }, { "options", "a{sv}" }, { NULL, NULL } };
static const struct bd_arg request_out[] = { { "request", "o" }, { NULL, NULL } };
static const struct bd_arg ids_out[] = { { "ids", "au" }, { NULL, NULL } };
static const struct bd_arg none[] = { { NULL, NULL } };

static const struct bd_method manager_methods[] = {
	{ "Generate", generate_in, request_out, m_generate },
	{ "Chat", chat_in, request_out, m_chat },
	{ "Tokenize", tokenize_in, ids_out, m_tokenize },
	{ "Reload", none, none, m_reload },
	{ NULL, NULL, NULL, NULL },
};

static const struct bd_signal manager_signals[] = { { NULL, NULL } };

const struct bd_iface bd_manager_iface = {
	BD_IFACE_MANAGER, manager_methods, manager_signals, manager_props,
};
