/* Model: hyper-parameters and weights. Weights are pointers into the read-only map when the
 * file's layout is the canonical one (I2_S projections, F32 norms); anything else is
 * converted once at load into owned memory. Internal to libbitnet. */
#ifndef BN_MODEL_H
#define BN_MODEL_H

#include "bitnet/bitnet.h"
#include "gguf.h"

/* A ternary projection in the canonical I2_S layout. */
struct bn_tmat {
	const uint8_t *codes;     /* [rows][k/4] codes, see include/bitnet/kernel.h */
	uint32_t k, rows;         /* input width, output width */
	float scale;              /* per-tensor weight scale */
	float out_scale;          /* `bitnet` arch .scale tensor, 1.0 when absent */
	bool has_out_scale;
	uint32_t src_type;        /* the file's type for this tensor */
};

struct bn_layer {
	const float *attn_norm;      /* [n_embd] */
	const float *attn_sub_norm;  /* [n_embd] */
	const float *ffn_norm;       /* [n_embd] */
	const float *ffn_sub_norm;   /* [n_ff] */
	struct bn_tmat wq, wk, wv, wo, wgate, wup, wdown;
};

struct bn_model {
	char *path;
	struct bn_gguf *g;
	struct bn_hparams hp;
	struct bn_layer *layers;     /* [n_layer] */
	const void *tok_embd;        /* [n_vocab][n_embd] of embd_type */
	uint32_t embd_type;
	const void *head;            /* LM head rows [n_vocab][n_embd]: tok_embd when tied; for
	                              * Q8_0 [n_vocab][n_embd/32] blocks of 34 bytes */
	uint32_t head_type;          /* F16, BF16, F32, or Q8_0 (output.weight only) */
	const float *output_norm;    /* [n_embd] */
	uint32_t proj_type;          /* type of the projections in the file */
	void **owned;                /* buffers converted at load */
	size_t n_owned, cap_owned;
	size_t bytes_copied;
	struct bn_correction *corrections;
	size_t n_corrections;
	bool locked;
	uint32_t file_type;
	char header_sha256[65];      /* of the first g->header_size bytes */
};

#endif
