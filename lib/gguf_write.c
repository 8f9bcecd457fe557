/* Streaming GGUF v3 writer: KVs and the tensor table are assembled in memory, tensor data
 * is streamed through a buffered FILE* and never held here. */
#include "gguf_write.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "vocab.h"

#define GGUF_VERSION 3
#define DEFAULT_ALIGN 32
#define IO_BUF (1u << 20)

struct wtensor {
	char *name;
	uint32_t n_dims;
	uint64_t ne[BN_GGUF_MAX_DIMS];
	uint32_t type;
	uint64_t size;     /* bytes */
	uint64_t offset;   /* in the data section */
};

struct bn_ggufw {
	FILE *fp;
	bool own;               /* we opened fp: close it */
	bool unlink_on_fail;    /* and remove it after a failure (not a device, FIFO, ...) */
	char *label;            /* path or caller's label, for messages */
	int failed;             /* sticky negative errno */
	uint8_t *kv;            /* [kv_len] serialized KV pairs */
	size_t kv_len, kv_cap;
	uint64_t n_kv;
	char **kv_keys;         /* [n_kv] for the duplicate check */
	struct wtensor *t;      /* [n_t] */
	size_t n_t, t_cap;
	uint32_t alignment;
	bool in_data;
	size_t cur;             /* tensor being streamed */
	uint64_t cur_done;      /* its bytes written so far */
	uint64_t data_start;    /* file offset of the data section */
	uint64_t file_size;
	char *iobuf;            /* [IO_BUF] stdio buffer when we own fp */
};

static int fail(struct bn_ggufw *w, struct bn_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(struct bn_ggufw *w, struct bn_error *err, int code, const char *fmt, ...)
{
	char what[384];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	w->failed = code;
	return bn_err_set(err, code, "file %s: %s", w->label, what);
}

static const char *type_name(uint32_t type)
{
	switch (type) {
	case BN_TYPE_F32: return "F32";
	case BN_TYPE_F16: return "F16";
	case BN_TYPE_BF16: return "BF16";
	case BN_TYPE_Q8_0: return "Q8_0";
	case BN_TYPE_TQ1_0: return "TQ1_0";
	case BN_TYPE_TQ2_0: return "TQ2_0";
	case BN_TYPE_I2_S: return "I2_S";
	default: return "unknown";
	}
}

static int check_state(struct bn_ggufw *w, struct bn_error *err, bool want_data)
{
	if (w->failed)
		return bn_err_set(err, w->failed, "file %s: writer already failed", w->label);
	if (!want_data && w->in_data)
		return bn_err_set(err, -EINVAL, "file %s: KV or tensor added after data started",
		                  w->label);
	return 0;
}

static int init(struct bn_ggufw **out, FILE *fp, bool own, const char *label, struct bn_error *err)
{
	struct bn_ggufw *w = calloc(1, sizeof *w);
	if (!w || !(w->label = strdup(label))) {
		free(w);
		return bn_err_set(err, -ENOMEM, "file %s: out of memory", label);
	}
	w->fp = fp;
	w->own = own;
	w->alignment = DEFAULT_ALIGN;
	*out = w;
	return 0;
}

/* An existing path that is not a regular file (a device such as /dev/null, a FIFO): written
 * in place, never renamed over or removed. */
static bool special_file(const char *path)
{
	struct stat st;
	return !stat(path, &st) && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode);
}

int bn_ggufw_open(struct bn_ggufw **out, const char *path, struct bn_error *err)
{
	*out = NULL;
	bool special = special_file(path);
	FILE *fp = fopen(path, "wb");
	if (!fp)
		return bn_err_set(err, -errno, "file %s: cannot create: %s", path, strerror(errno));
	int rc = init(out, fp, true, path, err);
	if (rc) {
		fclose(fp);
		if (!special)
			unlink(path);
		return rc;
	}
	(*out)->unlink_on_fail = !special;
	/* one large buffer: tensor data arrives a row at a time */
	(*out)->iobuf = malloc(IO_BUF);
	if ((*out)->iobuf)
		setvbuf(fp, (*out)->iobuf, _IOFBF, IO_BUF);
	return 0;
}

