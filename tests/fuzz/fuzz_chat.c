/* Fuzz target for chat rendering (lib/chat.c): formats chosen by number or by name,
 * arbitrary roles and contents, an optional system message, and the tokenization of the
 * rendered chat with the fixed vocabulary of fixed_vocab.h.
 *
 * Input: byte 0 selects (bits 0-2: format 0-3 by number, 4 an invalid number, 5-7 by the
 * name in field 0; bit 3: field 1 is a system message; bit 4: add BOS when tokenizing;
 * bits 5-6: the architecture given to bn_chat_auto; bit 7: also tokenize the rendering
 * with spans read from the last field). The rest is fields separated by NUL bytes:
 * field 0 a format name, field 1 the system message, then role, content, role, content...
 * A role of one byte 1, 2, 3 stands for system, user, assistant and 4 for NULL; a
 * content of the one byte 5 for NULL.
 *
 * Checks: the result (or the error, -EINVAL / -EILSEQ) is the one chat.h documents for
 * the messages; RAW, BITNET and LLAMA3 render exactly the documented text, INSTRUCT ends
 * prompting for an answer; the spans mark exactly the template's special tokens; and
 * bn_chat_tokenize gives the rendered text back, with a control token at each span and
 * nowhere else (content cannot forge a turn).
 *
 *   scripts/fuzz.sh chat 60             (libFuzzer, see tests/fuzz/README)
 *   build/tests/fuzz/fuzz_chat FILE|DIR...      (replay; -DBN_FUZZ_STANDALONE) */
#include "fuzz_common.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "error.h"
#include "fixed_vocab.h"
#include "tokenizer.h"

#define MAX_MSGS 256

#define BOS "<|begin_of_text|>"
#define EOT "<|eot_id|>"
#define SH "<|start_header_id|>"
#define EH "<|end_header_id|>"

static const struct bn_tokenizer *tokenizer(void)
{
	static struct bn_tokenizer *t;
	if (!t) {
		struct bn_vocab v;
		struct bn_error err = { 0 };
		fixed_vocab(&v);
		FUZZ_CHECK(bn_tokenizer_new(&t, &v, NULL, &err) == 0);
		bn_vocab_free(&v);
	}
	return t;
}

/* The documented rendering (chat.h) of the formats whose layout is fixed per turn, with
 * the offsets of the special-token texts. */
struct ref {
	char *p;
	size_t len, cap;
	struct bn_chat_span sp[4 * MAX_MSGS + 8];
	size_t n_sp;
};

static void ref_add(struct ref *r, const char *s, bool special)
{
	size_t l = strlen(s);
	if (r->len + l + 1 > r->cap) {
		while (r->len + l + 1 > r->cap)
			r->cap = r->cap ? 2 * r->cap : 256;
		r->p = realloc(r->p, r->cap);
		FUZZ_CHECK(r->p != NULL);
	}
	if (special) {
		FUZZ_CHECK(r->n_sp < sizeof(r->sp) / sizeof(r->sp[0]));
		r->sp[r->n_sp].off = r->len;
		r->sp[r->n_sp].len = l;
		r->n_sp++;
	}
	memcpy(r->p + r->len, s, l + 1);
	r->len += l;
}

static void ref_turn(struct ref *r, enum bn_chat_format f, const char *role, const char *content)
{
	switch (f) {
	case BN_CHAT_RAW:
		ref_add(r, content, false);
		break;
	case BN_CHAT_BITNET:
		ref_add(r, strcmp(role, "system") == 0 ? "System: " :
			   strcmp(role, "user") == 0 ? "User: " : "Assistant: ", false);
		ref_add(r, content, false);
		ref_add(r, EOT, true);
		break;
	case BN_CHAT_LLAMA3:
		ref_add(r, SH, true);
		ref_add(r, role, false);
		ref_add(r, EH, true);
		ref_add(r, "\n\n", false);
		ref_add(r, content, false);
		ref_add(r, EOT, true);
		break;
	case BN_CHAT_INSTRUCT:
		break;
	}
}

