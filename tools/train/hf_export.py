#!/usr/bin/env python3
"""Export a bitnet-b1.58 GGUF as a Hugging Face BitNetForCausalLM checkpoint, or a llama-arch
ternary GGUF as a LlamaForCausalLM one with BitNet quantization (numpy only).

Writes config.json, tokenizer.json, tokenizer_config.json and model.safetensors (or
--shards N files plus model.safetensors.index.json) in one of the two forms Microsoft
publishes for bitnet-b1.58-2B-4T:

  packed  every projection as uint8 [out/4, in], four ternary values per byte packed
          along the OUTPUT dimension the way transformers' pack_weights does it (output
          row i*out/4 + r in byte row r, bits 2i..2i+1, code = value + 1), plus a
          one-element weight_scale; config.json carries quantization_config
          {quant_method bitnet, linear_class L, quantization_mode offline}. With L =
          autobitlinear (the default, what the published packed checkpoint reportedly
          declares) AutoBitLinear MULTIPLIES by weight_scale: weight_scale = the GGUF's
          scale. With --linear-class bitlinear, BitLinear DIVIDES by it: weight_scale =
          1 / scale.
  bf16    every projection as BF16 "master weights" [out, in] whose absmean
          ternarization (scale = mean|W| clamped to >= 1e-5, codes = clamp(round(W /
          scale), -1, 1)) gives back exactly the GGUF's codes and scale.

Used by tests/convert.sh to check `bitnet convert` against the source GGUF: the logits of
the converted model must be bit-identical to the source's. Why that holds:

  packed  the codes are stored as they are. autobitlinear: weight_scale is the f32
          scale itself. bitlinear: an f32 w with f32(1 / w) == scale (searched among the
          f32 neighbours of 1/scale); about 9% of f32 scales are not the rounded
          reciprocal of any f32, and for those weight_scale is stored as F64 (1 / scale
          in double always rounds back). A real checkpoint stores it in BF16
          (--scale-dtype bf16 imitates that; its logits are then close, not identical).
  bf16    scale g = G * 2^e (G a 24-bit integer). Every nonzero code starts as
          +-g_hi (g's top 8 bits, exact in BF16, within 1% of g), every zero code as 0.
          The sum of |W| must be exactly N * g (N elements): the remainder is an integer
          number of 2^e units, split from its top into 8-bit pieces (each exact in BF16)
          that are parked on "carrier" elements: pieces >= 0.55 g on nonzero-code
          elements (replacing their g_hi), pieces <= 0.45 g on zero-code elements (a piece
          in between is halved). So every nonzero-code |W| is >= 0.55 g and every zero-code
          |W| <= 0.45 g: round(W / g) gives the code with a margin, far from a tie, under
          either division or transformers' multiply by 1/g. All |W| are multiples of 2^e
          with a total below 2^53 * 2^e, so the sum is exact in double in any order, and
          the mean N*g/N = g exactly: the converter recomputes g bit for bit. The export
          checks all of this by emulating the converter and fails loudly otherwise.
          An all-zero tensor cannot carry its scale (its mean would be 0): it is written
          as zeros (scale then 1e-5) and the logits are still identical, a zero matrix
          being zero whatever its scale.

Arch llama: the GGUF's q/k rows are in llama.cpp's interleaved-RoPE order (its converter's
LlamaModel.permute); the checkpoint gets transformers' rotate_half order back (row j*d/2 + i
of a d-row head is GGUF row 2i + j), no sub-norms, hidden_act silu, an lm_head.weight when
the GGUF has an output.weight (tie_word_embeddings false), and a quantization_config in both
forms (bf16: AutoBitLinear online, which ternarizes the master weights at load).

Token embedding (F16) and norms (F32) are written in their GGUF types in both forms
(transformers keeps whatever dtype a file has); the published checkpoints use BF16 for
them, which `bitnet convert` also accepts (rounding the embedding to F16).

Usage: hf_export.py SRC.gguf OUT_DIR --form packed|bf16 [--shards N]
                    [--linear-class autobitlinear|bitlinear] [--scale-dtype auto|bf16]
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

ARCHES = ("bitnet-b1.58", "bitnet-25", "llama")
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PROJ = [("attn_q", "self_attn.q_proj"), ("attn_k", "self_attn.k_proj"),
        ("attn_v", "self_attn.v_proj"), ("attn_output", "self_attn.o_proj"),
        ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"),
        ("ffn_down", "mlp.down_proj")]
NORMS = [("attn_norm", "input_layernorm"), ("attn_sub_norm", "self_attn.attn_sub_norm"),
         ("ffn_norm", "post_attention_layernorm"), ("ffn_sub_norm", "mlp.ffn_sub_norm")]
T_CONTROL, T_USER = 3, 4
PERMUTED = {"attn_q": "attention.head_count", "attn_k": "attention.head_count_kv"}


class ExportError(Exception):
    pass


# ---------------------------------------------------------------- weights

def pack(tern):
    """tern: int8 [out][in] -> uint8 [out/4][in], transformers' pack_weights layout"""
    out_, in_ = tern.shape
    if out_ % 4:
        raise ExportError("%d outputs are not a multiple of 4" % out_)
    codes = (tern.astype(np.int16) + 1).astype(np.uint8).reshape(4, out_ // 4, in_)
    return codes[0] | (codes[1] << 2) | (codes[2] << 4) | (codes[3] << 6)


def unpermute(tern, n_head):
    """GGUF rows of n_head heads in interleaved-RoPE order -> transformers' rotate_half
    order: the inverse of llama.cpp's LlamaModel.permute"""
    out_, in_ = tern.shape
    d = out_ // n_head
    return tern.reshape(n_head, d // 2, 2, in_).swapaxes(1, 2).reshape(out_, in_)


def f32_bits(x):
    return np.array([x], dtype=np.float32).view(np.uint32)[0]


def bf16_round(x):
    """f32 -> bf16 bits, round to nearest even (finite input)"""
    u = int(f32_bits(x))
    return (u + 0x7FFF + ((u >> 16) & 1)) >> 16


def weight_scale(g, dtype, linear_class):
    """autobitlinear multiplies by weight_scale: g itself; bitlinear divides by it: a w
    with f32(1/w) == g. Returns (safetensors dtype, bytes)."""
    g = np.float32(g)
    if linear_class == "autobitlinear":
        if dtype == "bf16":
            return "BF16", struct.pack("<H", bf16_round(g))
        return "F32", struct.pack("<f", float(g))
    if dtype == "bf16":
        return "BF16", struct.pack("<H", bf16_round(np.float32(1.0 / np.float64(g))))
    w0 = np.float32(1.0 / np.float64(g))
    for d in (0, -1, 1, -2, 2, -3, 3, -4, 4):
        w = (np.array([w0], dtype=np.float32).view(np.int32) + d).view(np.float32)[0]
        if np.float32(1.0 / np.float64(w)) == g:
            return "F32", struct.pack("<f", float(w))
    w = 1.0 / np.float64(g)
    if np.float32(1.0 / w) != g:
        raise ExportError("scale %r has no exact weight_scale" % float(g))
    return "F64", struct.pack("<d", float(w))


def _chunk(r):
    """the top 8 significant bits of the integer r (exact in bf16 with any exponent)"""
    k = max(r.bit_length() - 8, 0)
    return (r >> k) << k


def master_weights(tern, g, name):
    """BF16 bits [out][in] whose absmean ternarization gives (tern, g); see the module doc."""
    out_, in_ = tern.shape
    n = out_ * in_
    flat = tern.reshape(-1)
    nz = np.flatnonzero(flat)
    zero = np.flatnonzero(flat == 0)
    mag = np.zeros(n, dtype=np.float64)
    if len(nz) == 0:
        print("hf_export: %s: all codes are zero; its scale is not representable" % name,
              file=sys.stderr)
        return np.zeros((out_, in_), dtype=np.uint16)
    m, ex = math.frexp(float(g))
    big_g = int(m * (1 << 24))
    e = ex - 24
    if math.ldexp(big_g, e) != float(g) or big_g < (1 << 23):
        raise ExportError("%s: scale %r is not a normal f32" % (name, float(g)))
    base = (big_g >> 16) << 16            # g_hi in units of 2^e
    mag[nz] = math.ldexp(base, e)
    rem = n * big_g - len(nz) * base      # units still to place, >= 0
    lo, hi = 0.45 * big_g, 0.55 * big_g
    nz_free = iter(nz[::-1])              # carriers from the end of the tensor
    zero_free = iter(zero[::-1])
    steps = 0
    try:
        while rem > 0:
            steps += 1
            if steps > 1000:
                raise ExportError("%s: no carrier decomposition" % name)
            p = _chunk(rem)
            if p >= hi:
                j = next(nz_free)
                rem += base               # this element gives up its g_hi
                p = _chunk(rem)
                mag[j] = math.ldexp(p, e)
            elif p <= lo:
                mag[next(zero_free)] = math.ldexp(p, e)
            else:
                p //= 2                   # p = c * 2^k with k >= 1 here: exact
                mag[next(zero_free)] = math.ldexp(p, e)
            rem -= p
    except StopIteration:
        raise ExportError("%s: too few %s codes to carry the scale exactly"
                          % (name, "nonzero" if p >= hi else "zero"))
    w = np.where(flat < 0, -mag, mag).astype(np.float32)
    bits = w.view(np.uint32)
    if (bits & 0xFFFF).any():
        raise ExportError("%s: a value is not exact in bf16" % name)
    # emulate `bitnet convert`: exact double sum, f32 mean, f32 W / mean, ties to even
    s = float(np.abs(w).astype(np.float64).sum())
    mean = np.float32(s / n)
    mean = max(mean, np.float32(1e-5))
    q = np.clip(np.rint(w / mean), -1, 1).astype(np.int8)
    if mean != np.float32(g) or not np.array_equal(q, flat):
        raise ExportError("%s: the emulated re-quantization does not match" % name)
    return (bits >> 16).astype(np.uint16).reshape(out_, in_)


# ---------------------------------------------------------------- safetensors

def write_safetensors(path, tensors):
    """tensors: list of (name, dtype, shape, bytes)"""
    header = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, dt, shape, data in sorted(tensors):
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _name, _dt, _shape, data in sorted(tensors):
            f.write(data)
    return off


def write_weights(out_dir, tensors, shards):
    if shards <= 1:
        write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors)
        return
    tensors = sorted(tensors)
    total = sum(len(t[3]) for t in tensors)
    per = total / shards
    groups, cur, acc = [], [], 0
    for t in tensors:
        cur.append(t)
        acc += len(t[3])
        if acc >= per * (len(groups) + 1) and len(groups) < shards - 1:
            groups.append(cur)
            cur = []
    groups.append(cur)
    groups = [g for g in groups if g]
    weight_map = {}
    for i, g in enumerate(groups):
        fname = "model-%05d-of-%05d.safetensors" % (i + 1, len(groups))
        write_safetensors(os.path.join(out_dir, fname), g)
        for t in g:
            weight_map[t[0]] = fname
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2,
                  sort_keys=True)


