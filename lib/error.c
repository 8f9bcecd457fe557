#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "error.h"

struct err_row {
	int code;              /* positive errno */
	const char *text;
	const char *dbus;
};

/* The one table: errno -> text -> D-Bus error name. */
static const struct err_row err_table[] = {
	{ EINVAL,    "invalid argument",              "org.freedesktop.DBus.Error.InvalidArgs" },
	{ ENOMEM,    "out of memory",                 "org.freedesktop.DBus.Error.NoMemory" },
	{ EACCES,    "permission denied",             "org.freedesktop.DBus.Error.AccessDenied" },
	{ EPERM,     "operation not permitted",       "org.freedesktop.DBus.Error.AccessDenied" },
	{ EBUSY,     "busy",                          "org.bitnetd.Daemon1.Error.Busy" },
	{ EAGAIN,    "queue full",                    "org.bitnetd.Daemon1.Error.Busy" },
	{ ENOSPC,    "context full",                  "org.bitnetd.Daemon1.Error.ContextFull" },
	{ EBADMSG,   "invalid model file",            "org.bitnetd.Daemon1.Error.InvalidModel" },
	{ EPROTO,    "invalid model file",            "org.bitnetd.Daemon1.Error.InvalidModel" },
	{ EOVERFLOW, "value out of range",            "org.bitnetd.Daemon1.Error.InvalidModel" },
	{ ENOTSUP,   "unsupported",                   "org.bitnetd.Daemon1.Error.InvalidModel" },
	{ ENOEXEC,   "no usable kernel plugin",       "org.bitnetd.Daemon1.Error.NoKernel" },
	{ ENODEV,    "CPU lacks required features",   "org.bitnetd.Daemon1.Error.NoKernel" },
	{ ENOENT,    "not found",                     "org.freedesktop.DBus.Error.FileNotFound" },
	{ ECANCELED, "cancelled",                     "org.bitnetd.Daemon1.Error.Cancelled" },
	{ EALREADY,  "not ready",                     "org.bitnetd.Daemon1.Error.NotReady" },
	{ ERANGE,    "out of range",                  "org.freedesktop.DBus.Error.InvalidArgs" },
	{ EILSEQ,    "invalid UTF-8",                 "org.freedesktop.DBus.Error.InvalidArgs" },
	{ E2BIG,     "too large",                     "org.freedesktop.DBus.Error.InvalidArgs" },
	{ EIO,       "I/O error",                     "org.freedesktop.DBus.Error.IOError" },
	{ ESTALE,    "model file changed on disk",    "org.bitnetd.Daemon1.Error.ModelChanged" },
};

static const struct err_row *err_find(int code)
{
	if (code < 0)
		code = -code;
	for (size_t i = 0; i < sizeof(err_table) / sizeof(err_table[0]); i++)
		if (err_table[i].code == code)
			return &err_table[i];
	return NULL;
}

const char *bn_strerror(int code)
{
	const struct err_row *r = err_find(code);
	return r ? r->text : strerror(code < 0 ? -code : code);
}

const char *bn_error_dbus_name(int code)
{
	const struct err_row *r = err_find(code);
	return r ? r->dbus : "org.freedesktop.DBus.Error.Failed";
}

int bn_err_set(struct bn_error *err, int code, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
		if (n >= (int)sizeof(err->msg)) {
			/* cut: never in the middle of a UTF-8 character (messages quote client text,
			 * and the bus refuses invalid UTF-8) */
			size_t end = sizeof(err->msg) - 1, j = end;   /* msg[end] is the NUL */
			while (j > 0 && ((unsigned char)err->msg[j - 1] & 0xc0) == 0x80)
				j--;
			if (j > 0) {
				unsigned char lead = (unsigned char)err->msg[j - 1];
				size_t len = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
				if (j - 1 + len > end)
					err->msg[j - 1] = '\0';
			}
		}
		err->code = code;
	}
	return code;
}

int bn_err_prefix(struct bn_error *err, const char *fmt, ...)
{
	if (!err)
		return -EINVAL;
	char pre[256], old[sizeof(err->msg)];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(pre, sizeof(pre), fmt, ap);
	va_end(ap);
	memcpy(old, err->msg, sizeof(old));
	/* the prefix is short; the old message keeps what fits after it */
	snprintf(err->msg, sizeof(err->msg), "%.255s: %.250s", pre, old);
	return err->code;
}
