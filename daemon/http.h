/* The OpenAI-compatible HTTP front door: POST /v1/completions and /v1/chat/completions
 * (JSON or server-sent events), GET /v1/models, /health and /metrics. Requests go through
 * the same bd_request_start, scheduler, limits and receipts as D-Bus ones.
 *
 * Threads: libmicrohttpd runs one thread per connection. Those threads never touch the
 * daemon's state: they hand each job (start a request, take a snapshot for /health,
 * /v1/models or /metrics) to the bus thread and wait for its answer; the bus thread's pump
 * hands the generated text to the connection's stream. */
#ifndef BD_HTTP_H
#define BD_HTTP_H

#include "conf.h"
#include "error.h"

struct bd_door;
struct bd_http_stream;

/* Starts the listener on cfg's [http] listen addresses (nothing when empty). Errors name
 * the address. */
int bd_http_start(const struct bd_config *cfg, struct bn_error *err);
void bd_http_stop(void);
/* Bus thread, on every wake: runs the jobs the connection threads posted. */
void bd_http_service(void);
/* The door of the requests started through HTTP (request.h); their door_data is the
 * connection's stream, of which the request holds a reference until it finishes. */
extern const struct bd_door bd_http_door;
void bd_http_stream_ref(struct bd_http_stream *s);
void bd_http_stream_unref(struct bd_http_stream *s);

#endif
