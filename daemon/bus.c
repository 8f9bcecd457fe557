/* The bus thread: the only thread that touches libdbus. One poll loop over the bus
 * connection's watches, the signalfd and the eventfd of the generation thread. It serves
 * the objects main.c hands it (struct bd_bus_objects) and reaches the rest of the daemon
 * through the loop's table (struct bd_loop): it calls no layer above it by name. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "bitnetd.h"
#include "bus.h"
#include "error.h"
#include "log.h"

#define MAX_WATCHES 16
#define MAX_TIMEOUTS 16

static DBusWatch *watches[MAX_WATCHES];
static DBusTimeout *timeouts[MAX_TIMEOUTS];
static double timeout_due[MAX_TIMEOUTS];
static bool disconnected;
static const struct bd_bus_objects *objs;   /* bd_bus_connect's */

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static dbus_bool_t watch_add(DBusWatch *w, void *data)
{
	(void)data;
	for (int i = 0; i < MAX_WATCHES; i++)
		if (!watches[i]) {
			watches[i] = w;
			return TRUE;
		}
	return FALSE;
}

static void watch_remove(DBusWatch *w, void *data)
{
	(void)data;
	for (int i = 0; i < MAX_WATCHES; i++)
		if (watches[i] == w)
			watches[i] = NULL;
}

static void watch_toggled(DBusWatch *w, void *data)
{
	(void)w;
	(void)data;   /* enabled state is read at every poll */
}

static dbus_bool_t timeout_add(DBusTimeout *t, void *data)
{
	(void)data;
	for (int i = 0; i < MAX_TIMEOUTS; i++)
		if (!timeouts[i]) {
			timeouts[i] = t;
			timeout_due[i] = now_ms() + dbus_timeout_get_interval(t);
			return TRUE;
		}
	return FALSE;
}

static void timeout_remove(DBusTimeout *t, void *data)
{
	(void)data;
	for (int i = 0; i < MAX_TIMEOUTS; i++)
		if (timeouts[i] == t)
			timeouts[i] = NULL;
}

static void timeout_toggled(DBusTimeout *t, void *data)
{
	(void)data;
	for (int i = 0; i < MAX_TIMEOUTS; i++)
		if (timeouts[i] == t)
			timeout_due[i] = now_ms() + dbus_timeout_get_interval(t);
}

DBusMessage *bd_error_reply(DBusMessage *msg, int code, const char *fmt, ...)
{
	char buf[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	/* messages quote client strings: never hand libdbus invalid UTF-8 */
	if (!dbus_validate_utf8(buf, NULL))
		snprintf(buf, sizeof(buf), "%s", bn_strerror(code));
	return dbus_message_new_error(msg, bn_error_dbus_name(code), buf);
}

bool bd_send(DBusMessage *m)
{
	if (!m)
		return false;
	bool ok = bd.conn && dbus_connection_send(bd.conn, m, NULL);   /* none: --no-bus */
	dbus_message_unref(m);
	return ok;
}

bool bd_dict_add(DBusMessageIter *dict, const char *key, int type, const void *value)
{
	DBusMessageIter e, v;
	char sig[2] = { (char)type, 0 };
	return dbus_message_iter_open_container(dict, DBUS_TYPE_DICT_ENTRY, NULL, &e) &&
	       dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &key) &&
	       dbus_message_iter_open_container(&e, DBUS_TYPE_VARIANT, sig, &v) &&
	       dbus_message_iter_append_basic(&v, type, value) &&
	       dbus_message_iter_close_container(&e, &v) &&
	       dbus_message_iter_close_container(dict, &e);
}

/* ---- introspection, generated from the interface tables ------------------------------ */

