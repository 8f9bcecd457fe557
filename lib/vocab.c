/* struct bn_vocab: freeing, and reading it from a GGUF's tokenizer.ggml.* keys. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gguf.h"
#include "vocab.h"

void bn_vocab_free(struct bn_vocab *v)
{
	if (!v)
		return;
	if (v->tokens)
		for (uint32_t i = 0; i < v->n_tokens; i++)
			free(v->tokens[i]);
	if (v->merges)
		for (uint32_t i = 0; i < v->n_merges; i++)
			free(v->merges[i]);
	free(v->tokens);
	free(v->types);
	free(v->merges);
	memset(v, 0, sizeof(*v));
	v->bos = v->eos = v->eot = v->pad = -1;
}

/* A string array KV copied into NUL-terminated strings [*n]. */
static int read_str_array(const struct bn_gguf *g, const char *key, bool required, char ***out,
			  uint32_t *n, struct bn_error *err)
{
	*out = NULL;
	*n = 0;
	const struct bn_gguf_kv *kv = bn_gguf_find_kv(g, key);
	if (!kv)
		return required ? bn_err_set(err, -EBADMSG, "key %s: missing", key) : 0;
	if (kv->type != BN_GGUF_ARRAY || kv->arr_type != BN_GGUF_STRING)
		return bn_err_set(err, -EBADMSG, "key %s: not an array of strings", key);
	if (kv->arr_n > INT32_MAX)
		return bn_err_set(err, -EBADMSG, "key %s: %llu entries", key,
				  (unsigned long long)kv->arr_n);
	uint32_t cnt = (uint32_t)kv->arr_n;
	struct bn_gguf_str *s = malloc(sizeof(*s) * (cnt ? cnt : 1));
	char **a = calloc(cnt ? cnt : 1, sizeof(*a));
	int rc = 0;
	if (!s || !a) {
		rc = bn_err_set(err, -ENOMEM, "key %s: out of memory for %u strings", key, cnt);
		goto fail;
	}
	if ((rc = bn_gguf_arr_strs(kv, s)) != 0) {
		rc = bn_err_set(err, rc, "key %s: cannot read the strings", key);
		goto fail;
	}
	for (uint32_t i = 0; i < cnt; i++) {
		if (memchr(s[i].ptr, '\0', s[i].len)) {
			rc = bn_err_set(err, -EBADMSG, "key %s: entry %u contains a NUL byte", key, i);
			goto fail;
		}
		a[i] = malloc(s[i].len + 1);
		if (!a[i]) {
			rc = bn_err_set(err, -ENOMEM, "key %s: out of memory", key);
			goto fail;
		}
		memcpy(a[i], s[i].ptr, s[i].len);
		a[i][s[i].len] = '\0';
	}
	free(s);
	*out = a;
	*n = cnt;
	return 0;
fail:
	if (a)
		for (uint32_t i = 0; i < cnt; i++)
			free(a[i]);
	free(a);
	free(s);
	return rc;
}

static int read_id(const struct bn_gguf *g, const char *key, uint32_t n_tokens, int32_t *out,
		   struct bn_error *err)
{
	uint32_t v;
	int rc = bn_gguf_get_u32(g, key, &v);
	*out = -1;
	if (rc == -ENOENT)
		return 0;
	if (rc)
		return bn_err_set(err, -EBADMSG, "key %s: not an unsigned integer", key);
	if (v >= n_tokens)
		return bn_err_set(err, -EBADMSG, "key %s: token id %u is outside the vocabulary "
				  "(0..%u)", key, v, n_tokens - 1);
	*out = (int32_t)v;
	return 0;
}