int bn_ggufw_open_fp(struct bn_ggufw **out, FILE *fp, const char *label, struct bn_error *err)
{
	*out = NULL;
	return init(out, fp, false, label ? label : "(stream)", err);
}

FILE *bn_ggufw_open_temp(const char *out, char *tmp, size_t cap, struct bn_error *err)
{
	if (cap)
		tmp[0] = '\0';
	if (special_file(out)) {
		FILE *fp = fopen(out, "wb");
		if (!fp)
			bn_err_set(err, -errno, "file %s: cannot open for writing: %s", out,
			           strerror(errno));
		return fp;
	}
	for (unsigned n = 0; n < 100; n++) {
		if ((size_t)snprintf(tmp, cap, "%s.tmp-%ld-%u", out, (long)getpid(), n) >= cap) {
			bn_err_set(err, -ENAMETOOLONG, "file %s: name too long", out);
			return NULL;
		}
		int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
		if (fd < 0 && errno == EEXIST)
			continue;
		if (fd < 0) {
			bn_err_set(err, -errno, "file %s: cannot create: %s", tmp, strerror(errno));
			return NULL;
		}
		FILE *fp = fdopen(fd, "wb");
		if (!fp) {
			bn_err_set(err, -errno, "file %s: %s", tmp, strerror(errno));
			close(fd);
			unlink(tmp);
		}
		return fp;
	}
	bn_err_set(err, -EEXIST, "file %s: no free temporary name", out);
	return NULL;
}

int bn_ggufw_commit_temp(FILE *fp, const char *tmp, const char *out, struct bn_error *err)
{
	const char *name = tmp[0] ? tmp : out;
	/* no fsync for a special file written in place: devices and pipes refuse it */
	if (fflush(fp) || (tmp[0] && fsync(fileno(fp)))) {
		int e = errno;
		fclose(fp);
		return bn_err_set(err, -e, "file %s: write failed: %s", name, strerror(e));
	}
	if (fclose(fp)) {
		int e = errno;
		return bn_err_set(err, -e, "file %s: close failed: %s", name, strerror(e));
	}
	if (tmp[0] && rename(tmp, out))
		return bn_err_set(err, -errno, "file %s: cannot rename to %s: %s", tmp, out,
		                  strerror(errno));
	return 0;
}

/* ---- KV serialization --------------------------------------------------------------- */

static int kv_reserve(struct bn_ggufw *w, size_t n, struct bn_error *err)
{
	if (n <= w->kv_cap - w->kv_len)
		return 0;
	if (n > SIZE_MAX / 2 - w->kv_len)
		return fail(w, err, -EOVERFLOW, "KV data too large");
	size_t cap = w->kv_cap ? w->kv_cap : 4096;
	while (cap - w->kv_len < n)
		cap *= 2;
	uint8_t *p = realloc(w->kv, cap);
	if (!p)
		return fail(w, err, -ENOMEM, "out of memory for KV data");
	w->kv = p;
	w->kv_cap = cap;
	return 0;
}

/* Callers reserve first; these only copy. Little endian like the host. */
static void put(struct bn_ggufw *w, const void *p, size_t n)
{
	memcpy(w->kv + w->kv_len, p, n);
	w->kv_len += n;
}

static void put_u32(struct bn_ggufw *w, uint32_t v)
{
	put(w, &v, 4);
}

static void put_u64(struct bn_ggufw *w, uint64_t v)
{
	put(w, &v, 8);
}

static void put_str(struct bn_ggufw *w, const char *s, size_t len)
{
	put_u64(w, len);
	put(w, s, len);
}

/* Validates the key, records it and writes key + value type. extra: bytes of the value. */
static int kv_begin(struct bn_ggufw *w, const char *key, uint32_t vtype, size_t extra,
                    struct bn_error *err)
{
	int rc = check_state(w, err, false);
	if (rc)
		return rc;
	size_t klen = key ? strlen(key) : 0;
	if (klen == 0 || klen > 65535)
		return fail(w, err, -EINVAL, "KV key empty or too long");
	for (uint64_t i = 0; i < w->n_kv; i++)
		if (!strcmp(w->kv_keys[i], key))
			return fail(w, err, -EINVAL, "key %s: duplicate", key);
	char **keys = realloc(w->kv_keys, (w->n_kv + 1) * sizeof *keys);
	if (!keys)
		return fail(w, err, -ENOMEM, "key %s: out of memory", key);
	w->kv_keys = keys;
	if (!(keys[w->n_kv] = strdup(key)))
		return fail(w, err, -ENOMEM, "key %s: out of memory", key);
	if (extra > SIZE_MAX - 16 - klen)
		return fail(w, err, -EOVERFLOW, "key %s: value too large", key);
	rc = kv_reserve(w, 8 + klen + 4 + extra, err);
	if (rc) {
		free(keys[w->n_kv]);
		return rc;
	}
	w->n_kv++;
	put_str(w, key, klen);
	put_u32(w, vtype);
	return 0;
}

