#!/usr/bin/env python3
"""Concurrent-client load for bench/serving.sh --clients (not a test; standard library only).

bench/serving.sh starts bitnetd on a private bus and runs this with the paths, the bus address
and the daemon's properties; every request goes through `bitnetctl generate --json --greedy`
(one process per client) and every figure below comes from its stats or from the wall clock
around the bitnetctl processes. See bench/serving.sh for what is measured and how it is reported.
"""

import argparse
import json
import math
import os
import signal
import statistics
import string
import subprocess
import sys
import threading
import time

CALL_TIMEOUT = 1800   # seconds, one bitnetctl or bitnet bench call

# First characters of the prompts: every prompt starts with the next one in turn, so that its
# first token after BOS differs from the histories the idle slots keep (the prefix cache matches
# a new prompt against those only; the cycle is longer than the slot count, checked below).
# No '-' (bitnetctl would read "-" as stdin or an option), no space, no quotes.
FIRST = string.ascii_uppercase + string.ascii_lowercase + string.digits + "#$%&*+:;=?@^_~"

TOPICS = [                   # short: the byte-level synthetic tokenizers make ~10 tokens of these
    "the sea", "a market", "bicycle gears", "a lost key",
    "forest walks", "warm bread", "rain at night", "red skies",
]

SENTENCES = [
    "The old lighthouse keeper counted {n} ships passing before the storm arrived.",
    "In the northern valley, farmers planted barley in {n} long and narrow fields.",
    "A careful engineer checked every bolt on the bridge, finding {n} that needed work.",
    "The library kept {n} maps of the coast, each drawn by a different sailor.",
    "During the winter festival the town lit {n} lanterns along the river bank.",
    "Scientists measured the glacier again and found it had moved {n} metres.",
    "The baker woke before dawn and shaped {n} loaves for the morning customers.",
    "On the mountain path, hikers passed {n} stone markers left by earlier travellers.",
    "The orchestra rehearsed the symphony {n} times before the evening concert.",
    "A small robot sorted {n} parcels an hour in the quiet warehouse by the port.",
    "Children in the school garden grew {n} kinds of beans and three kinds of squash.",
    "The museum displayed {n} clocks, and every one of them showed a different time.",
]


