#!/usr/bin/env python3
"""Synthetic corpus for the demo model, deterministic from a seed.

Every document is made of three parts: a prompt, the answer that the
task's rule determines from the prompt, and a tail that is random (for
example where a count stops).  Training uses prompt+answer+tail; the
held-out check gives the model the prompt and expects the answer.

Tasks (all lower-case ASCII, one document per line):
  count     "seven eight nine" -> " ten eleven twelve" (+ " thirteen.")
  days      "monday tuesday" -> " wednesday thursday" (cyclic)
  months    "october november" -> " december january" (cyclic)
  letters   "d e f" -> " g h i"
  plus      "three plus four is" -> " seven."
  minus     "twelve minus five is" -> " seven."
  digits    "42 is" -> " forty two."
  story     "... sam has a red fox. the fox is" -> " red."

Usage: corpus.py [--seed N] [-n DOCS] [--prompts]  (prints documents)
"""

import argparse
import random

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
        "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen",
        "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy",
        "eighty", "ninety"]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
MONTHS = ["january", "february", "march", "april", "may", "june", "july",
          "august", "september", "october", "november", "december"]
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
NAMES = ["sam", "anna", "tom", "lily", "max", "mia", "ben", "zoe"]
COLORS = ["red", "blue", "green", "black", "white", "brown", "pink", "gray"]
ANIMALS = ["cat", "dog", "fox", "bird", "frog", "duck", "pig", "cow"]

# seed of the held-out prompts (mkdata.py, train.py): not a training seed
HELDOUT_SEED = 7777

TASKS = ["count", "days", "months", "letters", "plus", "minus", "digits", "story"]
# relative frequency of each task in the training stream
WEIGHTS = [6, 2, 2, 2, 5, 5, 4, 3]


def words(n):
    """0..100 in words."""
    if n == 100:
        return "one hundred"
    if n < 20:
        return ONES[n]
    t, o = divmod(n, 10)
    return TENS[t] if o == 0 else TENS[t] + " " + ONES[o]


def seq_doc(rng, items, cyclic, n_prompt_range, n_answer, n_total_range):
    """A run of consecutive items: prompt items, n_answer determined items,
    then a random number of further items and a full stop."""
    n_prompt = rng.randint(*n_prompt_range)
    n_total = rng.randint(max(n_total_range[0], n_prompt + n_answer), n_total_range[1])
    if cyclic:
        start = rng.randrange(len(items))
        run = [items[(start + i) % len(items)] for i in range(n_total)]
    else:
        n_total = min(n_total, len(items))
        n_prompt = min(n_prompt, n_total - 1)
        start = rng.randrange(len(items) - n_total + 1)
        run = items[start:start + n_total]
    n_ans = min(n_answer, len(run) - n_prompt)
    prompt = " ".join(run[:n_prompt])
    answer = "".join(" " + w for w in run[n_prompt:n_prompt + n_ans])
    tail = "".join(" " + w for w in run[n_prompt + n_ans:]) + "."
    if not cyclic and run[-1] == items[-1] and n_prompt + n_ans == len(run):
        # the answer reaches the last item ("one hundred", "z"): the stop is determined too
        answer += "."
        tail = ""
    return prompt, answer, tail


NUMBERS = [words(i) for i in range(101)]


def make_doc(rng, task):
    if task == "count":
        return seq_doc(rng, NUMBERS, False, (2, 4), 3, (6, 12))
    if task == "days":
        return seq_doc(rng, DAYS, True, (2, 3), 2, (5, 9))
    if task == "months":
        return seq_doc(rng, MONTHS, True, (2, 3), 2, (5, 9))
    if task == "letters":
        return seq_doc(rng, LETTERS, False, (3, 4), 3, (7, 12))
    if task == "plus":
        a, b = rng.randrange(10), rng.randrange(10)
        return "%s plus %s is" % (words(a), words(b)), " %s." % words(a + b), ""
    if task == "minus":
        a = rng.randrange(19)
        b = rng.randrange(min(a, 9) + 1)
        return "%s minus %s is" % (words(a), words(b)), " %s." % words(a - b), ""
    if task == "digits":
        n = rng.randrange(100)
        return "%d is" % n, " %s." % words(n), ""
    if task == "story":
        name = rng.choice(NAMES)
        color = rng.choice(COLORS)
        animal = rng.choice(ANIMALS)
        return ("%s has a %s %s. the %s is" % (name, color, animal, animal),
                " %s." % color, "")
    raise ValueError(task)


def stream(seed):
    """Endless deterministic stream of (task, prompt, answer, tail)."""
    rng = random.Random(seed)
    while True:
        task = rng.choices(TASKS, weights=WEIGHTS)[0]
        p, a, t = make_doc(rng, task)
        yield task, p, a, t


def heldout(seed, per_task):
    """per_task documents of every task from a separate seed."""
    rng = random.Random(seed)
    out = []
    for task in TASKS:
        for _ in range(per_task):
            p, a, t = make_doc(rng, task)
            out.append((task, p, a, t))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--prompts", action="store_true", help="print prompt<TAB>answer")
    args = ap.parse_args()
    s = stream(args.seed)
    for _ in range(args.n):
        task, p, a, t = next(s)
        if args.prompts:
            print("%s\t%s\t%s" % (task, p, a))
        else:
            print(p + a + t)


if __name__ == "__main__":
    main()
