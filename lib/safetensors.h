/* Bounds-checked reader of safetensors files (the Hugging Face checkpoint format) and of
 * sharded checkpoints (model.safetensors.index.json). Internal to libbitnet.
 *
 * A file is: u64 little endian N, N bytes of a JSON object, then the data section. The
 * object maps each tensor name to {"dtype": "BF16", "shape": [d0, d1, ...],
 * "data_offsets": [begin, end]} (offsets relative to the data section) and may hold one
 * "__metadata__" object of string values. Everything is checked before any tensor is
 * handed out: the header length against the file, the JSON (strict, UTF-8, one object,
 * only trailing spaces), each entry's keys and types, known dtypes, shape products
 * (overflow), end - begin == elements x element size, offsets inside the data section,
 * no overlap, no holes and no bytes after the last tensor (the format requires the data
 * section to be covered exactly), and no name twice (json-c would silently keep one: the
 * raw header is scanned for duplicate keys).
 *
 * Errors: negative errno (-EBADMSG malformed, -EOVERFLOW sizes that overflow, -ENOTSUP an
 * unknown dtype, -ENOENT/-EACCES/... from the system) with a message naming the file, the
 * tensor and why. Library code: nothing is printed. */
#ifndef BN_SAFETENSORS_H
#define BN_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define BN_ST_MAX_DIMS 8
#define BN_ST_MAX_HEADER (100u * 1000u * 1000u)   /* the format's own limit on N */

enum bn_st_dtype {
	BN_ST_BOOL, BN_ST_U8, BN_ST_I8, BN_ST_F8_E5M2, BN_ST_F8_E4M3, BN_ST_I16, BN_ST_U16,
	BN_ST_F16, BN_ST_BF16, BN_ST_I32, BN_ST_U32, BN_ST_F32, BN_ST_F64, BN_ST_I64, BN_ST_U64,
};

struct bn_st_tensor {
	const char *name;                /* NUL-terminated, owned by the file */
	enum bn_st_dtype dtype;
	uint32_t n_dims;
	uint64_t shape[BN_ST_MAX_DIMS];  /* [n_dims], outermost first (row-major, PyTorch order) */
	uint64_t n_elems;
	uint64_t offset;                 /* begin, relative to the data section */
	uint64_t size;                   /* bytes: n_elems x element size */
	/* In the file: [size] bytes, little endian elements. NOT aligned (the header length
	 * is arbitrary): read elements with memcpy. */
	const uint8_t *data;
};

struct bn_st_file {
	char *path;                      /* or the caller's label for a parsed buffer */
	const uint8_t *base;             /* whole file [size] */
	size_t size;
	bool mapped;                     /* base is our mmap */
	uint64_t header_len;             /* N */
	uint64_t data_start;             /* 8 + N */
	size_t n_tensors;
	struct bn_st_tensor *tensors;    /* [n_tensors] sorted by name */
	char *names;                     /* storage of the names */
};

/* Map and validate a file. */
int bn_st_open(struct bn_st_file **out, const char *path, struct bn_error *err);
/* Validate a buffer the caller owns and keeps until close; label names it in messages. */
int bn_st_parse(struct bn_st_file **out, const void *buf, size_t size, const char *label,
                struct bn_error *err);
void bn_st_close(struct bn_st_file *f);

/* NULL when absent. */
const struct bn_st_tensor *bn_st_find(const struct bn_st_file *f, const char *name);
/* Drop the pages of a tensor from this process's resident set once it has been consumed
 * (a mapped file only; the page cache keeps them). */
void bn_st_release(const struct bn_st_file *f, const struct bn_st_tensor *t);
/* The same for [n] bytes at p inside the file's map (a tensor consumed piece by piece). */
void bn_st_release_bytes(const struct bn_st_file *f, const void *p, size_t n);

/* "BF16", ...; element byte size. */
const char *bn_st_dtype_name(enum bn_st_dtype d);
size_t bn_st_dtype_size(enum bn_st_dtype d);

/* A checkpoint directory: DIR/model.safetensors.index.json (its "weight_map" names, for
 * every tensor, the shard file in DIR that holds it) or else DIR/model.safetensors. Every
 * shard is validated as above; the weight map must list exactly the tensors the shards
 * hold, each in the shard that holds it, and shard names must be plain file names. */
struct bn_st_model {
	char *dir;
	size_t n_files;
	struct bn_st_file **files;       /* [n_files] */
	size_t n_tensors;
	struct bn_st_ref {
		const struct bn_st_tensor *t;
		const struct bn_st_file *f;
	} *index;                        /* [n_tensors] sorted by name */
	bool sharded;
};

int bn_st_model_open(struct bn_st_model **out, const char *dir, struct bn_error *err);
void bn_st_model_close(struct bn_st_model *m);
/* NULL when absent; *file (may be NULL) gets the shard holding it. */
const struct bn_st_tensor *bn_st_model_find(const struct bn_st_model *m, const char *name,
                                            const struct bn_st_file **file);

/* Read a small JSON file (config.json, an index) into a json-c object, at most max_bytes,
 * strictly parsed. *out is a struct json_object * (void here to keep json-c out of this
 * header); free it with json_object_put. */
int bn_st_json_load(const char *path, size_t max_bytes, void **out, struct bn_error *err);

#endif
