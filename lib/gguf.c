/* GGUF v2/v3 reader over a read-only map.
 *
 * The file is hostile until proven otherwise: every count is checked against the bytes
 * that could back it before anything is allocated, every length against the bytes left,
 * and all size arithmetic is overflow-checked. Nothing here trusts a value it has not
 * bounded, so any input ends in either a fully validated struct bn_gguf or a negative
 * errno with a message naming the file and the key or tensor at fault. */
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"

#define GGUF_HDR_SIZE 24u                       /* magic, version, n_tensors, n_kv */
#define GGUF_KV_MIN (8u + 1u + 4u)              /* key length, >= 1 key byte, type */
#define GGUF_TI_MIN (8u + 1u + 4u + 8u + 4u + 8u) /* name, 1 dim, type, offset */
#define GGUF_MAX_KEY 65535u
#define GGUF_DEFAULT_ALIGN 32u
#define GGUF_NTYPES 13u                         /* value types 0..12 */

struct bn_gguf_index {
	size_t kv_mask;     /* slots - 1 (a power of two minus one) */
	size_t *kv_slot;    /* [kv_mask + 1] kv index + 1; 0 = empty */
	size_t t_mask;
	size_t *t_slot;     /* [t_mask + 1] tensor index + 1; 0 = empty */
};

/* Parse state: a cursor over the untrusted bytes plus what messages need. */
struct rd {
	const uint8_t *b;       /* [size] the whole file */
	size_t size;
	size_t pos;             /* invariant: pos <= size */
	char name[128];         /* file name for messages (tail of long paths) */
	struct bn_error *err;
};

static const char *const vtype_names[GGUF_NTYPES] = {
	"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

/* Element size of fixed-size value types; 0 for string and array. */
static const uint8_t vtype_size[GGUF_NTYPES] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };

static const char *vtype_name(uint32_t t)
{
	return t < GGUF_NTYPES ? vtype_names[t] : "?";
}

static bool vtype_is_int(uint32_t t)
{
	return t <= BN_GGUF_INT32 || t == BN_GGUF_UINT64 || t == BN_GGUF_INT64;
}

static bool vtype_is_signed(uint32_t t)
{
	return t == BN_GGUF_INT8 || t == BN_GGUF_INT16 || t == BN_GGUF_INT32 || t == BN_GGUF_INT64;
}

/* Little-endian loads: GGUF files in the wild are little-endian, whatever the host. */
static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (uint16_t)p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* Reads a scalar of a fixed-size type widened: unsigned into u64, signed sign-extended into
 * i64 (returned through the same bits), floats into the double *f. */
static void load_scalar(uint32_t t, const uint8_t *p, uint64_t *u, double *f)
{
	float f32;
	uint32_t bits;
	switch (t) {
	case BN_GGUF_UINT8: case BN_GGUF_BOOL: *u = p[0]; break;
	case BN_GGUF_INT8: *u = (uint64_t)(int64_t)(int8_t)p[0]; break;
	case BN_GGUF_UINT16: *u = le16(p); break;
	case BN_GGUF_INT16: *u = (uint64_t)(int64_t)(int16_t)le16(p); break;
	case BN_GGUF_UINT32: *u = le32(p); break;
	case BN_GGUF_INT32: *u = (uint64_t)(int64_t)(int32_t)le32(p); break;
	case BN_GGUF_UINT64: case BN_GGUF_INT64: *u = le64(p); break;
	case BN_GGUF_FLOAT32:
		bits = le32(p);
		memcpy(&f32, &bits, sizeof(f32));
		*f = f32;
		break;
	case BN_GGUF_FLOAT64: {
		uint64_t b64 = le64(p);
		memcpy(f, &b64, sizeof(*f));
		break;
	}
	default: break;
	}
}

/* Printable copy of an untrusted name for messages: non-printable bytes and quotes become
 * \xNN, and long names are cut with "..." so the message keeps its tail. */
static const char *esc(char *dst, size_t cap, const char *s, uint64_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	for (uint64_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		bool plain = c >= 0x20 && c < 0x7f && c != '\'' && c != '\\';
		size_t need = plain ? 1 : 4;
		if (o + need + 4 > cap) {       /* room for "..." and NUL */
			memcpy(dst + o, "...", 3);
			o += 3;
			break;
		}
		if (plain) {
			dst[o++] = (char)c;
		} else {
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 15];
		}
	}
	dst[o] = '\0';
	return dst;
}

#define ESC_CAP 96
#define ESC(buf, s, len) esc((buf), sizeof(buf), (s), (len))

static uint64_t fnv1a(const void *p, size_t n)
{
	const unsigned char *s = p;
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++) {
		h ^= s[i];
		h *= 1099511628211ull;
	}
	return h;
}

static size_t slots_for(uint64_t n)
{
	size_t cap = 8;
	while (cap < 2 * n)     /* n <= file size / 13: no overflow */
		cap <<= 1;
	return cap;
}

static size_t left(const struct rd *r)
{
	return r->size - r->pos;
}

/* ---------------------------------------------------------------------------------------
 * Tensor types */

