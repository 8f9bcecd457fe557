/* The model file under the daemon's feet (guard.c): a SIGBUS inside a mapped model, or a
 * file changed since the load, marks the model stale instead of killing the daemon. */
#ifndef BD_GUARD_H
#define BD_GUARD_H

struct bd_model;
struct bn_error;

int bd_guard_install(void);             /* the SIGBUS handler; once, at start */
void bd_guard_watch(struct bd_model *m);
void bd_guard_unwatch(struct bd_model *m);
/* 0 while m's file is as loaded, else -ESTALE naming what happened (sticky, logged once). */
int bd_model_check(struct bd_model *m, struct bn_error *err);

#endif