# ---------------------------------------------------------------- tokenizer and config

def write_tokenizer(out_dir, kv, n_ctx):
    tokens = kv["tokenizer.ggml.tokens"]
    types = kv.get("tokenizer.ggml.token_type", [1] * len(tokens))
    vocab, added, decoder = {}, [], {}
    for i, (t, ty) in enumerate(zip(tokens, types)):
        if ty in (T_CONTROL, T_USER):
            a = {"id": i, "content": t, "single_word": False, "lstrip": False,
                 "rstrip": False, "normalized": False, "special": ty == T_CONTROL}
            added.append(a)
            decoder[str(i)] = {k: v for k, v in a.items() if k != "id"}
        else:
            if t in vocab:
                raise ExportError("token %r appears twice" % t)
            vocab[t] = i
    tok = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": False}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                           "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": vocab, "merges": kv.get("tokenizer.ggml.merges", [])},
    }
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, indent=1)

    def text(key):
        i = kv.get(key)
        return tokens[i] if i is not None else None
    eos = text("tokenizer.ggml.eos_token_id")
    eot = text("tokenizer.ggml.eot_token_id")
    tc = {"add_bos_token": bool(kv.get("tokenizer.ggml.add_bos_token", False)),
          "add_eos_token": False, "added_tokens_decoder": decoder,
          "bos_token": text("tokenizer.ggml.bos_token_id"),
          # a chat model's tokenizer_config names the end of turn as eos
          "eos_token": eot or eos, "clean_up_tokenization_spaces": True,
          "model_max_length": n_ctx, "tokenizer_class": "PreTrainedTokenizerFast"}
    if text("tokenizer.ggml.padding_token_id"):
        tc["pad_token"] = text("tokenizer.ggml.padding_token_id")
    if "tokenizer.chat_template" in kv:
        tc["chat_template"] = kv["tokenizer.chat_template"]
    tc = {k: v for k, v in tc.items() if v is not None}
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tc, f, ensure_ascii=False, indent=2)