uint32_t bn_ggml_blck_size(uint32_t type)
{
	switch (type) {
	case BN_TYPE_F32: case BN_TYPE_F16: case BN_TYPE_BF16: return 1;
	case BN_TYPE_Q8_0: return 32;
	case BN_TYPE_TQ1_0: case BN_TYPE_TQ2_0: return 256;
	case BN_TYPE_I2_S: return 128;
	default: return 0;
	}
}

const char *bn_ggml_type_name(uint32_t type)
{
	switch (type) {
	case BN_TYPE_F32: return "f32";
	case BN_TYPE_F16: return "f16";
	case BN_TYPE_BF16: return "bf16";
	case BN_TYPE_Q8_0: return "q8_0";
	case BN_TYPE_TQ1_0: return "tq1_0";
	case BN_TYPE_TQ2_0: return "tq2_0";
	case BN_TYPE_I2_S: return "i2_s";
	default: return "unknown";    /* callers print it: never NULL */
	}
}

/* Element count of a shape, or 0 when a dimension is 0 or the product leaves int64 range
 * (ggml keeps counts in int64_t). */
static uint64_t nelements(const uint64_t ne[BN_GGUF_MAX_DIMS])
{
	uint64_t n = 1;
	for (int i = 0; i < BN_GGUF_MAX_DIMS; i++) {
		if (ne[i] == 0 || ne[i] > INT64_MAX || __builtin_mul_overflow(n, ne[i], &n) ||
		    n > INT64_MAX)
			return 0;
	}
	return n;
}

uint64_t bn_ggml_nbytes(uint32_t type, const uint64_t ne[BN_GGUF_MAX_DIMS])
{
	uint32_t blck = bn_ggml_blck_size(type);
	uint64_t n = nelements(ne), bytes;
	if (blck == 0 || n == 0 || ne[0] % blck != 0)
		return 0;
	switch (type) {
	case BN_TYPE_F32:
		return __builtin_mul_overflow(n, 4, &bytes) ? 0 : bytes;
	case BN_TYPE_F16: case BN_TYPE_BF16:
		return __builtin_mul_overflow(n, 2, &bytes) ? 0 : bytes;
	case BN_TYPE_Q8_0:
		return (n / 32) * 34;           /* < 2n: n <= INT64_MAX, cannot overflow */
	case BN_TYPE_TQ1_0:
		return (n / 256) * 54;          /* < n: cannot overflow */
	case BN_TYPE_TQ2_0:
		return (n / 256) * 66;
	case BN_TYPE_I2_S:
		/* 2 bits a weight, then one f32 scale and 28 bytes of padding for the tensor */
		return n / 4 + 32;
	default:
		return 0;
	}
}

/* ---------------------------------------------------------------------------------------
 * Index */

static bool kv_key_is(const struct bn_gguf_kv *kv, const char *key, size_t klen)
{
	return kv->key.len == klen && memcmp(kv->key.ptr, key, klen) == 0;
}

/* Inserts kv i unless its key is already there; returns the earlier index + 1 or 0. */
static size_t kv_insert(struct bn_gguf *g, size_t i)
{
	struct bn_gguf_index *ix = g->index;
	const struct bn_gguf_kv *kv = &g->kv[i];
	size_t h = (size_t)fnv1a(kv->key.ptr, (size_t)kv->key.len) & ix->kv_mask;
	while (ix->kv_slot[h]) {
		size_t j = ix->kv_slot[h] - 1;
		if (kv_key_is(&g->kv[j], kv->key.ptr, (size_t)kv->key.len))
			return j + 1;
		h = (h + 1) & ix->kv_mask;
	}
	ix->kv_slot[h] = i + 1;
	return 0;
}

static size_t tensor_insert(struct bn_gguf *g, size_t i)
{
	struct bn_gguf_index *ix = g->index;
	const char *name = g->tensors[i].name;
	size_t h = (size_t)fnv1a(name, strlen(name)) & ix->t_mask;
	while (ix->t_slot[h]) {
		size_t j = ix->t_slot[h] - 1;
		if (strcmp(g->tensors[j].name, name) == 0)
			return j + 1;
		h = (h + 1) & ix->t_mask;
	}
	ix->t_slot[h] = i + 1;
	return 0;
}

const struct bn_gguf_kv *bn_gguf_find_kv(const struct bn_gguf *g, const char *key)
{
	if (!g || !key)
		return NULL;
	size_t klen = strlen(key);
	const struct bn_gguf_index *ix = g->index;
	if (ix && ix->kv_slot) {
		size_t h = (size_t)fnv1a(key, klen) & ix->kv_mask;
		while (ix->kv_slot[h]) {
			const struct bn_gguf_kv *kv = &g->kv[ix->kv_slot[h] - 1];
			if (kv_key_is(kv, key, klen))
				return kv;
			h = (h + 1) & ix->kv_mask;
		}
		return NULL;
	}
	for (uint64_t i = 0; i < g->n_kv; i++)
		if (kv_key_is(&g->kv[i], key, klen))
			return &g->kv[i];
	return NULL;
}

