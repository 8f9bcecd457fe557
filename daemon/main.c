/* bitnetd: serves one BitNet b1.58 model over D-Bus. Runs in the foreground; systemd
 * (Type=notify) supervises it. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "bitnetd.h"
#include "bus.h"
#include "cpu.h"
#include "guard.h"
#include "http.h"
#include "log.h"
#include "manager.h"
#include "notify.h"
#include "request.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "0"
#endif

/* exit codes (bitnetd(8)) */
#define EXIT_USAGE 2
#define EXIT_CONFIG 6      /* LSB "not configured" */

struct bd bd = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.cond = PTHREAD_COND_INITIALIZER,
	.efd = -1,
};

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: bitnetd [--config FILE] [--system | --session | --address ADDR | --no-bus]\n"
	        "       bitnetd --check-config [--config FILE]\n"
	        "       bitnetd --version | --print-defaults | --introspect\n"
	        "  --config FILE     configuration (default " BD_DEFAULT_CONFIG ")\n"
	        "  --system          serve on the system bus (default)\n"
	        "  --session         serve on the session bus\n"
	        "  --address ADDR    serve on the bus at this D-Bus address\n"
	        "  --no-bus          serve HTTP only ([http] listen), e.g. one of several instances\n"
	        "  --check-config    check the configuration, print every problem, exit non-zero on any\n"
	        "  --print-defaults  print every configuration key at its default\n"
	        "  --introspect      print the D-Bus interface XML\n");
}

/* ---- the wiring: what the bus thread's loop and bus.c reach, named here only ---------- */

static void on_signal(int signo)
{
	switch (signo) {
	case SIGTERM:
	case SIGINT:
		if (bd.state != BD_STOPPING) {
			bn_log(BN_LOG_NOTICE, "%s: stopping", strsignal(signo));
			bd_notify("STOPPING=1\nSTATUS=Stopping");
			bd_set_state(BD_STOPPING);
			bd_requests_cancel_owner(NULL);
		}
		break;
	case SIGHUP:
		if (bd.state == BD_READY)
			bd_reload_begin(NULL);
		else
			bn_log(BN_LOG_NOTICE, "SIGHUP ignored: the daemon is %s", bd_state_name(bd.state));
		break;
	}
}

/* Stopping is done once every request has been cancelled or finished. */
static bool loop_done(void)
{
	if (bd.state != BD_STOPPING)
		return false;
	pthread_mutex_lock(&bd.lock);
	bool idle = !bd.n_running && !bd.qhead && !bd.load_pending && !bd.all;
	pthread_mutex_unlock(&bd.lock);
	return idle;
}

static void on_wake(void)
{
	bd_http_service();
	bd_requests_pump();
}

static const struct bd_loop loop = { bd_props_flush, loop_done, on_wake, on_signal };

static const struct bd_bus_objects objects = {
	&bd_manager_iface, &bd_request_objects, bd_requests_cancel_owner,
};

static void plain_sink(int level, const char *msg, void *user)
{
	(void)user;
	fprintf(stderr, "%s%s\n", level <= BN_LOG_ERR ? "error: " : level == BN_LOG_WARNING ?
	        "warning: " : "", msg);
}

/* Returned by the steps of main to go on; anything else is the exit status. */
#define GO (-1)

/* bus_type values; 0..2 are bd_bus_connect's */
#define BUS_NONE 3

struct args {
	const char *config, *address;
	int bus_type;                   /* 0 system, 1 session, 2 address, BUS_NONE */
	bool check;
};

