/* Library logging: libbitnet never prints; it hands messages to a sink the application
 * installs (the tools print to stderr, the daemon adds syslog <N> prefixes). */
#ifndef BN_LOG_H
#define BN_LOG_H

enum bn_log_level { BN_LOG_ERR = 3, BN_LOG_WARNING = 4, BN_LOG_NOTICE = 5, BN_LOG_INFO = 6, BN_LOG_DEBUG = 7 };

typedef void (*bn_log_sink)(int level, const char *msg, void *user);

void bn_log_set_sink(bn_log_sink sink, void *user);
void bn_log_set_level(int max_level);   /* messages above this level are dropped */
int bn_log_get_level(void);
void bn_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
