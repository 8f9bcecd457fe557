/* Errors: fallible functions return 0 or a negative errno and may fill a struct bn_error
 * with a message that names the file, key, tensor or option at fault. */
#ifndef BN_ERROR_H
#define BN_ERROR_H

#include <stddef.h>

struct bn_error {
	int code;          /* negative errno, 0 when unset */
	char msg[512];
};

/* Sets err (if not NULL) and returns code (a negative errno). printf-style. */
int bn_err_set(struct bn_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Prefixes an existing message: "prefix: old message". Returns err->code. */
int bn_err_prefix(struct bn_error *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* The one error table: a short description and a D-Bus error name for each errno the
 * project uses. Unknown codes give strerror-like text and org.freedesktop.DBus.Error.Failed. */
const char *bn_strerror(int code);
const char *bn_error_dbus_name(int code);

#endif