struct sbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	for (;;) {
		va_start(ap, fmt);
		int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = true;
			return;
		}
		if (b->p && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = (b->cap + (size_t)n + 1) * 2;
		char *np = realloc(b->p, cap);
		if (!np) {
			b->oom = true;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
}

static void xml_args(struct sbuf *b, const struct bd_arg *a, const char *dir)
{
	for (; a && a->name; a++)
		sb_printf(b, "      <arg name=\"%s\" type=\"%s\"%s%s%s/>\n", a->name, a->sig,
		          dir ? " direction=\"" : "", dir ? dir : "", dir ? "\"" : "");
}

static void xml_iface(struct sbuf *b, const struct bd_iface *f)
{
	sb_printf(b, "  <interface name=\"%s\">\n", f->name);
	for (const struct bd_method *m = f->methods; m && m->name; m++) {
		sb_printf(b, "    <method name=\"%s\">\n", m->name);
		xml_args(b, m->in, "in");
		xml_args(b, m->out, "out");
		sb_printf(b, "    </method>\n");
	}
	for (const struct bd_signal *s = f->signals; s && s->name; s++) {
		sb_printf(b, "    <signal name=\"%s\">\n", s->name);
		xml_args(b, s->args, NULL);
		sb_printf(b, "    </signal>\n");
	}
	for (const struct bd_prop *p = f->props; p && p->name; p++) {
		sb_printf(b, "    <property name=\"%s\" type=\"%s\" access=\"read\">\n", p->name, p->sig);
		const char *emits = !p->mask ? "const" : p->mask & BD_PROP_LIVE ? "false" : "true";
		sb_printf(b, "      <annotation name=\"org.freedesktop.DBus.Property.EmitsChangedSignal\" "
		          "value=\"%s\"/>\n", emits);
		sb_printf(b, "    </property>\n");
	}
	sb_printf(b, "  </interface>\n");
}

static const char std_ifaces[] =
	"  <interface name=\"org.freedesktop.DBus.Introspectable\">\n"
	"    <method name=\"Introspect\">\n"
	"      <arg name=\"xml_data\" type=\"s\" direction=\"out\"/>\n"
	"    </method>\n"
	"  </interface>\n"
	"  <interface name=\"org.freedesktop.DBus.Peer\">\n"
	"    <method name=\"Ping\"/>\n"
	"    <method name=\"GetMachineId\">\n"
	"      <arg name=\"machine_uuid\" type=\"s\" direction=\"out\"/>\n"
	"    </method>\n"
	"  </interface>\n"
	"  <interface name=\"org.freedesktop.DBus.Properties\">\n"
	"    <method name=\"Get\">\n"
	"      <arg name=\"interface_name\" type=\"s\" direction=\"in\"/>\n"
	"      <arg name=\"property_name\" type=\"s\" direction=\"in\"/>\n"
	"      <arg name=\"value\" type=\"v\" direction=\"out\"/>\n"
	"    </method>\n"
	"    <method name=\"GetAll\">\n"
	"      <arg name=\"interface_name\" type=\"s\" direction=\"in\"/>\n"
	"      <arg name=\"props\" type=\"a{sv}\" direction=\"out\"/>\n"
	"    </method>\n"
	"    <method name=\"Set\">\n"
	"      <arg name=\"interface_name\" type=\"s\" direction=\"in\"/>\n"
	"      <arg name=\"property_name\" type=\"s\" direction=\"in\"/>\n"
	"      <arg name=\"value\" type=\"v\" direction=\"in\"/>\n"
	"    </method>\n"
	"    <signal name=\"PropertiesChanged\">\n"
	"      <arg name=\"interface_name\" type=\"s\"/>\n"
	"      <arg name=\"changed_properties\" type=\"a{sv}\"/>\n"
	"      <arg name=\"invalidated_properties\" type=\"as\"/>\n"
	"    </signal>\n"
	"  </interface>\n";

static char *introspect(const char *path, const struct bd_iface *f, const char *children)
{
	struct sbuf b = { 0 };
	sb_printf(&b, "%s", DBUS_INTROSPECT_1_0_XML_DOCTYPE_DECL_NODE "<node>\n");
	if (f) {
		sb_printf(&b, "%s", std_ifaces);
		xml_iface(&b, f);
	}
	for (const char *c = children; c && *c;) {
		const char *e = strchr(c, ' ');
		size_t l = e ? (size_t)(e - c) : strlen(c);
		sb_printf(&b, "  <node name=\"%.*s\"/>\n", (int)l, c);
		c += l;
		while (*c == ' ')
			c++;
	}
	sb_printf(&b, "</node>\n");
	(void)path;
	if (b.oom) {
		free(b.p);
		return NULL;
	}
	return b.p;
}

void bd_bus_print_interfaces(FILE *f, const struct bd_bus_objects *o)
{
	struct sbuf b = { 0 };
	sb_printf(&b, "%s", DBUS_INTROSPECT_1_0_XML_DOCTYPE_DECL_NODE "<node>\n");
	xml_iface(&b, o->manager);
	xml_iface(&b, o->requests->iface);
	sb_printf(&b, "</node>\n");
	if (b.p)
		fputs(b.p, f);
	free(b.p);
}

/* ---- dispatch ---------------------------------------------------------------------- */

static bool args_match(DBusMessage *msg, const struct bd_arg *in)
{
	char want[256] = "";
	for (const struct bd_arg *a = in; a && a->name; a++)
		strncat(want, a->sig, sizeof(want) - strlen(want) - 1);
	return !strcmp(dbus_message_get_signature(msg), want);
}

static DBusMessage *props_call(DBusMessage *msg, const struct bd_iface *f, void *obj)
{
	const char *member = dbus_message_get_member(msg);
	const char *iface = NULL, *name = NULL;
	if (!strcmp(member, "GetAll")) {
		if (!dbus_message_get_args(msg, NULL, DBUS_TYPE_STRING, &iface, DBUS_TYPE_INVALID))
			return bd_error_reply(msg, -EINVAL, "GetAll expects (s interface_name)");
		DBusMessage *r = dbus_message_new_method_return(msg);
		DBusMessageIter it, d;
		if (!r)
			return NULL;
		dbus_message_iter_init_append(r, &it);
		dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{sv}", &d);
		if (f && (!*iface || !strcmp(iface, f->name)))
			for (const struct bd_prop *p = f->props; p && p->name; p++) {
				DBusMessageIter e, v;
				dbus_message_iter_open_container(&d, DBUS_TYPE_DICT_ENTRY, NULL, &e);
				dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &p->name);
				dbus_message_iter_open_container(&e, DBUS_TYPE_VARIANT, p->sig, &v);
				p->get(&v, obj);
				dbus_message_iter_close_container(&e, &v);
				dbus_message_iter_close_container(&d, &e);
			}
		dbus_message_iter_close_container(&it, &d);
		return r;
	}
	if (!strcmp(member, "Get") || !strcmp(member, "Set")) {
		bool set = member[0] == 'S';
		DBusMessageIter it;
		if (!dbus_message_iter_init(msg, &it) ||
		    strcmp(dbus_message_get_signature(msg), set ? "ssv" : "ss"))
			return bd_error_reply(msg, -EINVAL, "%s expects (ss%s)", member, set ? "v" : "");
		dbus_message_iter_get_basic(&it, &iface);
		dbus_message_iter_next(&it);
		dbus_message_iter_get_basic(&it, &name);
		if (!f || (*iface && strcmp(iface, f->name)))
			return bd_error_reply(msg, -EINVAL, "no interface '%s' on this object", iface);
		for (const struct bd_prop *p = f->props; p && p->name; p++)
			if (!strcmp(p->name, name)) {
				if (set)
					return dbus_message_new_error(msg, DBUS_ERROR_PROPERTY_READ_ONLY,
					                              "every bitnetd property is read-only");
				DBusMessage *r = dbus_message_new_method_return(msg);
				DBusMessageIter o, v;
				if (!r)
					return NULL;
				dbus_message_iter_init_append(r, &o);
				dbus_message_iter_open_container(&o, DBUS_TYPE_VARIANT, p->sig, &v);
				p->get(&v, obj);
				dbus_message_iter_close_container(&o, &v);
				return r;
			}
		return dbus_message_new_error_printf(msg, DBUS_ERROR_UNKNOWN_PROPERTY,
		                                     "no property '%s' on %s", name, f->name);
	}
	return dbus_message_new_error_printf(msg, DBUS_ERROR_UNKNOWN_METHOD,
	                                     "no method %s on org.freedesktop.DBus.Properties", member);
}

