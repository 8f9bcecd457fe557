/* systemd integration without libsystemd (notify.c): the sd_notify datagrams that report
 * the daemon's state, and the log sink that keeps journald's priorities. Depends on
 * nothing of the daemon. */
#ifndef BD_NOTIFY_H
#define BD_NOTIFY_H

#include <stddef.h>

/* Sends one datagram of newline-separated assignments to $NOTIFY_SOCKET (no-op without it). */
void bd_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Log lines go to stderr as "<N>message" so journald keeps their priority. */
void bd_log_install(void);
/* While buf is set, error and warning lines are also appended to it ("; " separated). */
void bd_log_capture(char *buf, size_t len);

#endif
