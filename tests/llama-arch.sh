#!/bin/sh
# Arch llama with ternary projections (no sub-norms, SiLU, interleaved RoPE on q/k rows that
# are stored permuted, as llama.cpp's converter writes them):
#  - synthetic models (bitnet mkmodel --arch llama: GQA, head dims 64 and 128, tied and untied
#    heads) against the independent numpy reference (tools/train/ref.py), one token per call
#    and the whole prompt at once, every usable plugin, at the golden tolerances; both modes
#    bitwise equal; the TQ2_0 / TQ1_0 / F16 forms of one model bitwise equal to its I2_S
#    form; the greedy continuation of `bitnet run` equal to ref.py's; `bitnet inspect` names
#    the arch and its RoPE;
#  - GGUF -> HF LlamaForCausalLM (tools/train/hf_export.py: packed bitlinear and
#    autobitlinear, BF16 master weights, sharded) -> bitnet convert -> GGUF: logits and tensor
#    data bit-identical; ref.py on the HF checkpoint itself (rotate_half on the checkpoint's
#    own rows, no permutation) agrees with the engine, which checks the permutation convention
#    from the other side;
#  - hostile files: llama GGUFs with a sub-norm, an unknown tensor, RoPE scaling or experts;
#    llama checkpoints with a non-ternary weight, a sub-norm, without BitNet quantization,
#    with a projection left full precision, rope_scaling or another activation: each
#    refused, naming the tensor or key.
set -u
: "${BITNET:?}" "${top_srcdir:?}" "${top_builddir:?}"
[ -x "$BITNET" ] || { echo "SKIP: $BITNET not built"; exit 77; }
PY=
for p in "${PYTHON3:-}" /usr/bin/python3 python3; do
	[ -n "$p" ] && "$p" -c 'import numpy' 2>/dev/null && { PY=$p; break; }
done
[ -n "$PY" ] || { echo "SKIP: no python3 with numpy (Debian: python3-numpy)"; exit 77; }
REF="$top_srcdir/tools/train/ref.py"
EXPORT="$top_srcdir/tools/train/hf_export.py"
CMP="$top_builddir/tests/cmp-logits"
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }
ok() { echo "ok: $*"; }

# ---- the engine against the reference ------------------------------------------------------
TOKS=596,40,41,300,20,7,99,3,200,201,509,255,0,17,300,301
mk() {   # NAME ARGS...: a model in $tmp/NAME.gguf
	n=$1
	shift
	"$BITNET" mkmodel --arch llama "$@" --quiet --out "$tmp/$n.gguf" || bad "mkmodel $n $*"
}
mk gqa --hidden 512 --ff 768 --layers 2 --heads 8 --kv-heads 2 --vocab 600 --seed 11
mk untied --untied --hidden 512 --ff 1024 --layers 2 --heads 4 --kv-heads 1 --vocab 600 \
	--seed 12 --rope-base 10000 --eps 1e-6
plugins=$("$BITNET" kernels | awk '$NF == "usable" { print $1 }')
for n in gqa untied; do
	"$PY" "$REF" logits "$tmp/$n.gguf" --tokens $TOKS --out "$tmp/$n.ref.bin" >/dev/null ||
		{ bad "$n: ref.py"; continue; }
	for p in $plugins; do
		for mode in seq batch; do
			"$BITNET" logits --plugin $p --model "$tmp/$n.gguf" --tokens $TOKS --mode $mode \
				--out "$tmp/$n.$p.$mode.bin" 2> "$tmp/err.txt" ||
				{ bad "$n: logits $(cat "$tmp/err.txt")"; continue; }
			if r=$("$CMP" -q "$tmp/$n.$p.$mode.bin" "$tmp/$n.ref.bin"); then
				ok "$n $p $mode vs ref.py: $r"
			else
				bad "$n $p $mode vs ref.py: $r"
			fi
		done
		cmp -s "$tmp/$n.$p.seq.bin" "$tmp/$n.$p.batch.bin" && ok "$n $p: seq == batch bitwise" ||
			bad "$n $p: seq and batch logits differ"
	done
done
for t in tq2_0 tq1_0 f16; do
	mk "gqa-$t" --type $t --hidden 512 --ff 768 --layers 2 --heads 8 --kv-heads 2 --vocab 600 --seed 11
	"$BITNET" logits --plugin scalar --model "$tmp/gqa-$t.gguf" --tokens $TOKS --mode batch \
		--out "$tmp/gqa-$t.bin" || bad "logits gqa-$t"
	cmp -s "$tmp/gqa.scalar.batch.bin" "$tmp/gqa-$t.bin" && ok "gqa $t == i2_s bitwise" ||
		bad "gqa $t: logits differ from i2_s"