def write_config(out_dir, kv, arch, form, linear_class, tied):
    a = lambda k: kv[arch + "." + k]  # noqa: E731
    llama = arch == "llama"
    cfg = {
        "architectures": ["LlamaForCausalLM" if llama else "BitNetForCausalLM"],
        "model_type": "llama" if llama else "bitnet",
        "hidden_size": a("embedding_length"), "intermediate_size": a("feed_forward_length"),
        "num_hidden_layers": a("block_count"), "num_attention_heads": a("attention.head_count"),
        "num_key_value_heads": kv.get(arch + ".attention.head_count_kv",
                                      a("attention.head_count")),
        "vocab_size": len(kv["tokenizer.ggml.tokens"]),
        "max_position_embeddings": a("context_length"),
        # the f32 values as python floats: the converter reads them back to the same f32
        "rms_norm_eps": float(np.float32(kv.get(arch + ".attention.layer_norm_rms_epsilon",
                                                1e-5))),
        "rope_theta": float(np.float32(kv.get(arch + ".rope.freq_base", 10000.0))),
        "hidden_act": "silu" if llama else "relu2", "tie_word_embeddings": tied,
        "attention_bias": False,
        "attention_dropout": 0.0, "initializer_range": 0.02, "use_cache": True,
        "torch_dtype": "bfloat16",
        "bos_token_id": kv.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": kv.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": kv.get("tokenizer.ggml.padding_token_id"),
    }
    if llama:
        cfg["mlp_bias"] = False
    if form == "packed":
        cfg["quantization_config"] = {"quant_method": "bitnet", "linear_class": linear_class,
                                      "quantization_mode": "offline", "use_rms_norm": False,
                                      "modules_to_not_convert": None}
    elif llama:
        # a LlamaForCausalLM without it would be a full-precision model
        cfg["quantization_config"] = {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                      "quantization_mode": "online", "use_rms_norm": False,
                                      "modules_to_not_convert": None}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


