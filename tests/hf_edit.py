#!/usr/bin/env python3
"""hf_edit.py DIR ACTION ARGS...: rewrites DIR/model.safetensors or DIR/config.json of a
single-file Hugging Face checkpoint, to make hostile cases for tests/convert.sh and
tests/llama-arch.sh (python stdlib only).
  config KEY JSON_VALUE     set a config.json key
  delconfig KEY             remove a config.json key
  byte TENSOR INDEX VALUE   one byte of a tensor's data
  drop TENSOR               remove a tensor
  copy SRC DST              add DST as a copy of SRC
  unpack TENSOR             packed U8 [P, in] -> BF16 ternary [4P, in]
  bf16 TENSOR INDEX HEX16   one BF16 element's bits
"""
import json, struct, sys
d, action = sys.argv[1], sys.argv[2]
args = sys.argv[3:]
def load():
    b = open(d + "/model.safetensors", "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    meta = h.pop("__metadata__", None)
    data = {k: bytearray(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in h.items()}
    return h, data
def save(h, data):
    hdr, off, blob = {}, 0, b""
    for k in sorted(h):
        v = dict(h[k]); v["data_offsets"] = [off, off + len(data[k])]
        hdr[k] = v; off += len(data[k]); blob += bytes(data[k])
    j = json.dumps(hdr).encode(); j += b" " * (-len(j) % 8)
    open(d + "/model.safetensors", "wb").write(struct.pack("<Q", len(j)) + j + blob)
if action == "config":          # KEY JSON_VALUE
    c = json.load(open(d + "/config.json")); c[args[0]] = json.loads(args[1])
    json.dump(c, open(d + "/config.json", "w"))
    sys.exit(0)
if action == "delconfig":       # KEY
    c = json.load(open(d + "/config.json")); del c[args[0]]
    json.dump(c, open(d + "/config.json", "w"))
    sys.exit(0)
h, data = load()
if action == "byte":            # TENSOR INDEX VALUE
    data[args[0]][int(args[1])] = int(args[2])
elif action == "drop":          # TENSOR
    del h[args[0]]
elif action == "copy":          # SRC DST
    h[args[1]] = dict(h[args[0]]); data[args[1]] = data[args[0]]
elif action == "unpack":        # TENSOR: packed U8 [P, in] -> BF16 ternary [4P, in]
    t = args[0]; p, k = h[t]["shape"]; src = data[t]
    bits = {0: b"\x80\xbf", 1: b"\x00\x00", 2: b"\x80\x3f"}   # -1, 0, +1
    out = bytearray()
    for i in range(4):
        for r in range(p):
            out += b"".join(bits[(src[r * k + c] >> (2 * i)) & 3] for c in range(k))
    h[t] = {"dtype": "BF16", "shape": [4 * p, k]}; data[t] = out
elif action == "bf16":          # TENSOR INDEX HEX16: one element's bits
    struct.pack_into("<H", data[args[0]], 2 * int(args[1]), int(args[2], 16))
save(h, data)