int bn_ggufw_kv_u32(struct bn_ggufw *w, const char *key, uint32_t v, struct bn_error *err)
{
	if (key && !strcmp(key, "general.alignment")) {
		if (v == 0 || (v & (v - 1)) || v > BN_GGUF_MAX_ALIGN)
			return fail(w, err, -EINVAL, "key %s: alignment not a power of two <= 1 MiB",
			            key);
	}
	int rc = kv_begin(w, key, BN_GGUF_UINT32, 4, err);
	if (rc)
		return rc;
	put_u32(w, v);
	if (!strcmp(key, "general.alignment"))
		w->alignment = v;
	return 0;
}

int bn_ggufw_kv_i32(struct bn_ggufw *w, const char *key, int32_t v, struct bn_error *err)
{
	int rc = kv_begin(w, key, BN_GGUF_INT32, 4, err);
	if (!rc)
		put(w, &v, 4);
	return rc;
}

int bn_ggufw_kv_f32(struct bn_ggufw *w, const char *key, float v, struct bn_error *err)
{
	int rc = kv_begin(w, key, BN_GGUF_FLOAT32, 4, err);
	if (!rc)
		put(w, &v, 4);
	return rc;
}

int bn_ggufw_kv_bool(struct bn_ggufw *w, const char *key, bool v, struct bn_error *err)
{
	int rc = kv_begin(w, key, BN_GGUF_BOOL, 1, err);
	if (!rc) {
		uint8_t b = v ? 1 : 0;
		put(w, &b, 1);
	}
	return rc;
}

int bn_ggufw_kv_str(struct bn_ggufw *w, const char *key, const char *v, struct bn_error *err)
{
	size_t len = strlen(v);
	int rc = kv_begin(w, key, BN_GGUF_STRING, 8 + len, err);
	if (!rc)
		put_str(w, v, len);
	return rc;
}

int bn_ggufw_kv_arr_str(struct bn_ggufw *w, const char *key, const char *const *v, uint64_t n,
                        struct bn_error *err)
{
	size_t total = 12;
	for (uint64_t i = 0; i < n; i++) {
		size_t len = strlen(v[i]);
		if (len > SIZE_MAX / 4 - total)
			return fail(w, err, -EOVERFLOW, "key %s: array too large", key);
		total += 8 + len;
	}
	int rc = kv_begin(w, key, BN_GGUF_ARRAY, total, err);
	if (rc)
		return rc;
	put_u32(w, BN_GGUF_STRING);
	put_u64(w, n);
	for (uint64_t i = 0; i < n; i++)
		put_str(w, v[i], strlen(v[i]));
	return 0;
}

static int kv_arr_scalar(struct bn_ggufw *w, const char *key, uint32_t etype, const void *v,
                         uint64_t n, struct bn_error *err)
{
	if (n > (SIZE_MAX / 4 - 12) / 4)
		return fail(w, err, -EOVERFLOW, "key %s: array too large", key);
	int rc = kv_begin(w, key, BN_GGUF_ARRAY, 12 + (size_t)n * 4, err);
	if (rc)
		return rc;
	put_u32(w, etype);
	put_u64(w, n);
	if (n)
		put(w, v, (size_t)n * 4);
	return 0;
}

int bn_ggufw_kv_arr_i32(struct bn_ggufw *w, const char *key, const int32_t *v, uint64_t n,
                        struct bn_error *err)
{
	return kv_arr_scalar(w, key, BN_GGUF_INT32, v, n, err);
}

