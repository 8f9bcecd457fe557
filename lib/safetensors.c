/* safetensors reader (see safetensors.h): every size and offset is checked before a tensor
 * is handed out; json-c parses the header, a small scanner finds duplicate names. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

static const struct {
	const char *name;
	size_t size;
} dtypes[] = {
	[BN_ST_BOOL] = { "BOOL", 1 },       [BN_ST_U8] = { "U8", 1 },
	[BN_ST_I8] = { "I8", 1 },           [BN_ST_F8_E5M2] = { "F8_E5M2", 1 },
	[BN_ST_F8_E4M3] = { "F8_E4M3", 1 }, [BN_ST_I16] = { "I16", 2 },
	[BN_ST_U16] = { "U16", 2 },         [BN_ST_F16] = { "F16", 2 },
	[BN_ST_BF16] = { "BF16", 2 },       [BN_ST_I32] = { "I32", 4 },
	[BN_ST_U32] = { "U32", 4 },         [BN_ST_F32] = { "F32", 4 },
	[BN_ST_F64] = { "F64", 8 },         [BN_ST_I64] = { "I64", 8 },
	[BN_ST_U64] = { "U64", 8 },
};
#define N_DTYPES (sizeof dtypes / sizeof dtypes[0])

const char *bn_st_dtype_name(enum bn_st_dtype d)
{
	return (size_t)d < N_DTYPES ? dtypes[d].name : "unknown";
}

size_t bn_st_dtype_size(enum bn_st_dtype d)
{
	return (size_t)d < N_DTYPES ? dtypes[d].size : 0;
}

static int parse_dtype(const char *s, enum bn_st_dtype *out)
{
	for (size_t i = 0; i < N_DTYPES; i++)
		if (!strcmp(s, dtypes[i].name)) {
			*out = (enum bn_st_dtype)i;
			return 0;
		}
	return -ENOTSUP;
}

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* ---- strict JSON text -> json-c ----------------------------------------------------- */

/* Parses [len] bytes as exactly one JSON value followed only by whitespace. *at gets the
 * byte offset of an error. */
static json_object *parse_strict(const char *s, size_t len, const char **why, size_t *at)
{
	*why = NULL;
	*at = 0;
	if (len > INT32_MAX) {
		*why = "too large";
		return NULL;
	}
	if (memchr(s, '\0', len)) {
		*at = (size_t)((const char *)memchr(s, '\0', len) - s);
		*why = "NUL byte in the JSON text";
		return NULL;
	}
	json_tokener *tok = json_tokener_new();
	if (!tok) {
		*why = "out of memory";
		return NULL;
	}
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_ALLOW_TRAILING_CHARS |
	                               JSON_TOKENER_VALIDATE_UTF8);
	json_object *o = json_tokener_parse_ex(tok, s, (int)len);
	enum json_tokener_error je = json_tokener_get_error(tok);
	size_t end = tok->char_offset;
	json_tokener_free(tok);
	if (je != json_tokener_success || !o) {
		json_object_put(o);
		*at = end;
		*why = je == json_tokener_continue ? "the JSON text ends early"
		                                   : json_tokener_error_desc(je);
		return NULL;
	}
	for (size_t i = end; i < len; i++)
		if (!is_ws(s[i])) {
			json_object_put(o);
			*at = i;
			*why = "bytes after the JSON value";
			return NULL;
		}
	return o;
}

static int read_small(const char *path, size_t max, char **buf, size_t *len, struct bn_error *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return bn_err_set(err, -errno, "file %s: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return bn_err_set(err, -EINVAL, "file %s: not a regular file", path);
	}
	if (st.st_size <= 0 || (uint64_t)st.st_size > max) {
		close(fd);
		return bn_err_set(err, -EBADMSG, "file %s: size %lld is outside 1..%zu bytes", path,
		                  (long long)st.st_size, max);
	}
	size_t n = (size_t)st.st_size, got = 0;
	char *b = malloc(n);
	if (!b) {
		close(fd);
		return bn_err_set(err, -ENOMEM, "file %s: out of memory for %zu bytes", path, n);
	}
	while (got < n) {
		ssize_t r = read(fd, b + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			int e = r < 0 ? errno : EIO;
			free(b);
			close(fd);
			return bn_err_set(err, -e, "file %s: read failed after %zu of %zu bytes", path,
			                  got, n);
		}
		got += (size_t)r;
	}
	close(fd);
	*buf = b;
	*len = n;
	return 0;
}