static DBusHandlerResult on_message(DBusConnection *c, DBusMessage *msg, void *data)
{
	(void)c;
	(void)data;
	if (dbus_message_get_type(msg) != DBUS_MESSAGE_TYPE_METHOD_CALL)
		return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
	const char *path = dbus_message_get_path(msg);
	const char *iface = dbus_message_get_interface(msg);
	const char *member = dbus_message_get_member(msg);
	const struct bd_iface *f = NULL;
	void *obj = NULL;
	char children[4096] = "";
	bool exists = true;
	if (!strcmp(path, "/"))
		strcpy(children, "org");
	else if (!strcmp(path, "/org"))
		strcpy(children, "bitnetd");
	else if (!strcmp(path, "/org/bitnetd"))
		strcpy(children, "Daemon1");
	else if (!strcmp(path, BD_PATH)) {
		f = objs->manager;
		strcpy(children, "request");
	} else if (!strcmp(path, BD_REQ_PATH))
		objs->requests->children(children, sizeof(children));
	else if ((obj = objs->requests->find(path)))
		f = objs->requests->iface;
	else
		exists = false;

	DBusMessage *reply = NULL;
	if (!exists) {
		char why[256];
		if (objs->requests->gone(path, why, sizeof(why)))
			reply = dbus_message_new_error_printf(msg, DBUS_ERROR_UNKNOWN_OBJECT, "%s: %s",
			                                      path, why);
		else
			reply = dbus_message_new_error_printf(msg, DBUS_ERROR_UNKNOWN_OBJECT, "no object %s",
			                                      path);
	} else if (iface && !strcmp(iface, DBUS_INTERFACE_INTROSPECTABLE)) {
		if (strcmp(member, "Introspect"))
			reply = dbus_message_new_error_printf(msg, DBUS_ERROR_UNKNOWN_METHOD, "no method %s",
			                                      member);
		else {
			char *xml = introspect(path, f, children);
			if (xml) {
				reply = dbus_message_new_method_return(msg);
				if (reply)
					dbus_message_append_args(reply, DBUS_TYPE_STRING, &xml, DBUS_TYPE_INVALID);
				free(xml);
			}
		}
	} else if (iface && !strcmp(iface, DBUS_INTERFACE_PROPERTIES)) {
		reply = props_call(msg, f, obj);
	} else {
		const struct bd_method *m = NULL;
		if (f && (!iface || !strcmp(iface, f->name)))
			for (const struct bd_method *x = f->methods; x->name; x++)
				if (!strcmp(x->name, member))
					m = x;
		if (!m)
			reply = dbus_message_new_error_printf(msg, DBUS_ERROR_UNKNOWN_METHOD,
			                                      "no method %s.%s on %s", iface ? iface : "",
			                                      member, path);
		else if (!args_match(msg, m->in)) {
			char want[256] = "";
			for (const struct bd_arg *a = m->in; a && a->name; a++)
				strncat(want, a->sig, sizeof(want) - strlen(want) - 1);
			reply = bd_error_reply(msg, -EINVAL, "%s expects arguments (%s), got (%s)", member,
			                       want, dbus_message_get_signature(msg));
		} else {
			reply = m->fn(msg, obj);
			if (!reply)
				return DBUS_HANDLER_RESULT_HANDLED;   /* answered later */
		}
	}
	if (!reply)
		return DBUS_HANDLER_RESULT_NEED_MEMORY;
	bd_send(reply);
	return DBUS_HANDLER_RESULT_HANDLED;
}