const struct bn_gguf_tensor *bn_gguf_find_tensor(const struct bn_gguf *g, const char *name)
{
	if (!g || !name)
		return NULL;
	const struct bn_gguf_index *ix = g->index;
	if (ix && ix->t_slot) {
		size_t h = (size_t)fnv1a(name, strlen(name)) & ix->t_mask;
		while (ix->t_slot[h]) {
			const struct bn_gguf_tensor *t = &g->tensors[ix->t_slot[h] - 1];
			if (strcmp(t->name, name) == 0)
				return t;
			h = (h + 1) & ix->t_mask;
		}
		return NULL;
	}
	for (uint64_t i = 0; i < g->n_tensors; i++)
		if (strcmp(g->tensors[i].name, name) == 0)
			return &g->tensors[i];
	return NULL;
}

int bn_gguf_kv_value(const struct bn_gguf_kv *kv, const uint8_t **val, uint64_t *len)
{
	if (kv->type >= GGUF_NTYPES)
		return -EINVAL;
	/* the value follows the key and its u32 type; the parser checked every length */
	const uint8_t *p = (const uint8_t *)kv->key.ptr + kv->key.len + 4;
	uint64_t n;
	if (kv->type == BN_GGUF_STRING) {
		n = 8 + kv->v.str.len;
	} else if (kv->type != BN_GGUF_ARRAY) {
		n = vtype_size[kv->type];
	} else if (kv->arr_type == BN_GGUF_STRING) {
		const uint8_t *q = kv->arr_data;
		for (uint64_t j = 0; j < kv->arr_n; j++)
			q += 8 + le64(q);
		n = (uint64_t)(q - p);
	} else if (kv->arr_type < GGUF_NTYPES) {
		n = 12 + kv->arr_n * vtype_size[kv->arr_type];
	} else {
		return -EINVAL;
	}
	*val = p;
	*len = n;
	return 0;
}

/* ---------------------------------------------------------------------------------------
 * Parsing */

static int check_alignment(struct rd *r, struct bn_gguf *g, const struct bn_gguf_kv *kv)
{
	if (kv->type == BN_GGUF_ARRAY || !vtype_is_int(kv->type) || vtype_is_signed(kv->type))
		return bn_err_set(r->err, -EBADMSG,
		                  "%s: key 'general.alignment': must be an unsigned integer (u32), not %s",
		                  r->name, vtype_name(kv->type));
	uint64_t a = kv->v.u64;
	if (a == 0)
		return bn_err_set(r->err, -EBADMSG, "%s: key 'general.alignment': 0 is not a valid alignment",
		                  r->name);
	if (a & (a - 1))
		return bn_err_set(r->err, -EBADMSG,
		                  "%s: key 'general.alignment': %llu is not a power of two",
		                  r->name, (unsigned long long)a);
	if (a > BN_GGUF_MAX_ALIGN)
		return bn_err_set(r->err, -EBADMSG,
		                  "%s: key 'general.alignment': %llu exceeds the limit of %u bytes",
		                  r->name, (unsigned long long)a, BN_GGUF_MAX_ALIGN);
	g->alignment = (uint32_t)a;
	return 0;
}

/* Validates an array value at r->pos (element type and count already read). */
static int parse_array(struct rd *r, uint64_t i, const char *key, struct bn_gguf_kv *kv)
{
	uint32_t et = kv->arr_type;
	uint64_t n = kv->arr_n;
	if (et >= GGUF_NTYPES)
		return bn_err_set(r->err, -EBADMSG, "%s: key '%s': array of unknown element type %u",
		                  r->name, key, et);
	if (et == BN_GGUF_ARRAY)
		return bn_err_set(r->err, -EBADMSG, "%s: key '%s': arrays of arrays are not supported",
		                  r->name, key);
	kv->arr_data = r->b + r->pos;
	if (et != BN_GGUF_STRING) {
		uint64_t bytes;
		if (__builtin_mul_overflow(n, (uint64_t)vtype_size[et], &bytes))
			return bn_err_set(r->err, -EOVERFLOW,
			                  "%s: key '%s': array of %llu %s elements: byte size overflows",
			                  r->name, key, (unsigned long long)n, vtype_name(et));
		if (bytes > left(r))
			return bn_err_set(r->err, -EBADMSG,
			                  "%s: truncated in KV %llu ('%s'): array of %llu %s needs %llu bytes, %zu left",
			                  r->name, (unsigned long long)i, key, (unsigned long long)n,
			                  vtype_name(et), (unsigned long long)bytes, left(r));
		if (et == BN_GGUF_BOOL) {
			for (uint64_t j = 0; j < n; j++)
				if (r->b[r->pos + j] > 1)
					return bn_err_set(r->err, -EBADMSG,
					                  "%s: key '%s': bool element %llu is %u, not 0 or 1",
					                  r->name, key, (unsigned long long)j, r->b[r->pos + j]);
		}
		r->pos += (size_t)bytes;
		return 0;
	}
	/* Each string needs at least its 8-byte length: bound the count before walking. */
	if (n > left(r) / 8)
		return bn_err_set(r->err, -EBADMSG,
		                  "%s: truncated in KV %llu ('%s'): array of %llu strings needs more bytes than the %zu left",
		                  r->name, (unsigned long long)i, key, (unsigned long long)n, left(r));
	for (uint64_t j = 0; j < n; j++) {
		if (left(r) < 8)
			return bn_err_set(r->err, -EBADMSG,
			                  "%s: truncated in KV %llu ('%s'): string %llu of %llu: length needs 8 bytes, %zu left",
			                  r->name, (unsigned long long)i, key, (unsigned long long)j,
			                  (unsigned long long)n, left(r));
		uint64_t len = le64(r->b + r->pos);
		r->pos += 8;
		if (len > left(r))
			return bn_err_set(r->err, -EBADMSG,
			                  "%s: truncated in KV %llu ('%s'): string %llu of %llu has length %llu, %zu bytes left",
			                  r->name, (unsigned long long)i, key, (unsigned long long)j,
			                  (unsigned long long)n, (unsigned long long)len, left(r));
		r->pos += (size_t)len;
	}
	return 0;
}

