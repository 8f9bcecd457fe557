#!/usr/bin/env python3
"""Reference data for a demo model, computed by the independent numpy
reference (ref.py) over the exported GGUF:

  PREFIX.prompts.txt  name<TAB>token ids<TAB>prompt text<TAB>continuation
                      text: a few prompts (with BOS), each followed by its
                      greedy continuation (up to 8 tokens or EOS)
  PREFIX.ref.bin      the logits files (int32 n_tok, int32 n_vocab,
                      float32 [n_tok][n_vocab]) of those sequences,
                      concatenated in the order of PREFIX.prompts.txt
  PREFIX.greedy.tsv   held-out prompts of every corpus task (corpus.py,
                      seed corpus.HELDOUT_SEED): task, prompt, expected answer, prompt
                      ids (with BOS), expected answer ids, the reference's
                      greedy ids (as many as the answer has), ok (1 when they
                      are equal)
  PREFIX.chat.tsv     held-out conversations (corpus.chat_heldout: their first
                      message mentions an item no training conversation does),
                      one and two turns: turns, forms, then per turn the user
                      message, the expected answer and the reference's greedy
                      answer (chat format of chat.py, the reference's own earlier
                      answers as history, up to --chat-tokens tokens or an
                      end-of-generation token)

The demo prompts whose name starts with "chat" are conversations: their text
is the user message, their token ids the chat prompt (chat.py).

Usage: mkdata.py MODEL.gguf PREFIX [--per-task N] [--chat-one N] [--chat-two N]
Prints the held-out greedy accuracy per task and overall, and the chat pass rates.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chat    # noqa: E402
import corpus  # noqa: E402
import ref     # noqa: E402

DEMO_PROMPTS = [
    ("count", "seven eight nine"),
    ("count2", "twenty eight twenty nine"),
    ("plus", "three plus four is"),
    ("minus", "fifteen minus six is"),
    ("digits", "42 is"),
    ("days", "friday saturday"),
    ("months", "october november"),
    ("letters", "d e f"),
    ("story", "mia has a green frog. the frog is"),
    ("chat-count", "seven eight nine"),
    ("chat-after", "what comes after monday?"),
]

# seeds of the held-out conversations (not training seeds)
CHAT_SEED_ONE = corpus.HELDOUT_SEED
CHAT_SEED_TWO = corpus.HELDOUT_SEED + 1


def ids_str(ids):
    return ",".join(str(i) for i in ids)


def heldout_cases(tok, per_task):
    seen = set()
    cases = []
    for task, p, a, _ in corpus.heldout(corpus.HELDOUT_SEED, per_task):
        if (task, p) in seen:
            continue
        seen.add((task, p))
        cases.append((task, p, a, tok.encode(p, add_bos=True), tok.encode(a, add_bos=False)))
    return cases


def chat_answer(m, tok, hist, user, n_max, stops):
    """the reference's greedy answer as text, and the smallest top-1/top-2 logit gap
    (relative to max |logit|) over the generated positions"""
    ids = chat.prompt_ids(tok, hist, user)
    out = m.greedy(ids, n_max, stops)
    lg = m.forward(ids + out[:-1] if len(out) > 1 else ids)[len(ids) - 1:]
    gap = 1.0
    for row in lg:
        top = np.sort(row)[-2:]
        gap = min(gap, float((top[1] - top[0]) / np.max(np.abs(row))))
    return tok.decode([t for t in out if t not in stops]), gap


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("prefix")
    ap.add_argument("--per-task", type=int, default=40)
    ap.add_argument("--continuation", type=int, default=8,
                    help="greedy tokens appended to each demo prompt")
    ap.add_argument("--chat-one", type=int, default=100, help="one-turn conversations")
    ap.add_argument("--chat-two", type=int, default=60, help="two-turn conversations")
    ap.add_argument("--chat-tokens", type=int, default=24,
                    help="tokens an answer may have at most")
    args = ap.parse_args()

    m = ref.Model(args.model)
    tok = m.tok
    stops = m.stop_ids()

    with open(args.prefix + ".prompts.txt", "w") as fp, open(args.prefix + ".ref.bin", "wb") as fb:
        for name, text in DEMO_PROMPTS:
            if name.startswith("chat"):
                ids = chat.prompt_ids(tok, [], text)
            else:
                ids = tok.encode(text, add_bos=True)
            cont = m.greedy(ids, args.continuation, stops)
            seq = ids + cont
            lg = m.forward(seq)
            fb.write(np.array(lg.shape, dtype="<i4").tobytes())
            fb.write(lg.astype("<f4").tobytes())
            fp.write("%s\t%s\t%s\t%s\n" % (name, ids_str(seq), text, tok.decode(cont)))
            print("%-8s %r -> %r" % (name, text, tok.decode(cont)))

    cases = heldout_cases(tok, args.per_task)
    per = {}
    with open(args.prefix + ".greedy.tsv", "w") as f:
        f.write("# task\tprompt\tanswer\tprompt ids\tanswer ids\treference greedy ids\tok\n")
        for task, p, a, pids, aids in cases:
            g = m.greedy(pids, len(aids))
            ok = int(g == aids)
            per.setdefault(task, [0, 0])
            per[task][0] += ok
            per[task][1] += 1
            f.write("%s\t%s\t%s\t%s\t%s\t%s\t%d\n" % (task, p, a, ids_str(pids), ids_str(aids),
                                                   ids_str(g), ok))
    tot_ok = sum(v[0] for v in per.values())
    tot = sum(v[1] for v in per.values())
    for task in corpus.TASKS:
        if task in per:
            print("held-out %-8s %3d/%3d" % (task, per[task][0], per[task][1]))
    print("held-out greedy accuracy (reference): %d/%d = %.1f%%" % (tot_ok, tot, 100.0 * tot_ok / tot))

    convs = (corpus.chat_heldout(CHAT_SEED_ONE, 1, args.chat_one)
             + corpus.chat_heldout(CHAT_SEED_TWO, 2, args.chat_two))
    res = {}
    gap = 1.0
    with open(args.prefix + ".chat.tsv", "w") as f:
        f.write("# turns\tforms\tuser 1\tanswer 1\treference 1\tuser 2\tanswer 2\treference 2\n")
        for turns in convs:
            hist, cols, good = [], [], True
            for x in turns:
                got, g = chat_answer(m, tok, hist, x.user, args.chat_tokens, stops)
                gap = min(gap, g)
                good &= got == x.answer
                hist.append((x.user, got))
                cols += [x.user, x.answer, got]
            n = len(turns)
            res.setdefault(n, [0, 0])
            res[n][0] += good
            res[n][1] += 1
            f.write("%d\t%s\t%s\n" % (n, ",".join(x.form for x in turns), "\t".join(cols)))
    for n in sorted(res):
        ok, tot = res[n]
        print("held-out chat, %d turn%s (reference): %d/%d = %.1f%%"
              % (n, "s" if n > 1 else "", ok, tot, 100.0 * ok / tot))
    print("smallest top-1/top-2 gap over the chat answers, relative to max|logit|: %.1e" % gap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