int bn_ggufw_kv_arr_f32(struct bn_ggufw *w, const char *key, const float *v, uint64_t n,
                        struct bn_error *err)
{
	return kv_arr_scalar(w, key, BN_GGUF_FLOAT32, v, n, err);
}

int bn_ggufw_kv_raw(struct bn_ggufw *w, const char *key, uint32_t vtype, const void *val,
                    size_t len, struct bn_error *err)
{
	if (vtype > BN_GGUF_FLOAT64)
		return fail(w, err, -EINVAL, "key %s: unknown value type %u", key ? key : "", vtype);
	uint32_t align = 0;
	if (key && !strcmp(key, "general.alignment")) {
		/* the data offsets follow it: read it as the reader does (any unsigned width) */
		uint64_t a = 0;
		const uint8_t *b = val;
		if ((vtype != BN_GGUF_UINT8 && vtype != BN_GGUF_UINT16 && vtype != BN_GGUF_UINT32 &&
		     vtype != BN_GGUF_UINT64) || len > 8)
			return fail(w, err, -EINVAL, "key %s: not an unsigned integer", key);
		for (size_t i = 0; i < len; i++)
			a |= (uint64_t)b[i] << (8 * i);
		if (a == 0 || (a & (a - 1)) || a > BN_GGUF_MAX_ALIGN)
			return fail(w, err, -EINVAL, "key %s: alignment not a power of two <= 1 MiB",
			            key);
		align = (uint32_t)a;
	}
	int rc = kv_begin(w, key, vtype, len, err);
	if (rc)
		return rc;
	put(w, val, len);
	if (align)
		w->alignment = align;
	return 0;
}

/* ---- tensors ------------------------------------------------------------------------ */

static bool mul_ok(uint64_t a, uint64_t b, uint64_t *r)
{
	return !__builtin_mul_overflow(a, b, r);
}

uint64_t bn_ggufw_tensor_nbytes(uint32_t type, uint32_t n_dims, const uint64_t *ne)
{
	if (n_dims == 0 || n_dims > BN_GGUF_MAX_DIMS)
		return 0;
	uint64_t rows = 1, k = ne[0], n;
	for (uint32_t i = 1; i < n_dims; i++)
		if (!mul_ok(rows, ne[i], &rows))
			return 0;
	if (k == 0 || rows == 0)
		return 0;
	switch (type) {
	case BN_TYPE_F32:
		return mul_ok(k, rows, &n) && mul_ok(n, 4, &n) ? n : 0;
	case BN_TYPE_F16:
	case BN_TYPE_BF16:
		return mul_ok(k, rows, &n) && mul_ok(n, 2, &n) ? n : 0;
	case BN_TYPE_I2_S:   /* 2 bits a weight + f32 tensor scale + 28 pad bytes */
		if (k % 128)
			return 0;
		return mul_ok(k / 4, rows, &n) && n <= UINT64_MAX - 32 ? n + 32 : 0;
	case BN_TYPE_TQ2_0:
		if (k % 256)
			return 0;
		return mul_ok(k / 256 * 66, rows, &n) ? n : 0;
	case BN_TYPE_TQ1_0:
		if (k % 256)
			return 0;
		return mul_ok(k / 256 * 54, rows, &n) ? n : 0;
	case BN_TYPE_Q8_0:
		if (k % 32)
			return 0;
		return mul_ok(k / 32, 34, &n) && mul_ok(n, rows, &n) ? n : 0;
	default:
		return 0;
	}
}