static bool known_role(const char *r)
{
	return r && (strcmp(r, "system") == 0 || strcmp(r, "user") == 0 ||
		     strcmp(r, "assistant") == 0);
}

/* What bn_chat_render must return for these messages. */
static int expected_rc(int f, const struct bn_chat_msg *msgs, size_t n, const char *system)
{
	if (f < BN_CHAT_RAW || f > BN_CHAT_INSTRUCT || n == 0)
		return -EINVAL;
	if (system && !fuzz_utf8_valid(system, strlen(system)))
		return -EILSEQ;
	for (size_t i = 0; i < n; i++) {
		if (!known_role(msgs[i].role) || !msgs[i].content)
			return -EINVAL;
		if (!fuzz_utf8_valid(msgs[i].content, strlen(msgs[i].content)))
			return -EILSEQ;
	}
	return 0;
}

static bool ends_with(const char *s, size_t n, const char *suffix)
{
	size_t l = strlen(suffix);
	return n >= l && memcmp(s + n - l, suffix, l) == 0;
}

static bool is_template_special(const char *s, size_t n)
{
	static const char *const sp[] = { BOS, EOT, SH, EH };
	for (size_t i = 0; i < sizeof(sp) / sizeof(sp[0]); i++)
		if (n == strlen(sp[i]) && memcmp(s, sp[i], n) == 0)
			return true;
	return false;
}

/* ids must spell prefix + text and hold a control token exactly at each span. */
static void check_ids(const struct bn_tokenizer *t, const int32_t *ids, size_t n, bool bos,
		      const char *text, size_t len, const struct bn_chat_span *sp, size_t nsp)
{
	size_t i = 0, pos = 0, k = 0;
	if (bos && bn_tokenizer_bos(t) >= 0) {
		FUZZ_CHECK(n >= 1 && ids[0] == bn_tokenizer_bos(t));
		i = 1;
	}
	for (; i < n; i++) {
		const char *p;
		size_t pl;
		FUZZ_CHECK(bn_token_piece(t, ids[i], &p, &pl) == 0);
		FUZZ_CHECK(pos + pl <= len && memcmp(text + pos, p, pl) == 0);
		bool control = bn_tokenizer_token_type(t, ids[i]) == BN_TOKEN_CONTROL;
		/* every template special is a control token of the fixed vocabulary */
		if (k < nsp && sp[k].off == pos) {
			FUZZ_CHECK(control && sp[k].len == pl);
			k++;
		} else {
			FUZZ_CHECK(!control);
		}
		pos += pl;
	}
	FUZZ_CHECK(k == nsp);
	FUZZ_CHECK(pos == len);
}

static void check_rendering(enum bn_chat_format f, const struct bn_chat_msg *msgs, size_t n,
			    const char *system, const char *out, const struct bn_chat_span *sp,
			    size_t nsp)
{
	size_t len = strlen(out);
	FUZZ_CHECK(fuzz_utf8_valid(out, len));
	size_t turns = n + (system ? 1 : 0);
	if (f == BN_CHAT_INSTRUCT) {
		FUZZ_CHECK(nsp == 0);
		FUZZ_CHECK(ends_with(out, len, "A:"));
		/* every content, in order */
		const char *at = out;
		if (system) {
			FUZZ_CHECK((at = strstr(at, system)) != NULL);
			at += strlen(system);
		}
		for (size_t i = 0; i < n; i++) {
			FUZZ_CHECK((at = strstr(at, msgs[i].content)) != NULL);
			at += strlen(msgs[i].content);
		}
		return;
	}
	struct ref r = { 0 };
	ref_add(&r, "", false);
	if (f != BN_CHAT_RAW)
		ref_add(&r, BOS, true);
	if (system)
		ref_turn(&r, f, "system", system);
	for (size_t i = 0; i < n; i++)
		ref_turn(&r, f, msgs[i].role, msgs[i].content);
	if (f == BN_CHAT_BITNET) {
		ref_add(&r, "Assistant: ", false);
	} else if (f == BN_CHAT_LLAMA3) {
		ref_add(&r, SH, true);
		ref_add(&r, "assistant", false);
		ref_add(&r, EH, true);
		ref_add(&r, "\n\n", false);
	}
	FUZZ_CHECK(r.len == len && memcmp(r.p, out, len) == 0);
	FUZZ_CHECK(nsp == r.n_sp);
	FUZZ_CHECK(nsp == (f == BN_CHAT_RAW ? 0 : f == BN_CHAT_BITNET ? 1 + turns : 3 + 3 * turns));
	for (size_t i = 0; i < nsp; i++)
		FUZZ_CHECK(sp[i].off == r.sp[i].off && sp[i].len == r.sp[i].len);
	free(r.p);
}

