/* Hugging Face tokenizer.json (BPE model) -> struct bn_vocab, with json-c. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <json-c/json.h>

#include "gguf.h"
#include "log.h"
#include "tokenizer.h"
#include "tokjson.h"

static int read_file(const char *path, char **buf, size_t *len, struct bn_error *err)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return bn_err_set(err, -errno, "%s: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    (uint64_t)st.st_size > ((uint64_t)1 << 31)) {
		fclose(f);
		return bn_err_set(err, -EINVAL, "%s: not a regular file of 1 byte to 2 GiB", path);
	}
	size_t n = (size_t)st.st_size;
	char *b = malloc(n + 1);
	if (!b) {
		fclose(f);
		return bn_err_set(err, -ENOMEM, "%s: out of memory for %zu bytes", path, n);
	}
	size_t got = fread(b, 1, n, f);
	int e = ferror(f) ? errno : 0;
	fclose(f);
	if (got != n) {
		free(b);
		return bn_err_set(err, e ? -e : -EIO, "%s: short read (%zu of %zu bytes)", path, got, n);
	}
	b[n] = '\0';
	*buf = b;
	*len = n;
	return 0;
}

static char *dup_str(json_object *o, size_t *len)
{
	const char *s = json_object_get_string(o);
	size_t n = (size_t)json_object_get_string_len(o);
	if (memchr(s, '\0', n))
		return NULL;
	char *d = malloc(n + 1);
	if (d) {
		memcpy(d, s, n);
		d[n] = '\0';
	}
	if (len)
		*len = n;
	return d;
}

/* Warn when the file's pre-tokenizer is not the LLaMA-3 split this project applies. */
static void check_pretokenizer(const char *path, json_object *root)
{
	json_object *pt, *list, *pat, *re, *ty;
	bool found = false;
	if (json_object_object_get_ex(root, "pre_tokenizer", &pt) &&
	    json_object_object_get_ex(pt, "pretokenizers", &list) &&
	    json_object_is_type(list, json_type_array)) {
		size_t n = json_object_array_length(list);
		for (size_t i = 0; i < n && !found; i++) {
			json_object *p = json_object_array_get_idx(list, i);
			if (json_object_object_get_ex(p, "type", &ty) &&
			    strcmp(json_object_get_string(ty), "Split") == 0 &&
			    json_object_object_get_ex(p, "pattern", &pat) &&
			    json_object_object_get_ex(pat, "Regex", &re) &&
			    strcmp(json_object_get_string(re), bn_pretok_llama3) == 0)
				found = true;
		}
	}
	if (!found)
		bn_log(BN_LOG_WARNING, "%s: pre_tokenizer is not LLaMA-3's split; the vocabulary "
		       "will be used with the LLaMA-3 pre-tokenizer (llama-bpe) anyway", path);
}