int bn_ggufw_tensor(struct bn_ggufw *w, const char *name, uint32_t n_dims, const uint64_t *ne,
                    uint32_t type, struct bn_error *err)
{
	int rc = check_state(w, err, false);
	if (rc)
		return rc;
	size_t len = name ? strlen(name) : 0;
	if (len == 0 || len > BN_GGUF_MAX_NAME)
		return fail(w, err, -EINVAL, "tensor name '%s' empty or longer than 255 bytes",
		            name ? name : "");
	for (size_t i = 0; i < w->n_t; i++)
		if (!strcmp(w->t[i].name, name))
			return fail(w, err, -EINVAL, "tensor %s: duplicate name", name);
	uint64_t size = bn_ggufw_tensor_nbytes(type, n_dims, ne);
	if (!size)
		return fail(w, err, -EINVAL, "tensor %s: shape not valid for type %s", name,
		            type_name(type));
	if (w->n_t == w->t_cap) {
		size_t cap = w->t_cap ? w->t_cap * 2 : 64;
		struct wtensor *t = realloc(w->t, cap * sizeof *t);
		if (!t)
			return fail(w, err, -ENOMEM, "tensor %s: out of memory", name);
		w->t = t;
		w->t_cap = cap;
	}
	struct wtensor *t = &w->t[w->n_t];
	memset(t, 0, sizeof *t);
	if (!(t->name = strdup(name)))
		return fail(w, err, -ENOMEM, "tensor %s: out of memory", name);
	t->n_dims = n_dims;
	for (uint32_t i = 0; i < BN_GGUF_MAX_DIMS; i++)
		t->ne[i] = i < n_dims ? ne[i] : 1;
	t->type = type;
	t->size = size;
	w->n_t++;
	return 0;
}

/* ---- output ------------------------------------------------------------------------- */

static int out(struct bn_ggufw *w, const void *p, size_t n, struct bn_error *err)
{
	if (n && fwrite(p, 1, n, w->fp) != n) {
		int e = errno ? errno : EIO;
		return fail(w, err, -e, "write failed: %s", strerror(e));
	}
	return 0;
}

static uint64_t pad_to(uint64_t x, uint32_t a)
{
	return (x + a - 1) / a * a;
}

static int zeros(struct bn_ggufw *w, uint64_t n, struct bn_error *err)
{
	static const uint8_t z[64];
	while (n) {
		size_t c = n < sizeof z ? (size_t)n : sizeof z;
		int rc = out(w, z, c, err);
		if (rc)
			return rc;
		n -= c;
	}
	return 0;
}

int bn_ggufw_begin_data(struct bn_ggufw *w, struct bn_error *err)
{
	int rc = check_state(w, err, false);
	if (rc)
		return rc;
	/* header: magic, version, n_tensors, n_kv; then KVs; then the tensor table */
	uint64_t hdr = 4 + 4 + 8 + 8 + w->kv_len;
	uint64_t off = 0;
	for (size_t i = 0; i < w->n_t; i++) {
		struct wtensor *t = &w->t[i];
		hdr += 8 + strlen(t->name) + 4 + 8ull * t->n_dims + 4 + 8;
		t->offset = off;
		uint64_t end = off + t->size;
		if (end < off || pad_to(end, w->alignment) < end)
			return fail(w, err, -EOVERFLOW, "tensor %s: data section too large",
			            t->name);
		off = pad_to(end, w->alignment);
	}
	w->data_start = pad_to(hdr, w->alignment);
	w->file_size = w->data_start + off;

	uint32_t u32v = GGUF_VERSION;
	uint64_t n_t = w->n_t;
	if ((rc = out(w, "GGUF", 4, err)) || (rc = out(w, &u32v, 4, err)) ||
	    (rc = out(w, &n_t, 8, err)) || (rc = out(w, &w->n_kv, 8, err)) ||
	    (rc = out(w, w->kv, w->kv_len, err)))
		return rc;
	for (size_t i = 0; i < w->n_t; i++) {
		const struct wtensor *t = &w->t[i];
		uint64_t len = strlen(t->name);
		if ((rc = out(w, &len, 8, err)) || (rc = out(w, t->name, len, err)) ||
		    (rc = out(w, &t->n_dims, 4, err)) ||
		    (rc = out(w, t->ne, 8ull * t->n_dims, err)) ||
		    (rc = out(w, &t->type, 4, err)) || (rc = out(w, &t->offset, 8, err)))
			return rc;
	}
	if ((rc = zeros(w, w->data_start - hdr, err)))
		return rc;
	/* the KV blob is no longer needed: give its memory back before the data streams */
	free(w->kv);
	w->kv = NULL;
	w->kv_len = w->kv_cap = 0;
	w->in_data = true;
	w->cur = 0;
	w->cur_done = 0;
	return 0;
}