static int read_name(const struct bn_gguf *g, const char *key, char *dst, size_t cap,
		     bool required, struct bn_error *err)
{
	struct bn_gguf_str s;
	int rc = bn_gguf_get_str(g, key, &s);
	dst[0] = '\0';
	if (rc == -ENOENT)
		return required ? bn_err_set(err, -EBADMSG, "key %s: missing", key) : 0;
	if (rc)
		return bn_err_set(err, -EBADMSG, "key %s: not a string", key);
	if (s.len >= cap || memchr(s.ptr, '\0', s.len))
		return bn_err_set(err, -EBADMSG, "key %s: value of %llu bytes is not a name "
				  "(at most %zu bytes, no NUL)", key, (unsigned long long)s.len, cap - 1);
	memcpy(dst, s.ptr, s.len);
	dst[s.len] = '\0';
	return 0;
}

int bn_vocab_from_gguf(struct bn_vocab *out, const struct bn_gguf *g, struct bn_error *err)
{
	struct bn_vocab v;
	memset(&v, 0, sizeof(v));
	v.bos = v.eos = v.eot = v.pad = -1;
	memset(out, 0, sizeof(*out));
	out->bos = out->eos = out->eot = out->pad = -1;
	int rc;

	if ((rc = read_name(g, "tokenizer.ggml.model", v.model, sizeof(v.model), true, err)) ||
	    (rc = read_name(g, "tokenizer.ggml.pre", v.pre, sizeof(v.pre), false, err)) ||
	    (rc = read_str_array(g, "tokenizer.ggml.tokens", true, &v.tokens, &v.n_tokens, err)))
		goto fail;
	if (v.n_tokens == 0) {
		rc = bn_err_set(err, -EBADMSG, "key tokenizer.ggml.tokens: empty");
		goto fail;
	}
	if ((rc = read_str_array(g, "tokenizer.ggml.merges", false, &v.merges, &v.n_merges, err)))
		goto fail;

	v.types = malloc(sizeof(*v.types) * v.n_tokens);
	if (!v.types) {
		rc = bn_err_set(err, -ENOMEM, "key tokenizer.ggml.token_type: out of memory");
		goto fail;
	}
	const struct bn_gguf_kv *tt = bn_gguf_find_kv(g, "tokenizer.ggml.token_type");
	if (!tt) {
		for (uint32_t i = 0; i < v.n_tokens; i++)
			v.types[i] = BN_TOKEN_NORMAL;
	} else {
		if (tt->type != BN_GGUF_ARRAY || tt->arr_n != v.n_tokens) {
			rc = bn_err_set(err, -EBADMSG, "key tokenizer.ggml.token_type: not an array of "
					"%u integers (one per token)", v.n_tokens);
			goto fail;
		}
		for (uint32_t i = 0; i < v.n_tokens; i++) {
			int32_t ty;
			if (bn_gguf_arr_i32(tt, i, &ty) != 0 || ty < BN_TOKEN_UNDEFINED ||
			    ty > BN_TOKEN_BYTE) {
				rc = bn_err_set(err, -EBADMSG, "key tokenizer.ggml.token_type: entry %u is "
						"not a token type (0..6)", i);
				goto fail;
			}
			v.types[i] = ty;
		}
	}

	if ((rc = read_id(g, "tokenizer.ggml.bos_token_id", v.n_tokens, &v.bos, err)) ||
	    (rc = read_id(g, "tokenizer.ggml.eos_token_id", v.n_tokens, &v.eos, err)) ||
	    (rc = read_id(g, "tokenizer.ggml.eot_token_id", v.n_tokens, &v.eot, err)) ||
	    (rc = read_id(g, "tokenizer.ggml.padding_token_id", v.n_tokens, &v.pad, err)))
		goto fail;
	if (v.eot < 0)
		for (uint32_t i = 0; i < v.n_tokens; i++)
			if (strcmp(v.tokens[i], "<|eot_id|>") == 0) {
				v.eot = (int32_t)i;
				break;
			}
	rc = bn_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &v.add_bos);
	if (rc == -ENOENT)
		v.add_bos = false;
	else if (rc) {
		rc = bn_err_set(err, -EBADMSG, "key tokenizer.ggml.add_bos_token: not a bool");
		goto fail;
	}
	*out = v;
	return 0;
fail:
	bn_vocab_free(&v);
	return rc;
}