static int load_merges(const char *path, json_object *merges, struct bn_vocab *v,
		       struct bn_error *err)
{
	if (!json_object_is_type(merges, json_type_array))
		return bn_err_set(err, -EINVAL, "%s: model.merges is not an array", path);
	size_t n = json_object_array_length(merges);
	if (n > INT32_MAX)
		return bn_err_set(err, -E2BIG, "%s: %zu merges", path, n);
	v->merges = calloc(n ? n : 1, sizeof(*v->merges));
	if (!v->merges)
		return bn_err_set(err, -ENOMEM, "%s: out of memory for %zu merges", path, n);
	v->n_merges = (uint32_t)n;
	for (size_t i = 0; i < n; i++) {
		json_object *m = json_object_array_get_idx(merges, i);
		const char *l, *r;
		size_t ll, rl;
		if (json_object_is_type(m, json_type_string)) {
			const char *s = json_object_get_string(m);
			size_t sl = (size_t)json_object_get_string_len(m);
			const char *sp = memchr(s, ' ', sl);
			if (!sp)
				return bn_err_set(err, -EINVAL, "%s: merge %zu '%s' is not \"left right\"",
						  path, i, s);
			l = s;
			ll = (size_t)(sp - s);
			r = sp + 1;
			rl = sl - ll - 1;
		} else if (json_object_is_type(m, json_type_array) &&
			   json_object_array_length(m) == 2 &&
			   json_object_is_type(json_object_array_get_idx(m, 0), json_type_string) &&
			   json_object_is_type(json_object_array_get_idx(m, 1), json_type_string)) {
			json_object *a = json_object_array_get_idx(m, 0), *b = json_object_array_get_idx(m, 1);
			l = json_object_get_string(a);
			ll = (size_t)json_object_get_string_len(a);
			r = json_object_get_string(b);
			rl = (size_t)json_object_get_string_len(b);
		} else {
			return bn_err_set(err, -EINVAL, "%s: merge %zu is neither \"left right\" nor "
					  "[\"left\", \"right\"]", path, i);
		}
		/* GGUF stores merges as "left right": a space or NUL inside a side is ambiguous */
		if (ll == 0 || rl == 0 || memchr(l, ' ', ll) || memchr(r, ' ', rl) ||
		    memchr(l, '\0', ll) || memchr(r, '\0', rl))
			return bn_err_set(err, -EINVAL, "%s: merge %zu: a side is empty or contains a "
					  "space or NUL", path, i);
		char *d = malloc(ll + rl + 2);
		if (!d)
			return bn_err_set(err, -ENOMEM, "%s: out of memory", path);
		memcpy(d, l, ll);
		d[ll] = ' ';
		memcpy(d + ll + 1, r, rl);
		d[ll + 1 + rl] = '\0';
		v->merges[i] = d;
	}
	return 0;
}

static int32_t find_text(const struct bn_vocab *v, const char *s)
{
	for (uint32_t i = 0; i < v->n_tokens; i++)
		if (strcmp(v->tokens[i], s) == 0)
			return (int32_t)i;
	return -1;
}

/* The whole file parsed; *root is the caller's to put. */
static int parse_file(const char *path, json_object **root, struct bn_error *err)
{
	char *buf = NULL;
	size_t len = 0;
	int rc = read_file(path, &buf, &len, err);
	if (rc)
		return rc;
	json_tokener *tok = json_tokener_new();
	if (!tok) {
		free(buf);
		return bn_err_set(err, -ENOMEM, "%s: out of memory", path);
	}
	json_object *r = json_tokener_parse_ex(tok, buf, (int)len);
	enum json_tokener_error je = json_tokener_get_error(tok);
	size_t at = tok->char_offset;
	json_tokener_free(tok);
	free(buf);
	if (!r || je != json_tokener_success) {
		json_object_put(r);
		return bn_err_set(err, -EINVAL, "%s: JSON error at byte %zu: %s", path, at,
				  je != json_tokener_success ? json_tokener_error_desc(je) : "incomplete");
	}
	*root = r;
	return 0;
}

/* The BPE model object, its vocab object and the added_tokens array (NULL when absent or
 * null); all borrowed from root. */
static int find_sections(const char *path, json_object *root, json_object **model,
			 json_object **vocab, json_object **added, struct bn_error *err)
{
	json_object *o;
	if (!json_object_object_get_ex(root, "model", model) ||
	    !json_object_is_type(*model, json_type_object))
		return bn_err_set(err, -EINVAL, "%s: no \"model\" object", path);
	if (json_object_object_get_ex(*model, "type", &o) &&
	    strcmp(json_object_get_string(o), "BPE") != 0)
		return bn_err_set(err, -ENOTSUP, "%s: model.type is '%s'; only BPE is supported", path,
				  json_object_get_string(o));
	if (!json_object_object_get_ex(*model, "vocab", vocab) ||
	    !json_object_is_type(*vocab, json_type_object))
		return bn_err_set(err, -EINVAL, "%s: model.vocab is not an object", path);
	*added = NULL;
	if (json_object_object_get_ex(root, "added_tokens", added) &&
	    json_object_is_type(*added, json_type_null))
		*added = NULL;
	if (*added && !json_object_is_type(*added, json_type_array))
		return bn_err_set(err, -EINVAL, "%s: added_tokens is not an array", path);
	return 0;
}