int bn_ggufw_write(struct bn_ggufw *w, const void *buf, size_t n, struct bn_error *err)
{
	int rc = check_state(w, err, true);
	if (rc)
		return rc;
	if (!w->in_data && (rc = bn_ggufw_begin_data(w, err)))
		return rc;
	if (n == 0)
		return 0;
	if (w->cur >= w->n_t)
		return fail(w, err, -EINVAL, "tensor data written after the last tensor");
	struct wtensor *t = &w->t[w->cur];
	if (n > t->size - w->cur_done) {
		return fail(w, err, -EINVAL, "tensor %s: %llu bytes written, tensor holds %llu",
		            t->name, (unsigned long long)(w->cur_done + n),
		            (unsigned long long)t->size);
	}
	if ((rc = out(w, buf, n, err)))
		return rc;
	w->cur_done += n;
	if (w->cur_done == t->size) {
		if ((rc = zeros(w, pad_to(t->size, w->alignment) - t->size, err)))
			return rc;
		w->cur++;
		w->cur_done = 0;
	}
	return 0;
}

const char *bn_ggufw_current(const struct bn_ggufw *w)
{
	return w->cur < w->n_t ? w->t[w->cur].name : NULL;
}

uint64_t bn_ggufw_file_size(const struct bn_ggufw *w)
{
	return w->file_size;
}

static void destroy(struct bn_ggufw *w)
{
	for (uint64_t i = 0; i < w->n_kv; i++)
		free(w->kv_keys[i]);
	free(w->kv_keys);
	for (size_t i = 0; i < w->n_t; i++)
		free(w->t[i].name);
	free(w->t);
	free(w->kv);
	free(w->iobuf);
	free(w->label);
	free(w);
}

int bn_ggufw_close(struct bn_ggufw *w, struct bn_error *err)
{
	int rc = w->failed ? bn_err_set(err, w->failed, "file %s: writer already failed", w->label)
	                   : 0;
	if (!rc && !w->in_data)
		rc = bn_ggufw_begin_data(w, err);   /* a file with no tensor data at all */
	if (!rc && w->cur < w->n_t) {
		rc = fail(w, err, -EINVAL, "tensor %s: incomplete: %llu of %llu bytes written",
		          w->t[w->cur].name, (unsigned long long)w->cur_done,
		          (unsigned long long)w->t[w->cur].size);
	}
	if (!rc && fflush(w->fp) != 0) {
		int e = errno ? errno : EIO;
		rc = bn_err_set(err, -e, "file %s: write failed: %s", w->label, strerror(e));
	}
	if (w->own) {
		if (fclose(w->fp) != 0 && !rc) {
			int e = errno ? errno : EIO;
			rc = bn_err_set(err, -e, "file %s: close failed: %s", w->label, strerror(e));
		}
		if (rc && w->unlink_on_fail)
			unlink(w->label);
	}
	destroy(w);
	return rc;
}

void bn_ggufw_abort(struct bn_ggufw *w)
{
	if (!w)
		return;
	if (w->own) {
		fclose(w->fp);
		if (w->unlink_on_fail)
			unlink(w->label);
	}
	destroy(w);
}

int bn_ggufw_vocab(struct bn_ggufw *w, const struct bn_vocab *v, struct bn_error *err)
{
	int rc;
	if ((rc = bn_ggufw_kv_str(w, "tokenizer.ggml.model", v->model[0] ? v->model : "gpt2", err)))
		return rc;
	if (v->pre[0] && (rc = bn_ggufw_kv_str(w, "tokenizer.ggml.pre", v->pre, err)))
		return rc;
	if ((rc = bn_ggufw_kv_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->tokens,
	                              v->n_tokens, err)) ||
	    (rc = bn_ggufw_kv_arr_i32(w, "tokenizer.ggml.token_type", v->types, v->n_tokens, err)) ||
	    (rc = bn_ggufw_kv_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v->merges,
	                              v->n_merges, err)))
		return rc;
	static const char *const id_keys[4] = {
		"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
		"tokenizer.ggml.eot_token_id", "tokenizer.ggml.padding_token_id",
	};
	const int32_t ids[4] = { v->bos, v->eos, v->eot, v->pad };
	for (int i = 0; i < 4; i++)
		if (ids[i] >= 0 && (rc = bn_ggufw_kv_u32(w, id_keys[i], (uint32_t)ids[i], err)))
			return rc;
	return bn_ggufw_kv_bool(w, "tokenizer.ggml.add_bos_token", v->add_bos, err);
}