int bn_st_json_load(const char *path, size_t max_bytes, void **out, struct bn_error *err)
{
	*out = NULL;
	char *buf = NULL;
	size_t len = 0;
	int rc = read_small(path, max_bytes, &buf, &len, err);
	if (rc)
		return rc;
	const char *why;
	size_t at;
	json_object *o = parse_strict(buf, len, &why, &at);
	free(buf);
	if (!o)
		return bn_err_set(err, -EBADMSG, "file %s: JSON error at byte %zu: %s", path, at, why);
	*out = o;
	return 0;
}

/* ---- the header ---------------------------------------------------------------------- */

struct slice {
	size_t at, len;   /* a key's text in the header, quotes included */
};

/* The top-level keys of an object text that json-c accepted in strict mode, as raw slices
 * (json-c keeps only the last of two equal keys, so duplicates are found here). */
static int scan_keys(const char *s, size_t n, struct slice **out, size_t *count)
{
	struct slice *v = NULL;
	size_t cnt = 0, cap = 0, depth = 0, i = 0;
	bool want_key = false;
	*out = NULL;
	*count = 0;
	while (i < n && is_ws(s[i]))
		i++;
	if (i >= n || s[i] != '{')
		return -EBADMSG;
	for (; i < n; i++) {
		char c = s[i];
		if (c == '"') {
			size_t start = i;
			for (i++; i < n && s[i] != '"'; i++)
				if (s[i] == '\\')
					i++;
			if (i >= n) {
				free(v);
				return -EBADMSG;
			}
			if (depth == 1 && want_key) {
				if (cnt == cap) {
					cap = cap ? cap * 2 : 64;
					struct slice *nv = realloc(v, cap * sizeof *nv);
					if (!nv) {
						free(v);
						return -ENOMEM;
					}
					v = nv;
				}
				v[cnt++] = (struct slice){ start, i + 1 - start };
				want_key = false;
			}
		} else if (c == '{' || c == '[') {
			depth++;
			if (depth == 1)
				want_key = true;
		} else if (c == '}' || c == ']') {
			if (depth == 0) {
				free(v);
				return -EBADMSG;
			}
			if (--depth == 0)
				break;
		} else if (c == ',' && depth == 1) {
			want_key = true;
		} else if (c == '\'') {
			/* json-c's strict mode still takes single-quoted strings: not JSON */
			free(v);
			return -EBADMSG;
		}
	}
	*out = v;
	*count = cnt;
	return 0;
}

/* A key slice unescaped; NULL on a NUL byte inside (*nul set) or no memory. */
static char *unescape_key(const char *s, const struct slice *k, bool *nul)
{
	const char *why;
	size_t at;
	*nul = false;
	json_object *o = parse_strict(s + k->at, k->len, &why, &at);
	if (!o || !json_object_is_type(o, json_type_string)) {
		json_object_put(o);
		return NULL;
	}
	const char *str = json_object_get_string(o);
	size_t len = (size_t)json_object_get_string_len(o);
	char *d = NULL;
	if (memchr(str, '\0', len))
		*nul = true;
	else
		d = strdup(str);
	json_object_put(o);
	return d;
}

static int cmp_strp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Names a duplicate or NUL-holding key. Returns the error code set. */
static int check_keys(const struct bn_st_file *f, const char *hdr, size_t hlen, size_t n_obj,
                      struct bn_error *err)
{
	struct slice *keys;
	size_t n;
	int rc = scan_keys(hdr, hlen, &keys, &n);
	if (rc)
		return bn_err_set(err, rc == -ENOMEM ? rc : -EBADMSG,
		                  "file %s: header JSON error: not standard JSON (single quotes?)",
		                  f->path);
	/* only keys with an escape can hide a NUL byte */
	for (size_t i = 0; i < n; i++) {
		if (!memchr(hdr + keys[i].at, '\\', keys[i].len))
			continue;
		bool nul;
		char *k = unescape_key(hdr, &keys[i], &nul);
		free(k);
		if (nul) {
			rc = bn_err_set(err, -EBADMSG, "file %s: header byte %zu: a tensor name holds a "
			                "NUL byte", f->path, (size_t)(8 + keys[i].at));
			goto out;
		}
	}
	if (n != n_obj) {
		/* some name is there twice: find it to name it */
		char **names = calloc(n ? n : 1, sizeof *names);
		rc = names ? 0 : -ENOMEM;
		for (size_t i = 0; !rc && i < n; i++) {
			bool nul;
			if (!(names[i] = unescape_key(hdr, &keys[i], &nul)))
				rc = -ENOMEM;
		}
		if (rc) {
			rc = bn_err_set(err, rc, "file %s: out of memory", f->path);
		} else {
			qsort(names, n, sizeof *names, cmp_strp);
			const char *dup = NULL;
			for (size_t i = 1; i < n && !dup; i++)
				if (!strcmp(names[i - 1], names[i]))
					dup = names[i];
			if (dup)
				rc = bn_err_set(err, -EBADMSG, "file %s: tensor %.200s: name appears twice in "
				                "the header", f->path, dup);
			else   /* keys the scan did not see: json-c took something JSON does not allow */
				rc = bn_err_set(err, -EBADMSG, "file %s: header JSON error: not standard JSON",
				                f->path);
		}
		if (names)
			for (size_t i = 0; i < n; i++)
				free(names[i]);
		free(names);
	}
out:
	free(keys);
	return rc;
}