/* bn_tokenize_marked with spans taken from the input: accepted exactly when they are in
 * order and inside the text, and then the ids spell the text. */
static void check_marked(const struct bn_tokenizer *t, const char *text, size_t len,
			 const uint8_t *raw, size_t raw_len)
{
	struct bn_chat_span sp[16];
	size_t nsp = 0, pos = 0;
	bool ok = true;
	for (size_t i = 0; i + 1 < raw_len && nsp < 16; i += 2) {
		sp[nsp].off = raw[i] == 0xFF ? SIZE_MAX - raw[i + 1] : raw[i];
		sp[nsp].len = raw[i + 1] & 0x3F;
		if (sp[nsp].off < pos || sp[nsp].off > len || sp[nsp].len > len - sp[nsp].off)
			ok = false;
		else
			pos = sp[nsp].off + sp[nsp].len;
		nsp++;
	}
	struct bn_error err = { 0 };
	int32_t *ids = NULL;
	size_t n = 0;
	int rc = bn_tokenize_marked(t, text, len, sp, nsp, false, &ids, &n, &err);
	if (!ok) {
		FUZZ_CHECK(rc == -EINVAL);
		FUZZ_CHECK_ERROR(rc, err);
		FUZZ_CHECK(ids == NULL);
		return;
	}
	FUZZ_CHECK(rc == 0);
	char *back = NULL;
	size_t bl = 0;
	FUZZ_CHECK(bn_detokenize(t, ids, n, &back, &bl, &err) == 0);
	FUZZ_CHECK(bl == len && memcmp(back, text, len) == 0);
	free(back);
	free(ids);
}

