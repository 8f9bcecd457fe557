#!/usr/bin/env python3
"""Independent numpy reference forward pass of a bitnet-b1.58 GGUF model.

It shares no code with the C engine and implements the inference arithmetic
of shared/golden/README.md rules 1-6 (and shared/spec/bitnet-format.md)
directly, so its logits can be held against the engine's:

  1. BitLinear per token: amax=max|x| (double, floored at 1e-5),
     s=(f32)(127/amax), q=clamp(rint((f32)(x*s)),-128,127), acc exact,
     y=(f32)acc/s*w_scale.
  2. RMSNorm: sum of (f32)(x*x) in double, mean=(f32)(sum/n),
     y = x*(1/sqrtf(mean+eps))*w.
  3. NEOX RoPE, theta_i = pos*ts^i by repeated f32 multiplication,
     ts=powf(base,-2/hd); cos/sin computed in double, rounded to f32.
  4. K, V and q rounded to f16; q.k in double -> f32, times 1/sqrtf(hd);
     e=expf(s-max), double sum, p=(f32)(e*(f32)(1/sum)) rounded to f16;
     out = sum p*v in double -> f32.  GQA: head h uses kv head h/(nh/nkv).
  5. relu(g)^2*u (bitnet-b1.58) or silu(g)*u (bitnet); sub-norms.
  6. y = rmsnorm(x)*output_norm rounded to f16, logits = token_embd . y.

Every position's arithmetic depends only on earlier tokens, so feeding the
whole prompt at once gives exactly the one-token-at-a-time result.

Usage:
  ref.py logits MODEL --tokens 1,2,3 [--out F.bin]
  ref.py logits MODEL --text "seven eight nine" [--out F.bin]
  ref.py greedy MODEL --text "seven eight nine" [-n 16]
  ref.py compare A.bin B.bin   (golden rules: per-position max rel, median)
  ref.py trace MODEL --tokens 1,2,3 [--out F.json]
      per layer, op and position the RMS, min, max and mean of the activations,
      in the JSON of `bitnet trace --json` (hold the engine against it with
      `bitnet trace --model MODEL --compare F.json`)
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf  # noqa: E402
import bpe   # noqa: E402

F32 = np.float32
F16 = np.float16


def f32(x):
    return np.asarray(x, dtype=np.float64).astype(F32)


class Model:
    def __init__(self, path):
        g = gguf.GGUFFile(path)
        self.g = g
        self.path = path
        arch = g.kv["general.architecture"]
        if arch not in ("bitnet-b1.58", "bitnet-25", "bitnet"):
            raise ValueError("%s: architecture %s not supported" % (path, arch))
        self.arch = arch
        kv = lambda k: g.kv["%s.%s" % (arch, k)]  # noqa: E731
        self.n_embd = kv("embedding_length")
        self.n_layer = kv("block_count")
        self.n_head = kv("attention.head_count")
        self.n_kv = kv("attention.head_count_kv")
        self.n_ff = kv("feed_forward_length")
        self.eps = F32(kv("attention.layer_norm_rms_epsilon"))
        self.base = float(g.kv.get("%s.rope.freq_base" % arch, 10000.0))
        self.hd = self.n_embd // self.n_head
        self.embd = g.tensor("token_embd.weight")          # [n_vocab][n_embd] f32 (from f16)
        self.n_vocab = self.embd.shape[0]
        self.out_norm = g.tensor("output_norm.weight")     # [n_embd] f32
        self.layers = []
        for i in range(self.n_layer):
            L = {}
            for n in ("attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm"):
                L[n] = g.tensor("blk.%d.%s.weight" % (i, n))
            for n in ("attn_q", "attn_k", "attn_v", "attn_output",
                      "ffn_gate", "ffn_up", "ffn_down"):
                name = "blk.%d.%s.weight" % (i, n)
                t = g.tensors[name]
                if t["type"] != gguf.GGML_I2_S:
                    raise ValueError("%s: %s is not I2_S" % (path, name))
                tern, scale = g.tensor(name)
                # [out][in] float64 ternary: the int8 x ternary sums are exact in double
                sname = "blk.%d.%s.scale" % (i, n)
                extra = g.tensor(sname)[0] if sname in g.tensors else None
                L[n] = (tern.astype(np.float64), F32(scale), extra)
            self.layers.append(L)
        self.tok = None
        if "tokenizer.ggml.tokens" in g.kv:
            self.tok = bpe.Tokenizer.from_gguf_kv(g.kv)

    # -- rule 1
    @staticmethod
    def bitlinear(x, w):
        tern, wscale, extra = w
        x = x.astype(F32)                                          # [n][in]
        amax = np.max(np.abs(x.astype(np.float64)), axis=1)
        amax = np.maximum(amax, 1e-5)
        s = f32(127.0 / amax)                                      # [n]
        q = np.rint((x * s[:, None]).astype(F32))
        q = np.clip(q, -128, 127).astype(np.float64)               # [n][in] int8 values
        acc = q @ tern.T                                           # [n][out] exact integers
        y = (acc.astype(F32) / s[:, None]).astype(F32) * wscale
        y = y.astype(F32)
        if extra is not None:
            y = (y * F32(extra)).astype(F32)
        return y

    # -- rule 2
    def rmsnorm(self, x, w):
        x = x.astype(F32)
        sq = (x * x).astype(F32).astype(np.float64)
        mean = f32(np.sum(sq, axis=1) / x.shape[1])                # [n]
        r = (F32(1.0) / np.sqrt((mean + self.eps).astype(F32))).astype(F32)
        return ((x * r[:, None]).astype(F32) * w.astype(F32)).astype(F32)

    # -- rule 3: cos/sin tables [n_pos][hd/2]
    def rope_tables(self, n_pos):
        hd = self.hd
        ts = f32(self.base ** (-2.0 / hd))
        cos = np.zeros((n_pos, hd // 2), dtype=F32)
        sin = np.zeros((n_pos, hd // 2), dtype=F32)
        for p in range(n_pos):
            theta = F32(p)
            for i in range(hd // 2):
                cos[p, i] = f32(math.cos(float(theta)))
                sin[p, i] = f32(math.sin(float(theta)))
                theta = F32(theta * ts)
        return cos, sin

    def rope(self, x, cos, sin):
        # x: [n][heads][hd]
        h2 = self.hd // 2
        a = x[:, :, :h2]
        b = x[:, :, h2:]
        c = cos[:, None, :]
        s = sin[:, None, :]
        ra = ((a * c).astype(F32) - (b * s).astype(F32)).astype(F32)
        rb = ((a * s).astype(F32) + (b * c).astype(F32)).astype(F32)
        return np.concatenate([ra, rb], axis=2)

    # -- rule 4
    def attention(self, q, k, v):
        n = q.shape[0]
        hd = self.hd
        group = self.n_head // self.n_kv
        q16 = q.astype(F16).astype(np.float64)                     # [n][nh][hd]
        k16 = k.astype(F16).astype(np.float64)                     # [n][nkv][hd]
        v16 = v.astype(F16).astype(np.float64)
        scale = (F32(1.0) / np.sqrt(F32(hd))).astype(F32)
        out = np.zeros((n, self.n_head, hd), dtype=F32)
        for h in range(self.n_head):
            kh = h // group
            sc = (q16[:, h, :] @ k16[:, kh, :].T).astype(F32) * scale   # [n][n]
            sc = sc.astype(F32)
            for i in range(n):
                row = sc[i, :i + 1]
                m = np.max(row)
                e = f32(np.exp((row - m).astype(F32).astype(np.float64)))
                tot = np.sum(e.astype(np.float64))
                p = (e * f32(1.0 / tot)).astype(F32).astype(F16).astype(np.float64)
                out[i, h, :] = f32(p @ v16[:i + 1, kh, :])
        return out

    def forward(self, tokens, trace=None):
        """logits [n_tok][n_vocab] float32; row i predicts token i+1.
        trace(layer, op, x[n_tok][len]) sees the activations at the points
        of bitnet trace (lib/trace.h), the final ops as layer n_layer."""
        tokens = list(tokens)
        tr = trace if trace is not None else (lambda layer, op, x: None)
        n = len(tokens)
        for t in tokens:
            if not 0 <= t < self.n_vocab:
                raise ValueError("token id %d out of range" % t)
        x = self.embd[tokens].astype(F32)                           # [n][n_embd]
        cos, sin = self.rope_tables(n)
        for li, L in enumerate(self.layers):
            h = self.rmsnorm(x, L["attn_norm"])
            tr(li, "attn_norm", h)
            q = self.bitlinear(h, L["attn_q"])
            k = self.bitlinear(h, L["attn_k"])
            v = self.bitlinear(h, L["attn_v"])
            tr(li, "q", q)
            tr(li, "k", k)
            tr(li, "v", v)
            q = q.reshape(n, self.n_head, self.hd)
            k = k.reshape(n, self.n_kv, self.hd)
            v = v.reshape(n, self.n_kv, self.hd)
            q = self.rope(q, cos, sin)
            k = self.rope(k, cos, sin)
            a = self.attention(q, k, v).reshape(n, self.n_embd)
            tr(li, "attn", a)
            a = self.rmsnorm(a, L["attn_sub_norm"])
            tr(li, "attn_sub_norm", a)
            o = self.bitlinear(a, L["attn_output"])
            tr(li, "wo", o)
            x = (x + o).astype(F32)
            h = self.rmsnorm(x, L["ffn_norm"])
            tr(li, "ffn_norm", h)
            g = self.bitlinear(h, L["ffn_gate"])
            u = self.bitlinear(h, L["ffn_up"])
            tr(li, "gate", g)
            tr(li, "up", u)
            if self.arch == "bitnet":
                gs = (g / (F32(1) + f32(np.exp(-g.astype(np.float64))))).astype(F32)
                m = (gs * u).astype(F32)
            else:
                r = np.maximum(g, F32(0))
                m = ((r * r).astype(F32) * u).astype(F32)
            m = self.rmsnorm(m, L["ffn_sub_norm"])
            tr(li, "ffn_act", m)
            d = self.bitlinear(m, L["ffn_down"])
            tr(li, "down", d)
            x = (x + d).astype(F32)
            tr(li, "layer_out", x)
        y = self.rmsnorm(x, self.out_norm)
        tr(self.n_layer, "out_norm", y)
        y = y.astype(F16).astype(np.float64)
        logits = f32(y @ self.embd.astype(np.float64).T)
        tr(self.n_layer, "logits", logits)
        return logits

    def greedy(self, tokens, n_new, stop_ids=()):
        """Greedy continuation (argmax, lowest id on ties).  Recomputes the
        whole prefix each step: simple, and the arithmetic is per-token."""
        toks = list(tokens)
        out = []
        for _ in range(n_new):
            logits = self.forward(toks)[-1]
            t = int(np.argmax(logits))  # first maximum = lowest id
            out.append(t)
            toks.append(t)
            if t in stop_ids:
                break
        return out

    def stop_ids(self):
        ids = []
        for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"):
            if k in self.g.kv:
                ids.append(self.g.kv[k])
        return ids


# ---------------------------------------------------------------- traces

TRACE_OPS = ["attn_norm", "q", "k", "v", "attn", "attn_sub_norm", "wo", "ffn_norm",
             "gate", "up", "ffn_act", "down", "layer_out"]
TRACE_FINAL_OPS = ["out_norm", "logits"]


def trace(m, tokens):
    """The trace object of `bitnet trace --json` (tools/cmd_trace.c): per
    (layer, op) in pass order, per position, RMS/min/max/mean in double."""
    got = {}

    def sink(layer, op, x):
        x = np.asarray(x, dtype=np.float64)                      # [n_tok][len]
        got[(layer, op)] = {
            "layer": layer, "op": op,
            "rms": [float(v) for v in np.sqrt(np.mean(x * x, axis=1))],
            "min": [float(v) for v in np.min(x, axis=1)],
            "max": [float(v) for v in np.max(x, axis=1)],
            "mean": [float(v) for v in np.mean(x, axis=1)],
        }

    m.forward(tokens, trace=sink)
    keys = [(li, op) for li in range(m.n_layer) for op in TRACE_OPS]
    keys += [(m.n_layer, op) for op in TRACE_FINAL_OPS]
    return {"format": "bitnet-trace-1", "model": m.path, "plugin": "ref.py",
            "rescale_gamma": False, "n_layer": m.n_layer, "tokens": list(tokens),
            "trace": [got[k] for k in keys]}


def write_trace(f, t):
    """Same layout as bitnet trace --json: one line per (layer, op)."""
    head = {k: v for k, v in t.items() if k != "trace"}
    f.write(json.dumps(head, separators=(",", ":"))[:-1] + ',"trace":[\n')
    f.write(",\n".join(json.dumps(e, separators=(",", ":")) for e in t["trace"]))
    f.write("\n]}\n")


# ---------------------------------------------------------------- logits files

def write_logits(path, logits):
    logits = np.asarray(logits, dtype="<f4")
    with open(path, "wb") as f:
        f.write(struct.pack("<ii", logits.shape[0], logits.shape[1]))
        f.write(logits.tobytes())


def read_logits(path):
    with open(path, "rb") as f:
        n, v = struct.unpack("<ii", f.read(8))
        a = np.frombuffer(f.read(4 * n * v), dtype="<f4")
    if a.size != n * v:
        raise ValueError("%s: truncated logits file" % path)
    return a.reshape(n, v).astype(F32)


def compare(a, b):
    """Golden rules: per position max_j|a-b|/max_j|b|; returns
    (max over positions, median, argmax agreement count)."""
    if a.shape != b.shape:
        raise ValueError("shape %s vs %s" % (a.shape, b.shape))
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    rel = np.max(np.abs(a - b), axis=1) / np.max(np.abs(b), axis=1)
    top = int(np.sum(np.argmax(a, axis=1) == np.argmax(b, axis=1)))
    return float(np.max(rel)), float(np.median(rel)), top


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("logits")
    p.add_argument("model")
    p.add_argument("--tokens")
    p.add_argument("--text")
    p.add_argument("--out")
    p = sub.add_parser("greedy")
    p.add_argument("model")
    p.add_argument("--tokens")
    p.add_argument("--text")
    p.add_argument("-n", type=int, default=16)
    p = sub.add_parser("trace")
    p.add_argument("model")
    p.add_argument("--tokens")
    p.add_argument("--text")
    p.add_argument("--out")
    p = sub.add_parser("compare")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--max-rel", type=float, default=1e-2)
    p.add_argument("--median", type=float, default=1e-4)
    args = ap.parse_args(argv)

    if args.cmd == "compare":
        mx, med, top = compare(read_logits(args.a), read_logits(args.b))
        n = read_logits(args.b).shape[0]
        ok = mx <= args.max_rel and med <= args.median and top == n
        print("%s positions=%d top1=%d/%d max_rel=%.2e median_rel=%.2e"
              % ("PASS" if ok else "FAIL", n, top, n, mx, med))
        return 0 if ok else 1

    m = Model(args.model)
    if args.tokens:
        toks = [int(t) for t in args.tokens.split(",")]
    elif args.text is not None:
        toks = m.tok.encode(args.text, add_bos=True)
    else:
        ap.error("--tokens or --text required")
    if args.cmd == "trace":
        t = trace(m, toks)
        if args.out:
            with open(args.out, "w") as f:
                write_trace(f, t)
        else:
            write_trace(sys.stdout, t)
    elif args.cmd == "logits":
        lg = m.forward(toks)
        if args.out:
            write_logits(args.out, lg)
        else:
            for i, row in enumerate(lg):
                print(i, int(np.argmax(row)), float(np.max(row)))
    else:
        out = m.greedy(toks, args.n, m.stop_ids())
        print(",".join(str(t) for t in out))
        if m.tok:
            print(repr(m.tok.decode(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
