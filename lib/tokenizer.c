/* Byte-level BPE (the gpt2 vocabulary model) with the LLaMA-3 pre-tokenizer.
 * Spec: shared/spec/bitnet-format.md section 5. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "log.h"
#include "tokenizer.h"

/* The LLaMA-3 split pattern, verbatim from the spec. */
const char bn_pretok_llama3[] =
	"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
	"| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

struct pair_slot {
	uint64_t key;      /* (left id << 32) | right id; UINT64_MAX when empty */
	int32_t rank;
	int32_t merged;
};

struct vslot {
	uint32_t tag;      /* high half of the string's hash: most mismatches end here */
	int32_t id;
};

struct bn_tokenizer {
	uint32_t n_vocab;
	int32_t *types;          /* [n_vocab] enum bn_token_type */
	uint32_t *text_off;      /* [n_vocab + 1] token strings (as stored) in text */
	char *text;              /* [text_off[n_vocab]] concatenated, no NULs */
	uint32_t *piece_off;     /* [n_vocab + 1] raw bytes of each token in piece */
	char *piece;             /* [piece_off[n_vocab]] */
	struct vslot *vhash;     /* [vmask + 1] open addressing on token strings; id -1 empty */
	uint32_t vmask;
	struct pair_slot *phash; /* [pmask + 1] merges keyed by (left id, right id) */
	uint32_t pmask;
	int32_t byte_tok[256];   /* id of the one-character token of each byte, -1 if none */
	uint8_t map_utf8[256][2];  /* GPT-2 alphabet spelling of each byte, UTF-8 */
	uint8_t map_len[256];      /* 1 or 2 */
	int16_t unmap[0x144];      /* code point -> byte for the GPT-2 alphabet, -1 if not in it */
	int32_t *spec;           /* [n_spec] CONTROL/USER_DEFINED ids by first byte, longest first */
	uint32_t n_spec;
	uint32_t spec_start[257];  /* spec[spec_start[c] .. spec_start[c+1]) start with byte c */
	pcre2_code *re;
	bool jit;
	int32_t bos, eos, eot, pad;
	bool add_bos;
	char pre[32];
};

/* ---- small helpers ------------------------------------------------------ */

/* FNV-1a, left unmixed so that the hash of a concatenation continues the hash of its left
 * part (merges look up left+right without building the string). */
#define FNV_SEED 0xcbf29ce484222325ull