static const char *role_of(const char *field)
{
	static const char *const names[] = { "system", "user", "assistant" };
	if (field[0] >= 1 && field[0] <= 3 && field[1] == '\0')
		return names[field[0] - 1];
	if (field[0] == 4 && field[1] == '\0')
		return NULL;
	return field;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	uint8_t sel = data[0];
	/* a NUL-terminated copy, split at the NULs */
	char *buf = malloc(size);   /* [size]: data[1..] and a final NUL */
	FUZZ_CHECK(buf != NULL);
	memcpy(buf, data + 1, size - 1);
	buf[size - 1] = '\0';
	const char *fields[2 * MAX_MSGS + 2];
	size_t nf = 0;
	for (size_t off = 0; off < size && nf < sizeof(fields) / sizeof(fields[0]);) {
		fields[nf++] = buf + off;
		off += strlen(buf + off) + 1;
	}

	static const char *const archs[] = { NULL, "bitnet-b1.58", "bitnet", "llama" };
	const char *arch = archs[(sel >> 5) & 3];
	int f;
	unsigned how = sel & 7;
	if (how <= 3) {
		f = (int)how;
	} else if (how == 4) {
		f = nf > 1 && fields[1][0] ? -1 : 4;
	} else {
		enum bn_chat_format pf = BN_CHAT_BITNET;
		bool is_auto = true;
		int rc = bn_chat_format_parse(fields[0], &pf, &is_auto);
		static const char *const valid[] = { "raw", "chat", "bitnet", "llama3", "instruct",
						     "auto" };
		bool known = false;
		for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++)
			known |= strcmp(fields[0], valid[i]) == 0;
		FUZZ_CHECK((rc == 0) == known);
		if (rc != 0) {
			FUZZ_CHECK(rc == -EINVAL);
			free(buf);
			return 0;
		}
		if (is_auto) {
			FUZZ_CHECK(pf == BN_CHAT_RAW);
			/* the system field stands in for an embedded template */
			pf = bn_chat_auto(arch, nf > 1 ? fields[1] : NULL);
		} else {
			/* the canonical name parses back to the same format */
			enum bn_chat_format again;
			bool a2 = true;
			FUZZ_CHECK(bn_chat_format_parse(bn_chat_format_name(pf), &again, &a2) == 0 &&
				   again == pf && !a2);
		}
		FUZZ_CHECK(pf >= BN_CHAT_RAW && pf <= BN_CHAT_INSTRUCT);
		f = (int)pf;
	}

	const char *system = (sel & 8) && nf > 1 ? fields[1] : NULL;
	struct bn_chat_msg msgs[MAX_MSGS];
	size_t n = 0;
	for (size_t i = 2; i < nf && n < MAX_MSGS; i += 2) {
		msgs[n].role = role_of(fields[i]);
		msgs[n].content = i + 1 < nf && strcmp(fields[i + 1], "\x05") != 0 ? fields[i + 1]
										    : NULL;
		n++;
	}

	struct bn_error err = { 0 };
	char *out = (char *)buf;
	struct bn_chat_span *sp = (struct bn_chat_span *)buf;
	size_t nsp = 99;
	int want = expected_rc(f, msgs, n, system);
	int rc = bn_chat_render_spans((enum bn_chat_format)f, msgs, n, system, &out, &sp, &nsp, &err);
	FUZZ_NOTE("chat: format %d, %zu messages%s: %d %s\n", f, n, system ? " + system" : "", rc,
		  err.msg);
	FUZZ_CHECK(rc == want);
	if (rc != 0) {
		FUZZ_CHECK_ERROR(rc, err);
		FUZZ_CHECK(out == NULL && sp == NULL && nsp == 0);
		/* messages quote only what is valid UTF-8 (they may end up in a D-Bus reply) */
		if (strlen(err.msg) < sizeof(err.msg) - 1)
			FUZZ_CHECK(fuzz_utf8_valid(err.msg, strlen(err.msg)));
		free(buf);
		return 0;
	}
	FUZZ_CHECK(out != NULL && (nsp == 0 || sp != NULL));
	check_rendering((enum bn_chat_format)f, msgs, n, system, out, sp, nsp);
	for (size_t i = 0; i < nsp; i++)
		FUZZ_CHECK(is_template_special(out + sp[i].off, sp[i].len));

	/* the plain rendering is the same text */
	char *plain = NULL;
	FUZZ_CHECK(bn_chat_render((enum bn_chat_format)f, msgs, n, system, &plain, &err) == 0);
	FUZZ_CHECK(strcmp(plain, out) == 0);
	free(plain);
	const char *stop = bn_chat_default_stop((enum bn_chat_format)f);
	FUZZ_CHECK((f == BN_CHAT_INSTRUCT) == (stop != NULL));

	/* the ids the daemon decodes: the template's special tokens and nothing else */
	const struct bn_tokenizer *t = tokenizer();
	bool add_bos = (sel & 16) && !bn_chat_adds_bos((enum bn_chat_format)f);
	int32_t *ids = NULL;
	size_t n_ids = 0;
	rc = bn_chat_tokenize(t, (enum bn_chat_format)f, msgs, n, system, add_bos, &ids, &n_ids,
			      &err);
	FUZZ_CHECK(rc == 0);
	check_ids(t, ids, n_ids, add_bos, out, strlen(out), sp, nsp);
	free(ids);
	if (sel & 128) {
		const char *last = fields[nf - 1];
		check_marked(t, out, strlen(out), (const uint8_t *)last, strlen(last));
	}
	free(out);
	free(sp);
	free(buf);
	return 0;
}

#ifdef BN_FUZZ_STANDALONE
int main(int argc, char **argv)
{
	return fuzz_replay_main(argc, argv);
}
#endif
