#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
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
		sb_add(b, EOT_TEXT);
		break;
	case BN_CHAT_LLAMA3:
		sb_add(b, "<|start_header_id|>");
		sb_add(b, low_name[r]);
		sb_add(b, "<|end_header_id|>\n\n");
		sb_add(b, content);
		sb_add(b, EOT_TEXT);
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
		return bn_err_set(err, -EINVAL, "%s %zu: unknown role '%.64s' (system | user | "
				  "assistant)", what, idx, role);
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
	*out = NULL;
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
		sb_add(&b, BOS_TEXT);
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
		sb_add(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
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
		return bn_err_set(err, -ENOMEM, "chat: out of memory rendering %zu messages", n);
	}
	*out = b.p;
	return 0;
}