# ---------------------------------------------------------------- main

def export(src, out_dir, form, shards=1, scale_dtype="auto", linear_class="autobitlinear"):
    g = gguf.GGUFFile(src)
    arch = g.kv.get("general.architecture")
    if arch not in ARCHES:
        raise ExportError("%s: architecture %r is not %s" % (src, arch, " or ".join(ARCHES)))
    tied = "output.weight" not in g.tensors
    if not tied and arch != "llama":
        raise ExportError("%s: an untied output.weight is not exported" % src)
    os.makedirs(out_dir, exist_ok=True)
    n_layer = g.kv[arch + ".block_count"]
    tensors = []
    emb = g.tensors["token_embd.weight"]
    if emb["type"] != gguf.GGML_F16:
        raise ExportError("token_embd.weight is not F16")
    h, v = emb["shape"]
    tensors.append(("model.embed_tokens.weight", "F16", (v, h), g.raw("token_embd.weight")))

    def norm(gname, hname):
        t = g.tensors[gname]
        if t["type"] != gguf.GGML_F32:
            raise ExportError("%s is not F32" % gname)
        tensors.append((hname, "F32", (t["shape"][0],), g.raw(gname)))

    for i in range(n_layer):
        for gn, hn in NORMS:
            if arch == "llama" and "sub_norm" in gn:
                continue
            norm("blk.%d.%s.weight" % (i, gn), "model.layers.%d.%s.weight" % (i, hn))
        for gn, hn in PROJ:
            gname = "blk.%d.%s.weight" % (i, gn)
            hname = "model.layers.%d.%s" % (i, hn)
            if g.tensors[gname]["type"] != gguf.GGML_I2_S:
                raise ExportError("%s is not I2_S" % gname)
            tern, scale = g.tensor(gname)
            if arch == "llama" and gn in PERMUTED:
                tern = unpermute(tern, g.kv.get(arch + "." + PERMUTED[gn],
                                                g.kv[arch + ".attention.head_count"]))
            out_, in_ = tern.shape
            if form == "packed":
                tensors.append((hname + ".weight", "U8", (out_ // 4, in_), pack(tern).tobytes()))
                dt, data = weight_scale(scale, scale_dtype, linear_class)
                tensors.append((hname + ".weight_scale", dt, (1,), data))
            else:
                bits = master_weights(tern, scale, gname)
                tensors.append((hname + ".weight", "BF16", (out_, in_), bits.tobytes()))
    norm("output_norm.weight", "model.norm.weight")
    if not tied:
        t = g.tensors["output.weight"]
        if t["type"] != gguf.GGML_F16:
            raise ExportError("output.weight is not F16")
        tensors.append(("lm_head.weight", "F16", (t["shape"][1], t["shape"][0]),
                        g.raw("output.weight")))
    write_weights(out_dir, tensors, shards)
    write_config(out_dir, g.kv, arch, form, linear_class, tied)
    write_tokenizer(out_dir, g.kv, g.kv[arch + ".context_length"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src")
    ap.add_argument("out_dir")
    ap.add_argument("--form", choices=("packed", "bf16"), required=True)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--scale-dtype", choices=("auto", "bf16"), default="auto",
                    help="packed form: weight_scale exact (F32, F64 where needed) or BF16")
    ap.add_argument("--linear-class", choices=("autobitlinear", "bitlinear"),
                    default="autobitlinear",
                    help="packed form: weight_scale multiplies (autobitlinear) or divides")
    args = ap.parse_args()
    try:
        export(args.src, args.out_dir, args.form, args.shards, args.scale_dtype,
               args.linear_class)
    except (ExportError, KeyError, ValueError) as e:
        print("hf_export: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
