/* Streaming GGUF v3 writer. Internal to libbitnet.
 *
 * Use: open, add KVs and declare every tensor (name, shape, type), then stream each
 * tensor's bytes in declaration order with bn_ggufw_write (any chunking), then close.
 * The header, KVs and tensor table are written on the first bn_ggufw_write (or by
 * bn_ggufw_begin_data) with data offsets aligned to general.alignment (32 unless a
 * general.alignment u32 KV says otherwise). Only the KVs and the tensor table are kept in
 * memory; tensor data goes straight to a buffered FILE*.
 *
 * Errors: negative errno, with a message in err naming the file (and key/tensor). After an
 * error every later call fails with the same code; call bn_ggufw_abort. */
#ifndef BN_GGUF_WRITE_H
#define BN_GGUF_WRITE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"

struct bn_ggufw;

/* Create (truncate) path for writing; removed again if writing fails. An existing path that
 * is not a regular file or directory (a device, a FIFO) is written in place and never
 * removed. */
int bn_ggufw_open(struct bn_ggufw **out, const char *path, struct bn_error *err);
/* Write into an already open stream (not closed by the writer); label names it in errors. */
int bn_ggufw_open_fp(struct bn_ggufw **out, FILE *fp, const char *label, struct bn_error *err);

/* Creates a new file "OUT.tmp-PID-N" next to out (O_EXCL) for writing, its name in tmp;
 * the caller renames it over out once complete, or unlinks it. NULL with err set. When out
 * exists and is not a regular file or directory (a device, a FIFO) it is opened itself and
 * tmp is "": nothing to rename or unlink. */
FILE *bn_ggufw_open_temp(const char *out, char *tmp, size_t cap, struct bn_error *err);
/* Makes the temporary file out: flushes, syncs and closes fp (always: fp is gone when this
 * returns), then renames tmp over out (tmp "": out itself, flushed and closed). On failure
 * the caller still unlinks tmp (when not ""). */
int bn_ggufw_commit_temp(FILE *fp, const char *tmp, const char *out, struct bn_error *err);

/* KVs, in the order they will appear. Keys must be unique. Strings are copied. */
int bn_ggufw_kv_u32(struct bn_ggufw *w, const char *key, uint32_t v, struct bn_error *err);
int bn_ggufw_kv_i32(struct bn_ggufw *w, const char *key, int32_t v, struct bn_error *err);
int bn_ggufw_kv_f32(struct bn_ggufw *w, const char *key, float v, struct bn_error *err);
int bn_ggufw_kv_bool(struct bn_ggufw *w, const char *key, bool v, struct bn_error *err);
int bn_ggufw_kv_str(struct bn_ggufw *w, const char *key, const char *v, struct bn_error *err);
/* v: [n] NUL-terminated strings */
int bn_ggufw_kv_arr_str(struct bn_ggufw *w, const char *key, const char *const *v, uint64_t n,
                        struct bn_error *err);
int bn_ggufw_kv_arr_i32(struct bn_ggufw *w, const char *key, const int32_t *v, uint64_t n,
                        struct bn_error *err);
int bn_ggufw_kv_arr_f32(struct bn_ggufw *w, const char *key, const float *v, uint64_t n,
                        struct bn_error *err);
/* A value copied as another file holds it (bn_gguf_kv_value): vtype a GGUF value type,
 * val the len bytes after the type field. A general.alignment KV sets the alignment. */
int bn_ggufw_kv_raw(struct bn_ggufw *w, const char *key, uint32_t vtype, const void *val,
                    size_t len, struct bn_error *err);
/* The tokenizer.ggml.* keys of a vocabulary (model, pre, tokens, token types, merges, the
 * special ids it has, add_bos), as lib/vocab.c reads them back. */
struct bn_vocab;
int bn_ggufw_vocab(struct bn_ggufw *w, const struct bn_vocab *v, struct bn_error *err);

/* Declare a tensor. ne: [n_dims], ne[0] the row length; type an enum bn_ggml_type.
 * Fails (-EINVAL) on a duplicate name, a bad shape for the type, or an unknown type. */
int bn_ggufw_tensor(struct bn_ggufw *w, const char *name, uint32_t n_dims, const uint64_t *ne,
                    uint32_t type, struct bn_error *err);
/* Byte size of a tensor of this type and shape (0 when invalid or on overflow). */
uint64_t bn_ggufw_tensor_nbytes(uint32_t type, uint32_t n_dims, const uint64_t *ne);

/* Write the header and tensor table now (implicit on the first bn_ggufw_write). No KV or
 * tensor may be added afterwards. */
int bn_ggufw_begin_data(struct bn_ggufw *w, struct bn_error *err);
/* Append n bytes of tensor data. Bytes fill the tensors in declaration order; a chunk may
 * not run past the current tensor's end (-EINVAL naming the tensor). The alignment
 * padding is written automatically when a tensor is complete. */
int bn_ggufw_write(struct bn_ggufw *w, const void *buf, size_t n, struct bn_error *err);
/* Name of the tensor the next bytes belong to, NULL when all are complete. */
const char *bn_ggufw_current(const struct bn_ggufw *w);
/* Total bytes of the file once complete (valid after begin_data). */
uint64_t bn_ggufw_file_size(const struct bn_ggufw *w);

/* Check that every tensor got all its bytes, flush and close (fclose only when the writer
 * opened the file). Frees w in every case. */
int bn_ggufw_close(struct bn_ggufw *w, struct bn_error *err);
/* Give up: close, remove the file when the writer created it, free w. NULL is fine. */
void bn_ggufw_abort(struct bn_ggufw *w);

#endif
