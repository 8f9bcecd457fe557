#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "calibrate.h"
#include "cpu.h"
#include "kernels.h"
#include "log.h"
#include "model.h"
#include "pool.h"
#include "sha256.h"
#include "stats.h"

#define CALIB_FILE "kernel-calibration"
#define CALIB_ROUNDS 5              /* rounds; every candidate once per round, medians */
#define CALIB_TERNARY_BYTES (96u << 20)   /* weights per timed ternary pass: past any L3 */
#define CALIB_HEAD_BYTES (24u << 20)
#define CALIB_CHUNK 64              /* weight rows per chunk, as the forward pass */
#define CALIB_CACHE_KEEP 32         /* entries the cache file keeps */
#define CALIB_MARGIN 0.95           /* another variant must be 5 % faster than the priority pick */

/* Features that only select a plugin's code path (never required by one of ours): masking
 * them off in bn_kernel_open's argument yields the plugin's other variants. */
static const uint64_t optional_bits[] = { BN_CPU_AMXINT8, BN_CPU_AVX512VNNI, BN_CPU_AVXVNNI,
                                          BN_CPU_ASIMDDP };

/* ---- what the choice depends on ----------------------------------------------------- */

static void cpu_model_name(char *buf, size_t len)
{
	snprintf(buf, len, "unknown");
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (!f)
		return;
	char line[512];
	char fam[64] = "", mod[64] = "", step[64] = "";
	bool named = false;
	while (fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');
		if (!colon)
			continue;
		char *v = colon + 1;
		v += strspn(v, " \t");
		v[strcspn(v, "\n")] = '\0';
		if (!named && (!strncmp(line, "model name", 10) || !strncmp(line, "CPU part", 8))) {
			snprintf(buf, len, "%s", v);
			named = true;
		} else if (!fam[0] && !strncmp(line, "cpu family", 10)) {
			snprintf(fam, sizeof(fam), "%s", v);
		} else if (!mod[0] && !strncmp(line, "model\t", 6)) {
			snprintf(mod, sizeof(mod), "%s", v);
		} else if (!step[0] && !strncmp(line, "stepping", 8)) {
			snprintf(step, sizeof(step), "%s", v);
		}
		if (!strcmp(line, "\n"))
			break;   /* the first processor's block is enough */
	}
	fclose(f);
	size_t n = strlen(buf);
	if (fam[0] && n < len)
		snprintf(buf + n, len - n, " (family %s model %s stepping %s)", fam, mod, step);
}

static void key_of(const struct bn_kernel_info *list, size_t n, uint64_t cpu,
                   const struct bn_model *m, unsigned threads, const char *dir, char out[65])
{
	char cpuname[256], line[1024];
	struct bn_sha256 s;
	bn_sha256_init(&s);
	cpu_model_name(cpuname, sizeof(cpuname));
	const struct bn_hparams *hp = &m->hp;
	int l = snprintf(line, sizeof(line), "bitnet-calibration 1\ncpu %s\nfeatures %llx\nthreads %u\n"
	                 "shape %u %u %u %u %u %u head %u proj %u\n", cpuname,
	                 (unsigned long long)cpu, threads, hp->n_layer, hp->n_embd, hp->n_ff,
	                 hp->n_head, hp->n_head_kv, hp->n_vocab, m->head_type, m->proj_type);
	bn_sha256_update(&s, line, (size_t)l);
	/* a rebuilt plugin may stream differently: its size and mtime are part of the key */
	for (size_t i = 0; i < n; i++) {
		if (!list[i].usable)
			continue;
		char path[PATH_MAX];
		struct stat st;
		snprintf(path, sizeof(path), "%s/%s", dir, list[i].file);
		if (stat(path, &st))
			memset(&st, 0, sizeof(st));
		l = snprintf(line, sizeof(line), "plugin %s %lld %lld.%09ld\n", list[i].file,
		             (long long)st.st_size, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
		bn_sha256_update(&s, line, (size_t)l);
	}
	uint8_t d[32];
	bn_sha256_final(&s, d);
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
}

const char *bn_calib_default_cache(char *buf, size_t len)
{
	const char *e = getenv("CACHE_DIRECTORY");
	if (e && *e == '/') {
		snprintf(buf, len, "%.*s", (int)strcspn(e, ":"), e);
		return buf;
	}
	e = getenv("XDG_CACHE_HOME");
	if (e && *e == '/') {
		snprintf(buf, len, "%s/bitnet", e);
		return buf;
	}
	e = getenv("HOME");
	if (e && *e == '/') {
		snprintf(buf, len, "%s/.cache/bitnet", e);
		return buf;
	}
	return NULL;
}

/* ---- the cache file: "KEY PLUGIN FEATURES-HEX VARIANT MS-TOKEN" per line, newest first */

static bool cache_lookup(const char *file, const char *key, uint64_t cpu, struct bn_calib_row *r)
{
	FILE *f = fopen(file, "r");
	if (!f)
		return false;
	char line[512];
	bool hit = false;
	while (!hit && fgets(line, sizeof(line), f)) {
		char k[65], plugin[32], variant[32];
		unsigned long long feat;
		double ms;
		if (sscanf(line, "%64s %31s %llx %31s %lf", k, plugin, &feat, variant, &ms) != 5 ||
		    strcmp(k, key))
			continue;
		if (feat & ~cpu)
			continue;   /* features this process may not use (BITNET_CPU_DISABLE) */
		memset(r, 0, sizeof(*r));
		snprintf(r->plugin, sizeof(r->plugin), "%s", plugin);
		snprintf(r->variant, sizeof(r->variant), "%s", variant);
		r->cpu = feat;
		r->ms_token = ms;
		hit = true;
	}
	fclose(f);
	return hit;
}

static void mkdir_p(const char *dir)
{
	char p[512];
	snprintf(p, sizeof(p), "%s", dir);
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		mkdir(p, 0755);
		*s = '/';
	}
	mkdir(p, 0755);
}