static DBusHandlerResult on_filter(DBusConnection *c, DBusMessage *msg, void *data)
{
	(void)c;
	(void)data;
	if (dbus_message_is_signal(msg, DBUS_INTERFACE_LOCAL, "Disconnected")) {
		bn_log(BN_LOG_ERR, "lost the connection to the bus");
		disconnected = true;
		return DBUS_HANDLER_RESULT_HANDLED;
	}
	if (dbus_message_is_signal(msg, DBUS_INTERFACE_DBUS, "NameOwnerChanged") &&
	    dbus_message_has_sender(msg, DBUS_SERVICE_DBUS)) {
		const char *name, *old, *new;
		if (dbus_message_get_args(msg, NULL, DBUS_TYPE_STRING, &name, DBUS_TYPE_STRING, &old,
		                          DBUS_TYPE_STRING, &new, DBUS_TYPE_INVALID) &&
		    name[0] == ':' && !*new)
			objs->name_lost(name);
	}
	return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
}

int bd_bus_connect(int bus_type, const char *address, const struct bd_bus_objects *o)
{
	DBusError e;
	dbus_error_init(&e);
	DBusConnection *c;
	if (bus_type == 2) {
		c = dbus_connection_open_private(address, &e);
		if (c && !dbus_bus_register(c, &e)) {
			dbus_connection_close(c);
			dbus_connection_unref(c);
			c = NULL;
		}
	} else {
		c = dbus_bus_get_private(bus_type == 0 ? DBUS_BUS_SYSTEM : DBUS_BUS_SESSION, &e);
	}
	if (!c) {
		bn_log(BN_LOG_ERR, "cannot connect to the %s bus: %s",
		       bus_type == 0 ? "system" : bus_type == 1 ? "session" : address, e.message);
		dbus_error_free(&e);
		return -ECONNREFUSED;
	}
	dbus_connection_set_exit_on_disconnect(c, FALSE);
	bd.conn = c;
	objs = o;
	static const DBusObjectPathVTable vt = { .message_function = on_message };
	if (!dbus_connection_set_watch_functions(c, watch_add, watch_remove, watch_toggled, NULL, NULL) ||
	    !dbus_connection_set_timeout_functions(c, timeout_add, timeout_remove, timeout_toggled,
	                                           NULL, NULL) ||
	    !dbus_connection_add_filter(c, on_filter, NULL, NULL) ||
	    !dbus_connection_register_fallback(c, "/", &vt, NULL)) {
		bn_log(BN_LOG_ERR, "out of memory setting up the bus connection");
		return -ENOMEM;
	}
	return 0;
}

