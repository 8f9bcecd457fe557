/* GGUF v2/v3 read-only reader: validates everything before trusting it.
 * Internal to libbitnet. */
#ifndef BN_GGUF_H
#define BN_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

enum bn_gguf_vtype {
	BN_GGUF_UINT8 = 0, BN_GGUF_INT8 = 1, BN_GGUF_UINT16 = 2, BN_GGUF_INT16 = 3,
	BN_GGUF_UINT32 = 4, BN_GGUF_INT32 = 5, BN_GGUF_FLOAT32 = 6, BN_GGUF_BOOL = 7,
	BN_GGUF_STRING = 8, BN_GGUF_ARRAY = 9, BN_GGUF_UINT64 = 10, BN_GGUF_INT64 = 11,
	BN_GGUF_FLOAT64 = 12,
};

/* ggml tensor type ids that the reader accepts (allow-list). */
enum bn_ggml_type {
	BN_TYPE_F32 = 0, BN_TYPE_F16 = 1, BN_TYPE_Q8_0 = 8, BN_TYPE_BF16 = 30,
	BN_TYPE_TQ1_0 = 34, BN_TYPE_TQ2_0 = 35, BN_TYPE_I2_S = 36,
};

#define BN_GGUF_MAX_NAME 255      /* tensor name bytes */
#define BN_GGUF_MAX_DIMS 4
#define BN_GGUF_MAX_ALIGN (1u << 20)

/* A string inside the map: NOT NUL-terminated. */
struct bn_gguf_str {
	uint64_t len;
	const char *ptr;
};

struct bn_gguf_kv {
	struct bn_gguf_str key;
	uint32_t type;            /* enum bn_gguf_vtype */
	uint32_t arr_type;        /* element type when type == ARRAY */
	uint64_t arr_n;           /* element count when type == ARRAY */
	const uint8_t *arr_data;  /* first element in the map (ARRAY only) */
	union {                   /* scalar values, widened */
		uint64_t u64;
		int64_t i64;
		double f64;
		bool b;
		struct bn_gguf_str str;
	} v;
};

struct bn_gguf_tensor {
	char name[BN_GGUF_MAX_NAME + 1];   /* NUL-terminated copy */
	uint32_t n_dims;
	uint64_t ne[BN_GGUF_MAX_DIMS];     /* ne[0] = innermost (row length); unused dims = 1 */
	uint32_t type;                     /* enum bn_ggml_type */
	uint64_t offset;                   /* relative to the data section */
	uint64_t size;                     /* bytes */
	const void *data;                  /* in the map */
};

struct bn_gguf_index;

struct bn_gguf {
	const uint8_t *base;     /* whole file [size] */
	size_t size;
	bool mapped;             /* base is our mmap (munmap on close) */
	uint32_t version;
	uint64_t n_kv;
	struct bn_gguf_kv *kv;           /* [n_kv] */
	uint64_t n_tensors;
	struct bn_gguf_tensor *tensors;  /* [n_tensors] */
	uint32_t alignment;
	uint64_t data_offset;            /* start of the data section in the file */
	uint64_t header_size;            /* bytes of header + KV + tensor table (before padding) */
	/* Private: hash index over keys and tensor names, built at parse time. NULL (e.g. a
	 * struct filled by hand) makes the lookups fall back to a linear search. */
	struct bn_gguf_index *index;
	/* bn_gguf_open: the file stays open, so that bn_gguf_check_file sees changes made to
	 * the mapped file itself (not to whatever the path names later). */
	bool has_fd;
	int fd;
	int64_t mtime_ns;                /* at open */
};

/* Map and validate a file. On failure returns -errno and writes a message naming the
 * file and the key/tensor/field into err. */
int bn_gguf_open(struct bn_gguf **out, const char *path, struct bn_error *err);
/* Validate a buffer the caller owns (kept referenced until close). Used by tests/fuzzers. */
int bn_gguf_parse(struct bn_gguf **out, const void *buf, size_t size, struct bn_error *err);
void bn_gguf_close(struct bn_gguf *g);
/* For a bn_gguf_open'ed file: 0 while the file is as it was mapped, -ESTALE when it was
 * truncated, extended or written to since (its size or modification time changed: the
 * mapped bytes may no longer be the ones validated at load). 0 for a parsed buffer. */
int bn_gguf_check_file(const struct bn_gguf *g, const char *path, struct bn_error *err);

/* Byte size of a tensor of this type and shape, or 0 for an unknown type or a row length
 * the type cannot hold (block multiple). Overflow-checked: 0 on overflow. */
uint64_t bn_ggml_nbytes(uint32_t type, const uint64_t ne[BN_GGUF_MAX_DIMS]);
/* "f32", "f16", "q8_0", "bf16", "tq1_0", "tq2_0", "i2_s"; "unknown" (never NULL) otherwise. */
const char *bn_ggml_type_name(uint32_t type);
/* Block size in elements (1 for scalar types; 32 for Q8_0; 128 for I2_S rows), 0 if unknown. */
uint32_t bn_ggml_blck_size(uint32_t type);

const struct bn_gguf_kv *bn_gguf_find_kv(const struct bn_gguf *g, const char *key);
const struct bn_gguf_tensor *bn_gguf_find_tensor(const struct bn_gguf *g, const char *name);

/* Typed getters: 0, -ENOENT when missing, -EINVAL when of the wrong type or out of range
 * (integers of any width/sign are accepted when the value fits). */
int bn_gguf_get_u32(const struct bn_gguf *g, const char *key, uint32_t *out);
int bn_gguf_get_f32(const struct bn_gguf *g, const char *key, float *out);
int bn_gguf_get_bool(const struct bn_gguf *g, const char *key, bool *out);
int bn_gguf_get_str(const struct bn_gguf *g, const char *key, struct bn_gguf_str *out);

/* Array access: element i of an array KV. Strings arrays are walked sequentially, so
 * use bn_gguf_arr_strs to get all of them at once (out has kv->arr_n slots). */
int bn_gguf_arr_strs(const struct bn_gguf_kv *kv, struct bn_gguf_str *out);
int bn_gguf_arr_i32(const struct bn_gguf_kv *kv, uint64_t i, int32_t *out);  /* any int type */
int bn_gguf_arr_f32(const struct bn_gguf_kv *kv, uint64_t i, float *out);    /* F32 only */

/* The bytes of a KV's value as the file holds them (after the key and the u32 value type:
 * a string's u64 length, an array's element type and count, then the data), for copying a
 * KV unchanged. Only for a KV of a parsed file. 0, or -EINVAL for an unknown type. */
int bn_gguf_kv_value(const struct bn_gguf_kv *kv, const uint8_t **val, uint64_t *len);

/* Compare a GGUF string with a C string. */
bool bn_gguf_str_eq(struct bn_gguf_str s, const char *c);

#endif