/* Rewrites the file with this entry first and up to CALIB_CACHE_KEEP - 1 others. */
static void cache_store(const char *dir, const char *file, const char *key,
                        const struct bn_calib_row *r)
{
	mkdir_p(dir);
	char tmp[600];
	snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", file, (long)getpid());
	FILE *out = fopen(tmp, "w");
	if (!out) {
		bn_log(BN_LOG_DEBUG, "kernel calibration: cannot write %s: %s", tmp, strerror(errno));
		return;
	}
	fprintf(out, "%s %s %llx %s %.3f\n", key, r->plugin, (unsigned long long)r->cpu, r->variant,
	        r->ms_token);
	FILE *in = fopen(file, "r");
	if (in) {
		char line[512];
		int kept = 1;
		while (kept < CALIB_CACHE_KEEP && fgets(line, sizeof(line), in)) {
			if (!strncmp(line, key, 64) || strlen(line) < 66 || line[strlen(line) - 1] != '\n')
				continue;
			fputs(line, out);
			kept++;
		}
		fclose(in);
	}
	if (fclose(out) || rename(tmp, file)) {
		bn_log(BN_LOG_DEBUG, "kernel calibration: cannot write %s: %s", file, strerror(errno));
		unlink(tmp);
	}
}

/* ---- timing ------------------------------------------------------------------------- */

struct calib_job {
	const struct bn_kernel_ops *ops;
	const struct bn_tmat *const *w;   /* [nw] the timed projections */
	size_t nw, total;                 /* rows of all of them */
	const int8_t *q;                  /* [max k] */
	float qscale;
	int32_t qsum;
	float *y;                         /* [max rows] */
	const void *head;                 /* [head_rows][E] f16, or [head_rows][E/32] Q8_0 blocks */
	uint32_t head_type;               /* BN_TYPE_F16 or BN_TYPE_Q8_0 */
	const uint16_t *x16;              /* [E] f16 input of an f16 head */
	const int8_t *xq;                 /* [E] Q8_0 input of a q8_0 head ... */
	const uint16_t *xd;               /* [E/32] ... and its block scales */
	size_t head_rows, E;
	float *logits;                    /* [head_rows] */
	bool do_head;
	_Atomic size_t next;
};

static void calib_worker(void *arg, unsigned idx, unsigned n)
{
	struct calib_job *j = arg;
	(void)idx;
	(void)n;
	size_t ch, total = j->do_head ? j->head_rows : j->total;
	size_t chunk = j->do_head ? 512 : CALIB_CHUNK;
	while ((ch = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) * chunk < total) {
		size_t lo = ch * chunk, hi = lo + chunk < total ? lo + chunk : total;
		if (j->do_head && j->head_type == BN_TYPE_Q8_0) {
			j->ops->q8_gemm(j->head, j->E, lo, hi, j->xq, j->xd, 1, j->logits, j->head_rows);
			continue;
		}
		if (j->do_head) {
			j->ops->f16_gemm(j->head, j->E, lo, hi, j->x16, 1, j->logits, j->head_rows);
			continue;
		}
		size_t base = 0;
		for (size_t i = 0; i < j->nw && lo < hi; i++) {
			const struct bn_tmat *w = j->w[i];
			if (lo < base + w->rows && hi > base) {
				size_t a = lo > base ? lo - base : 0;
				size_t b = hi - base < w->rows ? hi - base : w->rows;
				j->ops->ternary_gemm(w->codes, w->k, a, b, w->scale, j->q, &j->qscale, &j->qsum,
				                     1, j->y, w->rows);
			}
			base += w->rows;
		}
	}
}

