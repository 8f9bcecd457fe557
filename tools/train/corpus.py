#!/usr/bin/env python3
"""Synthetic corpus for the demo model, deterministic from a seed.

Every document is made of three parts: a prompt, the answer that the
task's rule determines from the prompt, and a tail that is random (for
example where a count stops).  Training uses prompt+answer+tail; the
held-out check gives the model the prompt and expects the answer.

Raw tasks (all lower-case ASCII, one document per line):
  count     "seven eight nine" -> " ten eleven twelve" (+ " thirteen.")
  days      "monday tuesday" -> " wednesday thursday" (cyclic)
  months    "october november" -> " december january" (cyclic)
  letters   "d e f" -> " g h i"
  plus      "three plus four is" -> " seven."
  minus     "twelve minus five is" -> " seven."
  digits    "42 is" -> " forty two."
  story     "... sam has a red fox. the fox is" -> " red."
  ask       "what comes after monday" -> " tuesday." (the chat questions as raw text,
            without a final "?", "." or "please")

Conversations (task "chat"), in the chat format bitnetd uses for this
architecture (tools/train/chat.py renders and tokenizes them): one to three
turns of (user message, assistant answer).  A first message is one of
  cont      a raw prompt: "seven eight nine" -> "ten eleven twelve."
  after     "what comes after monday?" -> "tuesday." (numbers, days, months, letters)
  countfrom "count from seven" -> "seven eight nine ten."
  arith     "what is three plus four?" -> "seven.", "... twelve minus five?" -> "seven."
  words     "what is 42 in words?" -> "forty two."
  color     "sam has a red fox. what color is the fox?" -> "red."
a later message is a follow-up on the previous answer,
  next      "and after that?" -> the item after the answer's last one ("thirteen.")
  plusmore  "and plus two?" / "and minus three?" -> applied to a number answer
or a new first-type question.  Every answer ends with "." (and, in the
tokens, with <|eot_id|>).

Held out of training: a fifth of the keys of every question form (is_heldout:
the form and the number, day, month, letter or animal a question is about,
picked by a hash), e.g. "what comes after tuesday?" and "count from twelve"
are never asked in training, while "tuesday wednesday" and "what comes after
twelve?" are.  No conversation and no "ask" document holds a held-out
question; the held-out chat cases (chat_heldout) are conversations whose
first question is one.  The facts themselves are all in the raw text.

Usage: corpus.py [--seed N] [-n DOCS] [--prompts]  (prints documents)
"""

import argparse
import random
import zlib

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

TASKS = ["count", "days", "months", "letters", "plus", "minus", "digits", "story", "ask"]
# relative frequency of each task in the training stream ("chat": a conversation)
WEIGHTS = [6, 2, 2, 2, 5, 5, 4, 3, 3]
CHAT_WEIGHT = 18



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
    if task == "ask":
        # a chat question (not a raw prompt) as raw text, without a final "?", "." or
        # "please", so that nothing but the answer can follow it
        while True:
            q = first_question(rng, FIRST_FORMS[1:])
            if not is_heldout(q):
                break
        user = q.user.rstrip("?.")
        if user.endswith(" please"):
            user = user[:-len(" please")]
        return user, " " + q.answer, ""
    raise ValueError(task)


# ---- conversations ---------------------------------------------------------------------

SEQS = {"count": (NUMBERS, False), "days": (DAYS, True), "months": (MONTHS, True),
        "letters": (LETTERS, False)}

# A first-type question has a key: its form, its domain (count, days, months, letters,
# plus, minus, digits, animal) and the item it is about, as an index (for a raw prompt its
# first item, for a sum or difference its first operand).  One key in HELDOUT_MOD is held
# out of training, picked by a hash of the key: scattered, so that every form is trained
# on items all around each held-out one (a rule such as "numbers ending in 2 or 7" would
# leave a whole class of items never asked in that form).
HELDOUT_MOD = 5


def is_heldout(turn):
    if turn.key is None:
        return False
    return zlib.crc32(("%s %s %d" % ((turn.form,) + turn.key)).encode()) % HELDOUT_MOD == 0


