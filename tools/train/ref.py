#!/usr/bin/env python3
"""Independent numpy reference forward pass of a bitnet-b1.58 (or llama-arch ternary) model.

It shares no code with the C engine and implements the inference arithmetic
of shared/golden/README.md rules 1-6 (and shared/spec/bitnet-format.md)
directly, so its logits can be held against the engine's:

  1. BitLinear per token: amax=max|x| (double, floored at 1e-5),
     s=(f32)(127/amax), q=clamp(rint((f32)(x*s)),-128,127), acc exact,
     y=(f32)acc/s*w_scale.
  2. RMSNorm: sum of (f32)(x*x) in double, mean=(f32)(sum/n),
     y = x*(1/sqrtf(mean+eps))*w.
  3. NEOX RoPE (pairs (i, i+hd/2)), theta_i = pos*ts^i by repeated f32
     multiplication, ts=powf(base,-2/hd); cos/sin computed in double, rounded
     to f32. Arch llama: the same angles on pairs (2i, 2i+1), llama.cpp's
     "normal" RoPE for the q/k rows its converter permutes.
  4. K, V and q rounded to f16; q.k in double -> f32, times 1/sqrtf(hd);
     e=expf(s-max), double sum, p=(f32)(e*(f32)(1/sum)) rounded to f16;
     out = sum p*v in double -> f32.  GQA: head h uses kv head h/(nh/nkv).
  5. relu(g)^2*u (bitnet-b1.58) or silu(g)*u (bitnet, llama); sub-norms
     (none in arch llama: wo and wdown quantize their input as it is).
  6. y = rmsnorm(x)*output_norm rounded to f16, logits = token_embd . y
     (or output.weight . y when the file has an untied head; an F32 head
     takes y unrounded).

Every position's arithmetic depends only on earlier tokens, so feeding the
whole prompt at once gives exactly the one-token-at-a-time result.

Usage:
  ref.py logits MODEL --tokens 1,2,3 [--out F.bin]
      MODEL is a GGUF file, or a Hugging Face checkpoint directory
      (LlamaForCausalLM or BitNetForCausalLM with BitNet quantization, see
      HFModel; --tokens only)
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
        if arch not in ("bitnet-b1.58", "bitnet-25", "bitnet", "llama"):
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
        # the LM head: [n_vocab][n_embd] and whether y is rounded to f16 for it
        head = "output.weight" if "output.weight" in g.tensors else "token_embd.weight"
        self.head = g.tensor(head)
        self.head_f16 = g.tensors[head]["type"] == gguf.GGML_F16
        self.sub_norms = arch != "llama"
        self.interleaved = arch == "llama"
        self.silu = arch in ("bitnet", "llama")
        self.out_norm = g.tensor("output_norm.weight")     # [n_embd] f32
        self.layers = []
        for i in range(self.n_layer):
            L = {}
            for n in ("attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm"):
                if self.sub_norms or "sub_norm" not in n:
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
        # x: [n][heads][hd]; rotated pairs (a[i], b[i])
        h2 = self.hd // 2
        if self.interleaved:
            a = x[:, :, 0::2]
            b = x[:, :, 1::2]
        else:
            a = x[:, :, :h2]
            b = x[:, :, h2:]
        c = cos[:, None, :]
        s = sin[:, None, :]
        ra = ((a * c).astype(F32) - (b * s).astype(F32)).astype(F32)
        rb = ((a * s).astype(F32) + (b * c).astype(F32)).astype(F32)
        if self.interleaved:
            out = np.empty_like(x)
            out[:, :, 0::2] = ra
            out[:, :, 1::2] = rb
            return out
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
            if self.sub_norms:
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
            if self.silu:
                gs = (g / (F32(1) + f32(np.exp(-g.astype(np.float64))))).astype(F32)
                m = (gs * u).astype(F32)
            else:
                r = np.maximum(g, F32(0))
                m = ((r * r).astype(F32) * u).astype(F32)
            if self.sub_norms:
                m = self.rmsnorm(m, L["ffn_sub_norm"])
            tr(li, "ffn_act", m)
            d = self.bitlinear(m, L["ffn_down"])
            tr(li, "down", d)
            x = (x + d).astype(F32)
            tr(li, "layer_out", x)
        y = self.rmsnorm(x, self.out_norm)
        tr(self.n_layer, "out_norm", y)
        y = y.astype(F16 if self.head_f16 else F32).astype(np.float64)
        logits = f32(y @ self.head.astype(np.float64).T)
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


# ---------------------------------------------------------------- HF checkpoints

ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "U8": "u1", "BF16": "<u2"}


def _st_tensors(d):
    """{name: numpy array} of a safetensors checkpoint directory (one file or an index)"""
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out = {}
    for fn in files:
        with open(os.path.join(d, fn), "rb") as f:
            b = f.read()
        n = struct.unpack("<Q", b[:8])[0]
        hdr = json.loads(b[8:8 + n])
        for name, t in hdr.items():
            if name == "__metadata__":
                continue
            lo, hi = t["data_offsets"]
            a = np.frombuffer(b[8 + n + lo:8 + n + hi], dtype=ST_DTYPES[t["dtype"]])
            if t["dtype"] == "BF16":
                a = (a.astype(np.uint32) << 16).view(np.float32)
            out[name] = (t["dtype"], a.reshape(t["shape"]))
    return out


class HFModel(Model):
    """A Hugging Face checkpoint read the way transformers reads it: LlamaForCausalLM
    (models/llama) or BitNetForCausalLM (models/bitnet) whose projections are BitLinear /
    AutoBitLinear (integrations/bitnet.py, quantization_config.quant_method "bitnet"), run
    with rotate_half RoPE on the checkpoint's own q/k row order. It shares nothing with the
    GGUF path (no permutation, no I2_S), so it checks the converter's and the GGUF's
    conventions from the other side. Projections:
      U8 [out/4, in] packed (rows i*out/4 .. (i+1)*out/4 - 1 in bits 2i..2i+1, code - 1)
        or float ternary values, with weight_scale: multiplied (linear_class autobitlinear)
        or divided (bitlinear, the default): scale = weight_scale or 1 / weight_scale;
      float master weights without weight_scale: WeightQuant, s = 1 / max(mean|W|, 1e-5),
        codes = clip(round(W * s), -1, 1), scale = 1 / s."""

    def __init__(self, path):
        with open(os.path.join(path, "config.json")) as f:
            c = json.load(f)
        self.path = path
        llama = "LlamaForCausalLM" in c.get("architectures", []) or c.get("model_type") == "llama"
        self.arch = "hf-llama" if llama else "hf-bitnet"
        q = c.get("quantization_config") or {}
        auto = q.get("linear_class") == "autobitlinear"
        self.n_embd = c["hidden_size"]
        self.n_layer = c["num_hidden_layers"]
        self.n_head = c["num_attention_heads"]
        self.n_kv = c.get("num_key_value_heads") or self.n_head
        self.n_ff = c["intermediate_size"]
        self.eps = F32(c.get("rms_norm_eps", 1e-6 if llama else 1e-5))
        self.base = float(F32(c.get("rope_theta", 10000.0 if llama else 500000.0)))
        self.hd = self.n_embd // self.n_head
        self.sub_norms = not llama
        self.interleaved = False
        self.silu = c.get("hidden_act", "silu" if llama else "relu2") == "silu"
        t = _st_tensors(path)
        f = lambda n: t[n][1].astype(F32)  # noqa: E731
        self.embd = f("model.embed_tokens.weight")
        self.n_vocab = self.embd.shape[0]
        head = "model.embed_tokens.weight" if c.get("tie_word_embeddings") else "lm_head.weight"
        self.head = f(head)
        self.head_f16 = t[head][0] == "F16"
        self.out_norm = f("model.norm.weight")
        names = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
                 "attn_sub_norm": "self_attn.attn_sub_norm", "ffn_sub_norm": "mlp.ffn_sub_norm",
                 "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                 "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                 "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                 "ffn_down": "mlp.down_proj"}
        self.layers = []
        for i in range(self.n_layer):
            L = {}
            for k, hn in names.items():
                pre = "model.layers.%d.%s" % (i, hn)
                if "norm" in k:
                    if self.sub_norms or "sub_norm" not in k:
                        L[k] = f(pre + ".weight")
                    continue
                dt, w = t[pre + ".weight"]
                if pre + ".weight_scale" in t:
                    ws = np.float64(t[pre + ".weight_scale"][1].reshape(-1)[0])
                    scale = F32(ws) if auto else F32(1.0 / ws)
                    if dt == "U8":
                        tern = np.concatenate([((w >> (2 * j)) & 3).astype(np.int8) - 1
                                               for j in range(4)])
                    else:
                        tern = w.astype(np.float64)
                    if not np.isin(tern, (-1, 0, 1)).all():
                        raise ValueError("%s: %s.weight is not ternary" % (path, pre))
                else:
                    w = w.astype(F32)
                    s = F32(1.0) / max(F32(np.mean(np.abs(w).astype(np.float64))), F32(1e-5))
                    tern = np.clip(np.rint((w * s).astype(F32)), -1, 1)
                    scale = F32(F32(1.0) / s)
                L[k] = (tern.astype(np.float64), scale, None)
            self.layers.append(L)
        self.tok = None
        eos = c.get("eos_token_id")
        self.eos = [eos] if isinstance(eos, int) else list(eos or [])

    def stop_ids(self):
        return self.eos


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

    m = HFModel(args.model) if os.path.isdir(args.model) else Model(args.model)
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