static int parse_kvs(struct rd *r, struct bn_gguf *g)
{
	char kb[ESC_CAP];       /* escaped key for messages */
	for (uint64_t i = 0; i < g->n_kv; i++) {
		struct bn_gguf_kv *kv = &g->kv[i];
		if (left(r) < 8)
			return bn_err_set(r->err, -EBADMSG,
			                  "%s: truncated in KV %llu: key length needs 8 bytes, %zu left",
			                  r->name, (unsigned long long)i, left(r));
		uint64_t klen = le64(r->b + r->pos);
		r->pos += 8;
		if (klen == 0)
			return bn_err_set(r->err, -EBADMSG, "%s: KV %llu: empty key",
			                  r->name, (unsigned long long)i);
		if (klen > GGUF_MAX_KEY)
			return bn_err_set(r->err, -EBADMSG, "%s: KV %llu: key length %llu exceeds %u bytes",
			                  r->name, (unsigned long long)i, (unsigned long long)klen, GGUF_MAX_KEY);
		if (klen > left(r))
			return bn_err_set(r->err, -EBADMSG,
			                  "%s: truncated in KV %llu: key of %llu bytes, %zu left",
			                  r->name, (unsigned long long)i, (unsigned long long)klen, left(r));
		kv->key.ptr = (const char *)r->b + r->pos;
		kv->key.len = klen;
		r->pos += (size_t)klen;
		ESC(kb, kv->key.ptr, klen);
		/* Lookups take C strings: a NUL would make the key unreachable or alias another. */
		if (memchr(kv->key.ptr, '\0', (size_t)klen))
			return bn_err_set(r->err, -EBADMSG, "%s: KV %llu: key '%s' contains a NUL byte",
			                  r->name, (unsigned long long)i, kb);
		size_t dup = kv_insert(g, (size_t)i);
		if (dup)
			return bn_err_set(r->err, -EBADMSG, "%s: duplicate key '%s' (KV %llu and KV %llu)",
			                  r->name, kb, (unsigned long long)(dup - 1), (unsigned long long)i);
		if (left(r) < 4)
			return bn_err_set(r->err, -EBADMSG,
			                  "%s: truncated in KV %llu ('%s'): value type needs 4 bytes, %zu left",
			                  r->name, (unsigned long long)i, kb, left(r));
		kv->type = le32(r->b + r->pos);
		r->pos += 4;
		if (kv->type >= GGUF_NTYPES)
			return bn_err_set(r->err, -EBADMSG, "%s: key '%s': unknown value type %u",
			                  r->name, kb, kv->type);

		if (kv->type == BN_GGUF_STRING) {
			if (left(r) < 8)
				return bn_err_set(r->err, -EBADMSG,
				                  "%s: truncated in KV %llu ('%s'): string length needs 8 bytes, %zu left",
				                  r->name, (unsigned long long)i, kb, left(r));
			uint64_t len = le64(r->b + r->pos);
			r->pos += 8;
			if (len > left(r))
				return bn_err_set(r->err, -EBADMSG,
				                  "%s: truncated in KV %llu ('%s'): string of %llu bytes, %zu left",
				                  r->name, (unsigned long long)i, kb, (unsigned long long)len, left(r));
			kv->v.str.ptr = (const char *)r->b + r->pos;
			kv->v.str.len = len;
			r->pos += (size_t)len;
		} else if (kv->type == BN_GGUF_ARRAY) {
			if (left(r) < 12)
				return bn_err_set(r->err, -EBADMSG,
				                  "%s: truncated in KV %llu ('%s'): array header needs 12 bytes, %zu left",
				                  r->name, (unsigned long long)i, kb, left(r));
			kv->arr_type = le32(r->b + r->pos);
			kv->arr_n = le64(r->b + r->pos + 4);
			r->pos += 12;
			int rc = parse_array(r, i, kb, kv);
			if (rc)
				return rc;
		} else {
			size_t sz = vtype_size[kv->type];
			if (left(r) < sz)
				return bn_err_set(r->err, -EBADMSG,
				                  "%s: truncated in KV %llu ('%s'): %s value needs %zu bytes, %zu left",
				                  r->name, (unsigned long long)i, kb, vtype_name(kv->type), sz, left(r));
			const uint8_t *p = r->b + r->pos;
			r->pos += sz;
			if (kv->type == BN_GGUF_BOOL) {
				if (p[0] > 1)
					return bn_err_set(r->err, -EBADMSG, "%s: key '%s': bool value is %u, not 0 or 1",
					                  r->name, kb, p[0]);
				kv->v.b = p[0];
			} else if (kv->type == BN_GGUF_FLOAT32 || kv->type == BN_GGUF_FLOAT64) {
				load_scalar(kv->type, p, NULL, &kv->v.f64);
			} else {
				load_scalar(kv->type, p, &kv->v.u64, NULL);
			}
		}
		if (kv_key_is(kv, "general.alignment", strlen("general.alignment"))) {
			int rc = check_alignment(r, g, kv);
			if (rc)
				return rc;
		}
	}
	return 0;
}

