/* The scheduler's bookkeeping, free of the engine and the bus (tests/check_slots.c): slots,
 * each one sequence of the context with the tokens its K/V holds; the prefix matcher that
 * places a new request; the planner that builds one step's batch.
 *
 * A slot's history is exactly what its sequence's cache holds: the tokens at positions
 * 0..n_hist-1. A request that ends leaves its history behind (its prompt and every token
 * that went through a forward pass), so the next request with the same beginning, such as
 * the next turn of a chat, runs only its new tokens. Outputs do not depend on this: a
 * token's K/V does not depend on the batch it was computed in. */
#ifndef BD_SLOTS_H
#define BD_SLOTS_H

#include <stdbool.h>
#include <stdint.h>

struct bd_slot {
	int32_t *hist;          /* [n_ctx] tokens whose K/V the sequence holds, by position */
	uint32_t n_hist;
	uint64_t stamp;         /* when a request last took or left it (least recent goes first) */
	bool busy;
	/* while busy */
	const int32_t *prompt;  /* [n_prompt] the request's tokens (the caller keeps them) */
	uint32_t n_prompt;
	uint32_t n_cached;      /* prompt tokens whose K/V was kept from the history */
	bool decoding;          /* the prompt is in the cache; next goes in at position n_hist */
	int32_t next;
	uint64_t order;         /* admission order: prefill is first come, first served */
	void *user;
};

struct bd_slots {
	struct bd_slot *slot;   /* [n] */
	uint32_t n, n_ctx;
	uint64_t clock;
};

/* One step's batch in bn_batch's layout, and which slot each wanted row belongs to. */
struct bd_step {
	uint32_t n, cap;
	int32_t *token;         /* [cap] */
	uint32_t *pos, *seq;    /* [cap] */
	bool *want;             /* [cap] */
	uint32_t n_want;
	uint32_t *want_slot;    /* [slots] slot of each wanted row, in batch order */
	uint32_t n_decode, n_prefill;
};

int bd_slots_init(struct bd_slots *ss, uint32_t n, uint32_t n_ctx);   /* 0 or -ENOMEM */
void bd_slots_free(struct bd_slots *ss);
/* Drops every history (a reload); only while no slot is busy. */
void bd_slots_forget(struct bd_slots *ss);
uint32_t bd_slots_busy(const struct bd_slots *ss);
/* Positions held by all slots' caches, busy or not. */
uint64_t bd_slots_positions(const struct bd_slots *ss);

/* Longest common prefix of a and b. */
uint32_t bd_prefix_len(const int32_t *a, uint32_t na, const int32_t *b, uint32_t nb);

/* The free slot for prompt [n]: the one whose history shares the longest prefix with it;
 * among equals, and when nothing matches, the least recently used. *reuse: the positions
 * whose K/V can stay, at most n - 1 (the last prompt token always runs, for its logits).
 * Returns the slot index, or -1 when every slot is busy. */
int bd_slots_pick(const struct bd_slots *ss, const int32_t *prompt, uint32_t n, uint32_t *reuse);

/* Gives slot i to a request; its history is cut to reuse positions. */
void bd_slots_take(struct bd_slots *ss, uint32_t i, const int32_t *prompt, uint32_t n,
                   uint32_t reuse, void *user);
/* The request left slot i; the history stays for the prefix cache. */
void bd_slots_release(struct bd_slots *ss, uint32_t i);
/* The slot's sampled token tok goes in at its next step. */
void bd_slots_continue(struct bd_slots *ss, uint32_t i, int32_t tok);

int bd_step_init(struct bd_step *st, uint32_t cap, uint32_t n_slots);   /* 0 or -ENOMEM */
void bd_step_free(struct bd_step *st);

/* Plans one step: the next token of every decoding slot (one row each), then the prompts
 * of the others in admission order, chunked so that the step carries at most budget tokens
 * (at least one prompt token when any is waiting, so prefill always moves). A slot's last
 * prompt token is a wanted row. st->cap must be at least budget + slots. */
void bd_slots_plan(const struct bd_slots *ss, uint32_t budget, struct bd_step *st);
/* After the forward pass: the histories take the batch's tokens. */
void bd_slots_commit(struct bd_slots *ss, const struct bd_step *st);

#endif
