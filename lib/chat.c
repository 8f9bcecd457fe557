#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "tokenizer.h"
#include "log.h"
#include "stop.h"

#define BOS_TEXT "<|begin_of_text|>"
#define EOT_TEXT "<|eot_id|>"

int bn_chat_format_parse(const char *name, enum bn_chat_format *out, bool *is_auto)
{
	static const struct { const char *name; enum bn_chat_format f; } names[] = {
		{ "raw", BN_CHAT_RAW }, { "chat", BN_CHAT_BITNET }, { "bitnet", BN_CHAT_BITNET },
		{ "llama3", BN_CHAT_LLAMA3 }, { "instruct", BN_CHAT_INSTRUCT },
	};
	if (!name)
		return -EINVAL;
	if (strcmp(name, "auto") == 0) {
		*out = BN_CHAT_RAW;
		*is_auto = true;
		return 0;
	}
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(name, names[i].name) == 0) {
			*out = names[i].f;
			*is_auto = false;
			return 0;
		}
	return -EINVAL;
}

const char *bn_chat_format_name(enum bn_chat_format f)
{
	switch (f) {
	case BN_CHAT_RAW: return "raw";
	case BN_CHAT_BITNET: return "bitnet";
	case BN_CHAT_LLAMA3: return "llama3";
	case BN_CHAT_INSTRUCT: return "instruct";
	}
	return "unknown";
}

enum bn_chat_format bn_chat_auto(const char *arch, const char *embedded_template)
{
	const char *a = arch ? arch : "(none)";
	if (arch && (strcmp(arch, "bitnet-b1.58") == 0 || strcmp(arch, "bitnet-25") == 0)) {
		bn_log(BN_LOG_INFO, "chat format: bitnet (architecture %s%s)", a,
		       embedded_template ? "; the embedded template is known to be wrong and is ignored" : "");
		return BN_CHAT_BITNET;
	}
	if (embedded_template && strstr(embedded_template, "<|start_header_id|>")) {
		bn_log(BN_LOG_INFO, "chat format: llama3 (architecture %s, embedded template uses "
		       "<|start_header_id|>)", a);
		return BN_CHAT_LLAMA3;
	}
	bn_log(BN_LOG_INFO, "chat format: raw (architecture %s, %s)", a,
	       embedded_template ? "embedded template not recognised" : "no embedded template");
	return BN_CHAT_RAW;
}

bool bn_chat_adds_bos(enum bn_chat_format f)
{
	return f == BN_CHAT_BITNET || f == BN_CHAT_LLAMA3;
}

const char *bn_chat_default_stop(enum bn_chat_format f)
{
	return f == BN_CHAT_INSTRUCT ? "\n\nQ:" : NULL;
}

/* ---- rendering ------------------------------------------------------------- */

enum role { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT };

struct sbuf {
	char *p;      /* [cap] NUL-terminated text */
	size_t len, cap;
	bool oom;
	struct bn_chat_span *sp;   /* [n_sp] the template's special-token texts */
	size_t n_sp, cap_sp;
};

static void sb_add(struct sbuf *b, const char *s)
{
	size_t l = strlen(s);
	if (b->oom)
		return;
	if (b->len + l + 1 > b->cap) {
		size_t c = b->cap ? b->cap : 256;
		while (c < b->len + l + 1)
			c *= 2;
		char *q = realloc(b->p, c);
		if (!q) {
			b->oom = true;
			return;
		}
		b->p = q;
		b->cap = c;
	}
	memcpy(b->p + b->len, s, l + 1);
	b->len += l;
}

/* Adds one turn. *open: instruct has written "\nA:" and waits for an answer. */
/* Special-token text the template itself writes (never a message's content). */
static void sb_special(struct sbuf *b, const char *s)
{
	size_t off = b->len;
	sb_add(b, s);
	if (b->oom)
		return;
	if (b->n_sp == b->cap_sp) {
		size_t c = b->cap_sp ? 2 * b->cap_sp : 16;
		struct bn_chat_span *q = realloc(b->sp, c * sizeof(*q));
		if (!q) {
			b->oom = true;
			return;
		}
		b->sp = q;
		b->cap_sp = c;
	}
	b->sp[b->n_sp++] = (struct bn_chat_span){ off, strlen(s) };
}

