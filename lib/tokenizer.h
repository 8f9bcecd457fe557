/* Byte-level BPE tokenizer (gpt2 vocabulary model, LLaMA-3 pre-tokenizer) and a streaming
 * detokenizer that emits whole UTF-8 characters only. Internal to libbitnet.
 *
 * A tokenizer is immutable after bn_tokenizer_new: every function taking a const pointer may
 * run concurrently from several threads.
 *
 * Invalid UTF-8 in the input text is not an error: the text is split into maximal valid
 * UTF-8 runs, which go through the pre-tokenizer regex, and runs of bytes that are not valid
 * UTF-8, which become pieces of their own. Byte-level BPE can spell every byte, so
 * detokenizing gives back exactly the input bytes (Hugging Face cannot take such input at
 * all; callers that need valid UTF-8, such as the D-Bus front end, check it themselves). */
#ifndef BN_TOKENIZER_H
#define BN_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "vocab.h"

struct bn_tokenizer;

/* The LLaMA-3 pre-tokenizer regex (PCRE2 syntax, compiled with PCRE2_UTF | PCRE2_UCP). */
extern const char bn_pretok_llama3[];

/* Copies what it needs from v (v may be freed afterwards). arch is the GGUF
 * general.architecture or NULL; it only picks the pre-tokenizer when v->pre is empty. */
int bn_tokenizer_new(struct bn_tokenizer **out, const struct bn_vocab *v, const char *arch,
		     struct bn_error *err);
void bn_tokenizer_free(struct bn_tokenizer *t);

/* Encodes len bytes of text (NUL bytes allowed). add_bos: prepend BOS when the vocabulary
 * has one. parse_special: match CONTROL token texts such as "<|eot_id|>" (USER_DEFINED ones
 * are always matched). On success *ids is a malloc'ed array [*n_ids] the caller frees. */
int bn_tokenize(const struct bn_tokenizer *t, const char *text, size_t len, bool add_bos,
		bool parse_special, int32_t **ids, size_t *n_ids, struct bn_error *err);

/* The raw bytes a token stands for (the GPT-2 byte map reversed; CONTROL and USER_DEFINED
 * tokens give their text). Not NUL-terminated; valid as long as t. 0 or -EINVAL. */
int bn_token_piece(const struct bn_tokenizer *t, int32_t id, const char **bytes, size_t *len);

/* Concatenated raw bytes of ids (may be invalid UTF-8 when the ids split a character).
 * *out is malloc'ed [*len + 1], NUL-terminated for convenience. */
int bn_detokenize(const struct bn_tokenizer *t, const int32_t *ids, size_t n_ids, char **out,
		  size_t *len, struct bn_error *err);

uint32_t bn_tokenizer_n_vocab(const struct bn_tokenizer *t);
int32_t bn_tokenizer_bos(const struct bn_tokenizer *t);   /* -1 when absent */
int32_t bn_tokenizer_eos(const struct bn_tokenizer *t);
int32_t bn_tokenizer_eot(const struct bn_tokenizer *t);
bool bn_tokenizer_add_bos(const struct bn_tokenizer *t);  /* the vocabulary's add_bos flag */
int32_t bn_tokenizer_token_type(const struct bn_tokenizer *t, int32_t id);  /* -1 out of range */
bool bn_token_is_eog(const struct bn_tokenizer *t, int32_t id);             /* EOS or EOT */
/* The pre-tokenizer rule in use, e.g. "llama-bpe". */
const char *bn_tokenizer_pre(const struct bn_tokenizer *t);
/* Whether the pre-tokenizer regex runs through the PCRE2 JIT. */
bool bn_tokenizer_jit(const struct bn_tokenizer *t);

/* Streaming detokenizer: feed ids one at a time; text comes out only at UTF-8 character
 * boundaries. A byte sequence that cannot become valid UTF-8 is replaced by U+FFFD (one per
 * maximal invalid subpart, as Unicode recommends), and flush replaces a dangling incomplete
 * sequence by U+FFFD. */
struct bn_detok {
	const struct bn_tokenizer *t;
	uint8_t pend[4];       /* [n_pend] bytes of an incomplete UTF-8 sequence */
	unsigned n_pend;
	char *buf;             /* [cap] output of the last feed/flush, owned */
	size_t cap;
};

void bn_detok_init(struct bn_detok *d, const struct bn_tokenizer *t);
/* *text and *len: the complete characters that this id finishes (possibly none); valid until
 * the next call. An out-of-range id is -EINVAL and leaves the state unchanged. */
int bn_detok_feed(struct bn_detok *d, int32_t id, const char **text, size_t *len,
		  struct bn_error *err);
/* Ends the stream: U+FFFD for a pending incomplete sequence; resets the state. */
int bn_detok_flush(struct bn_detok *d, const char **text, size_t *len, struct bn_error *err);
void bn_detok_free(struct bn_detok *d);   /* frees the buffer; d itself is the caller's */

#endif
