/* libbitnet: the engine behind bitnetd and the bitnet tool.
 *
 *   model   = bn_model_load(path)          maps + validates one GGUF (weights stay in the map)
 *   kernel  = bn_kernel_load(dir, name)    lib/kernels.h: the plugin with the hot loops
 *   pool    = bn_pool_new(threads, cpus)   lib/pool.h: pinned workers
 *   ctx     = bn_ctx_new(model, kernel, pool, n_ctx, n_seq)   KV cache + scratch
 *   bn_decode(ctx, batch, logits)          one forward pass over any mix of tokens/sequences
 *
 * Every function returns 0 or a negative errno and fills a struct bn_error (lib/error.h). */
#ifndef BITNET_BITNET_H
#define BITNET_BITNET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bn_error;
struct bn_model;
struct bn_ctx;
struct bn_kernel;
struct bn_pool;
struct bn_gguf;

enum bn_arch {
	BN_ARCH_BITNET_B158 = 0,   /* "bitnet-b1.58": squared ReLU */
	BN_ARCH_BITNET_25 = 1,     /* "bitnet-25": same graph */
	BN_ARCH_BITNET = 2,        /* "bitnet": SiLU, optional per-projection .scale tensors */
	BN_ARCH_LLAMA = 3,         /* "llama" with ternary projections: SiLU, no sub-norms,
	                            * interleaved RoPE (llama.cpp's converter permutes q/k rows) */
};

struct bn_hparams {
	char arch_name[32];
	enum bn_arch arch;
	uint32_t n_embd, n_ff, n_layer, n_head, n_head_kv, head_dim;
	uint32_t n_vocab, n_ctx_train;
	float rope_base, eps;
	bool silu;                 /* FFN activation: SiLU, else squared ReLU */
	bool sub_norms;            /* attn_sub_norm before wo, ffn_sub_norm before wdown */
	bool rope_interleaved;     /* RoPE on pairs (2i, 2i+1), else NEOX pairs (i, i + hd/2) */
};

struct bn_model_opts {
	bool mlock;                /* lock the mapped weights in memory */
	bool rescale_gamma;        /* experimental: multiply norm weights by sqrt(len) (issue 4) */
	bool strict;               /* refuse any weight correction or fallback; gate warnings fail */
	int gate;                  /* norm-statistics gate: 0 none, 1 warn, 2 strict (lib/norms.h) */
	const char *policy;        /* INI rule file for the gate, NULL: built-in rules */
};

/* A change made to a weight at load (the experimental gamma rescale). */
struct bn_correction {
	char tensor[64];
	char kind[32];             /* "rescale_gamma" */
	float factor, rms_before, rms_after;
};

/* What identifies a model file in a receipt. */
struct bn_model_identity {
	const char *path;
	uint64_t size;             /* bytes */
	const char *arch;
	uint32_t file_type;        /* general.file_type, 0 when absent */
	const char *weight_type;   /* projections, e.g. "i2_s" */
	const char *head_type;     /* LM head, e.g. "f16" or "q8_0" */
	char header_sha256[65];    /* SHA-256 of the header, KV section and tensor table */
};

int bn_model_load(struct bn_model **out, const char *path, const struct bn_model_opts *opts,
                  struct bn_error *err);
void bn_model_free(struct bn_model *m);
const struct bn_hparams *bn_model_hparams(const struct bn_model *m);
const struct bn_gguf *bn_model_gguf(const struct bn_model *m);
/* Reads one byte of every page of the mapped file, so that the first request does not pay
 * the page faults (nor, for a file not in the page cache, the disk reads). Returns the
 * bytes covered. */
size_t bn_model_prefault(const struct bn_model *m);
const char *bn_model_path(const struct bn_model *m);
/* Bytes of weights copied out of the map at load (0 for an I2_S file). */
size_t bn_model_bytes_copied(const struct bn_model *m);
/* Name of the projection weight type, e.g. "i2_s". */
const char *bn_model_weight_type(const struct bn_model *m);
/* Name of the LM head's type ("f16", "bf16", "f32", "q8_0"); whether it is token_embd
 * (tied); the bytes one full pass over it reads. */
const char *bn_model_head_type(const struct bn_model *m);
bool bn_model_head_tied(const struct bn_model *m);
double bn_model_head_bytes(const struct bn_model *m);
void bn_model_identity(const struct bn_model *m, struct bn_model_identity *id);
const struct bn_correction *bn_model_corrections(const struct bn_model *m, size_t *n);

enum bn_kv_type { BN_KV_F16 = 0 };

struct bn_ctx_opts {
	uint32_t n_ctx;            /* 0: the model's context length */
	uint32_t n_seq;            /* sequences that can be decoded together (>= 1) */
	uint32_t n_batch;          /* most tokens per bn_decode call (0: 512) */
};

int bn_ctx_new(struct bn_ctx **out, struct bn_model *m, struct bn_kernel *k, struct bn_pool *p,
               const struct bn_ctx_opts *opts, struct bn_error *err);
void bn_ctx_free(struct bn_ctx *c);
/* Swap kernel or pool between decode calls (reload). */
void bn_ctx_set_kernel(struct bn_ctx *c, struct bn_kernel *k);
void bn_ctx_set_pool(struct bn_ctx *c, struct bn_pool *p);
uint32_t bn_ctx_n_ctx(const struct bn_ctx *c);
uint32_t bn_ctx_n_batch(const struct bn_ctx *c);
uint32_t bn_ctx_n_vocab(const struct bn_ctx *c);    /* rows of the logits bn_decode writes */
/* Bytes of K and V address space reserved for every sequence (pages commit as they fill). */
uint64_t bn_ctx_kv_bytes(const struct bn_ctx *c);
/* Forget a sequence's cached tokens. */
void bn_ctx_seq_clear(struct bn_ctx *c, uint32_t seq);
uint32_t bn_ctx_seq_len(const struct bn_ctx *c, uint32_t seq);

/* One forward pass. Token i belongs to sequence seq[i] at position pos[i]; positions of a
 * sequence continue its cache (pos <= cached length; a smaller pos rewinds, once per
 * sequence per batch). want[i] (NULL: only the last token) selects the rows written to
 * logits, in batch order: logits is [n_wanted][n_vocab] f32. */
struct bn_batch {
	uint32_t n;
	const int32_t *token;      /* [n] */
	const uint32_t *pos;       /* [n] */
	const uint32_t *seq;       /* [n] */
	const bool *want;          /* [n] or NULL */
};

int bn_decode(struct bn_ctx *c, const struct bn_batch *b, float *logits, struct bn_error *err);

#endif