int bd_bus_request_name(void)
{
	DBusError e;
	dbus_error_init(&e);
	int r = dbus_bus_request_name(bd.conn, BD_BUS_NAME, DBUS_NAME_FLAG_DO_NOT_QUEUE, &e);
	if (r < 0) {
		bn_log(BN_LOG_ERR, "cannot own the bus name %s: %s", BD_BUS_NAME, e.message);
		dbus_error_free(&e);
		return -EACCES;
	}
	if (r != DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER) {
		bn_log(BN_LOG_ERR, "the bus name %s is already owned (is another bitnetd running?)",
		       BD_BUS_NAME);
		return -EEXIST;
	}
	return 0;
}

void bd_bus_release(void)
{
	if (!bd.conn)
		return;
	if (!disconnected) {
		DBusError e;
		dbus_error_init(&e);
		dbus_bus_release_name(bd.conn, BD_BUS_NAME, &e);
		dbus_error_free(&e);
		dbus_connection_flush(bd.conn);
	}
	dbus_connection_close(bd.conn);
	dbus_connection_unref(bd.conn);
	bd.conn = NULL;
}

static void read_signals(int sfd, const struct bd_loop *l)
{
	struct signalfd_siginfo si;
	while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		l->signal((int)si.ssi_signo);
}