static uint64_t fnv_more(uint64_t h, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= (uint8_t)s[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static uint64_t hash_u64(uint64_t x)
{
	x ^= x >> 33;                          /* murmur3 finaliser */
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

static uint32_t table_size(uint64_t n)
{
	uint64_t s = 16;
	while (s < n + n / 2 + n / 4)   /* load factor below 0.57 */
		s <<= 1;
	return (uint32_t)s;
}

static uint32_t slot_of(uint64_t h, uint32_t mask)
{
	return (uint32_t)(h ^ (h >> 29) ^ (h >> 47)) & mask;
}

/* Finds the token whose string is a (na bytes) followed by b (nb bytes); h is their hash. */
static int32_t vocab_find2(const struct bn_tokenizer *t, uint64_t h, const char *a, size_t na,
			   const char *b, size_t nb)
{
	uint32_t tag = (uint32_t)(h >> 32);
	for (uint32_t i = slot_of(h, t->vmask);; i = (i + 1) & t->vmask) {
		const struct vslot *sl = &t->vhash[i];
		if (sl->id < 0)
			return -1;
		if (sl->tag != tag)
			continue;
		const char *s = t->text + t->text_off[sl->id];
		if (t->text_off[sl->id + 1] - t->text_off[sl->id] == na + nb &&
		    memcmp(s, a, na) == 0 && memcmp(s + na, b, nb) == 0)
			return sl->id;
	}
}

static int32_t vocab_find(const struct bn_tokenizer *t, const char *s, size_t n)
{
	return vocab_find2(t, fnv_more(FNV_SEED, s, n), s, n, "", 0);
}

static const struct pair_slot *pair_find(const struct bn_tokenizer *t, int32_t l, int32_t r)
{
	uint64_t key = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
	uint32_t i = (uint32_t)hash_u64(key) & t->pmask;
	for (;; i = (i + 1) & t->pmask) {
		if (t->phash[i].key == key)
			return &t->phash[i];
		if (t->phash[i].key == UINT64_MAX)
			return NULL;
	}
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if it is not one. */
static size_t utf8_valid_len(const uint8_t *s, size_t n)
{
	uint8_t c = s[0];
	if (c < 0x80)
		return 1;
	size_t need;
	uint8_t lo = 0x80, hi = 0xBF;
	if (c >= 0xC2 && c <= 0xDF)
		need = 1;
	else if (c >= 0xE0 && c <= 0xEF) {
		need = 2;
		if (c == 0xE0)
			lo = 0xA0;      /* no overlongs */
		else if (c == 0xED)
			hi = 0x9F;      /* no surrogates */
	} else if (c >= 0xF0 && c <= 0xF4) {
		need = 3;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;      /* <= U+10FFFF */
	} else
		return 0;
	if (n < need + 1 || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t k = 2; k <= need; k++)
		if ((s[k] & 0xC0) != 0x80)
			return 0;
	return need + 1;
}

/* ---- construction ------------------------------------------------------- */

static void build_byte_map(struct bn_tokenizer *t)
{
	unsigned next = 0x100;
	for (unsigned i = 0; i < 0x144; i++)
		t->unmap[i] = -1;
	for (unsigned b = 0; b < 256; b++) {
		unsigned cp;
		if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE))
			cp = b;
		else
			cp = next++;
		t->unmap[cp] = (int16_t)b;
		if (cp < 0x80) {
			t->map_utf8[b][0] = (uint8_t)cp;
			t->map_len[b] = 1;
		} else {
			t->map_utf8[b][0] = (uint8_t)(0xC0 | (cp >> 6));
			t->map_utf8[b][1] = (uint8_t)(0x80 | (cp & 0x3F));
			t->map_len[b] = 2;
		}
	}
}

static bool is_special_type(int32_t type)
{
	return type == BN_TOKEN_CONTROL || type == BN_TOKEN_USER_DEFINED;
}

/* Raw bytes of a normal token: GPT-2 alphabet characters become their byte; anything else
 * (characters outside the alphabet, invalid UTF-8) is kept as written. */
static size_t unmap_token(const struct bn_tokenizer *t, const char *s, size_t n, char *out)
{
	const uint8_t *u = (const uint8_t *)s;
	size_t o = 0;
	for (size_t i = 0; i < n;) {
		size_t l = utf8_valid_len(u + i, n - i);
		if (l == 0) {
			out[o++] = s[i++];
			continue;
		}
		unsigned cp;
		if (l == 1)
			cp = u[i];
		else if (l == 2)
			cp = ((u[i] & 0x1Fu) << 6) | (u[i + 1] & 0x3Fu);
		else
			cp = 0x10000;   /* outside the alphabet either way */
		if (cp < 0x144 && t->unmap[cp] >= 0) {
			out[o++] = (char)t->unmap[cp];
		} else {
			memcpy(out + o, s + i, l);
			o += l;
		}
		i += l;
	}
	return o;
}

static int check_id(const char *what, int32_t id, uint32_t n, struct bn_error *err)
{
	if (id < -1 || (id >= 0 && (uint32_t)id >= n))
		return bn_err_set(err, -EINVAL, "tokenizer: %s id %d is outside the vocabulary (0..%u)",
				  what, id, n - 1);
	return 0;
}

static int build_specials(struct bn_tokenizer *t, struct bn_error *err)
{
	uint32_t count[257] = { 0 };
	for (uint32_t i = 0; i < t->n_vocab; i++)
		if (is_special_type(t->types[i]) && t->text_off[i + 1] > t->text_off[i]) {
			count[(uint8_t)t->text[t->text_off[i]]]++;
			t->n_spec++;
		}
	t->spec = malloc(sizeof(*t->spec) * (t->n_spec ? t->n_spec : 1));
	if (!t->spec)
		return bn_err_set(err, -ENOMEM, "tokenizer: out of memory for special tokens");
	t->spec_start[0] = 0;
	for (unsigned c = 0; c < 256; c++)
		t->spec_start[c + 1] = t->spec_start[c] + count[c];
	uint32_t fill[256];
	memcpy(fill, t->spec_start, sizeof(fill));
	for (uint32_t i = 0; i < t->n_vocab; i++) {
		if (!is_special_type(t->types[i]) || t->text_off[i + 1] == t->text_off[i])
			continue;
		uint8_t c = (uint8_t)t->text[t->text_off[i]];
		/* insertion into the bucket, longest first (buckets are small) */
		uint32_t len = t->text_off[i + 1] - t->text_off[i];
		uint32_t j = fill[c]++;
		while (j > t->spec_start[c]) {
			int32_t p = t->spec[j - 1];
			if (t->text_off[p + 1] - t->text_off[p] >= len)
				break;
			t->spec[j] = p;
			j--;
		}
		t->spec[j] = (int32_t)i;
	}
	return 0;
}

static int pick_pre(struct bn_tokenizer *t, const struct bn_vocab *v, const char *arch)
{
	if (strcmp(v->pre, "llama-bpe") == 0 || strcmp(v->pre, "llama3") == 0) {
		bn_log(BN_LOG_INFO, "tokenizer: pre-tokenizer %s (LLaMA-3 regex)", v->pre);
	} else if (v->pre[0] == '\0') {
		if (arch && (strcmp(arch, "bitnet-b1.58") == 0 || strcmp(arch, "bitnet-25") == 0))
			bn_log(BN_LOG_INFO, "tokenizer: tokenizer.ggml.pre is missing; using the "
			       "LLaMA-3 pre-tokenizer (llama-bpe), the one %s was trained with", arch);
		else
			bn_log(BN_LOG_WARNING, "tokenizer: tokenizer.ggml.pre is missing (architecture "
			       "%s); using the LLaMA-3 pre-tokenizer (llama-bpe)", arch ? arch : "unknown");
	} else {
		bn_log(BN_LOG_WARNING, "tokenizer: unknown pre-tokenizer '%s'; using the LLaMA-3 "
		       "pre-tokenizer (llama-bpe) instead", v->pre);
	}
	snprintf(t->pre, sizeof(t->pre), "llama-bpe");
	return 0;
}

static int compile_regex(struct bn_tokenizer *t, struct bn_error *err)
{
	int ec;
	PCRE2_SIZE eo;
	t->re = pcre2_compile((PCRE2_SPTR)bn_pretok_llama3, PCRE2_ZERO_TERMINATED,
			      PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
	if (!t->re) {
		PCRE2_UCHAR msg[256];
		pcre2_get_error_message(ec, msg, sizeof(msg));
		return bn_err_set(err, -EINVAL, "tokenizer: pre-tokenizer regex at offset %zu: %s",
				  (size_t)eo, (const char *)msg);
	}
	/* JIT is an optimisation only: the interpreter gives the same matches. */
	t->jit = pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE) == 0;
	return 0;
}

static int build_merges(struct bn_tokenizer *t, const struct bn_vocab *v, struct bn_error *err)
{
	uint32_t n = v->n_merges;
	t->pmask = table_size(n) - 1;
	t->phash = malloc(sizeof(*t->phash) * ((size_t)t->pmask + 1));
	/* pass 1 resolves the strings, pass 2 fills the table with the slots prefetched: the
	 * table is megabytes and each insert would otherwise wait for a cache miss */
	uint64_t *keys = malloc(sizeof(*keys) * (n ? n : 1));      /* [n] (left << 32) | right */
	int32_t *merged = malloc(sizeof(*merged) * (n ? n : 1));  /* [n] -1: not in the vocab */
	int rc = 0;
	if (!t->phash || !keys || !merged) {
		rc = bn_err_set(err, -ENOMEM, "tokenizer: out of memory for %u merges", n);
		goto out;
	}
	for (size_t i = 0; i <= t->pmask; i++)
		t->phash[i].key = UINT64_MAX;
	/* look-ahead ring: merge r + 8 is parsed and its three vocabulary slots prefetched
	 * while merge r is resolved */
	struct ahead {
		uint64_t hl, hr, hm;   /* hashes of left, right, left+right */
		const char *m, *rs;
		size_t ll, rl;
	} ring[8];
	uint32_t skipped = 0;
	for (uint32_t r = 0; r < n + 8; r++) {
		if (r >= 8) {   /* ring slot r % 8 is free once merge r - 8 is resolved */
			uint32_t q = r - 8;
			const struct ahead *a = &ring[q % 8];
			int32_t l = vocab_find2(t, a->hl, a->m, a->ll, "", 0);
			int32_t rr = vocab_find2(t, a->hr, a->rs, a->rl, "", 0);
			merged[q] = vocab_find2(t, a->hm, a->m, a->ll, a->rs, a->rl);
			if (l < 0 || rr < 0 || merged[q] < 0) {
				merged[q] = -1;
				skipped++;
			}
			keys[q] = ((uint64_t)(uint32_t)l << 32) | (uint32_t)rr;
		}
		if (r < n) {
			struct ahead *a = &ring[r % 8];
			const char *m = v->merges[r];
			const char *sp = m ? strchr(m, ' ') : NULL;
			if (!sp || sp == m || sp[1] == '\0' || strchr(sp + 1, ' ')) {
				rc = bn_err_set(err, -EINVAL, "tokenizer: merge %u '%s' is not \"left "
						"right\"", r, m ? m : "(null)");
				goto out;
			}
			a->m = m;
			a->rs = sp + 1;
			a->ll = (size_t)(sp - m);
			a->rl = strlen(sp + 1);
			a->hl = fnv_more(FNV_SEED, m, a->ll);
			a->hr = fnv_more(FNV_SEED, a->rs, a->rl);
			a->hm = fnv_more(a->hl, a->rs, a->rl);
			__builtin_prefetch(&t->vhash[slot_of(a->hl, t->vmask)]);
			__builtin_prefetch(&t->vhash[slot_of(a->hr, t->vmask)]);
			__builtin_prefetch(&t->vhash[slot_of(a->hm, t->vmask)]);
		}
	}
	for (uint32_t r = 0; r < n; r++) {
		if (r + 16 < n)
			__builtin_prefetch(&t->phash[(uint32_t)hash_u64(keys[r + 16]) & t->pmask], 1);
		if (merged[r] < 0)
			continue;
		uint64_t key = keys[r];
		uint32_t i = (uint32_t)hash_u64(key) & t->pmask;
		while (t->phash[i].key != UINT64_MAX && t->phash[i].key != key)
			i = (i + 1) & t->pmask;
		if (t->phash[i].key == key)
			continue;   /* a repeated merge keeps its first (best) rank */
		t->phash[i].key = key;
		t->phash[i].rank = (int32_t)r;
		t->phash[i].merged = merged[r];
	}
	if (skipped)
		bn_log(BN_LOG_WARNING, "tokenizer: %u of %u merges name tokens that are not in the "
		       "vocabulary; ignored", skipped, n);
out:
	free(keys);
	free(merged);
	return rc;
}

/* The token strings' tables: t->types, text and piece with their offsets, the empty hash
 * index, and hashes [n] for index_vocab. */
static int alloc_vocab(struct bn_tokenizer *t, const struct bn_vocab *v, uint64_t **hashes,
		       struct bn_error *err)
{
	uint32_t n = v->n_tokens;
	uint64_t total = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (!v->tokens[i])
			return bn_err_set(err, -EINVAL, "tokenizer: token %u has no text", i);
		total += strlen(v->tokens[i]);
	}
	if (total >= UINT32_MAX)
		return bn_err_set(err, -E2BIG, "tokenizer: token strings total %llu bytes",
				  (unsigned long long)total);
	t->types = malloc(sizeof(*t->types) * n);
	t->text_off = malloc(sizeof(*t->text_off) * ((size_t)n + 1));
	t->piece_off = malloc(sizeof(*t->piece_off) * ((size_t)n + 1));
	t->text = malloc(total + 1);
	t->piece = malloc(total + 1);   /* unmapping never lengthens a token */
	t->vmask = table_size(n) - 1;
	t->vhash = malloc(sizeof(*t->vhash) * ((size_t)t->vmask + 1));
	*hashes = malloc(sizeof(**hashes) * n);
	if (!t->types || !t->text_off || !t->piece_off || !t->text || !t->piece || !t->vhash ||
	    !*hashes)
		return bn_err_set(err, -ENOMEM, "tokenizer: out of memory for %u tokens", n);
	memset(t->vhash, 0xff, sizeof(*t->vhash) * ((size_t)t->vmask + 1));
	return 0;
}

/* Each token's type, text, piece (its bytes: byte-level characters unmapped, specials as
 * written) and the hash of its text. */
static void fill_vocab(struct bn_tokenizer *t, const struct bn_vocab *v, uint64_t *hashes)
{
	uint32_t to = 0, po = 0;
	for (uint32_t i = 0; i < v->n_tokens; i++) {
		const char *s = v->tokens[i];
		size_t l = strlen(s);
		int32_t ty = v->types ? v->types[i] : BN_TOKEN_NORMAL;
		t->types[i] = ty;
		t->text_off[i] = to;
		memcpy(t->text + to, s, l);
		t->piece_off[i] = po;
		if (is_special_type(ty)) {
			memcpy(t->piece + po, s, l);
			po += (uint32_t)l;
		} else {
			po += (uint32_t)unmap_token(t, s, l, t->piece + po);
		}
		to += (uint32_t)l;
		t->text_off[i + 1] = to;
		hashes[i] = fnv_more(FNV_SEED, s, l);
	}
	t->piece_off[v->n_tokens] = po;
}

/* The text -> id hash index; of equal strings the lowest id keeps the entry. */
static void index_vocab(struct bn_tokenizer *t, const uint64_t *hashes)
{
	uint32_t n = t->n_vocab, dups = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (i + 16 < n)   /* the table is bigger than L2: fetch ahead */
			__builtin_prefetch(&t->vhash[slot_of(hashes[i + 16], t->vmask)], 1);
		uint64_t h = hashes[i];
		uint32_t l = t->text_off[i + 1] - t->text_off[i];
		const char *s = t->text + t->text_off[i];
		uint32_t tag = (uint32_t)(h >> 32), k = slot_of(h, t->vmask);
		bool dup = false;
		for (; t->vhash[k].id >= 0; k = (k + 1) & t->vmask) {
			int32_t o = t->vhash[k].id;
			if (t->vhash[k].tag == tag && t->text_off[o + 1] - t->text_off[o] == l &&
			    memcmp(t->text + t->text_off[o], s, l) == 0) {
				dup = true;
				break;
			}
		}
		if (dup) {
			dups++;
		} else {
			t->vhash[k].tag = tag;
			t->vhash[k].id = (int32_t)i;
		}
	}
	if (dups)
		bn_log(BN_LOG_DEBUG, "tokenizer: %u duplicate token strings", dups);
}

