/* libdbus glue shared by bus.c, manager.c and bus_request.c: interfaces are tables, and
 * the same tables dispatch calls, answer Properties and produce the introspection XML.
 * bus.c sits below the D-Bus objects (manager.c, bus_request.c), which call its glue;
 * it reaches them, and the rest of the daemon, only through the tables main.c hands it
 * (struct bd_bus_objects, struct bd_loop). */
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

extern const struct bd_iface bd_manager_iface;   /* manager.c */

/* Error reply named by an errno through the project's one table (lib/error.c). */
DBusMessage *bd_error_reply(DBusMessage *msg, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Sends and unrefs m; false when out of memory. */
bool bd_send(DBusMessage *m);

/* Appends a dictionary entry {key: variant(sig, value)} to an a{sv} being built. */
bool bd_dict_add(DBusMessageIter *dict, const char *key, int type, const void *value);

/* Objects looked up at each call: the requests under BD_REQ_PATH. */
struct bd_bus_subtree {
	const struct bd_iface *iface;
	void *(*find)(const char *path);                         /* the object at path, or NULL */
	void (*children)(char *buf, size_t len);                 /* child nodes, ' ' separated */
	bool (*gone)(const char *path, char *buf, size_t len);   /* why path names no object */
};

/* What the daemon puts on the bus (main.c wires it). */
struct bd_bus_objects {
	const struct bd_iface *manager;            /* at BD_PATH */
	const struct bd_bus_subtree *requests;     /* under BD_REQ_PATH */
	void (*name_lost)(const char *name);       /* a unique name left the bus */
};

/* The loop's calls out, each on the bus thread. */
struct bd_loop {
	void (*idle)(void);                        /* after dispatching, before polling */
	bool (*done)(void);                        /* true: the loop returns 0 */
	void (*wake)(void);                        /* the generation thread's eventfd fired */
	void (*signal)(int signo);                 /* each signal read from the signalfd */
};

int bd_bus_connect(int bus_type, const char *address, const struct bd_bus_objects *o);
int bd_bus_request_name(void);
void bd_bus_release(void);
/* Polls the bus (when connected), the signalfd and the eventfd until lost or done;
 * returns the exit code. */
int bd_bus_run(int sfd, const struct bd_loop *l);
/* Prints the introspection XML of o's interfaces (the installed interface file). */
void bd_bus_print_interfaces(FILE *f, const struct bd_bus_objects *o);

/* manager.c and bus_request.c: Generate, Chat and Tokenize are the request door's */
DBusMessage *bd_generate(DBusMessage *msg, bool chat);
DBusMessage *bd_tokenize(DBusMessage *msg);
extern const struct bd_bus_subtree bd_request_objects;

#endif