/* pf and pw [2 + MAX_WATCHES]: the signalfd, the eventfd, then the enabled watches;
 * returns the count. */
static int poll_prepare(int sfd, struct pollfd *pf, DBusWatch **pw)
{
	int n = 0;
	pf[n++] = (struct pollfd){ .fd = sfd, .events = POLLIN };
	pf[n++] = (struct pollfd){ .fd = bd.efd, .events = POLLIN };
	for (int i = 0; i < MAX_WATCHES; i++) {
		DBusWatch *w = watches[i];
		if (!w || !dbus_watch_get_enabled(w))
			continue;
		unsigned fl = dbus_watch_get_flags(w);
		pf[n] = (struct pollfd){ .fd = dbus_watch_get_unix_fd(w),
		                         .events = (short)((fl & DBUS_WATCH_READABLE ? POLLIN : 0) |
		                                           (fl & DBUS_WATCH_WRITABLE ? POLLOUT : 0)) };
		pw[n++] = w;
	}
	return n;
}

/* Milliseconds until the next enabled timeout is due, -1 for none. */
static int timeouts_next(void)
{
	int tmo = -1;
	double now = now_ms();
	for (int i = 0; i < MAX_TIMEOUTS; i++)
		if (timeouts[i] && dbus_timeout_get_enabled(timeouts[i])) {
			double d = timeout_due[i] - now;
			int ms = d < 0 ? 0 : (int)d + 1;
			if (tmo < 0 || ms < tmo)
				tmo = ms;
		}
	return tmo;
}

static void timeouts_run(void)
{
	double now = now_ms();
	for (int i = 0; i < MAX_TIMEOUTS; i++)
		if (timeouts[i] && dbus_timeout_get_enabled(timeouts[i]) && timeout_due[i] <= now) {
			timeout_due[i] = now + dbus_timeout_get_interval(timeouts[i]);
			dbus_timeout_handle(timeouts[i]);
		}
}

static void watches_handle(const struct pollfd *pf, DBusWatch **pw, int n)
{
	for (int i = 2; i < n; i++) {
		if (!pf[i].revents)
			continue;
		unsigned fl = 0;
		if (pf[i].revents & POLLIN)
			fl |= DBUS_WATCH_READABLE;
		if (pf[i].revents & POLLOUT)
			fl |= DBUS_WATCH_WRITABLE;
		if (pf[i].revents & POLLERR)
			fl |= DBUS_WATCH_ERROR;
		if (pf[i].revents & POLLHUP)
			fl |= DBUS_WATCH_HANGUP;
		/* the watch may have been removed by an earlier handle in this round */
		for (int j = 0; j < MAX_WATCHES; j++)
			if (watches[j] == pw[i]) {
				dbus_watch_handle(pw[i], fl);
				break;
			}
	}
}

int bd_bus_run(int sfd, const struct bd_loop *l)
{
	for (;;) {
		while (bd.conn && dbus_connection_dispatch(bd.conn) == DBUS_DISPATCH_DATA_REMAINS)
			;
		l->idle();
		if (disconnected)
			return 1;
		if (l->done())
			return 0;
		struct pollfd pf[2 + MAX_WATCHES];
		DBusWatch *pw[2 + MAX_WATCHES];
		int n = poll_prepare(sfd, pf, pw);
		int r = poll(pf, (nfds_t)n, timeouts_next());
		if (r < 0 && errno != EINTR) {
			bn_log(BN_LOG_ERR, "poll: %s", strerror(errno));
			return 1;
		}
		timeouts_run();
		if (r <= 0)
			continue;
		watches_handle(pf, pw, n);
		if (pf[1].revents & POLLIN) {
			uint64_t v;
			ssize_t k = read(bd.efd, &v, sizeof(v));
			(void)k;
			l->wake();
		}
		if (pf[0].revents & POLLIN)
			read_signals(sfd, l);
	}
}