def pct(values, p):
    """p-th percentile (0..100), linear interpolation between the closest ranks."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


class Bench:
    def __init__(self, a):
        self.a = a
        self.k = 0

    # ---- prompts -------------------------------------------------------------------------

    def first(self):
        c = FIRST[self.k % len(FIRST)]
        self.k += 1
        return c, self.k

    def short_prompt(self):
        c, k = self.first()
        return "%s%d %s" % (c, k, TOPICS[k % len(TOPICS)])

    def long_body(self, words):
        return " ".join(self.words[:words])

    def n_tokens(self, text):
        out = self.run([self.a.ctl, "--address", self.a.addr, "tokenize", text])
        return len(out.split())

    def calibrate_long(self, target):
        """How many words of the sentence text make a prompt of about `target` tokens
        (BOS and the leading marker included), on the daemon's tokenizer."""
        text = " ".join(SENTENCES[i % len(SENTENCES)].format(n=3 + (i * 7) % 90)
                        for i in range(400))
        self.words = text.split()
        lo, hi = 1, len(self.words)
        if self.n_tokens("A000 " + self.long_body(hi)) < target:
            return hi
        while lo < hi:                       # smallest word count reaching the target
            mid = (lo + hi) // 2
            if self.n_tokens("A000 " + self.long_body(mid)) >= target:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def long_prompt(self):
        c, k = self.first()
        return "%s%03d %s" % (c, k, self.long_body(self.long_words))

    # ---- processes -----------------------------------------------------------------------

    @staticmethod
    def run(cmd):
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=CALL_TIMEOUT)
        if p.returncode != 0:
            raise RuntimeError("%s exited %d: %s" % (cmd[0], p.returncode, p.stderr.strip()[-400:]))
        return p.stdout

    def gen_cmd(self, prompt, max_tokens):
        return [self.a.ctl, "--address", self.a.addr, "generate", "--json", "--greedy",
                "--max-tokens", str(max_tokens), prompt]

    @staticmethod
    def parse(out, err, rc, allow_cancel=False):
        lines = [l for l in out.splitlines() if l.strip()]
        if not lines:
            raise RuntimeError("bitnetctl printed nothing (exit %d): %s" % (rc, err.strip()[-400:]))
        d = json.loads(lines[-1])
        if rc != 0 and not (allow_cancel and d.get("reason") == "cancelled"):
            raise RuntimeError("bitnetctl exited %d (%s): %s" % (rc, d.get("reason"), err.strip()[-400:]))
        if not d.get("stats"):
            raise RuntimeError("bitnetctl printed no stats: %s" % lines[-1][:400])
        s = d["stats"]
        s["reason"] = d.get("reason")
        return s

    def generate(self, prompt, max_tokens):
        """One request; its stats with the client-side wall clock added (t0, t1, wall)."""
        t0 = time.monotonic()
        p = subprocess.run(self.gen_cmd(prompt, max_tokens), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True, timeout=CALL_TIMEOUT)
        t1 = time.monotonic()
        s = self.parse(p.stdout, p.stderr, p.returncode)
        s.update(t0=t0, t1=t1, wall=t1 - t0)
        return s

    def concurrent(self, prompts, max_tokens):
        """All prompts at once, one bitnetctl per prompt; (wall seconds, [stats])."""
        res = [None] * len(prompts)
        go = threading.Barrier(len(prompts))

        def client(i):
            try:
                go.wait()
                res[i] = self.generate(prompts[i], max_tokens)
            except Exception as e:             # reported below, after every client ended
                res[i] = e

        th = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
        for t in th:
            t.start()
        for t in th:
            t.join()
        for r in res:
            if isinstance(r, Exception):
                raise r
        return max(r["t1"] for r in res) - min(r["t0"] for r in res), res

    def sequential(self, prompts, max_tokens):
        t0 = time.monotonic()
        res = [self.generate(p, max_tokens) for p in prompts]
        return time.monotonic() - t0, res

    def bench(self, par):
        out = self.run([self.a.bitnet, "bench", "-m", self.a.model, "-p", "0",
                        "-n", str(self.a.tokens), "-r", "1", "--threads", str(self.a.threads),
                        "--json", "--parallel", str(par)])
        # tg_tokens_per_second is aggregate: n * parallel tokens over the wall time of n steps
        return float(json.loads(out)["tg_tokens_per_second"])

    # ---- the figures ---------------------------------------------------------------------

    def serve(self, n):
        wall, res = self.concurrent([self.short_prompt() for _ in range(n)], self.a.tokens)
        return sum(r["generated_tokens"] for r in res) / wall, res

    def prefix_figure(self):
        p = self.long_prompt()
        first = self.generate(p, 8)
        second = self.generate(p + " And then a few more words.", 8)
        return first, second

    def chunked_figure(self, solo):
        """A long greedy stream; once it is generating, a ~900-token prompt arrives; the
        stream is cancelled (Ctrl-C to its bitnetctl) a few tokens after that prompt's request
        ended, and both requests' stats are returned."""
        ttft = statistics.median(r["first_token_seconds"] for r in solo)
        gap = statistics.median(r["token_gap_p50_seconds"] for r in solo)
        stream_max = max(16, self.a.context - 64)
        sp = subprocess.Popen(self.gen_cmd(self.short_prompt(), stream_max),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True)
        try:
            time.sleep(ttft + 8 * gap + 0.05)
            running_before = sp.poll() is None
            long = self.generate(self.long_prompt(), 4)
            time.sleep(3 * gap + 0.05)
            running_after = sp.poll() is None
            if running_after:
                sp.send_signal(signal.SIGINT)
            out, err = sp.communicate(timeout=CALL_TIMEOUT)
        except BaseException:
            if sp.poll() is None:
                sp.kill()
                sp.wait()
            raise
        stream = self.parse(out, err, sp.returncode, allow_cancel=True)
        stream["valid"] = running_before and running_after
        return stream, long