static int parse_tensors(struct rd *r, struct bn_gguf *g)
{
	char nb[ESC_CAP];       /* escaped tensor name for messages */
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		struct bn_gguf_tensor *t = &g->tensors[i];
		unsigned long long ui = (unsigned long long)i;
		if (left(r) < 8)
			return bn_err_set(r->err, -EBADMSG,
			                  "%s: truncated in tensor %llu: name length needs 8 bytes, %zu left",
			                  r->name, ui, left(r));
		uint64_t len = le64(r->b + r->pos);
		r->pos += 8;
		if (len == 0)
			return bn_err_set(r->err, -EBADMSG, "%s: tensor %llu: empty name", r->name, ui);
		if (len > left(r))
			return bn_err_set(r->err, -EBADMSG,
			                  "%s: truncated in tensor %llu: name of %llu bytes, %zu left",
			                  r->name, ui, (unsigned long long)len, left(r));
		const char *np = (const char *)r->b + r->pos;
		ESC(nb, np, len);
		if (len > BN_GGUF_MAX_NAME)
			return bn_err_set(r->err, -EBADMSG,
			                  "%s: tensor %llu ('%s'): name of %llu bytes exceeds %u",
			                  r->name, ui, nb, (unsigned long long)len, BN_GGUF_MAX_NAME);
		if (memchr(np, '\0', (size_t)len))
			return bn_err_set(r->err, -EBADMSG, "%s: tensor %llu ('%s'): name contains a NUL byte",
			                  r->name, ui, nb);
		memcpy(t->name, np, (size_t)len);
		t->name[len] = '\0';
		r->pos += (size_t)len;
		size_t dup = tensor_insert(g, (size_t)i);
		if (dup)
			return bn_err_set(r->err, -EBADMSG,
			                  "%s: duplicate tensor name '%s' (tensors %llu and %llu)",
			                  r->name, nb, (unsigned long long)(dup - 1), ui);

		if (left(r) < 4)
			return bn_err_set(r->err, -EBADMSG,
			                  "%s: truncated in tensor %llu ('%s'): n_dims needs 4 bytes, %zu left",
			                  r->name, ui, nb, left(r));
		t->n_dims = le32(r->b + r->pos);
		r->pos += 4;
		if (t->n_dims < 1 || t->n_dims > BN_GGUF_MAX_DIMS)
			return bn_err_set(r->err, -EBADMSG, "%s: tensor '%s': %u dimensions (1..%d supported)",
			                  r->name, nb, t->n_dims, BN_GGUF_MAX_DIMS);
		if (left(r) < 8u * t->n_dims)
			return bn_err_set(r->err, -EBADMSG,
			                  "%s: truncated in tensor %llu ('%s'): %u dimensions need %u bytes, %zu left",
			                  r->name, ui, nb, t->n_dims, 8u * t->n_dims, left(r));
		uint64_t n = 1;
		for (uint32_t d = 0; d < BN_GGUF_MAX_DIMS; d++) {
			t->ne[d] = 1;
			if (d >= t->n_dims)
				continue;
			t->ne[d] = le64(r->b + r->pos);
			r->pos += 8;
			if (t->ne[d] == 0)
				return bn_err_set(r->err, -EBADMSG, "%s: tensor '%s': dimension %u is 0",
				                  r->name, nb, d);
			if (t->ne[d] > INT64_MAX || __builtin_mul_overflow(n, t->ne[d], &n) || n > INT64_MAX)
				return bn_err_set(r->err, -EOVERFLOW,
				                  "%s: tensor '%s': element count overflows at dimension %u (%llu)",
				                  r->name, nb, d, (unsigned long long)t->ne[d]);
		}

		if (left(r) < 12)
			return bn_err_set(r->err, -EBADMSG,
			                  "%s: truncated in tensor %llu ('%s'): type and offset need 12 bytes, %zu left",
			                  r->name, ui, nb, left(r));
		t->type = le32(r->b + r->pos);
		t->offset = le64(r->b + r->pos + 4);
		r->pos += 12;
		uint32_t blck = bn_ggml_blck_size(t->type);
		if (blck == 0)
			return bn_err_set(r->err, -ENOTSUP, "%s: tensor '%s': unsupported tensor type %u",
			                  r->name, nb, t->type);
		if (t->ne[0] % blck)
			return bn_err_set(r->err, -EBADMSG,
			                  "%s: tensor '%s': row length %llu is not a multiple of %u (type %s)",
			                  r->name, nb, (unsigned long long)t->ne[0], blck, bn_ggml_type_name(t->type));
		t->size = bn_ggml_nbytes(t->type, t->ne);
		if (t->size == 0)
			return bn_err_set(r->err, -EOVERFLOW, "%s: tensor '%s': byte size overflows",
			                  r->name, nb);
		if (t->offset % g->alignment)
			return bn_err_set(r->err, -EBADMSG,
			                  "%s: tensor '%s': offset %llu is not a multiple of the alignment %u",
			                  r->name, nb, (unsigned long long)t->offset, g->alignment);
	}
	return 0;
}