static void render_turn(struct sbuf *b, enum bn_chat_format f, enum role r, const char *content,
			bool *open)
{
	static const char *const cap_name[] = { "System: ", "User: ", "Assistant: " };
	static const char *const low_name[] = { "system", "user", "assistant" };
	switch (f) {
	case BN_CHAT_RAW:
		sb_add(b, content);
		break;
	case BN_CHAT_BITNET:
		sb_add(b, cap_name[r]);
		sb_add(b, content);
		sb_special(b, EOT_TEXT);
		break;
	case BN_CHAT_LLAMA3:
		sb_special(b, "<|start_header_id|>");
		sb_add(b, low_name[r]);
		sb_special(b, "<|end_header_id|>");
		sb_add(b, "\n\n");
		sb_add(b, content);
		sb_special(b, EOT_TEXT);
		break;
	case BN_CHAT_INSTRUCT:
		if (r == ROLE_ASSISTANT) {
			sb_add(b, *open ? " " : "A: ");
			sb_add(b, content);
			sb_add(b, "\n\n");
			*open = false;
			break;
		}
		if (*open)   /* a question left without an answer */
			sb_add(b, "\n\n");
		sb_add(b, r == ROLE_SYSTEM ? "System: " : "Q: ");
		sb_add(b, content);
		sb_add(b, r == ROLE_SYSTEM ? "\n\n" : "\nA:");
		*open = r == ROLE_USER;
		break;
	}
}

/* Bytes of valid UTF-8 s to quote in a message: at most max, not ending inside a
 * character (a message may become a D-Bus reply, which must be valid UTF-8). */
static int quote_len(const char *s, size_t max)
{
	size_t l = strlen(s);
	if (l <= max)
		return (int)l;
	l = max;
	while (l > 0 && ((unsigned char)s[l] & 0xC0) == 0x80)
		l--;
	return (int)l;
}

static int check_msg(const char *role, const char *content, size_t idx, const char *what,
		     enum role *r, struct bn_error *err)
{
	if (!role)
		return bn_err_set(err, -EINVAL, "%s %zu: no role", what, idx);
	if (strcmp(role, "system") == 0)
		*r = ROLE_SYSTEM;
	else if (strcmp(role, "user") == 0)
		*r = ROLE_USER;
	else if (strcmp(role, "assistant") == 0)
		*r = ROLE_ASSISTANT;
	else if (!bn_stop_utf8_valid(role, strlen(role)))
		return bn_err_set(err, -EINVAL, "%s %zu: unknown role (not valid UTF-8; "
				  "system | user | assistant)", what, idx);
	else
		return bn_err_set(err, -EINVAL, "%s %zu: unknown role '%.*s' (system | user | "
				  "assistant)", what, idx, quote_len(role, 64), role);
	if (!content)
		return bn_err_set(err, -EINVAL, "%s %zu (%s): no content", what, idx, role);
	if (!bn_stop_utf8_valid(content, strlen(content)))
		return bn_err_set(err, -EILSEQ, "%s %zu (%s): content is not valid UTF-8", what,
				  idx, role);
	return 0;
}

int bn_chat_render(enum bn_chat_format f, const struct bn_chat_msg *msgs, size_t n,
		   const char *system, char **out, struct bn_error *err)
{
	return bn_chat_render_spans(f, msgs, n, system, out, NULL, NULL, err);
}