done

"$BITNET" inspect "$tmp/gqa.gguf" > "$tmp/inspect.txt" 2>&1 || bad "inspect: $(cat "$tmp/inspect.txt")"
grep -q "^architecture: llama (FFN SiLU, no sub-norms, RoPE interleaved)" "$tmp/inspect.txt" &&
	ok "inspect: $(grep '^architecture' "$tmp/inspect.txt")" || bad "inspect: $(head -3 "$tmp/inspect.txt")"
"$BITNET" inspect --json "$tmp/gqa.gguf" | grep -q '"rope": *"interleaved"' || bad "inspect --json: no rope"

want=$("$PY" "$REF" greedy "$tmp/gqa.gguf" --tokens $TOKS -n 12 | head -n 1)
got=$("$BITNET" run --plugin scalar --model "$tmp/gqa.gguf" --tokens $TOKS --greedy --max-tokens 12 \
	--json 2>/dev/null |
	tail -n 1 | sed -n 's/.*"output_ids":\[\([0-9,]*\)\].*/\1/p')
[ -n "$got" ] && [ "$got" = "$want" ] && ok "bitnet run --greedy == ref.py greedy: $got" ||
	bad "bitnet run --greedy '$got' != ref.py '$want'"
"$BITNET" run --model "$tmp/untied.gguf" --prompt "Hello world" --max-tokens 8 > "$tmp/run.txt" 2>&1 &&
	[ -s "$tmp/run.txt" ] && ok "bitnet run --prompt: $(head -c 60 "$tmp/run.txt" | tr -c '[:print:]' '?')" ||
	bad "bitnet run: $(cat "$tmp/run.txt")"

# ---- GGUF -> HF LlamaForCausalLM -> GGUF ---------------------------------------------------
logits() {   # MODEL OUT: scalar kernel, so that no kernel choice enters
	"$BITNET" logits --plugin scalar --model "$1" --tokens $TOKS --out "$2" 2> "$tmp/log.txt" ||
		bad "logits $1: $(cat "$tmp/log.txt")"
}
same_tensors() {   # SRC DST
	"$PY" - "$1" "$2" <<'EOF' || bad "tensor data of $2 differs from $1"
import os, sys
sys.path.insert(0, os.environ["top_srcdir"] + "/tools/train")
import gguf
a, b = gguf.GGUFFile(sys.argv[1]), gguf.GGUFFile(sys.argv[2])
assert list(a.tensors) == list(b.tensors), "tensor lists differ"
for n in a.tensors:
    assert a.raw(n) == b.raw(n), "tensor %s differs" % n
for k in ("general.architecture", "llama.rope.freq_base", "llama.attention.head_count_kv",
          "llama.attention.layer_norm_rms_epsilon", "llama.rope.dimension_count"):
    assert a.kv.get(k) == b.kv.get(k), "key %s: %r != %r" % (k, a.kv.get(k), b.kv.get(k))
EOF
}
# name: source model, form, shards, linear class
while read -r name src form shards class; do
	logits "$tmp/$src.gguf" "$tmp/$src.scalar.bin"
	d="$tmp/$name"
	"$PY" "$EXPORT" "$tmp/$src.gguf" "$d" --form $form --shards $shards --linear-class $class \
		2> "$tmp/err.txt" || { bad "export $name: $(cat "$tmp/err.txt")"; continue; }
	grep -q '"LlamaForCausalLM"' "$d/config.json" || bad "$name: config.json is not LlamaForCausalLM"
	"$BITNET" convert "$d" "$d.gguf" > "$tmp/out.txt" 2>&1 ||
		{ bad "convert $name: $(cat "$tmp/out.txt")"; continue; }
	ok "$(head -1 "$tmp/out.txt")"
	logits "$d.gguf" "$d.bin"
	cmp -s "$tmp/$src.scalar.bin" "$d.bin" && ok "$name: GGUF -> HF -> GGUF logits bit-identical" ||
		bad "$name: logits differ from the source's"
	same_tensors "$tmp/$src.gguf" "$d.gguf"
	# the checkpoint read as transformers reads it, rotate_half on its own rows
	if "$PY" "$REF" logits "$d" --tokens $TOKS --out "$d.ref.bin" > /dev/null 2> "$tmp/err.txt"; then
		r=$("$CMP" -q "$d.bin" "$d.ref.bin") && ok "$name: engine vs ref.py on the HF checkpoint: $r" ||
			bad "$name: engine vs ref.py on the HF checkpoint: $r"
	else
		bad "ref.py $d: $(cat "$tmp/err.txt")"
	fi
