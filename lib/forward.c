/* The BitNet b1.58 forward pass (spec section 2) with the rounding points of the golden
 * README rules 1-6; arch llama is the same pass without the two sub-norms (wo and wdown
 * quantize their input as it is) and with interleaved RoPE. Every per-token step depends only
 * on that token's data, so the logits do not depend on how tokens are batched, which plugin
 * runs, or how many threads split rows. */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "forward.h"
#include "gguf.h"
#include "kernels.h"
#include "model.h"
#include "pool.h"
#include "profile.h"
#include "stats.h"
#include "trace.h"

struct bn_ctx {
	struct bn_model *m;
	struct bn_kernel *kernel;
	struct bn_pool *pool;
	const struct bn_kernel_ops *ops;
	uint32_t n_ctx, n_seq, n_batch;
	uint32_t kvd;                 /* n_head_kv * head_dim */
	uint32_t *seq_len;            /* [n_seq] cached positions per sequence */

	uint16_t *kcache, *vcache;    /* [n_layer][n_seq][n_ctx][kvd] f16, lazily backed */
	size_t kv_bytes;              /* bytes of each cache mapping */

	/* Scratch for n_batch tokens; W = max(n_embd, n_ff). */
	float *x;                     /* [n_batch][n_embd] residual stream */
	float *h;                     /* [n_batch][W] normed projection input */
	int8_t *q8;                   /* [n_batch][W] quantized projection input */
	float *qscale;                /* [n_batch] */
	int32_t *qsum;                /* [n_batch] */
	float *Q;                     /* [n_batch][n_embd] */
	float *K, *V;                 /* [n_batch][kvd] */
	uint16_t *q16;                /* [n_batch][n_embd] rotated q in f16 (rule 4) */
	float *att;                   /* [n_batch][n_embd] attention output */
	float *gate, *up;             /* [n_batch][n_ff] */
	float *tmp;                   /* [n_batch][n_embd] projection output before the add */
	float *rcos, *rsin;           /* [n_batch][head_dim/2] rope tables */
	uint16_t *y16;                /* [n_batch][n_embd] final normed state in f16 */
	uint16_t *yd;                 /* [n_batch][n_embd/32] its Q8_0 block scales (f16) when the
	                               * head is Q8_0; the int8 values go to q8 ([n_batch][n_embd]) */
	float *ahead;                 /* [n_threads][group][n_ctx] attention scratch */
	unsigned ahead_threads;

	struct bn_profile *prof;      /* NULL: not profiling */
	double pt, pwait;             /* profile: start of the current segment, its pool waits */
	uint64_t pcalls;

	struct bn_trace_sink trace;   /* fn NULL: not tracing */
};

void bn_rope_table(uint32_t pos, uint32_t hd, float base, float *c, float *s)
{
	/* theta_i = pos * ts^i by repeated f32 multiplication; cos/sin rounded to f32. */
	float ts = powf(base, -2.0f / (float)hd);
	float theta = (float)pos;
	for (uint32_t i = 0; i < hd / 2; i++) {
		c[i] = (float)cos((double)theta);
		s[i] = (float)sin((double)theta);
		theta *= ts;
	}
}

void bn_rope_apply(float *v, uint32_t hd, const float *c, const float *s)
{
	uint32_t half = hd / 2;
	for (uint32_t i = 0; i < half; i++) {
		float x0 = v[i], x1 = v[i + half];
		v[i] = x0 * c[i] - x1 * s[i];
		v[i + half] = x0 * s[i] + x1 * c[i];
	}
}

void bn_rope_apply_interleaved(float *v, uint32_t hd, const float *c, const float *s)
{
	for (uint32_t i = 0; i < hd / 2; i++) {
		float x0 = v[2 * i], x1 = v[2 * i + 1];
		v[2 * i] = x0 * c[i] - x1 * s[i];
		v[2 * i + 1] = x0 * s[i] + x1 * c[i];
	}
}

/* ---- context ------------------------------------------------------------------------- */

static void *xalloc(size_t bytes)
{
	void *p = NULL;
	if (posix_memalign(&p, 64, bytes ? bytes : 1))
		return NULL;
	memset(p, 0, bytes);
	return p;
}

static void ctx_free_scratch(struct bn_ctx *c)
{
	void *bufs[] = { c->x, c->h, c->q8, c->qscale, c->qsum, c->Q, c->K, c->V, c->q16, c->att,
	                 c->gate, c->up, c->tmp, c->rcos, c->rsin, c->y16, c->yd, c->ahead };
	for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
		free(bufs[i]);
}