def succ(seq, i):
    """index of the item after items[i], None past the end"""
    items, cyclic = SEQS[seq]
    if cyclic:
        return (i + 1) % len(items)
    return i + 1 if i + 1 < len(items) else None


def number_at(ws, end=False):
    """the number in words at the start (end) of the word list ws"""
    two = " ".join(ws[-2:] if end else ws[:2])
    if len(ws) >= 2 and two in NUMBERS:
        return NUMBERS.index(two)
    return NUMBERS.index(ws[-1] if end else ws[0])


class Turn:
    """A user message, its answer, the key of a first-type question (is_heldout) and what
    a follow-up can refer to: the answer's last item (seq, idx), its value if a number."""
    def __init__(self, form, user, answer, seq=None, idx=None, num=None, key=None):
        self.form, self.user, self.answer = form, user, answer
        self.seq, self.idx, self.num, self.key = seq, idx, num, key

    def __repr__(self):
        return "Turn(%r, %r, %r)" % (self.form, self.user, self.answer)


def _num_turn(form, user, n, key=None):
    return Turn(form, user, words(n) + ".", "count", n, n, key)


FIRST_FORMS = ["cont", "after", "countfrom", "arith", "words", "color"]


def first_question(rng, forms=FIRST_FORMS):
    """A question that needs no earlier turn."""
    w = {"cont": 6, "after": 6, "countfrom": 4, "arith": 4, "words": 2, "color": 2}
    form = rng.choices(forms, weights=[w[f] for f in forms])[0]
    if form == "cont":
        task = rng.choices(TASKS[:8], weights=[6, 3, 3, 2, 3, 3, 2, 2])[0]
        p, a, _ = make_doc(rng, task)
        ans = a.strip()
        if not ans.endswith("."):
            ans += "."
        pw, aw = p.split(" "), ans[:-1].split(" ")
        if task == "count":
            n = number_at(aw, end=True)
            return Turn(form, p, ans, "count", n, n, (task, number_at(pw)))
        if task in SEQS:
            items = SEQS[task][0]
            return Turn(form, p, ans, task, items.index(aw[-1]), None, (task, items.index(pw[0])))
        if task in ("plus", "minus"):
            return _num_turn(form, p, NUMBERS.index(ans[:-1]), (task, number_at(pw)))
        if task == "digits":
            return _num_turn(form, p, NUMBERS.index(ans[:-1]), (task, int(pw[0])))
        return Turn(form, p, ans, key=("animal", ANIMALS.index(pw[-2])))
    if form == "after":
        seq = rng.choices(["count", "days", "months", "letters"], weights=[4, 2, 2, 1])[0]
        items, cyclic = SEQS[seq]
        i = rng.randrange(len(items) if cyclic else len(items) - 1)
        j = succ(seq, i)
        user = rng.choice(["what comes after %s?", "what comes after %s", "what is after %s?"]) \
            % items[i]
        return Turn(form, user, items[j] + ".", seq, j, j if seq == "count" else None, (seq, i))
    if form == "countfrom":
        n = rng.randrange(98)
        user = rng.choice(["count from %s", "count from %s.", "count from %s please"]) % words(n)
        return Turn(form, user, " ".join(words(n + k) for k in range(4)) + ".",
                    "count", n + 3, n + 3, ("count", n))
    if form == "arith":
        if rng.random() < 0.5:
            a, b = rng.randrange(10), rng.randrange(10)
            return _num_turn(form, "what is %s plus %s?" % (words(a), words(b)), a + b,
                             ("plus", a))
        a = rng.randrange(19)
        b = rng.randrange(min(a, 9) + 1)
        return _num_turn(form, "what is %s minus %s?" % (words(a), words(b)), a - b,
                         ("minus", a))
    if form == "words":
        n = rng.randrange(100)
        return _num_turn(form, rng.choice(["what is %d in words?", "%d in words"]) % n, n,
                         ("digits", n))
    if form == "color":
        name, color, animal = rng.choice(NAMES), rng.choice(COLORS), rng.choice(ANIMALS)
        return Turn(form, "%s has a %s %s. what color is the %s?" % (name, color, animal, animal),
                    color + ".", key=("animal", ANIMALS.index(animal)))
    raise ValueError(form)


