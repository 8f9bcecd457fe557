/* The options a{sv} of Generate, Chat and Tokenize: read, type-checked and range-checked
 * against the configuration's limits. No bus I/O: the caller turns an error into a reply
 * (and tests/fuzz feeds it serialized messages). */
#ifndef BD_OPTIONS_H
#define BD_OPTIONS_H

#include <dbus/dbus.h>
#include <stdbool.h>

#include "conf.h"
#include "error.h"
#include "generate.h"
#include "stop.h"

struct bd_req_opts {
	struct bn_gen_opts gen;
	const char *stops[BN_STOP_MAX_STRINGS + 1];   /* [n_stops], pointers into the message */
	size_t n_stops;
	const char *template_name;   /* NULL: the method's default */
	const char *system;
	bool seed_set;
	bool add_bos, add_bos_set, parse_special;
};

enum bd_opts_table { BD_OPTS_GENERATE, BD_OPTS_TOKENIZE };

/* Reads the a{sv} at it into o (defaults from cfg). Returns 0, or a negative errno with
 * err's message naming the option. Strings in o point into the message. */
int bd_opts_parse(DBusMessageIter *it, enum bd_opts_table t, const struct bd_config *cfg,
                  struct bd_req_opts *o, struct bn_error *err);

#endif