int bn_chat_render_spans(enum bn_chat_format f, const struct bn_chat_msg *msgs, size_t n,
                         const char *system, char **out, struct bn_chat_span **specials,
                         size_t *n_specials, struct bn_error *err)
{
	*out = NULL;
	if (specials) {
		*specials = NULL;
		*n_specials = 0;
	}
	if (f != BN_CHAT_RAW && f != BN_CHAT_BITNET && f != BN_CHAT_LLAMA3 && f != BN_CHAT_INSTRUCT)
		return bn_err_set(err, -EINVAL, "chat: unknown format %d", (int)f);
	if (n == 0 || !msgs)
		return bn_err_set(err, -EINVAL, "chat: no messages");
	enum role r;
	int rc;
	if (system && (rc = check_msg("system", system, 0, "system message", &r, err)) < 0)
		return rc;
	for (size_t i = 0; i < n; i++)
		if ((rc = check_msg(msgs[i].role, msgs[i].content, i, "message", &r, err)) < 0)
			return rc;

	struct sbuf b = { 0 };
	bool open = false;
	sb_add(&b, "");
	if (bn_chat_adds_bos(f))
		sb_special(&b, BOS_TEXT);
	if (system)
		render_turn(&b, f, ROLE_SYSTEM, system, &open);
	for (size_t i = 0; i < n; i++) {
		check_msg(msgs[i].role, msgs[i].content, i, "message", &r, NULL);
		render_turn(&b, f, r, msgs[i].content, &open);
	}
	switch (f) {
	case BN_CHAT_BITNET:
		sb_add(&b, "Assistant: ");
		break;
	case BN_CHAT_LLAMA3:
		sb_special(&b, "<|start_header_id|>");
		sb_add(&b, "assistant");
		sb_special(&b, "<|end_header_id|>");
		sb_add(&b, "\n\n");
		break;
	case BN_CHAT_INSTRUCT:
		if (!open)
			sb_add(&b, "A:");
		break;
	case BN_CHAT_RAW:
		break;
	}
	if (b.oom) {
		free(b.p);
		free(b.sp);
		return bn_err_set(err, -ENOMEM, "chat: out of memory rendering %zu messages", n);
	}
	*out = b.p;
	if (specials) {
		*specials = b.sp;
		*n_specials = b.n_sp;
	} else {
		free(b.sp);
	}
	return 0;
}

/* Appends ids [n] to *all. */
static int ids_append(int32_t **all, size_t *n_all, const int32_t *ids, size_t n)
{
	int32_t *q = realloc(*all, (*n_all + n + 1) * sizeof(int32_t));
	if (!q)
		return -ENOMEM;
	memcpy(q + *n_all, ids, n * sizeof(int32_t));
	*all = q;
	*n_all += n;
	return 0;
}

int bn_tokenize_marked(const struct bn_tokenizer *t, const char *text, size_t len,
                       const struct bn_chat_span *sp, size_t nsp, bool add_bos, int32_t **ids,
                       size_t *n_ids, struct bn_error *err)
{
	/* the text between the marked special tokens is one run each, tokenized without
	 * special parsing (so content cannot forge a turn), exactly as special parsing would
	 * split it when the content holds no special text */
	size_t pos = 0;
	int32_t *all = NULL, *part = NULL;
	size_t n_all = 0, n_part = 0;
	int rc = 0;
	*ids = NULL;
	*n_ids = 0;
	int32_t bos = bn_tokenizer_bos(t);
	if (add_bos && bos >= 0)
		rc = ids_append(&all, &n_all, &bos, 1);
	for (size_t i = 0; i <= nsp && !rc; i++) {
		size_t end = i < nsp ? sp[i].off : len;
		if (end < pos || end > len || (i < nsp && sp[i].len > len - end)) {
			rc = bn_err_set(err, -EINVAL, "special-token span %zu is outside the text", i);
			break;
		}
		if (end > pos) {
			if ((rc = bn_tokenize(t, text + pos, end - pos, false, false, &part, &n_part, err)))
				break;
			rc = ids_append(&all, &n_all, part, n_part);
			free(part);
		}
		if (i < nsp && !rc) {
			if ((rc = bn_tokenize(t, text + sp[i].off, sp[i].len, false, true, &part, &n_part,
			                      err)))
				break;
			rc = ids_append(&all, &n_all, part, n_part);
			free(part);
			pos = sp[i].off + sp[i].len;
		}
	}
	if (rc) {
		free(all);
		return rc == -ENOMEM ? bn_err_set(err, rc, "out of memory tokenizing") : rc;
	}
	*ids = all;
	*n_ids = n_all;
	return 0;
}

int bn_chat_tokenize(const struct bn_tokenizer *t, enum bn_chat_format f,
                     const struct bn_chat_msg *msgs, size_t n, const char *system, bool add_bos,
                     int32_t **ids, size_t *n_ids, struct bn_error *err)
{
	char *text = NULL;
	struct bn_chat_span *sp = NULL;
	size_t nsp = 0;
	*ids = NULL;
	*n_ids = 0;
	int rc = bn_chat_render_spans(f, msgs, n, system, &text, &sp, &nsp, err);
	if (!rc)
		rc = bn_tokenize_marked(t, text, strlen(text), sp, nsp, add_bos, ids, n_ids, err);
	free(text);
	free(sp);
	return rc;
}