static double time_pass(struct bn_pool *pool, struct calib_job *j, bool head)
{
	j->do_head = head;
	atomic_store_explicit(&j->next, 0, memory_order_relaxed);
	double t0 = bn_now();
	bn_pool_run(pool, calib_worker, j);
	return bn_now() - t0;
}

/* Adds every distinct variant of a plugin: the plugin opened with each subset of the
 * optional features masked off. */
static void add_variants(struct bn_calib *out, struct bn_kernel **ks, const char *dir,
                         const char *name, uint64_t cpu, uint64_t required)
{
	uint64_t opt[4];
	size_t no = 0;
	for (size_t i = 0; i < sizeof(optional_bits) / sizeof(optional_bits[0]); i++)
		if ((cpu & optional_bits[i]) && !(required & optional_bits[i]))
			opt[no++] = optional_bits[i];
	for (unsigned sub = 0; sub < (1u << no) && out->n < BN_CALIB_MAX; sub++) {
		uint64_t feat = cpu;
		for (size_t b = 0; b < no; b++)
			if (sub & (1u << b))
				feat &= ~opt[b];
		struct bn_kernel *k;
		struct bn_error e = { 0 };
		if (bn_kernel_load(&k, dir, name, feat, &e))
			continue;
		bool seen = false;
		for (size_t i = 0; i < out->n; i++)
			if (!strcmp(out->rows[i].plugin, name) && !strcmp(out->rows[i].variant, k->variant))
				seen = true;
		if (seen) {
			bn_kernel_unload(k);
			continue;
		}
		struct bn_calib_row *r = &out->rows[out->n];
		memset(r, 0, sizeof(*r));
		snprintf(r->plugin, sizeof(r->plugin), "%s", name);
		snprintf(r->variant, sizeof(r->variant), "%s", k->variant);
		r->cpu = feat;
		ks[out->n++] = k;
	}
}

