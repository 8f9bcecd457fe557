"""Write a trained demo model as a bitnet-b1.58 GGUF with I2_S projections.

Key set, tensor names and order follow the 2B-4T layout (and the golden
tiny-i2_s.gguf): F16 token_embd (tied LM head, no output.weight), F32 norms,
seven I2_S projections per layer whose per-tensor scale is the absmean
gamma of the trained weights.
"""

import numpy as np

import gguf

ARCH = "bitnet-b1.58"
PROJ = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]


def ternarize(w, gamma):
    """absmean quantization, the same rule the trainer's forward uses"""
    return np.clip(np.rint(w / gamma), -1, 1).astype(np.int8)


def write(path, cfg, params, tok, name="bitnetd-demo"):
    """cfg: dict(n_vocab, n_embd, n_layer, n_head, n_kv, n_ff, n_ctx, rope_base, eps)
    params: dict name -> float32 numpy array; projections [out][in] with
    params[name + ".gamma"] their float32 absmean; tok: bpe.Tokenizer."""
    w = gguf.GGUFWriter()
    S, U32, F32, BOOL, ARR = gguf.T_STR, gguf.T_U32, gguf.T_F32, gguf.T_BOOL, gguf.T_ARR
    w.add("general.architecture", S, ARCH)
    w.add("general.name", S, name)
    w.add("general.alignment", U32, 32)
    w.add("general.file_type", U32, 40)
    w.add("general.quantization_version", U32, 2)
    w.add(ARCH + ".vocab_size", U32, cfg["n_vocab"])
    w.add(ARCH + ".context_length", U32, cfg["n_ctx"])
    w.add(ARCH + ".embedding_length", U32, cfg["n_embd"])
    w.add(ARCH + ".block_count", U32, cfg["n_layer"])
    w.add(ARCH + ".feed_forward_length", U32, cfg["n_ff"])
    w.add(ARCH + ".rope.dimension_count", U32, cfg["n_embd"] // cfg["n_head"])
    w.add(ARCH + ".attention.head_count", U32, cfg["n_head"])
    w.add(ARCH + ".attention.head_count_kv", U32, cfg["n_kv"])
    w.add(ARCH + ".attention.layer_norm_rms_epsilon", F32, cfg["eps"])
    w.add(ARCH + ".rope.freq_base", F32, cfg["rope_base"])
    w.add("tokenizer.ggml.model", S, "gpt2")
    w.add("tokenizer.ggml.pre", S, "llama-bpe")
    w.add("tokenizer.ggml.tokens", ARR, tok.tokens, gguf.T_STR)
    w.add("tokenizer.ggml.token_type", ARR, tok.types, gguf.T_I32)
    w.add("tokenizer.ggml.merges", ARR, tok.merges, gguf.T_STR)
    w.add("tokenizer.ggml.bos_token_id", U32, tok.bos)
    w.add("tokenizer.ggml.eos_token_id", U32, tok.eos)
    w.add("tokenizer.ggml.eot_token_id", U32, tok.eot)
    w.add("tokenizer.ggml.padding_token_id", U32, tok.pad)
    w.add("tokenizer.ggml.add_bos_token", BOOL, True)
    w.add("tokenizer.ggml.add_eos_token", BOOL, False)

    H, FF, V = cfg["n_embd"], cfg["n_ff"], cfg["n_vocab"]
    emb = params["token_embd.weight"]
    assert emb.shape == (V, H)
    w.add_tensor("token_embd.weight", gguf.GGML_F16, [H, V], emb.astype("<f2").tobytes())

    def vec(name, n):
        a = params[name]
        assert a.shape == (n,), name
        w.add_tensor(name, gguf.GGML_F32, [n], a.astype("<f4").tobytes())

    def proj(name):
        a = params[name]
        gamma = np.float32(params[name + ".gamma"])
        t = ternarize(a, gamma)
        out_, in_ = a.shape
        w.add_tensor(name, gguf.GGML_I2_S, [in_, out_], gguf.i2s_encode(t, gamma))

    for i in range(cfg["n_layer"]):
        b = "blk.%d." % i
        vec(b + "attn_norm.weight", H)
        for p in PROJ[:4]:
            proj(b + p + ".weight")
        vec(b + "attn_sub_norm.weight", H)
        vec(b + "ffn_norm.weight", H)
        for p in PROJ[4:]:
            proj(b + p + ".weight")
        vec(b + "ffn_sub_norm.weight", FF)
    vec("output_norm.weight", H)
    return w.write(path)
