/* Stop strings matched across token boundaries.
 *
 * Text is fed in chunks as it is detokenized. Each feed returns the text that is safe to
 * show now: everything except a suffix that could still grow into a stop string (and an
 * incomplete UTF-8 sequence at the very end, so that emitted text is always whole
 * characters). When a stop string completes, the text before it is emitted and the stop
 * string and everything after it never are.
 *
 * The first stop string to complete wins (earliest end in the text; at the same end, the
 * longest), so the emitted text does not depend on how the text was cut into chunks.
 *
 * Example, stop strings "\n\nQ:" and "</s>":
 *     struct bn_stop st;
 *     const char *stops[] = { "\n\nQ:", "</s>" };
 *     if (bn_stop_init(&st, stops, 2, &err) < 0) ...
 *     const char *emit; size_t emit_len;
 *     bn_stop_feed(&st, "Paris.\n", 7, &emit, &emit_len);   // 0, emits "Paris." (holds "\n")
 *     bn_stop_feed(&st, "\nQ", 2, &emit, &emit_len);        // 0, emits ""       (holds "\n\nQ")
 *     bn_stop_feed(&st, ": Why", 5, &emit, &emit_len);      // 1, emits ""       (matched)
 *     // on a normal end (EOS, max tokens) instead:
 *     bn_stop_flush(&st, &emit, &emit_len);                 // emits whatever was held
 *     bn_stop_free(&st);
 *
 * With no stop strings every feed emits its input (less any incomplete UTF-8 tail).
 * The fed text itself is not validated: whoever sends it on (D-Bus) checks it.
 */
#ifndef BN_STOP_H
#define BN_STOP_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

#define BN_STOP_MAX_STRINGS 64     /* stop strings per generation */
#define BN_STOP_MAX_LEN     1024   /* bytes per stop string */

struct bn_stop {
	char **stops;         /* [n] copies, NUL-terminated */
	size_t *lens;         /* [n] */
	size_t n;
	char *buf;            /* [cap] held text, then the new chunk appended behind it */
	size_t held;          /* bytes of buf held back from earlier feeds */
	size_t cap;
	char *out;            /* [out_cap] the last emitted text, NUL-terminated */
	size_t out_cap;
	bool matched;
	int which;            /* index of the stop string that matched, -1 before */
};

/* Copies the stop strings. Each must be non-empty valid UTF-8 of at most
 * BN_STOP_MAX_LEN bytes (-EINVAL / -EILSEQ / -E2BIG naming "stop string N"). */
int bn_stop_init(struct bn_stop *st, const char *const *stops, size_t n, struct bn_error *err);

/* Feeds len bytes of text. Sets *emit / *emit_len to the text to show now
 * (NUL-terminated, valid until the next call on st). Returns 1 once a stop string has
 * matched (this call or earlier; later feeds emit nothing), 0 otherwise, or -ENOMEM. */
int bn_stop_feed(struct bn_stop *st, const char *text, size_t len, const char **emit,
		 size_t *emit_len);

/* At the end of a generation that did not match: emits everything still held. Returns 0,
 * 1 if a stop string had matched (nothing is emitted then), or -ENOMEM. */
int bn_stop_flush(struct bn_stop *st, const char **emit, size_t *emit_len);

/* Index of the stop string that matched, -1 if none. */
static inline int bn_stop_which(const struct bn_stop *st)
{
	return st->which;
}

/* Back to the state after init (same stop strings). */
void bn_stop_reset(struct bn_stop *st);
void bn_stop_free(struct bn_stop *st);

/* true when s[0..len) is well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF);
 * chat.c uses it for message text too. */
bool bn_stop_utf8_valid(const char *s, size_t len);

#endif
