/* Slots, the prefix matcher and the step planner (see slots.h). */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "slots.h"

int bd_slots_init(struct bd_slots *ss, uint32_t n, uint32_t n_ctx)
{
	memset(ss, 0, sizeof(*ss));
	ss->slot = calloc(n ? n : 1, sizeof(*ss->slot));
	if (!ss->slot)
		return -ENOMEM;
	ss->n = n;
	ss->n_ctx = n_ctx;
	for (uint32_t i = 0; i < n; i++)
		if (!(ss->slot[i].hist = malloc((size_t)(n_ctx ? n_ctx : 1) * sizeof(int32_t)))) {
			bd_slots_free(ss);
			return -ENOMEM;
		}
	return 0;
}

void bd_slots_free(struct bd_slots *ss)
{
	for (uint32_t i = 0; ss->slot && i < ss->n; i++)
		free(ss->slot[i].hist);
	free(ss->slot);
	memset(ss, 0, sizeof(*ss));
}

void bd_slots_forget(struct bd_slots *ss)
{
	for (uint32_t i = 0; i < ss->n; i++)
		if (!ss->slot[i].busy)
			ss->slot[i].n_hist = 0;
}

uint32_t bd_slots_busy(const struct bd_slots *ss)
{
	uint32_t b = 0;
	for (uint32_t i = 0; i < ss->n; i++)
		b += ss->slot[i].busy;
	return b;
}

uint64_t bd_slots_positions(const struct bd_slots *ss)
{
	uint64_t p = 0;
	for (uint32_t i = 0; i < ss->n; i++)
		p += ss->slot[i].n_hist;
	return p;
}

uint32_t bd_prefix_len(const int32_t *a, uint32_t na, const int32_t *b, uint32_t nb)
{
	uint32_t n = na < nb ? na : nb, i = 0;
	while (i < n && a[i] == b[i])
		i++;
	return i;
}

int bd_slots_pick(const struct bd_slots *ss, const int32_t *prompt, uint32_t n, uint32_t *reuse)
{
	int best = -1;
	uint32_t best_len = 0;
	for (uint32_t i = 0; i < ss->n; i++) {
		const struct bd_slot *s = &ss->slot[i];
		if (s->busy)
			continue;
		uint32_t l = bd_prefix_len(s->hist, s->n_hist, prompt, n);
		if (best < 0 || l > best_len || (l == best_len && s->stamp < ss->slot[best].stamp)) {
			best = (int)i;
			best_len = l;
		}
	}
	*reuse = best_len < n ? best_len : (n ? n - 1 : 0);
	return best;
}

void bd_slots_take(struct bd_slots *ss, uint32_t i, const int32_t *prompt, uint32_t n,
                   uint32_t reuse, void *user)
{
	struct bd_slot *s = &ss->slot[i];
	if (reuse > s->n_hist)
		reuse = s->n_hist;
	s->busy = true;
	s->prompt = prompt;
	s->n_prompt = n;
	s->n_hist = reuse;
	s->n_cached = reuse;
	s->decoding = false;
	s->next = -1;
	s->order = s->stamp = ++ss->clock;
	s->user = user;
}

void bd_slots_release(struct bd_slots *ss, uint32_t i)
{
	struct bd_slot *s = &ss->slot[i];
	s->busy = false;
	s->decoding = false;
	s->prompt = NULL;
	s->n_prompt = 0;
	s->user = NULL;
	s->stamp = ++ss->clock;
}

void bd_slots_continue(struct bd_slots *ss, uint32_t i, int32_t tok)
{
	ss->slot[i].decoding = true;
	ss->slot[i].next = tok;
}

int bd_step_init(struct bd_step *st, uint32_t cap, uint32_t n_slots)
{
	memset(st, 0, sizeof(*st));
	st->cap = cap;
	st->token = malloc((size_t)cap * sizeof(*st->token));
	st->pos = malloc((size_t)cap * sizeof(*st->pos));
	st->seq = malloc((size_t)cap * sizeof(*st->seq));
	st->want = malloc((size_t)cap * sizeof(*st->want));
	st->want_slot = malloc((size_t)(n_slots ? n_slots : 1) * sizeof(*st->want_slot));
	if (!st->token || !st->pos || !st->seq || !st->want || !st->want_slot) {
		bd_step_free(st);
		return -ENOMEM;
	}
	return 0;
}

void bd_step_free(struct bd_step *st)
{
	free(st->token);
	free(st->pos);
	free(st->seq);
	free(st->want);
	free(st->want_slot);
	memset(st, 0, sizeof(*st));
}

static void put(struct bd_step *st, uint32_t slot, int32_t tok, uint32_t pos, bool want)
{
	st->token[st->n] = tok;
	st->pos[st->n] = pos;
	st->seq[st->n] = slot;
	st->want[st->n] = want;
	if (want)
		st->want_slot[st->n_want++] = slot;
	st->n++;
}

void bd_slots_plan(const struct bd_slots *ss, uint32_t budget, struct bd_step *st)
{
	st->n = st->n_want = st->n_decode = st->n_prefill = 0;
	for (uint32_t i = 0; i < ss->n && st->n < st->cap; i++) {
		const struct bd_slot *s = &ss->slot[i];
		if (s->busy && s->decoding) {
			put(st, i, s->next, s->n_hist, true);
			st->n_decode++;
		}
	}
	uint32_t left = budget > st->n ? budget - st->n : 1;
	if (left > st->cap - st->n)
		left = st->cap - st->n;
	/* prompts in admission order: the oldest finishes its prefill first */
	uint64_t after = 0;
	while (left) {
		int next = -1;
		for (uint32_t i = 0; i < ss->n; i++) {
			const struct bd_slot *s = &ss->slot[i];
			if (s->busy && !s->decoding && s->n_hist < s->n_prompt && s->order > after &&
			    (next < 0 || s->order < ss->slot[next].order))
				next = (int)i;
		}
		if (next < 0)
			break;
		const struct bd_slot *s = &ss->slot[next];
		after = s->order;
		uint32_t k = s->n_prompt - s->n_hist;
		if (k > left)
			k = left;
		for (uint32_t j = 0; j < k; j++) {
			uint32_t p = s->n_hist + j;
			put(st, (uint32_t)next, s->prompt[p], p, p + 1 == s->n_prompt);
		}
		st->n_prefill += k;
		left -= k;
	}
}

void bd_slots_commit(struct bd_slots *ss, const struct bd_step *st)
{
	for (uint32_t j = 0; j < st->n; j++) {
		struct bd_slot *s = &ss->slot[st->seq[j]];
		s->hist[st->pos[j]] = st->token[j];
		s->n_hist = st->pos[j] + 1;
	}
}