/* The token of each byte's byte-level character (-1 where the vocabulary lacks it). */
static void map_byte_tokens(struct bn_tokenizer *t)
{
	unsigned missing = 0;
	for (unsigned b = 0; b < 256; b++) {
		t->byte_tok[b] = vocab_find(t, (const char *)t->map_utf8[b], t->map_len[b]);
		if (t->byte_tok[b] < 0)
			missing++;
	}
	if (missing)
		bn_log(BN_LOG_WARNING, "tokenizer: %u of the 256 byte tokens are missing; text with "
		       "those bytes cannot be tokenized", missing);
}

int bn_tokenizer_new(struct bn_tokenizer **out, const struct bn_vocab *v, const char *arch,
		     struct bn_error *err)
{
	*out = NULL;
	if (strcmp(v->model, "gpt2") != 0)
		return bn_err_set(err, -ENOTSUP, "tokenizer: vocabulary model '%s' is not supported "
				  "(only gpt2 byte-level BPE)", v->model);
	if (v->n_tokens == 0 || v->n_tokens > INT32_MAX || !v->tokens)
		return bn_err_set(err, -EINVAL, "tokenizer: vocabulary has %u tokens", v->n_tokens);
	if (v->n_merges > INT32_MAX || (v->n_merges && !v->merges))
		return bn_err_set(err, -EINVAL, "tokenizer: %u merges", v->n_merges);