static int args_parse(int argc, char **argv, struct args *a)
{
	enum { O_CHECK = 1000, O_VERSION, O_SYSTEM, O_SESSION, O_ADDRESS, O_NOBUS, O_DEFAULTS,
	       O_INTROSPECT };
	static const struct option lo[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "system", no_argument, NULL, O_SYSTEM },
		{ "session", no_argument, NULL, O_SESSION },
		{ "address", required_argument, NULL, O_ADDRESS },
		{ "no-bus", no_argument, NULL, O_NOBUS },
		{ "check-config", no_argument, NULL, O_CHECK },
		{ "print-defaults", no_argument, NULL, O_DEFAULTS },
		{ "introspect", no_argument, NULL, O_INTROSPECT },
		{ "version", no_argument, NULL, O_VERSION },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	*a = (struct args){ .config = BD_DEFAULT_CONFIG };
	int n_bus = 0;
	int c;
	while ((c = getopt_long(argc, argv, "c:h", lo, NULL)) != -1) {
		switch (c) {
		case 'c': a->config = optarg; break;
		case O_SYSTEM: a->bus_type = 0; n_bus++; break;
		case O_SESSION: a->bus_type = 1; n_bus++; break;
		case O_ADDRESS: a->bus_type = 2; a->address = optarg; n_bus++; break;
		case O_NOBUS: a->bus_type = BUS_NONE; n_bus++; break;
		case O_CHECK: a->check = true; break;
		case O_VERSION: printf("bitnetd %s\n", PACKAGE_VERSION); return 0;
		case O_DEFAULTS: bd_config_print_defaults(stdout); return 0;
		case O_INTROSPECT: bd_bus_print_interfaces(stdout, &objects); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return EXIT_USAGE;
		}
	}
	if (optind != argc || n_bus > 1) {
		if (n_bus > 1)
			fprintf(stderr, "bitnetd: --system, --session, --address and --no-bus exclude each "
			        "other\n");
		usage(stderr);
		return EXIT_USAGE;
	}
	return GO;
}

/* --check-config: plain messages for a person at a terminal. */
static int check_config(const char *config)
{
	bn_log_set_sink(plain_sink, NULL);
	bn_log_set_level(BN_LOG_INFO);
	struct bd_config cfg;
	int errors = bd_config_load(&cfg, config, true);
	if (errors < 0) {
		fprintf(stderr, "%s: unusable\n", config);
		return EXIT_CONFIG;
	}
	if (errors) {
		fprintf(stderr, "%s: configuration has errors (%d)\n", config, errors);
		return EXIT_CONFIG;
	}
	/* the model file was only opened and its magic read; loading it is the daemon's */
	printf("%s: configuration OK\n", config);
	return 0;
}