/* Tensor extent, for the overlap sweep. */
struct extent {
	uint64_t off, end;      /* [off, end) relative to the data section */
	size_t idx;
};

static int extent_cmp(const void *a, const void *b)
{
	const struct extent *x = a, *y = b;
	if (x->off != y->off)
		return x->off < y->off ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int check_extents(struct rd *r, struct bn_gguf *g)
{
	char nb[ESC_CAP], nb2[ESC_CAP];
	uint64_t n = g->n_tensors;
	if (n == 0)
		return 0;
	struct extent *ex = calloc((size_t)n, sizeof(*ex));     /* [n_tensors] */
	if (!ex)
		return bn_err_set(r->err, -ENOMEM, "%s: out of memory for %llu tensor extents",
		                  r->name, (unsigned long long)n);
	int rc = 0;
	for (uint64_t i = 0; i < n; i++) {
		struct bn_gguf_tensor *t = &g->tensors[i];
		uint64_t start, end;
		if (__builtin_add_overflow(g->data_offset, t->offset, &start) ||
		    __builtin_add_overflow(start, t->size, &end)) {
			rc = bn_err_set(r->err, -EOVERFLOW,
			                "%s: tensor '%s': extent %llu+%llu+%llu overflows",
			                r->name, ESC(nb, t->name, strlen(t->name)),
			                (unsigned long long)g->data_offset, (unsigned long long)t->offset,
			                (unsigned long long)t->size);
			goto out;
		}
		if (end > r->size) {
			rc = bn_err_set(r->err, -EBADMSG,
			                "%s: tensor '%s': extent %llu+%llu ends past the end of the file (%zu bytes)",
			                r->name, ESC(nb, t->name, strlen(t->name)), (unsigned long long)start,
			                (unsigned long long)t->size, r->size);
			goto out;
		}
		t->data = r->b + start;
		ex[i] = (struct extent){ t->offset, t->offset + t->size, (size_t)i };
	}
	qsort(ex, (size_t)n, sizeof(*ex), extent_cmp);
	for (uint64_t i = 1; i < n; i++) {
		if (ex[i - 1].end > ex[i].off) {
			const struct bn_gguf_tensor *a = &g->tensors[ex[i - 1].idx], *b = &g->tensors[ex[i].idx];
			rc = bn_err_set(r->err, -EBADMSG,
			                "%s: tensors '%s' (offset %llu, %llu bytes) and '%s' (offset %llu) overlap",
			                r->name, ESC(nb, a->name, strlen(a->name)), (unsigned long long)a->offset,
			                (unsigned long long)a->size, ESC(nb2, b->name, strlen(b->name)),
			                (unsigned long long)b->offset);
			goto out;
		}
	}
out:
	free(ex);
	return rc;
}

static void gguf_free(struct bn_gguf *g)
{
	if (!g)
		return;
	if (g->index) {
		free(g->index->kv_slot);
		free(g->index->t_slot);
		free(g->index);
	}
	free(g->kv);
	free(g->tensors);
	if (g->mapped && g->base)
		munmap((void *)g->base, g->size);
	if (g->has_fd)
		close(g->fd);
	free(g);
}

static void set_name(struct rd *r, const char *path)
{
	size_t n = strlen(path);
	if (n < sizeof(r->name)) {
		memcpy(r->name, path, n + 1);
	} else {        /* keep the tail: the file name matters more than the directories */
		size_t keep = sizeof(r->name) - 4;
		memcpy(r->name, "...", 3);
		memcpy(r->name + 3, path + n - keep, keep + 1);
	}
}

/* Parses the buffer into a fresh struct; on failure frees all but the buffer itself. */
static int gguf_parse(struct bn_gguf **out, const uint8_t *buf, size_t size, bool mapped,
                      const char *name, struct bn_error *err)
{
	struct rd r = { .b = buf, .size = size, .pos = 0, .err = err };
	set_name(&r, name);
	*out = NULL;

	if (size < GGUF_HDR_SIZE)
		return bn_err_set(err, -EBADMSG, "%s: truncated: %zu bytes, a GGUF header needs %u",
		                  r.name, size, GGUF_HDR_SIZE);
	if (memcmp(buf, "GGUF", 4) != 0)
		return bn_err_set(err, -EBADMSG, "%s: not a GGUF file (bad magic %02x %02x %02x %02x)",
		                  r.name, buf[0], buf[1], buf[2], buf[3]);
	uint32_t version = le32(buf + 4);
	if (version == 1)
		return bn_err_set(err, -ENOTSUP,
		                  "%s: GGUF version 1 is not supported (only 2 and 3); convert the file with a current tool",
		                  r.name);
	if (version != 2 && version != 3) {
		if ((version & 0xffff) == 0 && (version >> 24) >= 1 && (version >> 24) <= 3)
			return bn_err_set(err, -ENOTSUP, "%s: big-endian GGUF files are not supported",
			                  r.name);
		return bn_err_set(err, -ENOTSUP, "%s: GGUF version %u is not supported (only 2 and 3)",
		                  r.name, version);
	}
	uint64_t n_tensors = le64(buf + 8), n_kv = le64(buf + 16);
	r.pos = GGUF_HDR_SIZE;

	/* Bound the counts by the smallest encoding of each entry before allocating. */
	uint64_t kv_bytes, ti_bytes, need;
	size_t avail = size - GGUF_HDR_SIZE;
	if (__builtin_mul_overflow(n_kv, (uint64_t)GGUF_KV_MIN, &kv_bytes) || kv_bytes > avail)
		return bn_err_set(err, -EBADMSG,
		                  "%s: header claims %llu KVs, more than the %zu bytes after the header can hold",
		                  r.name, (unsigned long long)n_kv, avail);
	if (__builtin_mul_overflow(n_tensors, (uint64_t)GGUF_TI_MIN, &ti_bytes) || ti_bytes > avail)
		return bn_err_set(err, -EBADMSG,
		                  "%s: header claims %llu tensors, more than the %zu bytes after the header can hold",
		                  r.name, (unsigned long long)n_tensors, avail);
	if (__builtin_add_overflow(kv_bytes, ti_bytes, &need) || need > avail)
		return bn_err_set(err, -EBADMSG,
		                  "%s: header claims %llu KVs and %llu tensors, more than the %zu bytes after the header can hold",
		                  r.name, (unsigned long long)n_kv, (unsigned long long)n_tensors, avail);

	struct bn_gguf *g = calloc(1, sizeof(*g));
	if (!g)
		return bn_err_set(err, -ENOMEM, "%s: out of memory", r.name);
	g->base = buf;
	g->size = size;
	g->mapped = mapped;
	g->version = version;
	g->n_kv = n_kv;
	g->n_tensors = n_tensors;
	g->alignment = GGUF_DEFAULT_ALIGN;
	int rc = -ENOMEM;
	/* n_kv, n_tensors <= size / 13: these sizes fit size_t and are bounded by the file. */
	g->index = calloc(1, sizeof(*g->index));
	if (!g->index)
		goto nomem;
	g->index->kv_mask = slots_for(n_kv) - 1;
	g->index->t_mask = slots_for(n_tensors) - 1;
	g->kv = calloc(n_kv ? (size_t)n_kv : 1, sizeof(*g->kv));                  /* [n_kv] */
	g->tensors = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof(*g->tensors)); /* [n_tensors] */
	g->index->kv_slot = calloc(g->index->kv_mask + 1, sizeof(size_t));
	g->index->t_slot = calloc(g->index->t_mask + 1, sizeof(size_t));
	if (!g->kv || !g->tensors || !g->index->kv_slot || !g->index->t_slot)
		goto nomem;

	rc = parse_kvs(&r, g);
	if (rc)
		goto fail;
	rc = parse_tensors(&r, g);
	if (rc)
		goto fail;
	g->header_size = r.pos;
	/* pos <= size and alignment <= 1 MiB: cannot overflow u64 */
	g->data_offset = (r.pos + g->alignment - 1) / g->alignment * g->alignment;
	rc = check_extents(&r, g);
	if (rc)
		goto fail;
	*out = g;
	return 0;

nomem:
	rc = bn_err_set(err, -ENOMEM, "%s: out of memory for %llu KVs and %llu tensors",
	                r.name, (unsigned long long)n_kv, (unsigned long long)n_tensors);
fail:
	g->mapped = false;      /* the caller unmaps */
	gguf_free(g);
	return rc;
}