/* Times the loaded candidates ks[0..out->n) in interleaved rounds. */
static int measure(struct bn_calib *out, struct bn_kernel **ks, const struct bn_model *m,
                   struct bn_pool *pool)
{
	const struct bn_hparams *hp = &m->hp;
	/* the timed projections: whole layers from the first until CALIB_TERNARY_BYTES */
	const struct bn_tmat **w = calloc((size_t)hp->n_layer * 7, sizeof(*w));
	size_t nw = 0, rows = 0, maxk = 0, maxr = 0;
	double tbytes = 0, all_tbytes = 0;
	for (uint32_t l = 0; l < hp->n_layer && w; l++) {
		const struct bn_layer *L = &m->layers[l];
		const struct bn_tmat *lw[] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->wgate, &L->wup, &L->wdown };
		for (int i = 0; i < 7; i++) {
			double b = (double)lw[i]->rows * lw[i]->k / 4;
			all_tbytes += b;
			if (tbytes >= CALIB_TERNARY_BYTES)
				continue;
			w[nw++] = lw[i];
			rows += lw[i]->rows;
			tbytes += b;
			maxk = lw[i]->k > maxk ? lw[i]->k : maxk;
			maxr = lw[i]->rows > maxr ? lw[i]->rows : maxr;
		}
	}
	/* the heads a plugin op streams (f16, q8_0); f32/bf16 heads run portable code */
	bool q8 = m->head_type == BN_TYPE_Q8_0, timed = q8 || m->head_type == BN_TYPE_F16;
	size_t E = hp->n_embd, nb = E / BN_Q8_0_BLOCK;
	size_t hrow_bytes = q8 ? nb * BN_Q8_0_BLOCK_BYTES : E * 2;
	size_t hrows = timed ? CALIB_HEAD_BYTES / hrow_bytes : 0;
	if (hrows > hp->n_vocab)
		hrows = hp->n_vocab;
	int8_t *q = malloc(maxk ? maxk : 1);
	float *y = malloc((maxr ? maxr : 1) * sizeof(float));
	uint16_t *x16 = malloc(E * sizeof(uint16_t));
	int8_t *xq = malloc(E ? E : 1);                           /* [E] */
	uint16_t *xd = malloc((nb ? nb : 1) * sizeof(uint16_t));  /* [E/32] */
	float *logits = malloc((hrows ? hrows : 1) * sizeof(float));
	double *tt = calloc((size_t)out->n * CALIB_ROUNDS, sizeof(double));
	double *th = calloc((size_t)out->n * CALIB_ROUNDS, sizeof(double));
	int rc = 0;
	if (!w || !q || !y || !x16 || !xq || !xd || !logits || !tt || !th) {
		rc = -ENOMEM;
		goto done;
	}
	for (size_t i = 0; i < maxk; i++)
		q[i] = (int8_t)((i * 37u + 11u) % 255u - 127);
	for (size_t i = 0; i < E; i++)
		x16[i] = bn_f32_to_f16((float)((int)(i % 17) - 8) / 8.0f);
	for (size_t b = 0; b < nb; b++) {
		float xf[BN_Q8_0_BLOCK];   /* [32] */
		for (size_t i = 0; i < BN_Q8_0_BLOCK; i++)
			xf[i] = bn_f16_to_f32(x16[b * BN_Q8_0_BLOCK + i]);
		xd[b] = bn_q8_0_quantize_block(xf, xq + b * BN_Q8_0_BLOCK);
	}
	struct calib_job j = { NULL, w, nw, rows, q, 1.0f, 0, y, m->head, m->head_type, x16, xq, xd,
	                       hrows, E, logits, false, 0 };
	double hbytes = (double)hrows * hrow_bytes, all_hbytes = timed ? bn_model_head_bytes(m) : 0;
	int *got = calloc(out->n, sizeof(int));   /* [n] rounds measured */
	if (!got) {
		rc = -ENOMEM;
		goto done;
	}
	/* the first candidate's warm-up pass faults the pages in; then rounds over every
	 * candidate still in the race, medians of what each got */
	j.ops = &ks[0]->ops;
	time_pass(pool, &j, false);
	if (hrows)
		time_pass(pool, &j, true);
	for (int r = 0; r < CALIB_ROUNDS; r++) {
		for (size_t c = 0; c < out->n; c++) {
			struct bn_calib_row *rw = &out->rows[c];
			/* after the first round, a candidate 1.5x slower than the best is out (the
			 * scalar plugin would otherwise take most of the time) */
			if (r && rw->ms_token > 1.5 * out->rows[out->best].ms_token)
				continue;
			j.ops = &ks[c]->ops;
			tt[c * CALIB_ROUNDS + got[c]] = time_pass(pool, &j, false);
			th[c * CALIB_ROUNDS + got[c]] = hrows ? time_pass(pool, &j, true) : 0;
			got[c]++;
			double *a = tt + c * CALIB_ROUNDS, *b = th + c * CALIB_ROUNDS;
			double sa[CALIB_ROUNDS], sb[CALIB_ROUNDS];
			memcpy(sa, a, (size_t)got[c] * sizeof(double));
			memcpy(sb, b, (size_t)got[c] * sizeof(double));
			double ma = bn_median_upper(sa, (size_t)got[c]);
			double mb = bn_median_upper(sb, (size_t)got[c]);
			rw->ternary_gbps = ma > 0 ? tbytes / ma / 1e9 : 0;
			rw->head_gbps = mb > 0 ? hbytes / mb / 1e9 : 0;
			rw->ms_token = 1e3 * ((rw->ternary_gbps > 0 ? all_tbytes / (rw->ternary_gbps * 1e9) : 0) +
			                      (rw->head_gbps > 0 ? all_hbytes / (rw->head_gbps * 1e9) : 0));
		}
		out->best = 0;
		for (size_t c = 1; c < out->n; c++)
			if (out->rows[c].ms_token < out->rows[out->best].ms_token)
				out->best = c;
	}
	/* rows[0] is what the static priority picks: leave it only for a clear win, so that
	 * timing noise (tiny models, a busy machine) does not flip the choice between runs */
	if (out->best && !(out->rows[out->best].ms_token < CALIB_MARGIN * out->rows[0].ms_token))
		out->best = 0;
	free(got);
done:
	free(w);
	free(q);
	free(y);
	free(x16);
	free(xq);
	free(xd);
	free(logits);
	free(tt);
	free(th);
	return rc;
}

