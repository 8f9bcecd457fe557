/* The sd_notify protocol without libsystemd: one datagram per state change to the
 * AF_UNIX socket named by $NOTIFY_SOCKET ("@..." is the abstract namespace). */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "notify.h"

void bd_notify(const char *fmt, ...)
{
	const char *path = getenv("NOTIFY_SOCKET");
	if (!path || !*path)
		return;
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(msg))
		return;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t pl = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || pl >= sizeof(sa.sun_path)) {
		bn_log(BN_LOG_WARNING, "NOTIFY_SOCKET '%s' is not a usable socket address", path);
		return;
	}
	memcpy(sa.sun_path, path, pl);
	if (path[0] == '@')
		sa.sun_path[0] = '\0';
	socklen_t sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + pl);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&sa, sl) < 0)
		bn_log(BN_LOG_DEBUG, "sd_notify to %s: %s", path, strerror(errno));
	close(fd);
}

static _Thread_local char *cap_buf;   /* [cap_len]; only the thread that set it captures */
static _Thread_local size_t cap_len;

void bd_log_capture(char *buf, size_t len)
{
	cap_buf = buf;
	cap_len = len;
	if (buf && len)
		buf[0] = '\0';
}

static void log_sink(int level, const char *msg, void *user)
{
	(void)user;
	if (cap_buf && level <= BN_LOG_WARNING) {
		size_t l = strlen(cap_buf);
		if (l + 3 < cap_len)
			snprintf(cap_buf + l, cap_len - l, "%s%s", l ? "; " : "", msg);
	}
	/* One write per line so concurrent threads do not interleave inside a line. */
	char line[1200];
	int n = snprintf(line, sizeof(line), "<%d>%s\n", level, msg);
	if (n > 0)
		fwrite(line, 1, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1, stderr);
}

void bd_log_install(void)
{
	setvbuf(stderr, NULL, _IOLBF, 0);
	bn_log_set_sink(log_sink, NULL);
}