/* v->tokens and v->types with a slot for every id the file could name: v->n_tokens. */
static int alloc_slots(const char *path, json_object *vocab, json_object *added,
		       struct bn_vocab *v, struct bn_error *err)
{
	size_t n_added = added ? json_object_array_length(added) : 0;
	size_t cap = (size_t)json_object_object_length(vocab) + n_added;   /* bound on dense ids */
	if (cap == 0 || cap > INT32_MAX)
		return bn_err_set(err, -EINVAL, "%s: %zu tokens", path, cap);
	v->tokens = calloc(cap, sizeof(*v->tokens));
	v->types = calloc(cap, sizeof(*v->types));
	if (!v->tokens || !v->types)
		return bn_err_set(err, -ENOMEM, "%s: out of memory for %zu tokens", path, cap);
	v->n_tokens = (uint32_t)cap;   /* so that bn_vocab_free frees every slot on error */
	return 0;
}

/* model.vocab's token -> id pairs into v's slots; *max_id grows to the largest id. */
static int load_vocab(const char *path, json_object *vocab, struct bn_vocab *v, size_t *max_id,
		      struct bn_error *err)
{
	size_t cap = v->n_tokens;
	json_object_object_foreach(vocab, key, val) {
		if (!json_object_is_type(val, json_type_int))
			return bn_err_set(err, -EINVAL, "%s: model.vocab[\"%s\"] is not an integer id",
					  path, key);
		int64_t id = json_object_get_int64(val);
		if (id < 0 || (uint64_t)id >= cap)
			return bn_err_set(err, -EINVAL, "%s: model.vocab[\"%s\"]: id %lld is outside "
					  "0..%zu (ids must be dense)", path, key, (long long)id, cap - 1);
		if (v->tokens[id])
			return bn_err_set(err, -EINVAL, "%s: model.vocab: id %lld is used by both '%s' "
					  "and '%s'", path, (long long)id, v->tokens[id], key);
		if (!(v->tokens[id] = strdup(key)))
			return bn_err_set(err, -ENOMEM, "%s: out of memory", path);
		v->types[id] = BN_TOKEN_NORMAL;
		if ((size_t)id > *max_id)
			*max_id = (size_t)id;
	}
	return 0;
}

/* added_tokens[i] into its slot: a token already in the vocab must have the same text. */
static int load_added_one(const char *path, json_object *a, size_t i, struct bn_vocab *v,
			  size_t *max_id, struct bn_error *err)
{
	size_t cap = v->n_tokens;
	json_object *jid, *jc, *js;
	if (!json_object_object_get_ex(a, "id", &jid) || !json_object_is_type(jid, json_type_int) ||
	    !json_object_object_get_ex(a, "content", &jc) ||
	    !json_object_is_type(jc, json_type_string))
		return bn_err_set(err, -EINVAL, "%s: added_tokens[%zu] lacks an integer \"id\" or "
				  "a string \"content\"", path, i);
	int64_t id = json_object_get_int64(jid);
	bool special = json_object_object_get_ex(a, "special", &js) && json_object_get_boolean(js);
	const char *c = json_object_get_string(jc);
	if (id < 0 || (uint64_t)id >= cap)
		return bn_err_set(err, -EINVAL, "%s: added_tokens[%zu] '%s': id %lld is outside "
				  "0..%zu (ids must be dense)", path, i, c, (long long)id, cap - 1);
	if (v->tokens[id] && strcmp(v->tokens[id], c) != 0)
		return bn_err_set(err, -EINVAL, "%s: added_tokens[%zu]: id %lld is used by both "
				  "'%s' and '%s'", path, i, (long long)id, v->tokens[id], c);
	if (!v->tokens[id] && !(v->tokens[id] = dup_str(jc, NULL)))
		return bn_err_set(err, -EINVAL, "%s: added_tokens[%zu]: content has a NUL byte "
				  "or memory ran out", path, i);
	v->types[id] = special ? BN_TOKEN_CONTROL : BN_TOKEN_USER_DEFINED;
	if ((size_t)id > *max_id)
		*max_id = (size_t)id;
	return 0;
}