done <<'CASES'
gqa-packed gqa packed 2 bitlinear
gqa-bf16 gqa bf16 1 autobitlinear
untied-packed untied packed 1 autobitlinear
CASES
# the reference on the checkpoint does see a wrong rope convention: NEOX on the GGUF's rows
"$PY" - "$tmp/gqa.gguf" "$tmp/gqa.neox.bin" $TOKS <<'EOF' || bad "neox ref"
import os, sys
sys.path.insert(0, os.environ["top_srcdir"] + "/tools/train")
import ref
m = ref.Model(sys.argv[1])
m.interleaved = False
ref.write_logits(sys.argv[2], m.forward([int(t) for t in sys.argv[3].split(",")]))
EOF
"$CMP" -q "$tmp/gqa.scalar.bin" "$tmp/gqa.neox.bin" > /dev/null &&
	bad "NEOX rope on a llama file passes the comparison: the test cannot see the convention" ||
	ok "NEOX rope on the permuted rows fails the comparison, as it must"

# ---- hostile checkpoints ---------------------------------------------------------------------
expect_fail() {   # NAME DIR PATTERN...: convert must fail naming every pattern
	name=$1 dir=$2
	shift 2
	if "$BITNET" convert "$dir" "$tmp/hostile.gguf" > "$tmp/out.txt" 2> "$tmp/err.txt"; then
		bad "$name: conversion succeeded"
		return
	fi
	for p in "$@"; do
		grep -qF -- "$p" "$tmp/err.txt" || bad "$name: '$p' not in: $(cat "$tmp/err.txt")"
	done
	grep -q "Sanitizer" "$tmp/err.txt" && bad "$name: sanitizer report: $(cat "$tmp/err.txt")"
	ok "$name refused: $(head -c 300 "$tmp/err.txt")"
}
"$PY" "$EXPORT" "$tmp/gqa.gguf" "$tmp/base" --form packed 2> "$tmp/err.txt" || bad "export: $(cat "$tmp/err.txt")"
fresh() { rm -rf "$tmp/h-$1"; cp -r "$tmp/base" "$tmp/h-$1"; echo "$tmp/h-$1"; }
edit() { "$PY" "$top_srcdir/tests/hf_edit.py" "$@" || bad "edit $*"; }
K=model.layers.1.self_attn.k_proj.weight
d=$(fresh code3); edit "$d" byte $K 77 255
expect_fail "non-ternary packed weight" "$d" "$K" "not ternary"
d=$(fresh half); edit "$d" unpack model.layers.0.mlp.up_proj.weight
edit "$d" bf16 model.layers.0.mlp.up_proj.weight 5 3f00
expect_fail "ternary floats holding 0.5" "$d" "model.layers.0.mlp.up_proj.weight" "is not -1, 0 or +1"
d=$(fresh subnorm); edit "$d" copy model.layers.0.input_layernorm.weight model.layers.0.self_attn.attn_sub_norm.weight
expect_fail "llama checkpoint with a sub-norm" "$d" "model.layers.0.self_attn.attn_sub_norm.weight" \
	"not part of a 2-layer LlamaForCausalLM"
d=$(fresh fp); edit "$d" delconfig quantization_config
expect_fail "llama without quantization_config" "$d" "LlamaForCausalLM" "full-precision"
d=$(fresh rope); edit "$d" config rope_scaling '{"rope_type": "llama3", "factor": 8.0}'
expect_fail "llama3 rope_scaling" "$d" "rope_scaling" "llama3"
d=$(fresh act); edit "$d" config hidden_act '"relu2"'
expect_fail "llama with relu2" "$d" "hidden_act relu2"
d=$(fresh keep); edit "$d" config quantization_config \
	'{"quant_method": "bitnet", "modules_to_not_convert": ["lm_head", "model.layers.1.mlp.down_proj"]}'
expect_fail "a projection left full precision" "$d" "modules_to_not_convert" "model.layers.1.mlp.down_proj"
d=$(fresh bias); edit "$d" config attention_bias true
expect_fail "attention bias" "$d" "biases"
d=$(fresh kq); edit "$d" drop model.layers.1.self_attn.q_proj.weight_scale
expect_fail "q_proj without weight_scale" "$d" "model.layers.1.self_attn.q_proj.weight" "no model.layers.1.self_attn.q_proj.weight_scale"