int bn_gguf_parse(struct bn_gguf **out, const void *buf, size_t size, struct bn_error *err)
{
	if (!out)
		return bn_err_set(err, -EINVAL, "bn_gguf_parse: no output pointer");
	*out = NULL;
	if (!buf && size)
		return bn_err_set(err, -EINVAL, "gguf buffer: NULL with %zu bytes", size);
	return gguf_parse(out, buf, size, false, "gguf buffer", err);
}

int bn_gguf_open(struct bn_gguf **out, const char *path, struct bn_error *err)
{
	if (!out)
		return bn_err_set(err, -EINVAL, "bn_gguf_open: no output pointer");
	*out = NULL;
	if (!path)
		return bn_err_set(err, -EINVAL, "bn_gguf_open: no path");
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		return bn_err_set(err, -e, "%s: cannot open: %s", path, strerror(e));
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = errno;
		close(fd);
		return bn_err_set(err, -e, "%s: cannot stat: %s", path, strerror(e));
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return bn_err_set(err, -EINVAL, "%s: not a regular file", path);
	}
	if (st.st_size == 0) {
		close(fd);
		return bn_err_set(err, -EBADMSG, "%s: empty file", path);
	}
	if ((uint64_t)st.st_size > SIZE_MAX) {
		close(fd);
		return bn_err_set(err, -EFBIG, "%s: %llu bytes do not fit the address space",
		                  path, (unsigned long long)st.st_size);
	}
	size_t size = (size_t)st.st_size;
	void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
	int e = errno;
	if (map == MAP_FAILED) {
		close(fd);
		return bn_err_set(err, -e, "%s: cannot map %zu bytes: %s", path, size, strerror(e));
	}
	int rc = gguf_parse(out, map, size, true, path, err);
	if (rc) {
		munmap(map, size);
		close(fd);
		return rc;
	}
	(*out)->has_fd = true;
	(*out)->fd = fd;
	(*out)->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
	return 0;
}

