#!/usr/bin/env python3
"""Quantization-aware trainer for the bitnetd demo model (PyTorch, CPU).

The network is the architecture the engine runs (bitnet-b1.58): RMSNorm,
attention and FFN sub-norms, squared ReLU, NEOX RoPE, GQA, tied embedding.
Every projection is a BitLinear: weights ternarized per tensor with the
absmean scale, activations quantized to int8 per token (absmax), both with
straight-through gradients, so the exported I2_S file computes what the
trainer optimised.  Training is float32 and need not be bit-exact with the
engine; tools/train/ref.py is the exact reference over the exported file.

Steps: build the BPE vocabulary from the corpus (corpus.py, seed), train on
the endless document stream (packed rows; each document keeps positions from
0 and attends only to itself), export GGUF (export.py).  A raw document is
BOS + text + EOS; a conversation is tokenized the way the engine tokenizes a
chat prompt (chat.py) and ends with <|eot_id|>.  The held-out accuracies
printed during training are the float torch model's; mkdata.py measures the
exported file with ref.py.

Example (the committed demo model; see README.md):
  /usr/bin/python3 tools/train/train.py --seed 1 --steps 2000 --eval-every 500 --out models/demo.gguf
"""

import argparse
import itertools
import math
import os
import sys
import time

# Debian's python3-torch calls whatever libblas.so.3 the alternatives system
# selects, by default the netlib reference BLAS (~2 GFLOPS, 20x slower than
# OpenBLAS).  Use libopenblas0-pthread's copy for this process only, without
# switching the system-wide alternative.
_OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread"
if (os.path.exists(_OPENBLAS + "/libblas.so.3")
        and _OPENBLAS not in os.environ.get("LD_LIBRARY_PATH", "")
        and not os.environ.get("BN_TRAIN_NO_REEXEC")):
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = _OPENBLAS + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    env["BN_TRAIN_NO_REEXEC"] = "1"
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe      # noqa: E402
import chat     # noqa: E402
import corpus   # noqa: E402
import export   # noqa: E402



class _QuantWeight(torch.autograd.Function):
    """absmean ternary weights; straight-through gradient"""
    @staticmethod
    def forward(ctx, w):
        gamma = w.abs().mean().clamp(min=1e-5)
        return (w / gamma).round_().clamp_(-1, 1).mul_(gamma)

    @staticmethod
    def backward(ctx, g):
        return g


class _QuantAct(torch.autograd.Function):
    """per-token absmax int8 activations; straight-through gradient"""
    @staticmethod
    def forward(ctx, x):
        s = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp_(min=1e-5)
        return (x * s).round_().clamp_(-128, 127).div_(s)

    @staticmethod
    def backward(ctx, g):
        return g


quant_weight = _QuantWeight.apply
quant_act = _QuantAct.apply


class BitLinear(nn.Module):
    """y = W x with ternary W and int8 x.  The caller quantizes x once per
    input (q, k and v share one input, as do gate and up)."""
    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in) / math.sqrt(n_in))

    def forward(self, xq):
        return F.linear(xq, quant_weight(self.weight))


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        H, FF, hd = c["n_embd"], c["n_ff"], c["n_embd"] // c["n_head"]
        self.c = c
        self.attn_norm = RMSNorm(H, c["eps"])
        self.attn_q = BitLinear(H, H)
        self.attn_k = BitLinear(H, c["n_kv"] * hd)
        self.attn_v = BitLinear(H, c["n_kv"] * hd)
        self.attn_sub_norm = RMSNorm(H, c["eps"])
        self.attn_output = BitLinear(H, H)
        self.ffn_norm = RMSNorm(H, c["eps"])
        self.ffn_gate = BitLinear(H, FF)
        self.ffn_up = BitLinear(H, FF)
        self.ffn_sub_norm = RMSNorm(FF, c["eps"])
        self.ffn_down = BitLinear(FF, H)

    def forward(self, x, cos, sin, mask):
        c = self.c
        B, T, H = x.shape
        nh, nkv = c["n_head"], c["n_kv"]
        hd = H // nh
        h = quant_act(self.attn_norm(x))
        q = self.attn_q(h).view(B, T, nh, hd)
        k = self.attn_k(h).view(B, T, nkv, hd)
        v = self.attn_v(h).view(B, T, nkv, hd)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        rep = nh // nkv
        k = k.repeat_interleave(rep, dim=2)   # query head h uses kv head h / rep
        v = v.repeat_interleave(rep, dim=2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B][nh][T][hd]
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(hd))
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        a = (att @ v).transpose(1, 2).reshape(B, T, H)
        x = x + self.attn_output(quant_act(self.attn_sub_norm(a)))
        h = quant_act(self.ffn_norm(x))
        m = F.relu(self.ffn_gate(h)).square() * self.ffn_up(h)
        return x + self.ffn_down(quant_act(self.ffn_sub_norm(m)))