	struct bn_tokenizer *t = calloc(1, sizeof(*t));
	if (!t)
		return bn_err_set(err, -ENOMEM, "tokenizer: out of memory");
	uint64_t *hashes = NULL;   /* [n] hash of each token string */
	uint32_t n = v->n_tokens;
	t->n_vocab = n;
	build_byte_map(t);
	int rc = alloc_vocab(t, v, &hashes, err);
	if (rc)
		goto fail;
	fill_vocab(t, v, hashes);
	index_vocab(t, hashes);
	map_byte_tokens(t);

	t->bos = v->bos;
	t->eos = v->eos;
	t->eot = v->eot;
	t->pad = v->pad;
	t->add_bos = v->add_bos;
	if ((rc = check_id("BOS", t->bos, n, err)) || (rc = check_id("EOS", t->eos, n, err)) ||
	    (rc = check_id("EOT", t->eot, n, err)) || (rc = check_id("padding", t->pad, n, err)))
		goto fail;
	if ((rc = build_specials(t, err)) || (rc = build_merges(t, v, err)) ||
	    (rc = pick_pre(t, v, arch)) || (rc = compile_regex(t, err)))
		goto fail;
	free(hashes);
	*out = t;
	return 0;
fail:
	free(hashes);
	bn_tokenizer_free(t);
	return rc;
}

