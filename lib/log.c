#include <stdarg.h>
#include <stdio.h>

#include "log.h"

static bn_log_sink log_sink;
static void *log_user;
static int log_level = BN_LOG_INFO;

void bn_log_set_sink(bn_log_sink sink, void *user)
{
	log_sink = sink;
	log_user = user;
}

void bn_log_set_level(int max_level)
{
	log_level = max_level;
}

int bn_log_get_level(void)
{
	return log_level;
}

void bn_log(int level, const char *fmt, ...)
{
	if (!log_sink || level > log_level)
		return;
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	log_sink(level, buf, log_user);
}