int bn_calibrate(struct bn_calib *out, const char *dir, uint64_t cpu, const struct bn_model *m,
                 struct bn_pool *pool, const char *cache_dir, bool use_cache,
                 struct bn_error *err)
{
	double t0 = bn_now();
	memset(out, 0, sizeof(*out));
	struct bn_kernel_info *list;
	size_t n;
	int rc = bn_kernel_scan(dir, cpu, &list, &n, err);
	if (rc)
		return rc;
	key_of(list, n, cpu, m, bn_pool_size(pool), dir, out->key);
	if (cache_dir && *cache_dir)
		snprintf(out->cache_file, sizeof(out->cache_file), "%s/%s", cache_dir, CALIB_FILE);
	if (use_cache && out->cache_file[0] && cache_lookup(out->cache_file, out->key, cpu, &out->rows[0])) {
		free(list);
		out->n = 1;
		out->from_cache = true;
		out->seconds = bn_now() - t0;
		return 0;
	}
	struct bn_kernel *ks[BN_CALIB_MAX];
	for (size_t i = 0; i < n; i++)
		if (list[i].usable)
			add_variants(out, ks, dir, list[i].name, cpu, list[i].required);
	free(list);
	if (!out->n)
		return bn_err_set(err, -ENOEXEC, "no usable kernel plugin in %s", dir);
	rc = measure(out, ks, m, pool);
	for (size_t i = 0; i < out->n; i++)
		bn_kernel_unload(ks[i]);
	if (rc)
		return bn_err_set(err, rc, "kernel calibration: out of memory");
	out->seconds = bn_now() - t0;
	if (out->cache_file[0])
		cache_store(cache_dir, out->cache_file, out->key, &out->rows[out->best]);
	return 0;
}

static void log_calib(const struct bn_calib *calib)
{
	const struct bn_calib_row *best = &calib->rows[calib->best];
	if (calib->from_cache) {
		bn_log(BN_LOG_INFO, "kernel calibration: %s (%s) from %s (measured %.1f ms a token)",
		       best->plugin, best->variant, calib->cache_file, best->ms_token);
		return;
	}
	for (size_t i = 0; i < calib->n; i++) {
		const struct bn_calib_row *r = &calib->rows[i];
		bn_log(BN_LOG_INFO, "kernel calibration: %s (%s): ternary %.2f GB/s, head %.2f GB/s, "
		       "%.1f ms a token%s", r->plugin, r->variant, r->ternary_gbps, r->head_gbps,
		       r->ms_token, i == calib->best ? " <- fastest" : "");
	}
	bn_log(BN_LOG_INFO, "kernel calibration: %zu variant%s timed in %.0f ms%s%s", calib->n,
	       calib->n == 1 ? "" : "s", 1e3 * calib->seconds,
	       calib->cache_file[0] ? "; choice kept in " : "", calib->cache_file);
}

int bn_kernel_load_for(struct bn_kernel **out, const char *dir, const char *name, uint64_t cpu,
                       const struct bn_model *m, struct bn_pool *pool, bool calibrate,
                       const char *cache_dir, struct bn_calib *calib, struct bn_error *err)
{
	struct bn_calib local;
	if (!calib)
		calib = &local;
	memset(calib, 0, sizeof(*calib));
	bool is_auto = !name || !*name || !strcmp(name, "auto");
	if (!is_auto || !calibrate)
		return bn_kernel_load(out, dir, name, cpu, err);
	int rc = bn_calibrate(calib, dir, cpu, m, pool, cache_dir, true, err);
	if (rc)
		return rc;
	log_calib(calib);
	const struct bn_calib_row *best = &calib->rows[calib->best];
	rc = bn_kernel_load(out, dir, best->plugin, best->cpu, err);
	if (calib->from_cache && (rc == -ENOENT || rc == -ENOEXEC || rc == -ENODEV)) {
		/* a stale cache entry (plugin removed or changed under the same size and time):
		 * measure again */
		bn_log(BN_LOG_WARNING, "kernel calibration: cannot load the chosen %s (%s): %s; measuring again",
		       best->plugin, best->variant, err->msg);
		if ((rc = bn_calibrate(calib, dir, cpu, m, pool, cache_dir, false, err)))
			return rc;
		log_calib(calib);
		best = &calib->rows[calib->best];
		rc = bn_kernel_load(out, dir, best->plugin, best->cpu, err);
	}
	return rc;
}