void bn_tokenizer_free(struct bn_tokenizer *t)
{
	if (!t)
		return;
	if (t->re)
		pcre2_code_free(t->re);
	free(t->types);
	free(t->text_off);
	free(t->text);
	free(t->piece_off);
	free(t->piece);
	free(t->vhash);
	free(t->phash);
	free(t->spec);
	free(t);
}

/* ---- encoding ----------------------------------------------------------- */

struct sym {
	int32_t id;        /* -1 once merged into its left neighbour */
	int32_t prev, next;
};

struct cand {
	int32_t rank;
	int32_t pos;       /* left symbol */
	int32_t lid, rid;  /* the pair when queued; stale entries are skipped */
};

struct enc {
	const struct bn_tokenizer *t;
	struct bn_error *err;
	int32_t *ids;      /* [cap] output */
	size_t n, cap;
	char *mapped;      /* [2 * scap] piece in the GPT-2 alphabet */
	struct sym *syms;  /* [scap] */
	struct cand *heap; /* [2 * scap] */
	size_t scap;
	pcre2_match_data *md;
};

static int emit(struct enc *e, int32_t id)
{
	if (e->n == e->cap) {
		size_t nc = e->cap ? 2 * e->cap : 64;
		int32_t *p = realloc(e->ids, nc * sizeof(*p));
		if (!p)
			return bn_err_set(e->err, -ENOMEM, "tokenize: out of memory");
		e->ids = p;
		e->cap = nc;
	}
	e->ids[e->n++] = id;
	return 0;
}

static bool cand_less(const struct cand *a, const struct cand *b)
{
	return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(struct cand *h, size_t *n, struct cand c)
{
	size_t i = (*n)++;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!cand_less(&c, &h[p]))
			break;
		h[i] = h[p];
		i = p;
	}
	h[i] = c;
}

static struct cand heap_pop(struct cand *h, size_t *n)
{
	struct cand top = h[0], last = h[--(*n)];
	size_t i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= *n)
			break;
		if (c + 1 < *n && cand_less(&h[c + 1], &h[c]))
			c++;
		if (!cand_less(&h[c], &last))
			break;
		h[i] = h[c];
		i = c;
	}
	if (*n)
		h[i] = last;
	return top;
}