int bn_ctx_new(struct bn_ctx **out, struct bn_model *m, struct bn_kernel *k, struct bn_pool *p,
               const struct bn_ctx_opts *opts, struct bn_error *err)
{
	static const struct bn_ctx_opts defaults = { 0, 1, 0 };
	if (!opts)
		opts = &defaults;
	*out = NULL;
	const struct bn_hparams *hp = &m->hp;
	uint32_t n_ctx = opts->n_ctx ? opts->n_ctx : hp->n_ctx_train;
	uint32_t n_seq = opts->n_seq ? opts->n_seq : 1;
	uint32_t n_batch = opts->n_batch ? opts->n_batch : 512;
	if (n_ctx > (1u << 22) || n_seq > 256 || n_batch > 65536)
		return bn_err_set(err, -EINVAL, "context %u / sequences %u / batch %u out of range",
		                  n_ctx, n_seq, n_batch);
	if (!k)
		return bn_err_set(err, -EINVAL, "no kernel plugin given");
	struct bn_ctx *c = calloc(1, sizeof(*c));
	if (!c)
		return bn_err_set(err, -ENOMEM, "out of memory");
	c->m = m;
	c->kernel = k;
	c->ops = &k->ops;
	c->pool = p;
	c->n_ctx = n_ctx;
	c->n_seq = n_seq;
	c->n_batch = n_batch;
	c->kvd = hp->n_head_kv * hp->head_dim;
	c->seq_len = calloc(n_seq, sizeof(uint32_t));
	/* The caches are reserved, not committed: pages appear as positions are written. */
	c->kv_bytes = (size_t)hp->n_layer * n_seq * n_ctx * c->kvd * sizeof(uint16_t);
	c->kcache = mmap(NULL, c->kv_bytes, PROT_READ | PROT_WRITE,
	                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	c->vcache = mmap(NULL, c->kv_bytes, PROT_READ | PROT_WRITE,
	                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (c->kcache == MAP_FAILED)
		c->kcache = NULL;
	if (c->vcache == MAP_FAILED)
		c->vcache = NULL;
	size_t W = hp->n_embd > hp->n_ff ? hp->n_embd : hp->n_ff, B = n_batch;
	c->x = xalloc(B * hp->n_embd * sizeof(float));
	c->h = xalloc(B * W * sizeof(float));
	c->q8 = xalloc(B * W);
	c->qscale = xalloc(B * sizeof(float));
	c->qsum = xalloc(B * sizeof(int32_t));
	c->Q = xalloc(B * hp->n_embd * sizeof(float));
	c->K = xalloc(B * c->kvd * sizeof(float));
	c->V = xalloc(B * c->kvd * sizeof(float));
	c->q16 = xalloc(B * hp->n_embd * sizeof(uint16_t));
	c->att = xalloc(B * hp->n_embd * sizeof(float));
	c->gate = xalloc(B * hp->n_ff * sizeof(float));
	c->up = xalloc(B * hp->n_ff * sizeof(float));
	c->tmp = xalloc(B * hp->n_embd * sizeof(float));
	c->rcos = xalloc(B * hp->head_dim / 2 * sizeof(float));
	c->rsin = xalloc(B * hp->head_dim / 2 * sizeof(float));
	c->y16 = xalloc(B * hp->n_embd * sizeof(uint16_t));
	c->yd = xalloc(B * ((hp->n_embd + BN_Q8_0_BLOCK - 1) / BN_Q8_0_BLOCK) * sizeof(uint16_t));
	if (!c->seq_len || !c->kcache || !c->vcache || !c->x || !c->h || !c->q8 || !c->qscale ||
	    !c->qsum || !c->Q || !c->K || !c->V || !c->q16 || !c->att || !c->gate || !c->up ||
	    !c->tmp || !c->rcos || !c->rsin || !c->y16 || !c->yd) {
		bn_ctx_free(c);
		return bn_err_set(err, -ENOMEM, "out of memory for a context of %u positions x %u "
		                  "sequences (KV cache %zu MiB)", n_ctx, n_seq, 2 * c->kv_bytes >> 20);
	}
	*out = c;
	return 0;
}

void bn_ctx_free(struct bn_ctx *c)
{
	if (!c)
		return;
	if (c->kcache)
		munmap(c->kcache, c->kv_bytes);
	if (c->vcache)
		munmap(c->vcache, c->kv_bytes);
	ctx_free_scratch(c);
	free(c->seq_len);
	free(c);
}

void bn_ctx_set_kernel(struct bn_ctx *c, struct bn_kernel *k)
{
	c->kernel = k;
	c->ops = &k->ops;
}

void bn_ctx_set_pool(struct bn_ctx *c, struct bn_pool *p)
{
	c->pool = p;
}

uint32_t bn_ctx_n_ctx(const struct bn_ctx *c) { return c->n_ctx; }
uint32_t bn_ctx_n_batch(const struct bn_ctx *c) { return c->n_batch; }
uint32_t bn_ctx_n_vocab(const struct bn_ctx *c) { return c->m->hp.n_vocab; }
uint64_t bn_ctx_kv_bytes(const struct bn_ctx *c) { return 2 * (uint64_t)c->kv_bytes; }

void bn_ctx_seq_clear(struct bn_ctx *c, uint32_t seq)
{
	if (seq < c->n_seq)
		c->seq_len[seq] = 0;
}

uint32_t bn_ctx_seq_len(const struct bn_ctx *c, uint32_t seq)
{
	return seq < c->n_seq ? c->seq_len[seq] : 0;
}

static inline uint16_t *kv_at(const struct bn_ctx *c, uint16_t *cache, uint32_t l, uint32_t s,
                              uint32_t t)
{
	return cache + (((size_t)l * c->n_seq + s) * c->n_ctx + t) * c->kvd;
}

/* ---- profile ------------------------------------------------------------------------ */

static const char *const prof_names[BN_PROF_N] = {
	[BN_PROF_EMBED] = "embed", [BN_PROF_NORMQ] = "norm+quantize", [BN_PROF_QKV] = "ternary qkv",
	[BN_PROF_ROPE_KV] = "rope+kv store", [BN_PROF_ATTN] = "attention",
	[BN_PROF_WO] = "ternary wo", [BN_PROF_GATEUP] = "ternary gate+up",
	[BN_PROF_DOWN] = "ternary down", [BN_PROF_RESID] = "residual add",
	[BN_PROF_OUT_NORM] = "output norm", [BN_PROF_HEAD] = "lm head",
};

const char *bn_prof_op_name(enum bn_prof_op op)
{
	return (unsigned)op < BN_PROF_N ? prof_names[op] : "?";
}

bool bn_prof_op_streams(enum bn_prof_op op)
{
	return op == BN_PROF_QKV || op == BN_PROF_WO || op == BN_PROF_GATEUP || op == BN_PROF_DOWN ||
	       op == BN_PROF_HEAD;
}

void bn_ctx_set_profile(struct bn_ctx *c, struct bn_profile *p)
{
	c->prof = p;
}

/* Every pool dispatch of the pass goes through here, so that a profile sees its waits. */
static void dispatch(struct bn_ctx *c, bn_pool_fn fn, void *arg)
{
	if (!c->prof) {
		bn_pool_run(c->pool, fn, arg);
		return;
	}
	c->pwait += bn_pool_run_wait(c->pool, fn, arg);
	c->pcalls++;
}

/* Ends the current profile segment: its time since the last mark goes to op. The marks
 * partition the pass, so the segments add up to the pass. */
static inline void prof_mark(struct bn_ctx *c, enum bn_prof_op op, double bytes)
{
	struct bn_profile *p = c->prof;
	if (!p)
		return;
	double t = bn_now();
	p->seconds[op] += t - c->pt;
	p->wait[op] += c->pwait;
	p->calls[op] += c->pcalls;
	p->bytes[op] += bytes;
	c->pt = t;
	c->pwait = 0;
	c->pcalls = 0;
}

/* ---- trace -------------------------------------------------------------------------- */

static const char *const trace_names[BN_TRACE_N] = {
	[BN_TRACE_ATTN_NORM] = "attn_norm", [BN_TRACE_Q] = "q", [BN_TRACE_K] = "k",
	[BN_TRACE_V] = "v", [BN_TRACE_ATTN] = "attn", [BN_TRACE_ATTN_SUB_NORM] = "attn_sub_norm",
	[BN_TRACE_WO] = "wo", [BN_TRACE_FFN_NORM] = "ffn_norm", [BN_TRACE_GATE] = "gate",
	[BN_TRACE_UP] = "up", [BN_TRACE_FFN_ACT] = "ffn_act", [BN_TRACE_DOWN] = "down",
	[BN_TRACE_LAYER_OUT] = "layer_out", [BN_TRACE_OUT_NORM] = "out_norm",
	[BN_TRACE_LOGITS] = "logits",
};

const char *bn_trace_op_name(enum bn_trace_op op)
{
	return (unsigned)op < BN_TRACE_N ? trace_names[op] : "?";
}

void bn_ctx_set_trace(struct bn_ctx *c, const struct bn_trace_sink *sink)
{
	if (sink && sink->fn)
		c->trace = *sink;
	else
		c->trace = (struct bn_trace_sink){ NULL, NULL };
}

/* Hands the sink rows [m] of len values, stride apart. */
static inline void trace_rows(const struct bn_ctx *c, uint32_t layer, enum bn_trace_op op,
                              const float *x, size_t stride, size_t len, size_t m)
{
	if (!c->trace.fn)
		return;
	for (size_t i = 0; i < m; i++)
		c->trace.fn(c->trace.user, layer, op, (uint32_t)i, x + i * stride, len);
}

static double tmat_bytes(const struct bn_tmat *w)
{
	return (double)w->rows * (double)w->k / 4;
}

/* ---- parallel steps ---------------------------------------------------------------- */

/* Work is handed out in chunks (bn_split: each worker's own range first, then the others'):
 * on a shared machine a worker that loses its core would otherwise hold everyone up. Which
 * worker computes a row never changes its value. */
#define GEMM_CHUNK 64    /* weight rows per chunk (a multiple of every plugin's row tile) */

struct gemm_job {
	const struct bn_ctx *c;
	const struct bn_tmat *w[3];
	float *y[3];                  /* [m][w->rows] each */
	unsigned nw;
	size_t m;
	size_t total;                 /* rows of all matrices */
	struct bn_split split;        /* chunks of GEMM_CHUNK rows */
};

static void gemm_worker(void *arg, unsigned idx, unsigned n)
{
	struct gemm_job *j = arg;
	(void)n;
	size_t ch;
	unsigned cur = 0;
	while (bn_split_next(&j->split, idx, &cur, &ch)) {
		size_t lo = ch * GEMM_CHUNK, hi = lo + GEMM_CHUNK < j->total ? lo + GEMM_CHUNK : j->total;
		size_t base = 0;
		for (unsigned i = 0; i < j->nw && lo < hi; i++) {
			const struct bn_tmat *w = j->w[i];
			size_t a = lo > base ? lo - base : 0, b = hi - base < w->rows ? hi - base : w->rows;
			if (lo < base + w->rows && hi > base && a < b)
				j->c->ops->ternary_gemm(w->codes, w->k, a, b, w->scale, j->c->q8, j->c->qscale,
				                        j->c->qsum, j->m, j->y[i], w->rows);
			base += w->rows;
		}
	}
}

static void run_gemm(struct bn_ctx *c, size_t m, unsigned nw, const struct bn_tmat *w0, float *y0,
                     const struct bn_tmat *w1, float *y1, const struct bn_tmat *w2, float *y2)
{
	struct gemm_job j = { .c = c, .w = { w0, w1, w2 }, .y = { y0, y1, y2 }, .nw = nw, .m = m };
	for (unsigned i = 0; i < nw; i++)
		j.total += j.w[i]->rows;
	bn_split_init(&j.split, (j.total + GEMM_CHUNK - 1) / GEMM_CHUNK, bn_pool_size(c->pool));
	dispatch(c, gemm_worker, &j);
	/* `bitnet` arch: the .scale tensor multiplies the projection's output. */
	for (unsigned i = 0; i < nw; i++) {
		if (!j.w[i]->has_out_scale)
			continue;
		float s = j.w[i]->out_scale;
		for (size_t e = 0; e < m * j.w[i]->rows; e++)
			j.y[i][e] *= s;
	}
}

/* Norm (+ optional activation) then int8 quantization of each token, into c->h / c->q8. */
struct normq_job {
	struct bn_ctx *c;
	const float *src;             /* [m][len] */
	const float *g, *u;           /* FFN inputs [m][len] when src is NULL */
	const float *w;               /* [len] norm weight; NULL: no norm (a llama sub-norm) */
	size_t len, m;
	bool silu;
};

/* (g > 0 ? g : 0)^2 without a branch: the gate's sign is random, so a branch mispredicts
 * about every other element (~35 us a 6912-wide row, measured). The mask gives the select's
 * values exactly: 0 for NaN and -0. */
static inline float relu_sq(float g)
{
	uint32_t bits;
	memcpy(&bits, &g, sizeof bits);
	bits &= -(uint32_t)(g > 0.0f);
	float a;
	memcpy(&a, &bits, sizeof a);
	return a * a;
}

static void normq_token(const struct normq_job *j, size_t i)
{
	struct bn_ctx *c = j->c;
	size_t W = c->m->hp.n_embd > c->m->hp.n_ff ? c->m->hp.n_embd : c->m->hp.n_ff;
	float *h = c->h + i * W;
	const float *src = j->src ? j->src + i * j->len : h;
	if (!j->src) {   /* FFN: relu(g)^2 * u, or silu(g) * u */
		const float *g = j->g + i * j->len, *u = j->u + i * j->len;
		if (j->silu) {
			for (size_t e = 0; e < j->len; e++)
				h[e] = g[e] / (1.0f + expf(-g[e])) * u[e];
		} else {
			for (size_t e = 0; e < j->len; e++)
				h[e] = relu_sq(g[e]) * u[e];
		}
	}
	if (j->w)
		c->ops->rmsnorm(src, j->w, j->len, c->m->hp.eps, h);
	else if (src != h)
		memcpy(h, src, j->len * sizeof(float));   /* h is what the trace sees */
	/* q8 rows have the projection's width as stride, as ternary_gemm reads them */
	c->ops->quantize_i8(h, j->len, c->q8 + i * j->len, &c->qscale[i], &c->qsum[i]);
}

static void normq_worker(void *arg, unsigned idx, unsigned n)
{
	const struct normq_job *j = arg;
	size_t lo, hi;
	bn_pool_split(j->m, 1, idx, n, &lo, &hi);
	for (size_t i = lo; i < hi; i++)
		normq_token(j, i);
}

static void run_normq(struct bn_ctx *c, const struct normq_job *j)
{
	if (j->m == 1)
		normq_token(j, 0);   /* decode: not worth a dispatch */
	else
		dispatch(c, normq_worker, (void *)j);
}

struct attn_job {
	struct bn_ctx *c;
	uint32_t layer;
	const uint32_t *pos, *seq;
	size_t m;
	uint32_t per;                 /* query heads per work item: a divisor of the GQA group */
	_Atomic size_t next;          /* next (token, KV head, part of its group) */
};

/* Query heads per work item: a whole GQA group (its key and value rows read once), halved
 * while that leaves fewer than two items per thread (one token on many cores). */
static uint32_t attn_per_item(const struct bn_hparams *hp, size_t m, unsigned nth)
{
	uint32_t group = hp->n_head / hp->n_head_kv, per = group;
	while (per % 2 == 0 && m * hp->n_head_kv * (group / per) < 2 * (size_t)nth)
		per /= 2;
	return per;
}

/* One work item at a time: the query heads of a token that share a KV head (or a part of
 * them) go to the plugin's attn_group together, or one by one to its attn_head; the results
 * are the same bits either way. */
static void attn_worker(void *arg, unsigned idx, unsigned n)
{
	struct attn_job *j = arg;
	(void)n;
	struct bn_ctx *c = j->c;
	const struct bn_hparams *hp = &c->m->hp;
	uint32_t hd = hp->head_dim, group = hp->n_head / hp->n_head_kv, parts = group / j->per;
	float scale = 1.0f / sqrtf((float)hd);
	float *scratch = c->ahead + (size_t)idx * group * c->n_ctx;   /* [group][n_ctx] */
	size_t p, total = j->m * hp->n_head_kv * parts;
	while ((p = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < total) {
		size_t i = p / (hp->n_head_kv * parts), npos = (size_t)j->pos[i] + 1;
		uint32_t g = (uint32_t)(p / parts % hp->n_head_kv);
		size_t h0 = (size_t)g * group + (p % parts) * j->per;   /* first query head */
		const uint16_t *k = kv_at(c, c->kcache, j->layer, j->seq[i], 0) + (size_t)g * hd;
		const uint16_t *v = kv_at(c, c->vcache, j->layer, j->seq[i], 0) + (size_t)g * hd;
		const uint16_t *q = c->q16 + i * hp->n_embd + h0 * hd;   /* [per][hd] */
		float *out = c->att + i * hp->n_embd + h0 * hd;          /* [per][hd] */
		if (c->ops->attn_group) {
			c->ops->attn_group(q, j->per, k, v, c->kvd, npos, hd, scale, out, scratch);
			continue;
		}
		for (uint32_t h = 0; h < j->per; h++)
			c->ops->attn_head(q + (size_t)h * hd, k, v, c->kvd, npos, hd, scale,
			                  out + (size_t)h * hd, scratch + (size_t)h * npos);
	}
}

struct head_job {
	struct bn_ctx *c;
	size_t m;
	float *logits;                /* [m][n_vocab] */
	struct bn_split split;        /* chunks of HEAD_CHUNK rows */
};

#define HEAD_CHUNK 512   /* vocabulary rows per chunk */

static void head_rows(const struct head_job *j, size_t lo, size_t hi);

static void head_worker(void *arg, unsigned idx, unsigned n)
{
	struct head_job *j = arg;
	(void)n;
	size_t V = j->c->m->hp.n_vocab, ch;
	unsigned cur = 0;
	while (bn_split_next(&j->split, idx, &cur, &ch))
		head_rows(j, ch * HEAD_CHUNK, ch * HEAD_CHUNK + HEAD_CHUNK < V ? ch * HEAD_CHUNK + HEAD_CHUNK : V);
}

/* logits [m][n_vocab] of the m normed rows in c->y16 / c->q8 / c->h */
static void run_head(struct bn_ctx *c, size_t m, float *logits)
{
	struct head_job j = { .c = c, .m = m, .logits = logits };
	bn_split_init(&j.split, (c->m->hp.n_vocab + HEAD_CHUNK - 1) / HEAD_CHUNK,
	              bn_pool_size(c->pool));
	dispatch(c, head_worker, &j);
}

static void head_rows(const struct head_job *j, size_t lo, size_t hi)
{
	const struct bn_model *m = j->c->m;
	size_t V = m->hp.n_vocab, E = m->hp.n_embd;
	if (m->head_type == BN_TYPE_F16) {
		j->c->ops->f16_gemm(m->head, E, lo, hi, j->c->y16, j->m, j->logits, V);
		return;
	}
	if (m->head_type == BN_TYPE_Q8_0) {
		j->c->ops->q8_gemm(m->head, E, lo, hi, j->c->q8, j->c->yd, j->m, j->logits, V);
		return;
	}
	/* F32 / BF16 heads: portable code over the f32 normed state (no f16 rounding). */
	for (size_t r = lo; r < hi; r++) {
		for (size_t i = 0; i < j->m; i++) {
			const float *y = j->c->h + i * E;
			float acc = 0.0f;
			for (size_t e = 0; e < E; e++) {
				float w = m->head_type == BN_TYPE_F32 ? ((const float *)m->head)[r * E + e]
				        : bn_bf16_to_f32(((const uint16_t *)m->head)[r * E + e]);
				acc += w * y[e];
			}
			j->logits[i * V + r] = acc;
		}
	}
}

/* The Q8_0 head's input: each wanted row of the normed state (c->h, stride n_embd) cut
 * into 32-blocks the one Q8_0 way (kernel.h) into c->q8 / c->yd, once per batch. */
struct headq_job {
	struct bn_ctx *c;
	size_t m;
};

static void headq_rows(struct bn_ctx *c, size_t lo, size_t hi)
{
	size_t E = c->m->hp.n_embd, nb = E / BN_Q8_0_BLOCK;
	for (size_t i = lo; i < hi; i++)
		for (size_t b = 0; b < nb; b++)
			c->yd[i * nb + b] = bn_q8_0_quantize_block(c->h + i * E + b * BN_Q8_0_BLOCK,
			                                           c->q8 + i * E + b * BN_Q8_0_BLOCK);
}

static void headq_worker(void *arg, unsigned idx, unsigned n)
{
	const struct headq_job *j = arg;
	size_t lo, hi;
	bn_pool_split(j->m, 1, idx, n, &lo, &hi);
	headq_rows(j->c, lo, hi);
}

/* ---- the pass ---------------------------------------------------------------------- */

static void embed(const struct bn_model *m, int32_t tok, float *x)
{
	size_t E = m->hp.n_embd, off = (size_t)tok * E;
	for (size_t e = 0; e < E; e++) {
		switch (m->embd_type) {
		case BN_TYPE_F16:
			x[e] = bn_f16_to_f32(((const uint16_t *)m->tok_embd)[off + e]);
			break;
		case BN_TYPE_BF16:
			x[e] = bn_bf16_to_f32(((const uint16_t *)m->tok_embd)[off + e]);
			break;
		default:
			x[e] = ((const float *)m->tok_embd)[off + e];
		}
	}
}

static int check_batch(struct bn_ctx *c, const struct bn_batch *b, uint32_t *new_len,
                       struct bn_error *err)
{
	const struct bn_hparams *hp = &c->m->hp;
	if (!b->n)
		return 0;
	if (b->n > c->n_batch)
		return bn_err_set(err, -E2BIG, "batch of %u tokens exceeds the context's batch size %u",
		                  b->n, c->n_batch);
	memcpy(new_len, c->seq_len, c->n_seq * sizeof(uint32_t));
	for (uint32_t i = 0; i < b->n; i++) {
		uint32_t s = b->seq[i], p = b->pos[i];
		if (b->token[i] < 0 || (uint32_t)b->token[i] >= hp->n_vocab)
			return bn_err_set(err, -EINVAL, "token %d (batch index %u) is outside the vocabulary "
			                  "(%u tokens)", b->token[i], i, hp->n_vocab);
		if (s >= c->n_seq)
			return bn_err_set(err, -EINVAL, "sequence %u (batch index %u) exceeds the context's "
			                  "%u sequences", s, i, c->n_seq);
		if (p >= c->n_ctx)
			return bn_err_set(err, -ENOSPC, "sequence %u: position %u exceeds the context size %u",
			                  s, p, c->n_ctx);
		if (p > new_len[s])
			return bn_err_set(err, -EINVAL, "sequence %u: position %u leaves a gap after %u "
			                  "cached tokens", s, p, new_len[s]);
		if (p < new_len[s]) {
			/* A rewind is only safe for a sequence's first token in the batch: all K/V of
			 * the batch are written before any attention reads them. */
			for (uint32_t e = 0; e < i; e++)
				if (b->seq[e] == s)
					return bn_err_set(err, -EINVAL, "sequence %u: position %u goes back within "
					                  "one batch", s, p);
		}
		new_len[s] = p + 1;
	}
	return 0;
}

/* c->ahead holds one attention scratch row set per pool thread: [nth][group][n_ctx] f32. */
static int ensure_attn_scratch(struct bn_ctx *c, struct bn_error *err)
{
	const struct bn_hparams *hp = &c->m->hp;
	unsigned nth = bn_pool_size(c->pool);
	if (nth <= c->ahead_threads)
		return 0;
	free(c->ahead);
	c->ahead = xalloc((size_t)nth * (hp->n_head / hp->n_head_kv) * c->n_ctx * sizeof(float));
	c->ahead_threads = c->ahead ? nth : 0;
	return c->ahead ? 0 : bn_err_set(err, -ENOMEM, "out of memory");
}

/* Rope on the n new rows of Q and K, their K and V stored (f16) at their positions in the
 * cache, and Q rounded to f16 for attention (c->q16). Calling thread. */
static void rope_store_kv(struct bn_ctx *c, uint32_t l, const struct bn_batch *b)
{
	const struct bn_hparams *hp = &c->m->hp;
	size_t n = b->n, E = hp->n_embd, hd = hp->head_dim, kvd = c->kvd;
	void (*rope)(float *, uint32_t, const float *, const float *) =
		hp->rope_interleaved ? bn_rope_apply_interleaved : bn_rope_apply;
	for (size_t i = 0; i < n; i++) {
		const float *rc_ = c->rcos + i * hd / 2, *rs_ = c->rsin + i * hd / 2;
		float *q = c->Q + i * E, *k = c->K + i * kvd, *v = c->V + i * kvd;
		for (uint32_t h = 0; h < hp->n_head; h++)
			rope(q + h * hd, (uint32_t)hd, rc_, rs_);
		for (uint32_t h = 0; h < hp->n_head_kv; h++)
			rope(k + h * hd, (uint32_t)hd, rc_, rs_);
		uint16_t *kc = kv_at(c, c->kcache, l, b->seq[i], b->pos[i]);
		uint16_t *vc = kv_at(c, c->vcache, l, b->seq[i], b->pos[i]);
		for (size_t e = 0; e < kvd; e++) {
			kc[e] = bn_f32_to_f16(k[e]);
			vc[e] = bn_f32_to_f16(v[e]);
		}
		for (size_t e = 0; e < E; e++)
			c->q16[i * E + e] = bn_f32_to_f16(q[e]);
	}
}

/* x [n][E] += src [n][E] */
static void residual_add(float *x, const float *src, size_t n)
{
	for (size_t e = 0; e < n; e++)
		x[e] += src[e];
}

/* Layer l's attention block on the n rows of c->x: norm, q/k/v, rope and the KV cache,
 * attention (aj: the pass's job, its layer set here), sub-norm, wo, residual. */
static void layer_attention(struct bn_ctx *c, uint32_t l, const struct bn_batch *b,
                            struct attn_job *aj)
{
	const struct bn_hparams *hp = &c->m->hp;
	const struct bn_layer *L = &c->m->layers[l];
	size_t n = b->n, E = hp->n_embd, kvd = c->kvd, W = E > hp->n_ff ? E : hp->n_ff;
	struct normq_job nj = { c, c->x, NULL, NULL, L->attn_norm, E, n, false };
	run_normq(c, &nj);
	prof_mark(c, BN_PROF_NORMQ, 0);
	trace_rows(c, l, BN_TRACE_ATTN_NORM, c->h, W, E, n);
	run_gemm(c, n, 3, &L->wq, c->Q, &L->wk, c->K, &L->wv, c->V);
	prof_mark(c, BN_PROF_QKV, tmat_bytes(&L->wq) + tmat_bytes(&L->wk) + tmat_bytes(&L->wv));
	trace_rows(c, l, BN_TRACE_Q, c->Q, E, E, n);
	trace_rows(c, l, BN_TRACE_K, c->K, kvd, kvd, n);
	trace_rows(c, l, BN_TRACE_V, c->V, kvd, kvd, n);
	rope_store_kv(c, l, b);
	prof_mark(c, BN_PROF_ROPE_KV, 0);
	aj->layer = l;
	atomic_store_explicit(&aj->next, 0, memory_order_relaxed);
	dispatch(c, attn_worker, aj);
	prof_mark(c, BN_PROF_ATTN, 0);
	trace_rows(c, l, BN_TRACE_ATTN, c->att, E, E, n);

	nj = (struct normq_job){ c, c->att, NULL, NULL, L->attn_sub_norm, E, n, false };
	run_normq(c, &nj);
	prof_mark(c, BN_PROF_NORMQ, 0);
	trace_rows(c, l, BN_TRACE_ATTN_SUB_NORM, c->h, W, E, n);
	run_gemm(c, n, 1, &L->wo, c->tmp, NULL, NULL, NULL, NULL);
	prof_mark(c, BN_PROF_WO, tmat_bytes(&L->wo));
	trace_rows(c, l, BN_TRACE_WO, c->tmp, E, E, n);
	residual_add(c->x, c->tmp, n * E);
	prof_mark(c, BN_PROF_RESID, 0);
}

/* Layer l's feed-forward block on the n rows of c->x: norm, gate and up, the activation
 * with its sub-norm, down, residual. */
static void layer_ffn(struct bn_ctx *c, uint32_t l, size_t n)
{
	const struct bn_hparams *hp = &c->m->hp;
	const struct bn_layer *L = &c->m->layers[l];
	size_t E = hp->n_embd, F = hp->n_ff, W = E > F ? E : F;
	struct normq_job nj = { c, c->x, NULL, NULL, L->ffn_norm, E, n, false };
	run_normq(c, &nj);
	prof_mark(c, BN_PROF_NORMQ, 0);
	trace_rows(c, l, BN_TRACE_FFN_NORM, c->h, W, E, n);
	run_gemm(c, n, 2, &L->wgate, c->gate, &L->wup, c->up, NULL, NULL);
	prof_mark(c, BN_PROF_GATEUP, tmat_bytes(&L->wgate) + tmat_bytes(&L->wup));
	trace_rows(c, l, BN_TRACE_GATE, c->gate, F, F, n);
	trace_rows(c, l, BN_TRACE_UP, c->up, F, F, n);
	nj = (struct normq_job){ c, NULL, c->gate, c->up, L->ffn_sub_norm, F, n, hp->silu };
	run_normq(c, &nj);
	prof_mark(c, BN_PROF_NORMQ, 0);
	trace_rows(c, l, BN_TRACE_FFN_ACT, c->h, W, F, n);
	run_gemm(c, n, 1, &L->wdown, c->tmp, NULL, NULL, NULL, NULL);
	prof_mark(c, BN_PROF_DOWN, tmat_bytes(&L->wdown));
	trace_rows(c, l, BN_TRACE_DOWN, c->tmp, E, E, n);
	residual_add(c->x, c->tmp, n * E);
	prof_mark(c, BN_PROF_RESID, 0);
	trace_rows(c, l, BN_TRACE_LAYER_OUT, c->x, E, E, n);
}

/* The output norm and the head for the rows the caller wants (b->want, else the last):
 * normed state in c->h (f32) and c->y16, logits [wanted][n_vocab]. */
static void output_head(struct bn_ctx *c, const struct bn_batch *b, float *logits)
{
	const struct bn_model *m = c->m;
	const struct bn_hparams *hp = &m->hp;
	size_t n = b->n, E = hp->n_embd, nw = 0;
	for (size_t i = 0; i < n; i++) {
		bool want = b->want ? b->want[i] : i + 1 == n;
		if (!want)
			continue;
		float *y = c->h + nw * E;
		c->ops->rmsnorm(c->x + i * E, m->output_norm, E, hp->eps, y);
		if (m->head_type == BN_TYPE_F16)
			for (size_t e = 0; e < E; e++)
				c->y16[nw * E + e] = bn_f32_to_f16(y[e]);
		if (c->trace.fn)
			c->trace.fn(c->trace.user, hp->n_layer, BN_TRACE_OUT_NORM, (uint32_t)i, y, E);
		nw++;
	}
	if (nw && logits && m->head_type == BN_TYPE_Q8_0) {
		struct headq_job qj = { c, nw };
		if (nw == 1)
			headq_rows(c, 0, 1);   /* decode: not worth a dispatch */
		else
			dispatch(c, headq_worker, &qj);
	}
	prof_mark(c, BN_PROF_OUT_NORM, 0);
	if (!nw || !logits)
		return;
	run_head(c, nw, logits);
	prof_mark(c, BN_PROF_HEAD, bn_model_head_bytes(m));
	for (size_t i = 0, r = 0; c->trace.fn && i < n; i++)
		if (b->want ? b->want[i] : i + 1 == n)
			c->trace.fn(c->trace.user, hp->n_layer, BN_TRACE_LOGITS, (uint32_t)i,
			            logits + r++ * hp->n_vocab, hp->n_vocab);
}

int bn_decode(struct bn_ctx *c, const struct bn_batch *b, float *logits, struct bn_error *err)
{
	const struct bn_model *m = c->m;
	const struct bn_hparams *hp = &m->hp;
	uint32_t new_len[256];
	int rc = check_batch(c, b, new_len, err);
	if (rc || !b->n)
		return rc;
	if ((rc = ensure_attn_scratch(c, err)))
		return rc;
	size_t n = b->n, E = hp->n_embd, hd = hp->head_dim;
	double t_pass = 0;
	if (c->prof) {
		t_pass = c->pt = bn_now();
		c->pwait = 0;
		c->pcalls = 0;
	}
	for (size_t i = 0; i < n; i++) {
		embed(m, b->token[i], c->x + i * E);
		bn_rope_table(b->pos[i], (uint32_t)hd, hp->rope_base, c->rcos + i * hd / 2,
		              c->rsin + i * hd / 2);
	}
	prof_mark(c, BN_PROF_EMBED, 0);
	uint32_t per = attn_per_item(hp, n, bn_pool_size(c->pool));
	struct attn_job aj = { c, 0, b->pos, b->seq, n, per, 0 };
	for (uint32_t l = 0; l < hp->n_layer; l++) {
		layer_attention(c, l, b, &aj);
		layer_ffn(c, l, n);
	}
	memcpy(c->seq_len, new_len, c->n_seq * sizeof(uint32_t));
	output_head(c, b, logits);
	if (c->prof) {
		c->prof->passes++;
		c->prof->tokens += n;
		c->prof->total += bn_now() - t_pass;
	}
	return 0;
}

int bn_ctx_stream_probe(struct bn_ctx *c, int reps, double *ternary_gbps, double *head_gbps)
{
	const struct bn_model *m = c->m;
	const struct bn_hparams *hp = &m->hp;
	double tb = 0;
	for (uint32_t l = 0; l < hp->n_layer; l++) {
		const struct bn_layer *L = &m->layers[l];
		tb += tmat_bytes(&L->wq) + tmat_bytes(&L->wk) + tmat_bytes(&L->wv) + tmat_bytes(&L->wo) +
		      tmat_bytes(&L->wgate) + tmat_bytes(&L->wup) + tmat_bytes(&L->wdown);
	}
	/* the heads with a plugin op; F32/BF16 heads run portable code and are not probed */
	bool f16 = m->head_type == BN_TYPE_F16 || m->head_type == BN_TYPE_Q8_0;
	double hb = bn_model_head_bytes(m);
	if (reps < 1)
		reps = 1;
	float *logits = malloc((size_t)hp->n_vocab * sizeof(float));   /* [V] */
	double *rt = calloc((size_t)reps, sizeof(double)), *rh = calloc((size_t)reps, sizeof(double));
	if (!logits || !rt || !rh) {
		free(logits);
		free(rt);
		free(rh);
		return -ENOMEM;
	}
	struct bn_profile *saved = c->prof;
	c->prof = NULL;
	for (int r = 0; r < reps; r++) {
		/* one q8 row stands in for every layer's input: the values do not change the work */
		double t0 = bn_now();
		for (uint32_t l = 0; l < hp->n_layer; l++) {
			const struct bn_layer *L = &m->layers[l];
			run_gemm(c, 1, 3, &L->wq, c->Q, &L->wk, c->K, &L->wv, c->V);
			run_gemm(c, 1, 1, &L->wo, c->tmp, NULL, NULL, NULL, NULL);
			run_gemm(c, 1, 2, &L->wgate, c->gate, &L->wup, c->up, NULL, NULL);
			run_gemm(c, 1, 1, &L->wdown, c->tmp, NULL, NULL, NULL, NULL);
		}
		double t1 = bn_now();
		if (f16) {
			run_head(c, 1, logits);
		}
		double t2 = bn_now();
		rt[r] = tb / (t1 - t0) / 1e9;
		rh[r] = f16 ? hb / (t2 - t1) / 1e9 : 0;
	}
	c->prof = saved;
	*ternary_gbps = bn_median_upper(rt, (size_t)reps);
	*head_gbps = bn_median_upper(rh, (size_t)reps);
	free(logits);
	free(rt);
	free(rh);
	return 0;
}