def rope(x, cos, sin):
    # NEOX: pairs (i, i + hd/2); x [B][T][heads][hd], cos/sin [B][T][hd/2]
    h2 = x.shape[-1] // 2
    a, b = x[..., :h2], x[..., h2:]
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    return torch.cat([a * c - b * s, a * s + b * c], dim=-1)


class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embd = nn.Parameter(torch.randn(c["n_vocab"], c["n_embd"]) * 0.02)
        self.blocks = nn.ModuleList([Block(c) for _ in range(c["n_layer"])])
        self.output_norm = RMSNorm(c["n_embd"], c["eps"])
        hd = c["n_embd"] // c["n_head"]
        inv = c["rope_base"] ** (-torch.arange(0, hd // 2, dtype=torch.float64) * 2.0 / hd)
        ang = torch.arange(c["n_ctx"], dtype=torch.float64)[:, None] * inv[None, :]
        self.register_buffer("cos", ang.cos().float(), persistent=False)
        self.register_buffer("sin", ang.sin().float(), persistent=False)

    def forward(self, tokens, pos=None, doc=None):
        """tokens, pos (position inside its document), doc (document
        number inside the row): [B][T].  Attention stays inside a
        document, so a packed row trains like separate prompts."""
        B, T = tokens.shape
        if pos is None:
            pos = torch.arange(T).expand(B, T)
            doc = torch.zeros(B, T, dtype=torch.long)
        x = self.embd[tokens]
        causal = torch.ones(T, T, dtype=torch.bool).triu(1)
        mask = (causal[None] | (doc[:, :, None] != doc[:, None, :]))[:, None]  # [B][1][T][T]
        cos, sin = self.cos[pos], self.sin[pos]
        for b in self.blocks:
            x = b(x, cos, sin, mask)
        return self.output_norm(x) @ self.embd.t()

    def export_params(self):
        p = {"token_embd.weight": self.embd.detach().numpy().astype(np.float32),
             "output_norm.weight": self.output_norm.weight.detach().numpy()}
        for i, b in enumerate(self.blocks):
            for name, mod in b.named_children():
                key = "blk.%d.%s.weight" % (i, name)
                w = mod.weight.detach()
                p[key] = w.numpy().astype(np.float32)
                if isinstance(mod, BitLinear):
                    p[key + ".gamma"] = np.float32(w.abs().mean().clamp(min=1e-5).item())
        return p


def doc_ids(tok, task, p, a, t):
    """a stream item as tokens: BOS + text + EOS, or a conversation (chat.py)"""
    if task == "chat":
        return chat.doc_ids(tok, [(x.user, x.answer) for x in p])
    return tok.encode(p + a + t, add_bos=True) + [tok.eos]


def doc_texts(task, p, a, t):
    """a stream item's text runs, for the BPE"""
    if task == "chat":
        return chat.texts([(x.user, x.answer) for x in p])
    return [p + a + t]


def batches(tok, seed, rows, row_len):
    """Endless batches of documents (BOS + text + EOS, conversations) packed into rows of
    row_len + 1 tokens; each document keeps its own positions from 0, like a
    prompt does at inference.  Yields (input, target, pos, doc) [rows][row_len]."""
    s = corpus.stream(seed)
    pending = None
    while True:
        arr = np.full((rows, row_len + 1), tok.pad, dtype=np.int64)
        pos = np.zeros((rows, row_len + 1), dtype=np.int64)
        doc = np.full((rows, row_len + 1), -1, dtype=np.int64)
        for r in range(rows):
            n = 0
            d = 0
            while True:
                if pending is None:
                    pending = doc_ids(tok, *next(s))
                    if len(pending) > row_len + 1:
                        raise ValueError("document longer than a row")
                if n + len(pending) > row_len + 1:
                    break
                k = len(pending)
                arr[r, n:n + k] = pending
                pos[r, n:n + k] = np.arange(k)
                doc[r, n:n + k] = d
                n += k
                d += 1
                pending = None
            doc[r, n:] = np.arange(d, d + row_len + 1 - n)  # padding attends only to itself
        # a target is valid only inside the same document
        tgt = arr[:, 1:].copy()
        tgt[doc[:, 1:] != doc[:, :-1]] = tok.pad
        t = torch.from_numpy
        yield t(arr[:, :-1]), t(tgt), t(pos[:, :-1]), t(doc[:, :-1])


@torch.no_grad()
def greedy_torch(model, tok, prompt, n):
    """greedy text after a raw prompt (str) or prompt ids (list)"""
    ids = tok.encode(prompt, add_bos=True) if isinstance(prompt, str) else list(prompt)
    out = []
    for _ in range(n):
        logits = model(torch.tensor([ids]))[0, -1]
        t = int(torch.argmax(logits))
        if t in (tok.eos, tok.eot):
            break
        out.append(t)
        ids.append(t)
    return tok.decode(out)


def answer_ok(gen_text, answer):
    """The answer is right when the continuation starts with it.  A
    continuation that stops (EOS) counts as right only if the answer ends
    the document."""
    return gen_text.startswith(answer)


def eval_torch(model, tok, docs):
    model.eval()
    ok = 0
    for task, p, a, t in docs:
        n = len(tok.encode(a, add_bos=False)) + 1
        if answer_ok(greedy_torch(model, tok, p, n), a):
            ok += 1
    model.train()
    return ok / len(docs)


def eval_chat(model, tok, convs):
    """share of conversations whose every answer is right, each turn asked with the
    model's own previous answers as history (as bitnetctl chat does)"""
    model.eval()
    ok = 0
    for turns in convs:
        hist = []
        good = True
        for x in turns:
            n = len(tok.encode(x.answer, add_bos=False)) + 2
            got = greedy_torch(model, tok, chat.prompt_ids(tok, hist, x.user), n)
            good &= got == x.answer
            hist.append((x.user, got))
        ok += good
    model.train()
    return ok / len(convs)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="demo.gguf")
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--ff", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--row-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bpe-docs", type=int, default=20000)
    ap.add_argument("--eval-every", type=int, default=500)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    t0 = time.time()

    n_merges = args.vocab - 256 - len(bpe.CONTROL_TOKENS)
    docs = [x for item in itertools.islice(corpus.stream(args.seed), args.bpe_docs)
            for x in doc_texts(*item)]
    tok = bpe.Tokenizer.build(bpe.train(docs, n_merges))
    cfg = dict(n_vocab=len(tok.tokens), n_embd=args.hidden, n_layer=args.layers,
               n_head=args.heads, n_kv=args.kv_heads, n_ff=args.ff, n_ctx=args.ctx,
               rope_base=500000.0, eps=1e-5)
    print("vocab %d (%d merges), bpe %.1fs" % (cfg["n_vocab"], len(tok.merges), time.time() - t0),
          flush=True)

    model = Model(cfg)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": other, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        f = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * f)))

    held = corpus.heldout(corpus.HELDOUT_SEED, 25)
    held1 = corpus.chat_heldout(corpus.HELDOUT_SEED, 1, 40)
    held2 = corpus.chat_heldout(corpus.HELDOUT_SEED + 1, 2, 40)
    data = batches(tok, args.seed, args.rows, args.row_len)
    ema = None
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x, y, pos, doc = next(data)
        logits = model(x, pos, doc)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                               ignore_index=tok.pad)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % 50 == 0 or step == args.steps - 1:
            print("step %5d loss %.4f (ema %.4f) lr %.2e %.0fs"
                  % (step, loss.item(), ema, lr_at(step), time.time() - t0), flush=True)
        if args.eval_every and step and (step % args.eval_every == 0 or step == args.steps - 1):
            print("  held-out greedy accuracy (torch, float): raw %.3f, chat %.3f one turn, "
                  "%.3f two turns"
                  % (eval_torch(model, tok, held[::4]), eval_chat(model, tok, held1),
                     eval_chat(model, tok, held2)), flush=True)

    size = export.write(args.out, cfg, model.export_params(), tok)
    print("final loss (ema) %.4f; wrote %s (%d bytes) in %.0fs"
          % (ema, args.out, size, time.time() - t0), flush=True)


if __name__ == "__main__":
    main()
