/* The model file under the daemon's feet. The weights are a read-only mapping of the file:
 * if someone truncates it, touching a page past the new end raises SIGBUS in whichever
 * thread touches it (the generation thread, a pool worker, the bus thread reading
 * metadata); if someone writes into it, the served weights change silently. So:
 * - a SIGBUS inside a watched mapping replaces the whole mapping with zero pages and
 *   marks it; the faulting load then reads 0 and the thread carries on;
 * - after every engine step, and before admitting a request, bd_model_check looks at that
 *   mark and at the open file's size and modification time;
 * - a changed model fails the running and new requests with ModelChanged until a reload
 *   maps the file again. Anything else that raises SIGBUS still kills the daemon. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "gguf.h"
#include "guard.h"
#include "log.h"
#include "model.h"
#include "worker.h"

#define GUARD_MAX 4   /* mappings alive at once: the served model and one being loaded */

static struct {
	_Atomic uintptr_t base;
	_Atomic size_t size;
	atomic_bool tripped;
} guard[GUARD_MAX];

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	uintptr_t a = (uintptr_t)si->si_addr;
	for (int i = 0; i < GUARD_MAX; i++) {
		uintptr_t b = atomic_load(&guard[i].base);
		size_t n = atomic_load(&guard[i].size);
		if (!b || a < b || a - b >= n)
			continue;
		/* mmap is a plain system call: safe here in practice, and the only way on */
		void *p = mmap((void *)b, n, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		if (p == MAP_FAILED)
			break;
		atomic_store(&guard[i].tripped, true);
		return;
	}
	/* not a model page: the default action, as without this handler */
	signal(SIGBUS, SIG_DFL);
}

int bd_guard_install(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	return sigaction(SIGBUS, &sa, NULL) ? -errno : 0;
}

static int slot_of(const struct bd_model *m)
{
	uintptr_t b = (uintptr_t)bn_model_gguf(m->model)->base;
	for (int i = 0; i < GUARD_MAX; i++)
		if (atomic_load(&guard[i].base) == b)
			return i;
	return -1;
}

void bd_guard_watch(struct bd_model *m)
{
	const struct bn_gguf *g = bn_model_gguf(m->model);
	if (!g->mapped)
		return;
	for (int i = 0; i < GUARD_MAX; i++) {
		if (atomic_load(&guard[i].base))
			continue;
		atomic_store(&guard[i].tripped, false);
		atomic_store(&guard[i].size, g->size);
		atomic_store(&guard[i].base, (uintptr_t)g->base);
		return;
	}
	bn_log(BN_LOG_WARNING, "%s: more than %d model mappings at once; this one is not guarded "
	       "against truncation", bn_model_path(m->model), GUARD_MAX);
}

void bd_guard_unwatch(struct bd_model *m)
{
	int i = slot_of(m);
	if (i < 0)
		return;
	atomic_store(&guard[i].base, 0);
	atomic_store(&guard[i].size, 0);
}

int bd_model_check(struct bd_model *m, struct bn_error *err)
{
	const char *path = bn_model_path(m->model);
	if (atomic_load(&m->stale))
		return bn_err_set(err, -ESTALE, "%s: the model file changed on disk while it was "
		                  "served; reload to serve it again", path);
	int i = slot_of(m);
	int rc = 0;
	if (i >= 0 && atomic_load(&guard[i].tripped))
		rc = bn_err_set(err, -ESTALE, "%s: the mapped model file was truncated while it was "
		                "served; reload to serve it again", path);
	else if ((rc = bn_gguf_check_file(bn_model_gguf(m->model), path, err)) && rc != -ESTALE)
		rc = 0;   /* cannot stat the open file: nothing known to have changed */
	if (rc == -ESTALE && !atomic_exchange(&m->stale, true))
		bn_log(BN_LOG_ERR, "%s; requests fail with ModelChanged until then", err->msg);
	return rc;
}
