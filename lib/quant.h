/* Encoders and decoders of the ternary weight formats (I2_S, TQ2_0, TQ1_0) and the f16/bf16
 * row helpers. Bit layouts: shared/spec/bitnet-format.md section 3. Internal to libbitnet.
 *
 * Ternary values are int8 in {-1, 0, +1}. A "code" is value + 1. Rows are one tensor row
 * (ggml ne[0] elements). Every function works on whole rows and checks the row length
 * against the format's block size; they never allocate. */
#ifndef BN_QUANT_H
#define BN_QUANT_H

#include <stddef.h>
#include <stdint.h>

/* I2_S: 128 weights per 32-byte block, one f32 scale per tensor after the rows. */
#define BN_I2S_BLOCK 128
#define BN_I2S_TAIL 32              /* f32 scale + 28 pad bytes after the last row */
/* TQ2_0 / TQ1_0: 256 weights per block with an f16 d at the end of the block. */
#define BN_QK_K 256
#define BN_TQ2_BLOCK_BYTES 66       /* uint8 qs[64]; f16 d */
#define BN_TQ1_BLOCK_BYTES 54       /* uint8 qs[48]; uint8 qh[4]; f16 d */

/* Bytes of one row of k elements (0 when k is not a multiple of the block). The I2_S
 * tensor tail is not included: an I2_S tensor is rows * bn_i2s_row_bytes(k) + BN_I2S_TAIL. */
size_t bn_i2s_row_bytes(size_t k);
size_t bn_tq2_row_bytes(size_t k);
size_t bn_tq1_row_bytes(size_t k);

/* I2_S row. t: [k] ternary; out: [k/4] bytes. -EINVAL when k % 128 != 0 or a value is
 * outside {-1,0,1} (out is then unspecified). */
int bn_i2s_encode_row(const int8_t *t, size_t k, uint8_t *out);
/* src: [k/4] bytes; t: [k] ternary. Code 3 (never written by an encoder) decodes as 0.
 * -EINVAL when k % 128 != 0. */
int bn_i2s_decode_row(const uint8_t *src, size_t k, int8_t *t);
/* The tensor scale of an I2_S tensor of rows x k (the f32 after the rows). data must hold
 * rows * k / 4 + 4 bytes. */
float bn_i2s_tensor_scale(const void *data, size_t rows, size_t k);
/* Writes the 32-byte tail: f32 scale then 28 zero bytes. tail: [BN_I2S_TAIL] */
void bn_i2s_write_tail(float scale, uint8_t *tail);

/* TQ2_0 row. t: [k] ternary; d: [k/256] f16 bits, one per block; dst: [k/256 * 66] bytes.
 * -EINVAL when k % 256 != 0 or a value is not ternary. */
int bn_tq2_encode_row(const int8_t *t, size_t k, const uint16_t *d, void *dst);
/* src: [k/256 * 66] bytes; t: [k] values code-1; d: [k/256] f16 bits (may be NULL).
 * Code 3 is not ternary: it decodes as +2 (what the format's value rule gives) and the
 * function returns -ERANGE after decoding the whole row, so a loader can reject it.
 * -EINVAL when k % 256 != 0. */
int bn_tq2_decode_row(const void *src, size_t k, int8_t *t, uint16_t *d);

/* TQ1_0 row, same conventions. Every byte decodes to ternary, so decode only fails on k. */
int bn_tq1_encode_row(const int8_t *t, size_t k, const uint16_t *d, void *dst);
int bn_tq1_decode_row(const void *src, size_t k, int8_t *t, uint16_t *d);

/* Q8_0 (ggml type 8), the 8-bit LM head: 32 values per 34-byte block (f16 d, int8 q[32]).
 * Bytes of a row of k values, 0 when k is not a multiple of 32. */
size_t bn_q8_0_row_bytes(size_t k);
/* x: [k] f32; dst: [k/32 * 34] bytes, each block by bn_q8_0_quantize_block (kernel.h).
 * -EINVAL when k % 32 != 0; -ERANGE when a value is not finite or a block's scale overflows
 * f16 (|x| above about 8.3e6); dst is then unspecified. */
int bn_q8_0_encode_row(const float *x, size_t k, void *dst);
/* src: [k/32 * 34] bytes; x: [k] = d * q. -EINVAL when k % 32 != 0. */
int bn_q8_0_decode_row(const void *src, size_t k, float *x);

/* f32 -> bf16, round to nearest even; NaN stays NaN (quiet). bf16 -> f32 is
 * bn_bf16_to_f32 in include/bitnet/kernel.h, f16 both ways is there too. */
uint16_t bn_f32_to_bf16(float f);
/* Row converters. src/dst: [n] */
void bn_f16_encode_row(const float *src, size_t n, uint16_t *dst);
void bn_f16_decode_row(const uint16_t *src, size_t n, float *dst);
void bn_bf16_encode_row(const float *src, size_t n, uint16_t *dst);
void bn_bf16_decode_row(const uint16_t *src, size_t n, float *dst);

#endif