int bn_gguf_check_file(const struct bn_gguf *g, const char *path, struct bn_error *err)
{
	if (!g || !g->has_fd)
		return 0;
	struct stat st;
	if (fstat(g->fd, &st) < 0) {
		int e = errno;
		return bn_err_set(err, -e, "%s: cannot stat the mapped file: %s", path, strerror(e));
	}
	int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
	if ((uint64_t)st.st_size != g->size)
		return bn_err_set(err, -ESTALE, "%s: the mapped model file %s on disk (%zu bytes "
		                  "at load, %lld now); reload to serve it again", path,
		                  (uint64_t)st.st_size < g->size ? "was truncated" : "changed size",
		                  g->size, (long long)st.st_size);
	if (mt != g->mtime_ns)
		return bn_err_set(err, -ESTALE, "%s: the mapped model file was written to since it "
		                  "was loaded (modification time changed); reload to serve it again",
		                  path);
	return 0;
}

void bn_gguf_close(struct bn_gguf *g)
{
	gguf_free(g);
}

/* ---------------------------------------------------------------------------------------
 * Getters */

/* Whether an integer KV or array element of type t (raw bits widened by load_scalar) lies
 * in [lo, hi]; hi <= INT64_MAX, so the value then fits *out. */
static bool int_fits(uint32_t t, uint64_t raw, int64_t lo, uint64_t hi, int64_t *out)
{
	if (vtype_is_signed(t)) {
		int64_t v = (int64_t)raw;
		if (v < lo || (v >= 0 && (uint64_t)v > hi))
			return false;
		*out = v;
		return true;
	}
	if (raw > hi || (lo > 0 && raw < (uint64_t)lo))
		return false;
	*out = (int64_t)raw;
	return true;
}

int bn_gguf_get_u32(const struct bn_gguf *g, const char *key, uint32_t *out)
{
	const struct bn_gguf_kv *kv = bn_gguf_find_kv(g, key);
	if (!kv)
		return -ENOENT;
	if (!vtype_is_int(kv->type))
		return -EINVAL;
	int64_t v;
	if (!int_fits(kv->type, kv->v.u64, 0, UINT32_MAX, &v))
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

int bn_gguf_get_f32(const struct bn_gguf *g, const char *key, float *out)
{
	const struct bn_gguf_kv *kv = bn_gguf_find_kv(g, key);
	if (!kv)
		return -ENOENT;
	if (kv->type != BN_GGUF_FLOAT32 && kv->type != BN_GGUF_FLOAT64)
		return -EINVAL;
	double d = kv->v.f64;
	if (isfinite(d) && fabs(d) > FLT_MAX)
		return -EINVAL;
	*out = (float)d;
	return 0;
}

int bn_gguf_get_bool(const struct bn_gguf *g, const char *key, bool *out)
{
	const struct bn_gguf_kv *kv = bn_gguf_find_kv(g, key);
	if (!kv)
		return -ENOENT;
	if (kv->type != BN_GGUF_BOOL)
		return -EINVAL;
	*out = kv->v.b;
	return 0;
}

int bn_gguf_get_str(const struct bn_gguf *g, const char *key, struct bn_gguf_str *out)
{
	const struct bn_gguf_kv *kv = bn_gguf_find_kv(g, key);
	if (!kv)
		return -ENOENT;
	if (kv->type != BN_GGUF_STRING)
		return -EINVAL;
	*out = kv->v.str;
	return 0;
}

int bn_gguf_arr_strs(const struct bn_gguf_kv *kv, struct bn_gguf_str *out)
{
	if (!kv || kv->type != BN_GGUF_ARRAY || kv->arr_type != BN_GGUF_STRING)
		return -EINVAL;
	/* Bounds were checked element by element at parse time. */
	const uint8_t *p = kv->arr_data;
	for (uint64_t i = 0; i < kv->arr_n; i++) {
		out[i].len = le64(p);
		out[i].ptr = (const char *)p + 8;
		p += 8 + out[i].len;
	}
	return 0;
}

int bn_gguf_arr_i32(const struct bn_gguf_kv *kv, uint64_t i, int32_t *out)
{
	if (!kv || kv->type != BN_GGUF_ARRAY || !vtype_is_int(kv->arr_type) || i >= kv->arr_n)
		return -EINVAL;
	uint64_t raw = 0;
	load_scalar(kv->arr_type, kv->arr_data + i * vtype_size[kv->arr_type], &raw, NULL);
	int64_t v;
	if (!int_fits(kv->arr_type, raw, INT32_MIN, INT32_MAX, &v))
		return -EINVAL;
	*out = (int32_t)v;
	return 0;
}

int bn_gguf_arr_f32(const struct bn_gguf_kv *kv, uint64_t i, float *out)
{
	if (!kv || kv->type != BN_GGUF_ARRAY || kv->arr_type != BN_GGUF_FLOAT32 || i >= kv->arr_n)
		return -EINVAL;
	uint32_t bits = le32(kv->arr_data + i * 4);
	memcpy(out, &bits, sizeof(*out));
	return 0;
}

bool bn_gguf_str_eq(struct bn_gguf_str s, const char *c)
{
	if (!c)
		return false;
	size_t n = strlen(c);
	return s.len == n && (n == 0 || memcmp(s.ptr, c, n) == 0);
}