def follow_up(rng, prev):
    """A message that refers to the previous answer, or None when it has nothing to
    refer to.  next: the item after the answer's last one; plusmore: a number
    answer plus or minus a digit (within the raw corpus's sums and differences)."""
    kinds, weights = [], []
    if prev.seq is not None and succ(prev.seq, prev.idx) is not None:
        kinds.append("next")
        weights.append(2)
    if prev.num is not None and prev.num <= 18:
        kinds.append("plusmore")
        weights.append(1)
    if not kinds:
        return None
    kind = rng.choices(kinds, weights=weights)[0]
    if kind == "next":
        j = succ(prev.seq, prev.idx)
        items = SEQS[prev.seq][0]
        user = rng.choice(["and after that?", "what comes next?", "and then?"])
        return Turn(kind, user, items[j] + ".", prev.seq, j, j if prev.seq == "count" else None)
    n = prev.num
    if n <= 9 and (n == 0 or rng.random() < 0.5):
        b = rng.randrange(10)
        return _num_turn(kind, rng.choice(["and plus %s?", "what is that plus %s?"]) % words(b),
                         n + b)
    b = rng.randrange(min(n, 9) + 1)
    return _num_turn(kind, rng.choice(["and minus %s?", "what is that minus %s?"]) % words(b),
                     n - b)


def conversation(rng, n_turns):
    turns = [first_question(rng)]
    while len(turns) < n_turns:
        f = follow_up(rng, turns[-1]) if rng.random() < 0.75 else None
        turns.append(f or first_question(rng))
    return turns


def chat_doc(rng):
    """A training conversation: 1-3 turns, no question held out."""
    n = rng.choices([1, 2, 3], weights=[5, 4, 2])[0]
    while True:
        turns = conversation(rng, n)
        if not any(is_heldout(t) for t in turns):
            return turns


def chat_heldout(seed, n_turns, count):
    """count distinct conversations of n_turns turns whose first question is held
    out, the forms of the first questions in turn (all but color, whose answer a
    follow-up cannot refer to, when n_turns > 1); every later message is a follow-up
    on the answer before it."""
    rng = random.Random(seed)
    forms = FIRST_FORMS if n_turns == 1 else [f for f in FIRST_FORMS if f != "color"]
    out, seen = [], set()
    while len(out) < count:
        t = first_question(rng, [forms[len(out) % len(forms)]])
        if not is_heldout(t):
            continue
        turns = [t]
        while len(turns) < n_turns:
            f = follow_up(rng, turns[-1])
            if f is None:
                break
            turns.append(f)
        key = tuple(x.user for x in turns)
        if len(turns) < n_turns or key in seen:
            continue
        seen.add(key)
        out.append(turns)
    return out


def stream(seed):
    """Endless deterministic stream of (task, prompt, answer, tail); for a
    conversation (task "chat") prompt is its list of Turns and answer, tail None."""
    rng = random.Random(seed)
    while True:
        task = rng.choices(TASKS + ["chat"], weights=WEIGHTS + [CHAT_WEIGHT])[0]
        if task == "chat":
            yield task, chat_doc(rng), None, None
            continue
        p, a, t = make_doc(rng, task)
        yield task, p, a, t


def heldout(seed, per_task):
    """per_task raw documents of every task from a separate seed."""
    rng = random.Random(seed)
    out = []
    for task in TASKS:
        for _ in range(per_task):
            p, a, t = make_doc(rng, task)
            out.append((task, p, a, t))
    return out


def render(turns):
    """a conversation as text, the way lib/chat.c renders it (display only)"""
    s = "<|begin_of_text|>"
    for t in turns:
        s += "User: %s<|eot_id|>Assistant: %s<|eot_id|>" % (t.user, t.answer)
    return s


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
        if task == "chat":
            print(render(p))
        elif args.prompts:
            print("%s\t%s\t%s" % (task, p, a))
        else:
            print(p + a + t)


if __name__ == "__main__":
    main()