/* A JSON integer >= 0. */
static bool get_u64(json_object *o, uint64_t *v)
{
	if (!json_object_is_type(o, json_type_int) || json_object_get_int64(o) < 0)
		return false;
	*v = json_object_get_uint64(o);
	return true;
}

static int parse_entry(struct bn_st_file *f, const char *name, json_object *e,
                       struct bn_st_tensor *t, uint64_t data_size, struct bn_error *err)
{
	const char *p = f->path;
	if (!json_object_is_type(e, json_type_object))
		return bn_err_set(err, -EBADMSG, "file %s: tensor %s: entry is not an object", p, name);
	json_object *jd = NULL, *js = NULL, *jo = NULL;
	json_object_object_foreach(e, k, v) {
		if (!strcmp(k, "dtype"))
			jd = v;
		else if (!strcmp(k, "shape"))
			js = v;
		else if (!strcmp(k, "data_offsets"))
			jo = v;
		else
			return bn_err_set(err, -EBADMSG, "file %s: tensor %s: unknown field '%.64s'", p,
			                  name, k);
	}
	if (!jd || !js || !jo)
		return bn_err_set(err, -EBADMSG, "file %s: tensor %s: needs dtype, shape and "
		                  "data_offsets", p, name);
	if (!json_object_is_type(jd, json_type_string))
		return bn_err_set(err, -EBADMSG, "file %s: tensor %s: dtype is not a string", p, name);
	if (parse_dtype(json_object_get_string(jd), &t->dtype))
		return bn_err_set(err, -ENOTSUP, "file %s: tensor %s: unknown dtype '%.32s'", p, name,
		                  json_object_get_string(jd));
	if (!json_object_is_type(js, json_type_array))
		return bn_err_set(err, -EBADMSG, "file %s: tensor %s: shape is not an array", p, name);
	size_t nd = json_object_array_length(js);
	if (nd > BN_ST_MAX_DIMS)
		return bn_err_set(err, -EBADMSG, "file %s: tensor %s: %zu dimensions (at most %d)", p,
		                  name, nd, BN_ST_MAX_DIMS);
	t->n_dims = (uint32_t)nd;
	uint64_t n = 1;
	for (size_t d = 0; d < nd; d++) {
		if (!get_u64(json_object_array_get_idx(js, d), &t->shape[d]))
			return bn_err_set(err, -EBADMSG, "file %s: tensor %s: shape[%zu] is not an "
			                  "integer >= 0", p, name, d);
		if (__builtin_mul_overflow(n, t->shape[d], &n))
			return bn_err_set(err, -EOVERFLOW, "file %s: tensor %s: the shape's element "
			                  "count overflows", p, name);
	}
	t->n_elems = n;
	uint64_t bytes;
	if (__builtin_mul_overflow(n, (uint64_t)bn_st_dtype_size(t->dtype), &bytes))
		return bn_err_set(err, -EOVERFLOW, "file %s: tensor %s: byte size overflows", p, name);
	uint64_t b, end;
	if (!json_object_is_type(jo, json_type_array) || json_object_array_length(jo) != 2 ||
	    !get_u64(json_object_array_get_idx(jo, 0), &b) ||
	    !get_u64(json_object_array_get_idx(jo, 1), &end))
		return bn_err_set(err, -EBADMSG, "file %s: tensor %s: data_offsets is not [begin, "
		                  "end] of integers >= 0", p, name);
	if (end < b)
		return bn_err_set(err, -EBADMSG, "file %s: tensor %s: data_offsets end %llu is before "
		                  "begin %llu", p, name, (unsigned long long)end, (unsigned long long)b);
	if (end > data_size)
		return bn_err_set(err, -EBADMSG, "file %s: tensor %s: data_offsets [%llu, %llu] run past "
		                  "the data section (%llu bytes)", p, name, (unsigned long long)b,
		                  (unsigned long long)end, (unsigned long long)data_size);
	if (end - b != bytes)
		return bn_err_set(err, -EBADMSG, "file %s: tensor %s: data_offsets span %llu bytes but "
		                  "%s x %llu elements is %llu bytes", p, name,
		                  (unsigned long long)(end - b), bn_st_dtype_name(t->dtype),
		                  (unsigned long long)n, (unsigned long long)bytes);
	t->offset = b;
	t->size = bytes;
	t->data = f->base + f->data_start + b;
	return 0;
}