static void push_pair(struct enc *e, size_t *hn, int32_t pos)
{
	int32_t r = e->syms[pos].next;
	if (r < 0)
		return;
	const struct pair_slot *p = pair_find(e->t, e->syms[pos].id, e->syms[r].id);
	if (p) {
		struct cand c = { p->rank, pos, e->syms[pos].id, e->syms[r].id };
		heap_push(e->heap, hn, c);
	}
}

static int grow_scratch(struct enc *e, size_t n)
{
	if (n <= e->scap)
		return 0;
	size_t nc = e->scap ? e->scap : 256;
	while (nc < n)
		nc *= 2;
	free(e->mapped);
	free(e->syms);
	free(e->heap);
	e->mapped = malloc(2 * nc);
	e->syms = malloc(nc * sizeof(*e->syms));
	e->heap = malloc(2 * nc * sizeof(*e->heap));
	e->scap = nc;
	if (!e->mapped || !e->syms || !e->heap) {
		e->scap = 0;
		return bn_err_set(e->err, -ENOMEM, "tokenize: out of memory for a %zu-byte piece", n);
	}
	return 0;
}

/* One pre-tokenized piece: one token if the whole piece is a (non-control) vocabulary
 * entry, else byte symbols merged by lowest rank, leftmost first among equal ranks. */