/* Every id up to max_id named once; v->n_tokens shrinks to max_id + 1. */
static int check_dense(const char *path, struct bn_vocab *v, size_t max_id, struct bn_error *err)
{
	for (size_t i = 0; i <= max_id; i++)
		if (!v->tokens[i])
			return bn_err_set(err, -EINVAL, "%s: token id %zu is missing (ids must be dense "
					  "0..%zu)", path, i, max_id);
	v->n_tokens = (uint32_t)(max_id + 1);   /* slots above max_id are all NULL */
	return 0;
}

/* tokenizer.json holds no GGUF metadata: the LLaMA-3 BPE settings and special tokens. */
static void set_llama3_meta(struct bn_vocab *v)
{
	snprintf(v->model, sizeof(v->model), "gpt2");
	snprintf(v->pre, sizeof(v->pre), "llama-bpe");
	v->add_bos = true;
	v->bos = find_text(v, "<|begin_of_text|>");
	v->eos = find_text(v, "<|end_of_text|>");
	v->eot = find_text(v, "<|eot_id|>");
}

/* Everything after the JSON parse: v is filled, or left for the caller to free. */
static int load_root(const char *path, json_object *root, struct bn_vocab *v, struct bn_error *err)
{
	json_object *model, *vocab, *merges, *added;
	size_t max_id = 0;
	int rc = find_sections(path, root, &model, &vocab, &added, err);
	if (rc || (rc = alloc_slots(path, vocab, added, v, err)) ||
	    (rc = load_vocab(path, vocab, v, &max_id, err)))
		return rc;
	size_t n_added = added ? json_object_array_length(added) : 0;
	for (size_t i = 0; i < n_added; i++)
		if ((rc = load_added_one(path, json_object_array_get_idx(added, i), i, v, &max_id,
					 err)))
			return rc;
	if ((rc = check_dense(path, v, max_id, err)))
		return rc;
	if (json_object_object_get_ex(model, "merges", &merges) &&
	    (rc = load_merges(path, merges, v, err)))
		return rc;
	check_pretokenizer(path, root);
	set_llama3_meta(v);
	return 0;
}

int bn_tokjson_load(const char *path, struct bn_vocab *out, struct bn_error *err)
{
	struct bn_vocab v;
	memset(&v, 0, sizeof(v));
	v.bos = v.eos = v.eot = v.pad = -1;
	memset(out, 0, sizeof(*out));
	out->bos = out->eos = out->eot = out->pad = -1;

	json_object *root = NULL;
	int rc = parse_file(path, &root, err);
	if (rc)
		return rc;
	rc = load_root(path, root, &v, err);
	if (!rc) {
		*out = v;
		memset(&v, 0, sizeof(v));
	}
	bn_vocab_free(&v);
	json_object_put(root);
	return rc;
}

int bn_tokenizer_for(struct bn_tokenizer **out, const struct bn_gguf *g, uint32_t n_rows,
                     const char *json, struct bn_error *err)
{
	struct bn_vocab v;
	memset(&v, 0, sizeof(v));
	*out = NULL;
	char arch[64] = "";
	struct bn_gguf_str a;
	if (g && bn_gguf_get_str(g, "general.architecture", &a) == 0 && a.len < sizeof(arch)) {
		memcpy(arch, a.ptr, a.len);
		arch[a.len] = '\0';
	}
	int rc = json ? bn_tokjson_load(json, &v, err) : bn_vocab_from_gguf(&v, g, err);
	if (rc)
		return rc;
	if (n_rows && v.n_tokens > n_rows) {
		rc = bn_err_set(err, -EINVAL, "%s: %u tokens, but the model's embedding has %u rows",
		                json ? json : "the model's vocabulary", v.n_tokens, n_rows);
		bn_vocab_free(&v);
		return rc;
	}
	rc = bn_tokenizer_new(out, &v, arch[0] ? arch : NULL, err);
	bn_vocab_free(&v);
	if (!rc && json)
		bn_log(BN_LOG_INFO, "tokenizer from %s (%u tokens) instead of the model's", json,
		       v.n_tokens);
	return rc;
}