static int cmp_offset(const void *a, const void *b)
{
	const struct bn_st_tensor *x = *(const struct bn_st_tensor *const *)a;
	const struct bn_st_tensor *y = *(const struct bn_st_tensor *const *)b;
	if (x->offset != y->offset)
		return x->offset < y->offset ? -1 : 1;
	if (x->size != y->size)
		return x->size < y->size ? -1 : 1;
	return strcmp(x->name, y->name);
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(((const struct bn_st_tensor *)a)->name, ((const struct bn_st_tensor *)b)->name);
}

/* Tensors in offset order must tile the data section exactly. */
static int check_layout(struct bn_st_file *f, uint64_t data_size, struct bn_error *err)
{
	size_t n = f->n_tensors;
	const struct bn_st_tensor **order = malloc((n ? n : 1) * sizeof *order);
	if (!order)
		return bn_err_set(err, -ENOMEM, "file %s: out of memory", f->path);
	for (size_t i = 0; i < n; i++)
		order[i] = &f->tensors[i];
	qsort(order, n, sizeof *order, cmp_offset);
	uint64_t at = 0;
	int rc = 0;
	for (size_t i = 0; i < n && !rc; i++) {
		const struct bn_st_tensor *t = order[i];
		if (t->offset < at)
			rc = bn_err_set(err, -EBADMSG, "file %s: tensor %s: bytes [%llu, %llu) overlap "
			                "tensor %s", f->path, t->name, (unsigned long long)t->offset,
			                (unsigned long long)(t->offset + t->size), order[i - 1]->name);
		else if (t->offset > at)
			rc = bn_err_set(err, -EBADMSG, "file %s: tensor %s: %llu unused bytes before it "
			                "(at %llu) in the data section", f->path, t->name,
			                (unsigned long long)(t->offset - at), (unsigned long long)at);
		at = t->offset + t->size;
	}
	if (!rc && at != data_size)
		rc = bn_err_set(err, -EBADMSG, "file %s: %llu bytes after the last tensor's data", f->path,
		                (unsigned long long)(data_size - at));
	free(order);
	return rc;
}

