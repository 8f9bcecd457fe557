/* Prometheus metrics of bitnetd (metrics.c). */
#ifndef BD_METRICS_H
#define BD_METRICS_H

#include "request.h"

/* Bus thread, when a request ends (either door): its waits and token times. */
void bd_metrics_observe(const struct bd_request *r);
/* Any thread: one HTTP response with this status. */
void bd_metrics_http_code(unsigned code);
/* Bus thread: the whole /metrics body (malloc'd), NULL when out of memory. */
char *bd_metrics_text(void);

#endif
