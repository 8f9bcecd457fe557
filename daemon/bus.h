/* libdbus glue shared by bus.c, manager.c and bus_request.c: interfaces are tables, and
 * the same tables dispatch calls, answer Properties and produce the introspection XML. */
#ifndef BD_BUS_H
#define BD_BUS_H

#include <dbus/dbus.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define BD_BUS_NAME "org.bitnetd.Daemon1"
#define BD_PATH "/org/bitnetd/Daemon1"
#define BD_REQ_PATH BD_PATH "/request"
#define BD_IFACE_MANAGER "org.bitnetd.Daemon1.Manager"
#define BD_IFACE_REQUEST "org.bitnetd.Daemon1.Request"
/* Largest reply or signal body the daemon builds: a quarter of the system bus's default
 * 32 MiB message limit (a message over the limit makes the bus drop the sender). */
#define BD_REPLY_MAX (8u << 20)

struct bd_arg {
	const char *name, *sig;
};

/* Returns the reply (a method return or an error), or NULL when the reply comes later. */
typedef DBusMessage *(*bd_method_fn)(DBusMessage *msg, void *obj);
typedef bool (*bd_prop_get_fn)(DBusMessageIter *it, void *obj);

struct bd_method {
	const char *name;
	const struct bd_arg *in, *out;   /* { NULL } terminated */
	bd_method_fn fn;
};

struct bd_signal {
	const char *name;
	const struct bd_arg *args;
};

struct bd_prop {
	const char *name, *sig;
	bd_prop_get_fn get;
	unsigned mask;                   /* BD_PROP_* group that changes it; 0: constant */
};

struct bd_iface {
	const char *name;
	const struct bd_method *methods;
	const struct bd_signal *signals;
	const struct bd_prop *props;     /* each { NULL } terminated */
};

int bd_bus_connect(int bus_type, const char *address);   /* 0 system, 1 session, 2 address */
int bd_bus_request_name(void);
void bd_bus_release(void);
/* poll loop on the bus, signalfd and eventfd until quit; returns the exit code */
int bd_bus_run(int sfd);
/* Prints the introspection XML of the Manager object (the installed interface file). */
void bd_bus_print_interfaces(FILE *f);

extern const struct bd_iface bd_manager_iface;
extern const struct bd_iface bd_request_iface;

/* Error reply named by an errno through the project's one table (lib/error.c). */
DBusMessage *bd_error_reply(DBusMessage *msg, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Sends and unrefs m; false when out of memory. */
bool bd_send(DBusMessage *m);

/* Appends a dictionary entry {key: variant(sig, value)} to an a{sv} being built. */
bool bd_dict_add(DBusMessageIter *dict, const char *key, int type, const void *value);

/* bus_request.c: the D-Bus door of requests */
DBusMessage *bd_generate(DBusMessage *msg, bool chat);
DBusMessage *bd_tokenize(DBusMessage *msg);
struct bd_request *bd_request_find(const char *path);
/* For a request path that names no live object: what became of it, in buf. */
bool bd_request_gone_text(const char *path, char *buf, size_t len);
void bd_request_list_children(char *buf, size_t len);

#endif