static int parse_file(struct bn_st_file *f, struct bn_error *err)
{
	const char *p = f->path;
	if (f->size < 8)
		return bn_err_set(err, -EBADMSG, "file %s: %zu bytes is too short for the header length",
		                  p, f->size);
	uint64_t n = 0;
	for (int i = 7; i >= 0; i--)
		n = n << 8 | f->base[i];
	if (n > f->size - 8)
		return bn_err_set(err, -EBADMSG, "file %s: header length %llu runs past the end of the "
		                  "file (%zu bytes)", p, (unsigned long long)n, f->size);
	if (n > BN_ST_MAX_HEADER)
		return bn_err_set(err, -EBADMSG, "file %s: header length %llu is over the format's "
		                  "limit of %u", p, (unsigned long long)n, BN_ST_MAX_HEADER);
	if (n < 2)
		return bn_err_set(err, -EBADMSG, "file %s: header length %llu: no JSON object", p,
		                  (unsigned long long)n);
	f->header_len = n;
	f->data_start = 8 + n;
	uint64_t data_size = f->size - f->data_start;
	const char *hdr = (const char *)f->base + 8;

	const char *why;
	size_t at;
	json_object *root = parse_strict(hdr, (size_t)n, &why, &at);
	if (!root)
		return bn_err_set(err, -EBADMSG, "file %s: header JSON error at byte %zu: %s", p,
		                  (size_t)(8 + at), why);
	int rc = 0;
	if (!json_object_is_type(root, json_type_object)) {
		rc = bn_err_set(err, -EBADMSG, "file %s: the header is not a JSON object", p);
		goto out;
	}
	size_t n_obj = (size_t)json_object_object_length(root);
	if ((rc = check_keys(f, hdr, (size_t)n, n_obj, err)))
		goto out;

	size_t names_len = 0, n_t = 0;
	json_object_object_foreach(root, key, val) {
		if (!strcmp(key, "__metadata__")) {
			if (!json_object_is_type(val, json_type_object)) {
				rc = bn_err_set(err, -EBADMSG, "file %s: __metadata__ is not an object", p);
				goto out;
			}
			json_object_object_foreach(val, mk, mv) {
				if (!json_object_is_type(mv, json_type_string)) {
					rc = bn_err_set(err, -EBADMSG, "file %s: __metadata__ entry '%.64s' is "
					                "not a string", p, mk);
					goto out;
				}
			}
			continue;
		}
		if (!key[0]) {
			rc = bn_err_set(err, -EBADMSG, "file %s: a tensor has an empty name", p);
			goto out;
		}
		names_len += strlen(key) + 1;
		n_t++;
	}
	f->tensors = calloc(n_t ? n_t : 1, sizeof *f->tensors);
	f->names = malloc(names_len ? names_len : 1);
	if (!f->tensors || !f->names) {
		rc = bn_err_set(err, -ENOMEM, "file %s: out of memory for %zu tensors", p, n_t);
		goto out;
	}
	char *np = f->names;
	json_object_object_foreach(root, key2, val2) {
		if (!strcmp(key2, "__metadata__"))
			continue;
		struct bn_st_tensor *t = &f->tensors[f->n_tensors];
		size_t kl = strlen(key2) + 1;
		memcpy(np, key2, kl);
		t->name = np;
		np += kl;
		if ((rc = parse_entry(f, t->name, val2, t, data_size, err)))
			goto out;
		f->n_tensors++;
	}
	if ((rc = check_layout(f, data_size, err)))
		goto out;
	qsort(f->tensors, f->n_tensors, sizeof *f->tensors, cmp_name);
out:
	json_object_put(root);
	return rc;
}

static struct bn_st_file *file_new(const char *label)
{
	struct bn_st_file *f = calloc(1, sizeof *f);
	if (f && !(f->path = strdup(label))) {
		free(f);
		f = NULL;
	}
	return f;
}

int bn_st_parse(struct bn_st_file **out, const void *buf, size_t size, const char *label,
                struct bn_error *err)
{
	*out = NULL;
	struct bn_st_file *f = file_new(label ? label : "(buffer)");
	if (!f)
		return bn_err_set(err, -ENOMEM, "out of memory");
	f->base = buf;
	f->size = size;
	int rc = parse_file(f, err);
	if (rc) {
		bn_st_close(f);
		return rc;
	}
	*out = f;
	return 0;
}

int bn_st_open(struct bn_st_file **out, const char *path, struct bn_error *err)
{
	*out = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return bn_err_set(err, -errno, "file %s: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return bn_err_set(err, -EINVAL, "file %s: not a regular file", path);
	}
	if (st.st_size < 8) {
		close(fd);
		return bn_err_set(err, -EBADMSG, "file %s: %lld bytes is too short for the header "
		                  "length", path, (long long)st.st_size);
	}
	if ((uint64_t)st.st_size > SIZE_MAX) {
		close(fd);
		return bn_err_set(err, -EOVERFLOW, "file %s: too large to map", path);
	}
	size_t size = (size_t)st.st_size;
	void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	int e = errno;
	close(fd);
	if (map == MAP_FAILED)
		return bn_err_set(err, -e, "file %s: mmap of %zu bytes failed: %s", path, size,
		                  strerror(e));
	struct bn_st_file *f = file_new(path);
	if (!f) {
		munmap(map, size);
		return bn_err_set(err, -ENOMEM, "out of memory");
	}
	f->base = map;
	f->size = size;
	f->mapped = true;
	int rc = parse_file(f, err);
	if (rc) {
		bn_st_close(f);
		return rc;
	}
	*out = f;
	return 0;
}

