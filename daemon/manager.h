/* The Manager object (manager.c): the daemon's state machine (loading, ready, reloading,
 * stopping), its properties and their PropertiesChanged signal, and Reload (the call, or
 * SIGHUP) with the hand-over of a load's result from the generation thread. A D-Bus
 * object above bus.c's glue; its Generate, Chat and Tokenize are the request door's. */
#ifndef BD_MANAGER_H
#define BD_MANAGER_H

#include <stddef.h>

#include "bitnetd.h"

void bd_set_state(enum bd_state s);
const char *bd_state_name(enum bd_state s);
/* Re-reads the configuration and asks the generation thread to load it; reply_to is the
 * Reload() call to answer (a DBusMessage), NULL for SIGHUP. */
void bd_reload_begin(void *reply_to);
/* The generation thread reported a load result: applies it and answers Reload(). */
void bd_reload_finish(void);
/* Applies a finished load's result on the bus thread; returns its error (why filled). */
int bd_load_take(char *why, size_t why_len);
/* Sends PropertiesChanged for the groups marked since the last flush. */
void bd_props_flush(void);
void bd_manager_cleanup(void);

#endif
