/* The forward pass and the KV cache (struct bn_ctx). Internal to libbitnet. */
#ifndef BN_FORWARD_H
#define BN_FORWARD_H

#include "bitnet/bitnet.h"
#include "bitnet/kernel.h"

/* Rotary embedding tables for one position: cos/sin [hd/2] each (rule 3). */
void bn_rope_table(uint32_t pos, uint32_t hd, float base, float *cos_out, float *sin_out);
/* NEOX rotation of one head vector v: [hd], pairs (i, i + hd/2). */
void bn_rope_apply(float *v, uint32_t hd, const float *c, const float *s);
/* Interleaved ("normal") rotation, arch llama: pairs (2i, 2i+1), angle i as above. */
void bn_rope_apply_interleaved(float *v, uint32_t hd, const float *c, const float *s);

#endif