static int encode_piece(struct enc *e, const uint8_t *p, size_t n)
{
	const struct bn_tokenizer *t = e->t;
	int rc;
	if (n == 0)
		return 0;
	if (n > INT32_MAX / 2)
		return bn_err_set(e->err, -E2BIG, "tokenize: piece of %zu bytes", n);
	if ((rc = grow_scratch(e, n)))
		return rc;
	size_t ml = 0;
	for (size_t i = 0; i < n; i++) {
		memcpy(e->mapped + ml, t->map_utf8[p[i]], t->map_len[p[i]]);
		ml += t->map_len[p[i]];
	}
	int32_t whole = vocab_find(t, e->mapped, ml);
	if (whole >= 0 && t->types[whole] != BN_TOKEN_CONTROL)
		return emit(e, whole);

	for (size_t i = 0; i < n; i++) {
		int32_t id = t->byte_tok[p[i]];
		if (id < 0)
			return bn_err_set(e->err, -EINVAL, "tokenize: the vocabulary has no token for "
					  "byte 0x%02x", p[i]);
		e->syms[i].id = id;
		e->syms[i].prev = (int32_t)i - 1;
		e->syms[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
	}
	size_t hn = 0;
	for (size_t i = 0; i + 1 < n; i++)
		push_pair(e, &hn, (int32_t)i);
	while (hn) {
		struct cand c = heap_pop(e->heap, &hn);
		struct sym *l = &e->syms[c.pos];
		if (l->id != c.lid || l->next < 0 || e->syms[l->next].id != c.rid)
			continue;
		const struct pair_slot *ps = pair_find(t, c.lid, c.rid);
		struct sym *r = &e->syms[l->next];
		l->id = ps->merged;
		r->id = -1;
		l->next = r->next;
		if (r->next >= 0)
			e->syms[r->next].prev = c.pos;
		/* each merge removes a symbol and queues at most two pairs: heap stays <= 2n */
		if (l->prev >= 0)
			push_pair(e, &hn, l->prev);
		push_pair(e, &hn, c.pos);
	}
	for (int32_t i = 0; i >= 0; i = e->syms[i].next)
		if ((rc = emit(e, e->syms[i].id)))
			return rc;
	return 0;
}

/* A run of valid UTF-8: split by the pre-tokenizer regex. Text the regex leaves between
 * matches (none for the LLaMA-3 pattern) still becomes pieces, so nothing is dropped. */
static int encode_utf8_run(struct enc *e, const char *s, size_t n)
{
	size_t off = 0;
	int rc;
	while (off < n) {
		int m = pcre2_match(e->t->re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, e->md, NULL);
		if (m == PCRE2_ERROR_JIT_STACKLIMIT)
			m = pcre2_match(e->t->re, (PCRE2_SPTR)s, n, off,
					PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, e->md, NULL);
		if (m == PCRE2_ERROR_NOMATCH)
			return encode_piece(e, (const uint8_t *)s + off, n - off);
		if (m < 0) {
			PCRE2_UCHAR msg[256];
			pcre2_get_error_message(m, msg, sizeof(msg));
			return bn_err_set(e->err, m == PCRE2_ERROR_NOMEMORY ? -ENOMEM : -E2BIG,
					  "tokenize: pre-tokenizer regex at byte %zu: %s", off,
					  (const char *)msg);
		}
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
		size_t a = ov[0], b = ov[1];
		if (b <= a) {   /* empty match: step over one character */
			b = a + utf8_valid_len((const uint8_t *)s + a, n - a);
			a = off;
		}
		if (a > off && (rc = encode_piece(e, (const uint8_t *)s + off, a - off)))
			return rc;
		if ((rc = encode_piece(e, (const uint8_t *)s + a, b - a)))
			return rc;
		off = b;
	}
	return 0;
}

static int encode_text(struct enc *e, const char *s, size_t n)
{
	const uint8_t *u = (const uint8_t *)s;
	size_t i = 0;
	int rc;
	while (i < n) {
		size_t start = i;
		size_t l;
		while (i < n && (l = utf8_valid_len(u + i, n - i)) > 0)
			i += l;
		if (i > start && (rc = encode_utf8_run(e, s + start, i - start)))
			return rc;
		start = i;
		while (i < n && utf8_valid_len(u + i, n - i) == 0)
			i++;
		if (i > start && (rc = encode_piece(e, u + start, i - start)))
			return rc;
	}
	return 0;
}

int bn_tokenize(const struct bn_tokenizer *t, const char *text, size_t len, bool add_bos,
		bool parse_special, int32_t **ids, size_t *n_ids, struct bn_error *err)
{
	*ids = NULL;
	*n_ids = 0;
	if (!text && len)
		return bn_err_set(err, -EINVAL, "tokenize: NULL text");
	struct enc e = { .t = t, .err = err };
	int rc = 0;
	e.md = pcre2_match_data_create_from_pattern(t->re, NULL);
	if (!e.md) {
		rc = bn_err_set(err, -ENOMEM, "tokenize: out of memory");
		goto out;
	}
	if (add_bos && t->bos >= 0 && (rc = emit(&e, t->bos)))
		goto out;
	/* Special tokens first: at each position the longest special text that matches. */
	size_t seg = 0;
	for (size_t i = 0; i < len;) {
		uint8_t c = (uint8_t)text[i];
		int32_t hit = -1;
		size_t hl = 0;
		for (uint32_t k = t->spec_start[c]; k < t->spec_start[c + 1]; k++) {
			int32_t id = t->spec[k];
			if (!parse_special && t->types[id] == BN_TOKEN_CONTROL)
				continue;
			size_t l = t->text_off[id + 1] - t->text_off[id];
			if (l <= len - i && memcmp(text + i, t->text + t->text_off[id], l) == 0) {
				hit = id;
				hl = l;
				break;
			}
		}
		if (hit < 0) {
			i++;
			continue;
		}
		if (i > seg && (rc = encode_text(&e, text + seg, i - seg)))
			goto out;
		if ((rc = emit(&e, hit)))
			goto out;
		i += hl;
		seg = i;
	}
	if (len > seg)
		rc = encode_text(&e, text + seg, len - seg);
out:
	pcre2_match_data_free(e.md);
	free(e.mapped);
	free(e.syms);
	free(e.heap);
	if (rc) {
		free(e.ids);
		return rc;
	}
	if (!e.ids) {   /* empty result: still a valid pointer for the caller to free */
		e.ids = malloc(sizeof(int32_t));
		if (!e.ids)
			return bn_err_set(err, -ENOMEM, "tokenize: out of memory");
	}
	*ids = e.ids;
	*n_ids = e.n;
	return 0;
}

/* ---- decoding ----------------------------------------------------------- */

int bn_token_piece(const struct bn_tokenizer *t, int32_t id, const char **bytes, size_t *len)
{
	if (id < 0 || (uint32_t)id >= t->n_vocab)
		return -EINVAL;
	*bytes = t->piece + t->piece_off[id];
	*len = t->piece_off[id + 1] - t->piece_off[id];
	return 0;
}

int bn_detokenize(const struct bn_tokenizer *t, const int32_t *ids, size_t n_ids, char **out,
		  size_t *len, struct bn_error *err)
{
	*out = NULL;
	*len = 0;
	size_t total = 0;
	for (size_t i = 0; i < n_ids; i++) {
		if (ids[i] < 0 || (uint32_t)ids[i] >= t->n_vocab)
			return bn_err_set(err, -EINVAL, "detokenize: token id %d at position %zu is "
					  "outside the vocabulary (0..%u)", ids[i], i, t->n_vocab - 1);
		total += t->piece_off[ids[i] + 1] - t->piece_off[ids[i]];
	}
	char *s = malloc(total + 1);
	if (!s)
		return bn_err_set(err, -ENOMEM, "detokenize: out of memory for %zu bytes", total);
	size_t o = 0;
	for (size_t i = 0; i < n_ids; i++) {
		uint32_t a = t->piece_off[ids[i]], b = t->piece_off[ids[i] + 1];
		memcpy(s + o, t->piece + a, b - a);
		o += b - a;
	}
	s[o] = '\0';
	*out = s;
	*len = o;
	return 0;
}

uint32_t bn_tokenizer_n_vocab(const struct bn_tokenizer *t) { return t->n_vocab; }
int32_t bn_tokenizer_bos(const struct bn_tokenizer *t) { return t->bos; }
int32_t bn_tokenizer_eos(const struct bn_tokenizer *t) { return t->eos; }
int32_t bn_tokenizer_eot(const struct bn_tokenizer *t) { return t->eot; }
bool bn_tokenizer_add_bos(const struct bn_tokenizer *t) { return t->add_bos; }
const char *bn_tokenizer_pre(const struct bn_tokenizer *t) { return t->pre; }
bool bn_tokenizer_jit(const struct bn_tokenizer *t) { return t->jit; }

int32_t bn_tokenizer_token_type(const struct bn_tokenizer *t, int32_t id)
{
	if (id < 0 || (uint32_t)id >= t->n_vocab)
		return -1;
	return t->types[id];
}

bool bn_token_is_eog(const struct bn_tokenizer *t, int32_t id)
{
	return id >= 0 && (id == t->eos || id == t->eot);
}

/* ---- streaming detokenizer ---------------------------------------------- */

void bn_detok_init(struct bn_detok *d, const struct bn_tokenizer *t)
{
	memset(d, 0, sizeof(*d));
	d->t = t;
}

void bn_detok_free(struct bn_detok *d)
{
	free(d->buf);
	d->buf = NULL;
	d->cap = 0;
	d->n_pend = 0;
}

static int detok_reserve(struct bn_detok *d, size_t need, struct bn_error *err)
{
	if (need <= d->cap)
		return 0;
	size_t nc = d->cap ? d->cap : 64;
	while (nc < need)
		nc *= 2;
	char *p = realloc(d->buf, nc);
	if (!p)
		return bn_err_set(err, -ENOMEM, "detokenize: out of memory");
	d->buf = p;
	d->cap = nc;
	return 0;
}

/* Bytes a lead byte announces in total (0 if it cannot start a sequence), and the allowed
 * range of the second byte. */
static unsigned utf8_lead(uint8_t c, uint8_t *lo, uint8_t *hi)
{
	*lo = 0x80;
	*hi = 0xBF;
	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		return 2;
	if (c >= 0xE0 && c <= 0xEF) {
		if (c == 0xE0)
			*lo = 0xA0;
		if (c == 0xED)
			*hi = 0x9F;
		return 3;
	}
	if (c >= 0xF0 && c <= 0xF4) {
		if (c == 0xF0)
			*lo = 0x90;
		if (c == 0xF4)
			*hi = 0x8F;
		return 4;
	}
	return 0;
}

static const char fffd[3] = { (char)0xEF, (char)0xBF, (char)0xBD };

int bn_detok_feed(struct bn_detok *d, int32_t id, const char **text, size_t *len,
		  struct bn_error *err)
{
	const char *p;
	size_t n;
	*text = "";
	*len = 0;
	if (bn_token_piece(d->t, id, &p, &n) != 0)
		return bn_err_set(err, -EINVAL, "detokenize: token id %d is outside the vocabulary "
				  "(0..%u)", id, d->t->n_vocab - 1);
	/* worst case: every byte becomes U+FFFD (3 bytes), plus the pending ones */
	int rc = detok_reserve(d, 3 * (n + d->n_pend) + 1, err);
	if (rc)
		return rc;
	size_t o = 0;
	for (size_t i = 0; i < n;) {
		uint8_t c = (uint8_t)p[i];
		uint8_t lo, hi;
		if (d->n_pend == 0) {
			unsigned need = utf8_lead(c, &lo, &hi);
			if (need == 1)
				d->buf[o++] = (char)c;
			else if (need == 0) {
				memcpy(d->buf + o, fffd, 3);
				o += 3;
			} else
				d->pend[d->n_pend++] = c;
			i++;
			continue;
		}
		unsigned need = utf8_lead(d->pend[0], &lo, &hi);
		bool ok = d->n_pend == 1 ? (c >= lo && c <= hi) : (c & 0xC0) == 0x80;
		if (!ok) {
			/* the maximal subpart so far is one U+FFFD; c is looked at afresh */
			memcpy(d->buf + o, fffd, 3);
			o += 3;
			d->n_pend = 0;
			continue;
		}
		d->pend[d->n_pend++] = c;
		i++;
		if (d->n_pend == need) {
			memcpy(d->buf + o, d->pend, need);
			o += need;
			d->n_pend = 0;
		}
	}
	d->buf[o] = '\0';
	*text = d->buf;
	*len = o;
	return 0;
}

int bn_detok_flush(struct bn_detok *d, const char **text, size_t *len, struct bn_error *err)
{
	*text = "";
	*len = 0;
	int rc = detok_reserve(d, 4, err);
	if (rc)
		return rc;
	size_t o = 0;
	if (d->n_pend) {
		memcpy(d->buf, fffd, 3);
		o = 3;
		d->n_pend = 0;
	}
	d->buf[o] = '\0';
	*text = d->buf;
	*len = o;
	return 0;
}