/* The signalfd (SIGTERM, SIGINT, SIGHUP) in *sfd and the generation thread's eventfd. */
static int events_open(int *sfd)
{
	/* before any thread exists, so every thread inherits the mask */
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	if (pthread_sigmask(SIG_BLOCK, &mask, NULL)) {
		fprintf(stderr, "bitnetd: cannot block signals\n");
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	*sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	bd.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (*sfd < 0 || bd.efd < 0) {
		fprintf(stderr, "bitnetd: signalfd/eventfd: %s\n", strerror(errno));
		return 1;
	}
	return GO;
}

/* The journald log sink, the SIGBUS guard, the configuration into cfg and bd, the CPU. */
static int startup(const char *config, struct bd_config *cfg)
{
	bd_log_install();
	if (bd_guard_install())
		bn_log(BN_LOG_WARNING, "cannot install the SIGBUS handler: a truncated model file "
		       "will stop the daemon");
	bd.config_path = config;
	bd.state = BD_LOADING;
	bd_notify("STATUS=Reading %s", config);
	int errors = bd_config_load(cfg, config, false);
	if (errors) {
		bn_log(BN_LOG_ERR, "%s: not starting: the configuration has errors", config);
		bd_notify("STATUS=Configuration errors in %s\nERRNO=%d", config, EINVAL);
		return EXIT_CONFIG;
	}
	bn_log_set_level(cfg->log_level);
	bd.cfg = *cfg;
	bd.cpu_features = bn_cpu_features();
	const char *off;
	uint64_t offmask;
	int dis = bn_cpu_disable_env(&off, &offmask);
	if (dis < 0)
		bn_log(BN_LOG_WARNING, "BITNET_CPU_DISABLE='%s' is not a list of feature names; ignored",
		       off);
	else if (dis)
		bn_log(BN_LOG_INFO, "BITNET_CPU_DISABLE='%s': running as if the CPU lacked these", off);
	char feat[512];
	bn_log(BN_LOG_INFO, "bitnetd %s starting; CPU features: %s", PACKAGE_VERSION,
	       bn_cpu_features_str(bd.cpu_features, feat, sizeof(feat)));
	return GO;
}

/* Waits for the first load, which runs on the generation thread, keeping systemd's start
 * timeout from firing while a large model is mapped and checked. True when SIGTERM or
 * SIGINT came meanwhile. */
static bool load_wait(int sfd)
{
	bool stop = false;
	for (;;) {
		struct pollfd pf[2] = { { .fd = bd.efd, .events = POLLIN }, { .fd = sfd, .events = POLLIN } };
		int r = poll(pf, 2, 5000);
		if (r == 0) {
			bd_notify("EXTEND_TIMEOUT_USEC=20000000");
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (pf[1].revents) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
				if (si.ssi_signo != SIGHUP)
					stop = true;
		}
		if (pf[0].revents) {
			uint64_t v;
			ssize_t k = read(bd.efd, &v, sizeof(v));
			(void)k;
			pthread_mutex_lock(&bd.lock);
			bool done = bd.load_done;
			pthread_mutex_unlock(&bd.lock);
			if (done)
				return stop;
		}
	}
}

/* After the first load: the bus name and the HTTP listener, then the event loop until
 * stopped. Returns the exit status. */
static int serve(const struct args *a, const struct bd_config *cfg, int sfd, bool stop)
{
	char why[512];
	if (bd_load_take(why, sizeof(why))) {
		bn_log(BN_LOG_ERR, "not starting: %s", why);
		bd_notify("STATUS=Failed: %s", why);
		return 1;
	}
	if (stop)
		return 0;
	if (a->bus_type == BUS_NONE && !cfg->http_listen[0]) {
		bn_log(BN_LOG_ERR, "not starting: --no-bus serves HTTP only, and %s sets no [http] listen",
		       a->config);
		return 1;
	}
	bd_notify("STATUS=Connecting to the bus");
	if (a->bus_type != BUS_NONE && (bd_bus_connect(a->bus_type, a->address, &objects) ||
	                                 bd_bus_request_name()))
		return 1;
	struct bn_error herr = { 0 };
	if (bd_http_start(cfg, &herr)) {
		bn_log(BN_LOG_ERR, "not starting: %s", herr.msg);
		bd_notify("STATUS=Failed: %s", herr.msg);
		return 1;
	}
	bd_set_state(BD_READY);
	bn_log(BN_LOG_NOTICE, "ready on %s as %s: kernel %s, %u threads on CPUs %s, %u slots of "
	       "context %u",
	       a->bus_type == 0 ? "the system bus" : a->bus_type == 1 ? "the session bus"
	       : a->bus_type == BUS_NONE ? "no bus (HTTP only)" : a->address,
	       BD_BUS_NAME, bd.info.kernel, bd.info.threads, bd.info.cpus, bd.info.slots,
	       bd.info.n_ctx);
	bd_notify("READY=1\nSTATUS=Ready: kernel %s, %u threads", bd.info.kernel, bd.info.threads);
	int rc = bd_bus_run(sfd, &loop);
	bd_props_flush();
	bn_log(BN_LOG_NOTICE, "stopped");
	return rc;
}

/* Stops the generation thread, leaves the bus and ends what is left. */
static void shutdown_all(int sfd)
{
	pthread_mutex_lock(&bd.lock);
	for (struct bd_request *r = bd.all; r; r = r->all_next)
		atomic_store(&r->cancel, true);
	pthread_mutex_unlock(&bd.lock);
	bd_worker_stop();
	bd_bus_release();
	bd_requests_abandon();   /* requests left after a lost bus connection */
	bd_http_stop();
	bd_manager_cleanup();
	close(sfd);
	close(bd.efd);
}

int main(int argc, char **argv)
{
	struct args a;
	int rc = args_parse(argc, argv, &a);
	if (rc != GO)
		return rc;
	if (a.check)
		return check_config(a.config);
	int sfd;
	struct bd_config cfg;
	if ((rc = events_open(&sfd)) != GO || (rc = startup(a.config, &cfg)) != GO)
		return rc;
	bd_requests_on_load(bd_reload_finish);
	int erc = bd_worker_start();
	if (erc) {
		bn_log(BN_LOG_ERR, "cannot start the generation thread: %s", strerror(-erc));
		return 1;
	}
	bd_worker_load(&cfg);
	bool stop = load_wait(sfd);
	rc = serve(&a, &cfg, sfd, stop);
	shutdown_all(sfd);
	return rc;
}