void bn_st_close(struct bn_st_file *f)
{
	if (!f)
		return;
	if (f->mapped)
		munmap((void *)f->base, f->size);
	free(f->tensors);
	free(f->names);
	free(f->path);
	free(f);
}

const struct bn_st_tensor *bn_st_find(const struct bn_st_file *f, const char *name)
{
	struct bn_st_tensor key = { .name = name };
	return bsearch(&key, f->tensors, f->n_tensors, sizeof key, cmp_name);
}

void bn_st_release(const struct bn_st_file *f, const struct bn_st_tensor *t)
{
	bn_st_release_bytes(f, t->data, t->size);
}

void bn_st_release_bytes(const struct bn_st_file *f, const void *p, size_t n)
{
	const uint8_t *b = p;
	if (!f->mapped || !n || b < f->base || n > f->size || (size_t)(b - f->base) > f->size - n)
		return;
	long pg = sysconf(_SC_PAGESIZE);
	uintptr_t ps = pg > 0 ? (uintptr_t)pg : 4096;
	uintptr_t lo = (uintptr_t)b & ~(ps - 1);
	uintptr_t hi = ((uintptr_t)b + n + ps - 1) & ~(ps - 1);
	/* a read-only file mapping: dropped pages come back from the page cache if touched */
	madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* ---- checkpoint directories ------------------------------------------------------------ */

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"
#define MAX_INDEX_BYTES (64u << 20)
#define MAX_SHARDS 65536

static char *join(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	char *p = malloc(a + b + 2);
	if (p) {
		memcpy(p, dir, a);
		p[a] = '/';
		memcpy(p + a + 1, name, b + 1);
	}
	return p;
}

static bool plain_name(const char *s, size_t len)
{
	return len > 0 && len <= 255 && !memchr(s, '/', len) && !memchr(s, '\0', len) &&
	       strcmp(s, ".") && strcmp(s, "..");
}

static int cmp_ref(const void *a, const void *b)
{
	return strcmp(((const struct bn_st_ref *)a)->t->name, ((const struct bn_st_ref *)b)->t->name);
}

static int add_file(struct bn_st_model *m, const char *name, struct bn_error *err)
{
	char *path = join(m->dir, name);
	if (!path)
		return bn_err_set(err, -ENOMEM, "out of memory");
	struct bn_st_file *f;
	int rc = bn_st_open(&f, path, err);
	free(path);
	if (rc)
		return rc;
	m->files[m->n_files++] = f;
	return 0;
}

static int build_index(struct bn_st_model *m, struct bn_error *err)
{
	size_t n = 0;
	for (size_t i = 0; i < m->n_files; i++)
		n += m->files[i]->n_tensors;
	m->index = calloc(n ? n : 1, sizeof *m->index);
	if (!m->index)
		return bn_err_set(err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < m->n_files; i++)
		for (size_t j = 0; j < m->files[i]->n_tensors; j++)
			m->index[m->n_tensors++] = (struct bn_st_ref){ &m->files[i]->tensors[j], m->files[i] };
	qsort(m->index, m->n_tensors, sizeof *m->index, cmp_ref);
	for (size_t i = 1; i < m->n_tensors; i++)
		if (!strcmp(m->index[i - 1].t->name, m->index[i].t->name))
			return bn_err_set(err, -EBADMSG, "directory %s: tensor %s is in both %s and %s",
			                  m->dir, m->index[i].t->name, m->index[i - 1].f->path,
			                  m->index[i].f->path);
	return 0;
}

static int open_sharded(struct bn_st_model *m, const char *index_path, struct bn_error *err)
{
	void *jv;
	int rc = bn_st_json_load(index_path, MAX_INDEX_BYTES, &jv, err);
	if (rc)
		return rc;
	json_object *root = jv, *wm;
	char **names = NULL;
	size_t n_names = 0;
	if (!json_object_is_type(root, json_type_object) ||
	    !json_object_object_get_ex(root, "weight_map", &wm) ||
	    !json_object_is_type(wm, json_type_object)) {
		rc = bn_err_set(err, -EBADMSG, "file %s: no \"weight_map\" object", index_path);
		goto out;
	}
	size_t n_map = (size_t)json_object_object_length(wm);
	names = calloc(n_map ? n_map : 1, sizeof *names);
	if (!names) {
		rc = bn_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	json_object_object_foreach(wm, tn, fv) {
		if (!json_object_is_type(fv, json_type_string) ||
		    !plain_name(json_object_get_string(fv), (size_t)json_object_get_string_len(fv))) {
			rc = bn_err_set(err, -EBADMSG, "file %s: weight_map[\"%.200s\"] is not a plain file "
			                "name in the checkpoint's directory", index_path, tn);
			goto out;
		}
		names[n_names++] = (char *)json_object_get_string(fv);
	}
	qsort(names, n_names, sizeof *names, cmp_strp);
	size_t n_unique = 0;
	for (size_t i = 0; i < n_names; i++)
		if (!n_unique || strcmp(names[n_unique - 1], names[i]))
			names[n_unique++] = names[i];
	if (n_unique == 0 || n_unique > MAX_SHARDS) {
		rc = bn_err_set(err, -EBADMSG, "file %s: %zu shard files (1..%d expected)", index_path,
		                n_unique, MAX_SHARDS);
		goto out;
	}
	m->files = calloc(n_unique, sizeof *m->files);
	if (!m->files) {
		rc = bn_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n_unique && !rc; i++)
		rc = add_file(m, names[i], err);
	if (rc || (rc = build_index(m, err)))
		goto out;
	/* the map and the shards must agree tensor for tensor */
	json_object_object_foreach(wm, tn2, fv2) {
		const struct bn_st_file *in;
		const char *want = json_object_get_string(fv2);
		if (!bn_st_model_find(m, tn2, &in)) {
			rc = bn_err_set(err, -EBADMSG, "file %s: tensor %.200s: listed in shard %s, which "
			                "does not hold it", index_path, tn2, want);
			goto out;
		}
		const char *base = strrchr(in->path, '/');
		if (strcmp(base ? base + 1 : in->path, want)) {
			rc = bn_err_set(err, -EBADMSG, "file %s: tensor %.200s: listed in shard %s but "
			                "found in %s", index_path, tn2, want, in->path);
			goto out;
		}
	}
	if (n_map != m->n_tensors) {
		for (size_t i = 0; i < m->n_tensors; i++) {
			json_object *x;
			if (!json_object_object_get_ex(wm, m->index[i].t->name, &x)) {
				rc = bn_err_set(err, -EBADMSG, "file %s: tensor %s is not in the weight_map "
				                "(shard %s)", index_path, m->index[i].t->name,
				                m->index[i].f->path);
				goto out;
			}
		}
		rc = bn_err_set(err, -EBADMSG, "file %s: weight_map and shards disagree", index_path);
	}
out:
	free(names);
	json_object_put(root);
	return rc;
}

int bn_st_model_open(struct bn_st_model **out, const char *dir, struct bn_error *err)
{
	*out = NULL;
	struct bn_st_model *m = calloc(1, sizeof *m);
	if (!m || !(m->dir = strdup(dir))) {
		free(m);
		return bn_err_set(err, -ENOMEM, "out of memory");
	}
	char *ip = join(dir, INDEX_NAME), *sp = join(dir, SINGLE_NAME);
	int rc = 0;
	struct stat st;
	if (!ip || !sp) {
		rc = bn_err_set(err, -ENOMEM, "out of memory");
	} else if (stat(ip, &st) == 0) {
		m->sharded = true;
		rc = open_sharded(m, ip, err);
	} else if (stat(sp, &st) == 0) {
		if (!(m->files = calloc(1, sizeof *m->files)))
			rc = bn_err_set(err, -ENOMEM, "out of memory");
		else if (!(rc = add_file(m, SINGLE_NAME, err)))
			rc = build_index(m, err);
	} else {
		rc = bn_err_set(err, -ENOENT, "directory %s: neither %s nor %s is there", dir,
		                INDEX_NAME, SINGLE_NAME);
	}
	free(ip);
	free(sp);
	if (rc) {
		bn_st_model_close(m);
		return rc;
	}
	*out = m;
	return 0;
}

void bn_st_model_close(struct bn_st_model *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n_files; i++)
		bn_st_close(m->files[i]);
	free(m->files);
	free(m->index);
	free(m->dir);
	free(m);
}

const struct bn_st_tensor *bn_st_model_find(const struct bn_st_model *m, const char *name,
                                            const struct bn_st_file **file)
{
	struct bn_st_tensor kt = { .name = name };
	struct bn_st_ref key = { &kt, NULL };
	const struct bn_st_ref *r = bsearch(&key, m->index, m->n_tensors, sizeof key, cmp_ref);
	if (file)
		*file = r ? r->f : NULL;
	return r ? r->t : NULL;
}