def ms(x):
    x *= 1000
    return "%.0f" % x if x >= 99.5 else "%.1f" % x if x >= 0.995 else "%.2f" % x


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    for o in ("ctl", "bitnet", "addr", "model", "kernel", "cpu"):
        ap.add_argument("--" + o, required=True)
    for o in ("threads", "tokens", "reps", "slots", "step-tokens", "context"):
        ap.add_argument("--" + o, type=int, required=True)
    ap.add_argument("--long-tokens", type=int, default=900)
    ap.add_argument("clients")
    a = ap.parse_args()
    clients = [int(x) for x in a.clients.split(",")]
    B = Bench(a)

    print("# bitnetd under concurrent clients")
    print()
    print("- CPU: %s; kernel plugin (bitnetd Kernel): %s; %d threads" % (a.cpu, a.kernel, a.threads))
    print("- model: %s (context %d)" % (a.model, a.context))
    print("- bitnetd: slots = %d, step_tokens = %d; clients %s; %d generated tokens a request "
          "(greedy); %d repetition%s" % (a.slots, a.step_tokens, a.clients, a.tokens, a.reps,
                                          "" if a.reps == 1 else "s"))
    if a.slots >= len(FIRST):
        print("- warning: %d slots >= %d distinct first characters: prompts may share a prefix "
              "with a cached history (see cached_tokens)" % (a.slots, len(FIRST)))
    sys.stdout.flush()

    B.long_words = B.calibrate_long(a.long_tokens)

    serv = {n: [] for n in clients}          # aggregate t/s per repetition
    bench = {n: [] for n in set(clients) | {1, 4}}
    reqs = {n: [] for n in clients}          # every request's stats
    seq4, conc4, prefix, chunked = [], [], [], []
    for rep in range(a.reps):
        line = []
        for j, n in enumerate(clients):
            order = ("serve", "bench") if (rep + j) % 2 == 0 else ("bench", "serve")
            for what in order:
                if what == "serve":
                    tps, res = B.serve(n)
                    serv[n].append(tps)
                    reqs[n].extend(res)
                else:
                    bench[n].append(B.bench(n))
            line.append("%d: serve %.2f bench %.2f" % (n, serv[n][-1], bench[n][-1]))
        for n in (1, 4):                      # for the 4-vs-1 bench gain when not in the list
            if n not in clients:
                bench[n].append(B.bench(n))
        pairs = [B.short_prompt() for _ in range(8)]
        for what in (("seq", "conc") if rep % 2 == 0 else ("conc", "seq")):
            if what == "seq":
                seq4.append(B.sequential(pairs[:4], a.tokens))
            else:
                conc4.append(B.concurrent(pairs[4:], a.tokens))
        prefix.append(B.prefix_figure())
        chunked.append(B.chunked_figure(seq4[-1][1]))
        line.append("4 seq/conc %.2fx" % (seq4[-1][0] / conc4[-1][0]))
        line.append("prefix %.3f" % ((prefix[-1][1]["first_token_seconds"] +
                                      prefix[-1][1]["generation_seconds"]) /
                                     (prefix[-1][0]["first_token_seconds"] +
                                      prefix[-1][0]["generation_seconds"])))
        st, lg = chunked[-1]
        line.append("chunk %.3f" % (st["token_gap_max_seconds"] / lg["first_token_seconds"]))
        print("rep %d: %s" % (rep + 1, "; ".join(line)))
        sys.stdout.flush()

    med = statistics.median
    print()
    print("| clients | serving t/s | bench --parallel t/s | ratio | TTFT p50/p95 (ms) "
          "| ITL p50/p95 (ms) | max gap (ms) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    cached = []
    for n in clients:
        r = reqs[n]
        s, b = med(serv[n]), med(bench[n])
        ttft = [x["first_token_seconds"] for x in r]
        g50 = [x["token_gap_p50_seconds"] for x in r]
        g95 = [x["token_gap_p95_seconds"] for x in r]
        gmax = max(x["token_gap_max_seconds"] for x in r)
        cached.extend(x["cached_tokens"] for x in r)
        print("| %d | %.2f | %.2f | %.2f | %s / %s | %s / %s | %s |"
              % (n, s, b, s / b, ms(pct(ttft, 50)), ms(pct(ttft, 95)),
                 ms(med(g50)), ms(med(g95)), ms(gmax)))
    gen = sorted({x["generated_tokens"] for n in clients for x in reqs[n]})
    ptok = sorted({x["prompt_tokens"] for n in clients for x in reqs[n]})
    print()
    print("serving t/s: all generated tokens of the N requests / wall time from starting the first "
          "bitnetctl to the last one's exit (prompts included); bench: `bitnet bench -p 0 -n %d "
          "--parallel N` tg t/s (aggregate over the N sequences); both medians of %d, ratio = "
          "serving / bench. TTFT: first_token_seconds (server side, submission to first token), "
          "percentiles over all requests of all repetitions. ITL p50 / p95: the median over those "
          "requests of each request's own token_gap_p50_seconds / token_gap_p95_seconds. Max "
          "gap: the largest token_gap_max_seconds. Prompt tokens per request: %d-%d; generated "
          "tokens per request: %s; cached_tokens per request: max %d."
          % (a.tokens, a.reps, ptok[0], ptok[-1], "/".join(map(str, gen)), max(cached)))
    print()

    sw, cw = med(x[0] for x in seq4), med(x[0] for x in conc4)
    st_tok = med(sum(r["generated_tokens"] for r in x[1]) for x in seq4)
    ct_tok = med(sum(r["generated_tokens"] for r in x[1]) for x in conc4)
    gain = sw / cw
    bgain = med(bench[4]) / med(bench[1])
    eff = gain / bgain
    print("- four at once vs one after another: %.3f s sequential / %.3f s concurrent = %.2fx "
          "(target >= 2.5x: %s); bench --parallel 4 / --parallel 1 = %.2f / %.2f = %.2fx; "
          "gain / bench gain = %.2f (target >= 0.85: %s)  [%d vs %d tokens generated]"
          % (sw, cw, gain, "met" if gain >= 2.5 else "NOT met", med(bench[4]), med(bench[1]),
             bgain, eff, "met" if eff >= 0.85 else "NOT met", st_tok, ct_tok))

    def served(s):                            # submission to the last token, server side
        return s["first_token_seconds"] + s["generation_seconds"]

    s1, s2 = med(served(x[0]) for x in prefix), med(served(x[1]) for x in prefix)
    pr = med(served(x[1]) / served(x[0]) for x in prefix)
    pw = med(x[1]["wall"] / x[0]["wall"] for x in prefix)
    print("- prefix cache: %d-token prompt, 8 tokens: %.3f s; the same + a few words (%d tokens, "
          "cached_tokens %d): %.3f s; second / first = %.3f (target <= 0.3: %s)  [server side, "
          "submission to last token; bitnetctl wall-clock ratio %.3f; first request "
          "cached_tokens %d]"
          % (prefix[-1][0]["prompt_tokens"], s1, prefix[-1][1]["prompt_tokens"],
             prefix[-1][1]["cached_tokens"], s2, pr, "met" if pr <= 0.3 else "NOT met", pw,
             prefix[-1][0]["cached_tokens"]))

    gm = med(x[0]["token_gap_max_seconds"] for x in chunked)
    lf = med(x[1]["first_token_seconds"] for x in chunked)
    lp = med(x[1]["prompt_seconds"] for x in chunked)
    cr = med(x[0]["token_gap_max_seconds"] / x[1]["first_token_seconds"] for x in chunked)
    bad = sum(not x[0]["valid"] for x in chunked)
    print("- chunked prefill: a %d-token prompt arriving during a greedy stream: stream max gap "
          "%.3f s vs the prompt's first_token_seconds %.3f s (prompt_seconds %.3f s): ratio %.3f "
          "(target <= 0.2: %s)  [stream gap p50 %s ms, cached_tokens of the long prompt %d]%s"
          % (chunked[-1][1]["prompt_tokens"], gm, lf, lp, cr, "met" if cr <= 0.2 else "NOT met",
             ms(med(x[0]["token_gap_p50_seconds"] for x in chunked)),
             chunked[-1][1]["cached_tokens"],
             "" if not bad else "  WARNING: in %d repetition(s) the stream was not running "
             "throughout (its figure does not cover the whole prompt)" % bad))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as e:
        print("FAIL: bench/loadgen.py: %s" % e, file=sys.stderr)
        sys.exit(1)
