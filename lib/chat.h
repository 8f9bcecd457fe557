/* Chat formats: turning role/content messages into prompt text.
 *
 *  raw       the contents concatenated as they are; the caller adds BOS per the file
 *  bitnet    the BitNet 2B-4T format (spec section 6):
 *            <|begin_of_text|>System: {s}<|eot_id|>User: {u}<|eot_id|>Assistant: {a}<|eot_id|>...Assistant: 
 *  llama3    <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>...
 *            <|start_header_id|>assistant<|end_header_id|>\n\n
 *  instruct  System: {s}\n\nQ: {u}\nA: {a}\n\nQ: {u}\nA:   (the engine this project replaces);
 *            "\n\nQ:" is its default stop string; the caller adds BOS per the file
 *
 * The bitnet and llama3 renderings contain special-token text, BOS included, and do NOT
 * take another BOS (bn_chat_adds_bos()). Message content is copied as is: tokenize with
 * bn_chat_tokenize, which parses only the template's own special tokens, so that content
 * holding "<|eot_id|>" stays text and cannot forge a turn. bn_chat_render's text is for
 * display (tokenizing it with special parsing would parse the contents' too).
 */
#ifndef BN_CHAT_H
#define BN_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct bn_tokenizer;

enum bn_chat_format { BN_CHAT_RAW, BN_CHAT_BITNET, BN_CHAT_LLAMA3, BN_CHAT_INSTRUCT };

/* raw | chat (= bitnet) | bitnet | llama3 | instruct | auto. For auto, *is_auto is set,
 * *out is BN_CHAT_RAW, and the caller resolves it with bn_chat_auto() once the model is
 * known. -EINVAL for any other name (the caller names the option in its message). */
int bn_chat_format_parse(const char *name, enum bn_chat_format *out, bool *is_auto);

/* "raw", "bitnet", "llama3", "instruct" */
const char *bn_chat_format_name(enum bn_chat_format f);

/* The format for a model: bitnet-b1.58 and bitnet-25 get BITNET whatever the embedded
 * template says (the one bitnet.cpp's converter embeds is wrong, spec section 6); an
 * embedded template with "<|start_header_id|>" gets LLAMA3; anything else RAW. Logs the
 * choice and why at info level. arch and embedded_template may be NULL. */
enum bn_chat_format bn_chat_auto(const char *arch, const char *embedded_template);

struct bn_chat_msg {
	const char *role;      /* system | user | assistant */
	const char *content;   /* valid UTF-8 */
};

/* Renders n >= 1 messages (system, when not NULL, goes first as a system message) and
 * prompts for the assistant's reply. *out is malloc'd and NUL-terminated. Errors: -EINVAL
 * (no messages, NULL or unknown role, naming the message), -EILSEQ (content not valid
 * UTF-8), -ENOMEM. RAW concatenates every content, system included, in order. */
int bn_chat_render(enum bn_chat_format f, const struct bn_chat_msg *msgs, size_t n,
		   const char *system, char **out, struct bn_error *err);

/* A byte range of rendered text. */
struct bn_chat_span {
	size_t off, len;
};

/* bn_chat_render, and the ranges of the special-token text the template wrote, in order
 * (*specials malloc'd, NULL when there are none; specials may be NULL). */
int bn_chat_render_spans(enum bn_chat_format f, const struct bn_chat_msg *msgs, size_t n,
                         const char *system, char **out, struct bn_chat_span **specials,
                         size_t *n_specials, struct bn_error *err);

/* The token ids of the rendered chat: the template's special tokens as such, everything
 * between them (contents included) as plain text. add_bos: prepend BOS when the vocabulary
 * has one (pass !bn_chat_adds_bos(f) && the vocabulary's flag). *ids malloc'd. */
int bn_chat_tokenize(const struct bn_tokenizer *t, enum bn_chat_format f,
                     const struct bn_chat_msg *msgs, size_t n, const char *system, bool add_bos,
                     int32_t **ids, size_t *n_ids, struct bn_error *err);

/* Tokenizes text[len] with the special tokens at the spans sp[nsp] (in order, not
 * overlapping) and everything else as plain text; add_bos prepends BOS when the
 * vocabulary has one. -EINVAL for a span outside the text. */
int bn_tokenize_marked(const struct bn_tokenizer *t, const char *text, size_t len,
                       const struct bn_chat_span *sp, size_t nsp, bool add_bos, int32_t **ids,
                       size_t *n_ids, struct bn_error *err);

/* true when the rendered text already starts with BOS text (bitnet, llama3). */
bool bn_chat_adds_bos(enum bn_chat_format f);

/* The format's own stop string ("\n\nQ:" for instruct), NULL if none. */
const char *bn_chat_default_stop(enum bn_chat_format f);

#endif