# ---- hostile GGUFs ---------------------------------------------------------------------------
# rewrite.py SRC DST ACTION ARGS: arch NEW (renames the keys) | kv KEY TYPE VALUE | copy SRC DST
cat > "$tmp/rewrite.py" <<'EOF'
import os, sys
sys.path.insert(0, os.environ["top_srcdir"] + "/tools/train")
import gguf
src, dst, action = sys.argv[1:4]
args = sys.argv[4:]
g = gguf.GGUFFile(src)
w = gguf.GGUFWriter(g.kv.get("general.alignment", 32))
old = g.kv["general.architecture"]
for k, v in g.kv.items():
    t, et = g.kv_types[k]
    if action == "arch":
        if k == "general.architecture":
            v = args[0]
        elif k.startswith(old + "."):
            k = args[0] + k[len(old):]
    w.add(k, t, v, et)
if action == "kv":
    t = {"str": gguf.T_STR, "u32": gguf.T_U32, "f32": gguf.T_F32}[args[1]]
    w.add(args[0], t, args[2] if t == gguf.T_STR else (int(args[2]) if t == gguf.T_U32 else float(args[2])))
for n, t in g.tensors.items():
    w.add_tensor(n, t["type"], t["shape"], g.raw(n))
if action == "copy":
    t = g.tensors[args[0]]
    w.add_tensor(args[1], t["type"], t["shape"], g.raw(args[0]))
w.write(dst)
EOF
gguf_fail() {   # NAME FILE PATTERN...: loading must fail naming every pattern
	name=$1 f=$2
	shift 2
	if "$BITNET" logits --model "$f" --tokens 1,2 --out "$tmp/x.bin" > "$tmp/out.txt" 2> "$tmp/err.txt"; then
		bad "$name: loaded"
		return
	fi
	for p in "$@"; do
		grep -qF -- "$p" "$tmp/err.txt" || bad "$name: '$p' not in: $(cat "$tmp/err.txt")"
	done
	grep -q "Sanitizer" "$tmp/err.txt" && bad "$name: sanitizer report: $(cat "$tmp/err.txt")"
	ok "$name refused: $(head -c 300 "$tmp/err.txt")"
}
rw() { "$PY" "$tmp/rewrite.py" "$@" || bad "rewrite $*"; }
"$BITNET" mkmodel --quiet --hidden 256 --ff 256 --layers 1 --heads 2 --kv-heads 1 --vocab 300 \
	--out "$tmp/b158.gguf" || bad "mkmodel bitnet-b1.58"
rw "$tmp/b158.gguf" "$tmp/relabeled.gguf" arch llama
gguf_fail "bitnet-b1.58 file labelled llama" "$tmp/relabeled.gguf" "blk.0.attn_sub_norm.weight" "no sub-norm"
rw "$tmp/gqa.gguf" "$tmp/bias.gguf" copy blk.0.attn_norm.weight blk.0.attn_output.bias
gguf_fail "unknown tensor" "$tmp/bias.gguf" "blk.0.attn_output.bias" "refusing rather than ignoring"
rw "$tmp/gqa.gguf" "$tmp/lead0.gguf" copy blk.1.attn_norm.weight blk.01.attn_norm.weight
gguf_fail "a second spelling of a layer" "$tmp/lead0.gguf" "blk.01.attn_norm.weight"
rw "$tmp/gqa.gguf" "$tmp/ropescale.gguf" kv llama.rope.scaling.type str linear
gguf_fail "rope scaling" "$tmp/ropescale.gguf" "llama.rope.scaling.type" "not supported"
rw "$tmp/gqa.gguf" "$tmp/moe.gguf" kv llama.expert_count u32 8
gguf_fail "experts" "$tmp/moe.gguf" "llama.expert_count" "mixture-of-experts"
rw "$tmp/gqa.gguf" "$tmp/none.gguf" kv llama.rope.scaling.type str none
"$BITNET" logits --model "$tmp/none.gguf" --tokens 1,2 --out "$tmp/x.bin" 2> "$tmp/err.txt" &&
	ok "rope.scaling.type none loads" || bad "rope.scaling.type none: $(cat "$tmp/err.txt")"

[ $fail = 0 ] && echo "PASS: llama-arch"
exit $fail
