#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "stop.h"

bool bn_stop_utf8_valid(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;
	while (i < len) {
		unsigned char b = s[i];
		if (b < 0x80) {
			i++;
			continue;
		}
		size_t n;
		uint32_t cp, min;
		if ((b & 0xe0) == 0xc0) {
			n = 2; cp = b & 0x1f; min = 0x80;
		} else if ((b & 0xf0) == 0xe0) {
			n = 3; cp = b & 0x0f; min = 0x800;
		} else if ((b & 0xf8) == 0xf0) {
			n = 4; cp = b & 0x07; min = 0x10000;
		} else {
			return false;
		}
		if (len - i < n)
			return false;
		for (size_t j = 1; j < n; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + j] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n;
	}
	return true;
}

int bn_stop_init(struct bn_stop *st, const char *const *stops, size_t n, struct bn_error *err)
{
	memset(st, 0, sizeof(*st));
	st->which = -1;
	if (n > BN_STOP_MAX_STRINGS)
		return bn_err_set(err, -E2BIG, "stop strings: %zu given, at most %d allowed", n,
				  BN_STOP_MAX_STRINGS);
	for (size_t i = 0; i < n; i++) {
		if (!stops[i] || !stops[i][0])
			return bn_err_set(err, -EINVAL, "stop string %zu: empty", i);
		size_t l = strlen(stops[i]);
		if (l > BN_STOP_MAX_LEN)
			return bn_err_set(err, -E2BIG, "stop string %zu: %zu bytes, at most %d allowed",
					  i, l, BN_STOP_MAX_LEN);
		if (!bn_stop_utf8_valid(stops[i], l))
			return bn_err_set(err, -EILSEQ, "stop string %zu: not valid UTF-8", i);
	}
	if (n) {
		st->stops = calloc(n, sizeof(*st->stops));
		st->lens = calloc(n, sizeof(*st->lens));
		if (!st->stops || !st->lens)
			goto nomem;
		st->n = n;
		for (size_t i = 0; i < n; i++) {
			st->lens[i] = strlen(stops[i]);
			st->stops[i] = strdup(stops[i]);
			if (!st->stops[i])
				goto nomem;
		}
	}
	return 0;
nomem:
	bn_stop_free(st);
	return bn_err_set(err, -ENOMEM, "stop strings: out of memory");
}

void bn_stop_free(struct bn_stop *st)
{
	for (size_t i = 0; i < st->n && st->stops; i++)
		free(st->stops[i]);
	free(st->stops);
	free(st->lens);
	free(st->buf);
	free(st->out);
	memset(st, 0, sizeof(*st));
	st->which = -1;
}

void bn_stop_reset(struct bn_stop *st)
{
	st->held = 0;
	st->matched = false;
	st->which = -1;
}

static int grow(char **p, size_t *cap, size_t need)
{
	if (need <= *cap)
		return 0;
	size_t c = *cap ? *cap : 64;
	while (c < need) {
		if (c > SIZE_MAX / 2)
			return -ENOMEM;
		c *= 2;
	}
	char *q = realloc(*p, c);
	if (!q)
		return -ENOMEM;
	*p = q;
	*cap = c;
	return 0;
}

/* Copies buf[0..cut) to out as the emitted text and keeps buf[cut..total) held. */
static int emit_prefix(struct bn_stop *st, size_t cut, size_t total, const char **emit,
		       size_t *emit_len)
{
	if (grow(&st->out, &st->out_cap, cut + 1) < 0)
		return -ENOMEM;
	memcpy(st->out, st->buf, cut);
	st->out[cut] = '\0';
	memmove(st->buf, st->buf + cut, total - cut);
	st->held = total - cut;
	*emit = st->out;
	*emit_len = cut;
	return 0;
}

/* Start of an incomplete UTF-8 sequence ending buf[0..n), or n if the end is whole. */
static size_t utf8_tail(const char *buf, size_t n)
{
	for (size_t back = 1; back <= 3 && back <= n; back++) {
		unsigned char b = (unsigned char)buf[n - back];
		if ((b & 0xc0) == 0x80)
			continue;   /* continuation byte: look further back */
		size_t need = (b & 0xe0) == 0xc0 ? 2 : (b & 0xf0) == 0xe0 ? 3 : (b & 0xf8) == 0xf0 ? 4 : 1;
		return need > back ? n - back : n;
	}
	return n;
}

static const char empty[1] = "";

int bn_stop_feed(struct bn_stop *st, const char *text, size_t len, const char **emit,
		 size_t *emit_len)
{
	*emit = empty;
	*emit_len = 0;
	if (st->matched)
		return 1;
	size_t old = st->held, total = old + len;
	if (total < old || grow(&st->buf, &st->cap, total ? total : 1) < 0)
		return -ENOMEM;
	if (len)
		memcpy(st->buf + old, text, len);
	const char *b = st->buf;

	/* Matches ending inside the held text were ruled out by the feed that held it, so
	 * only ends in the new text are tried, earliest first. */
	for (size_t e = old + 1; e <= total; e++) {
		int hit = -1;
		for (size_t k = 0; k < st->n; k++) {
			size_t l = st->lens[k];
			if (l <= e && (hit < 0 || l > st->lens[hit]) &&
			    memcmp(b + e - l, st->stops[k], l) == 0)
				hit = (int)k;
		}
		if (hit >= 0) {
			if (emit_prefix(st, e - st->lens[hit], total, emit, emit_len) < 0)
				return -ENOMEM;
			st->held = 0;
			st->matched = true;
			st->which = hit;
			return 1;
		}
	}

	/* Hold from the earliest position whose suffix is a proper prefix of a stop string
	 * (it could still complete), or from an incomplete trailing UTF-8 sequence. */
	size_t cut = utf8_tail(b, total);
	for (size_t k = 0; k < st->n; k++) {
		size_t l = st->lens[k];
		size_t from = total >= l ? total - l + 1 : 0;
		for (size_t i = from; i < cut; i++)
			if (memcmp(b + i, st->stops[k], total - i) == 0) {
				cut = i;
				break;
			}
	}
	if (emit_prefix(st, cut, total, emit, emit_len) < 0)
		return -ENOMEM;
	return 0;
}

int bn_stop_flush(struct bn_stop *st, const char **emit, size_t *emit_len)
{
	*emit = empty;
	*emit_len = 0;
	if (st->matched || st->held == 0)
		return st->matched ? 1 : 0;
	if (emit_prefix(st, st->held, st->held, emit, emit_len) < 0)
		return -ENOMEM;
	return 0;
}
