#!/bin/sh
# bitnet convert: Hugging Face BitNetForCausalLM checkpoints made FROM existing GGUFs
# (tools/train/hf_export.py: models/demo.gguf and a `bitnet mkmodel --preset tiny` model, in
# the packed U8 + weight_scale form and in the BF16 master-weight form, one of them sharded)
# (packed: weight_scale multiplying, autobitlinear, and dividing, bitlinear, exactly as
# transformers reads config.json's linear_class)
# convert back to models whose logits are bit-identical to the source's (scalar kernel, so
# that no kernel choice enters), whose tensor data is byte-identical, and which tokenize the
# same; the numpy reference (tools/train/ref.py) on the tiny model's checkpoints agrees with
# the engine. TQ2_0/TQ1_0 output of the tiny model (scales exact in f16) is identical too.
# Then hostile checkpoints: each refused with a message naming the tensor or key, leaving an
# existing output file untouched and no temporary file behind. (LlamaForCausalLM: tests/llama-arch.sh.)
# Without numpy the checks that need an exported checkpoint SKIP; the rest still runs.
set -u
: "${BITNET:?}" "${top_srcdir:?}"
[ -x "$BITNET" ] || { echo "SKIP: $BITNET not built"; exit 77; }
"$BITNET" convert --help >/dev/null 2>&1 || { echo "SKIP: bitnet has no convert verb"; exit 77; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }
ok() { echo "ok: $*"; }

# expect_fail NAME DIR PATTERN...: convert must fail, print every pattern, keep out intact
expect_fail() {
	name=$1 dir=$2
	shift 2
	printf 'previous contents\n' > "$tmp/keep.gguf"
	if "$BITNET" convert "$dir" "$tmp/keep.gguf" > "$tmp/out.txt" 2> "$tmp/err.txt"; then
		bad "$name: conversion succeeded"
		return
	fi
	for p in "$@"; do
		grep -qF -- "$p" "$tmp/err.txt" || bad "$name: '$p' not in: $(cat "$tmp/err.txt")"
	done
	grep -q "Sanitizer" "$tmp/err.txt" && bad "$name: sanitizer report: $(cat "$tmp/err.txt")"
	[ "$(cat "$tmp/keep.gguf")" = "previous contents" ] || bad "$name: existing output changed"
	ls "$tmp"/keep.gguf.tmp-* >/dev/null 2>&1 && bad "$name: temporary file left behind"
	ok "$name refused: $(head -c 300 "$tmp/err.txt")"
}

# ---- without python ---------------------------------------------------------------------
"$BITNET" convert > /dev/null 2>&1 && bad "no arguments accepted"
"$BITNET" convert --type q4_0 a b > /dev/null 2>&1 && bad "--type q4_0 accepted"
expect_fail "missing directory" "$tmp/nothere" "$tmp/nothere/config.json"
mkdir "$tmp/llama"
printf '{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}\n' > "$tmp/llama/config.json"
expect_fail "llama without BitNet quantization" "$tmp/llama" "LlamaForCausalLM" "full-precision"
mkdir "$tmp/noweights"
printf '{"architectures": ["BitNetForCausalLM"], "model_type": "bitnet"}\n' > "$tmp/noweights/config.json"
expect_fail "no weights" "$tmp/noweights" "model.safetensors"

# ---- with numpy ---------------------------------------------------------------------------
PY=
for p in "${PYTHON3:-}" /usr/bin/python3 python3; do
	[ -n "$p" ] && "$p" -c 'import numpy' 2>/dev/null && { PY=$p; break; }
done
if [ -z "$PY" ]; then
	echo "SKIP: no python3 with numpy: the exported-checkpoint checks did not run"
	[ $fail = 0 ] && exit 77
	exit 1
fi
EXPORT="$top_srcdir/tools/train/hf_export.py"
"$BITNET" mkmodel --preset tiny --seed 3 --quiet --out "$tmp/tiny.gguf" || bad "mkmodel"
cp "$top_srcdir/models/demo.gguf" "$tmp/demo.gguf"
TOKS=508,40,41,300,20,7,99,3,200,201,509,255,0,17

logits() {   # MODEL OUT: one sequence, scalar kernel
	"$BITNET" logits --plugin scalar --model "$1" --tokens $TOKS --out "$2" 2> "$tmp/log.txt" ||
		bad "logits $1: $(cat "$tmp/log.txt")"
}

# tensor data and the keys the engine reads: identical to the source
same_tensors() {   # SRC DST
	"$PY" - "$1" "$2" <<'EOF' || bad "tensor data of $2 differs from $1"
import os, sys
sys.path.insert(0, os.environ["top_srcdir"] + "/tools/train")
import gguf
a, b = gguf.GGUFFile(sys.argv[1]), gguf.GGUFFile(sys.argv[2])
assert list(a.tensors) == list(b.tensors), "tensor lists differ"
for n in a.tensors:
    assert a.raw(n) == b.raw(n), "tensor %s differs" % n
unread = {"general.name", "general.quantization_version", "tokenizer.ggml.add_eos_token"}
for k in set(a.kv) | set(b.kv):
    if k not in unread:
        assert a.kv.get(k) == b.kv.get(k), "key %s: %r != %r" % (k, a.kv.get(k), b.kv.get(k))
EOF
}

TEXT='Hello world, the 12 cats<|eot_id|> saturday'
for src in tiny demo; do
	logits "$tmp/$src.gguf" "$tmp/$src.ref.bin"
	ids_ref=$("$BITNET" tokenize --model "$tmp/$src.gguf" --special "$TEXT")
	for form in packed bf16; do
		shards=1 class=autobitlinear
		[ $src = tiny ] && [ $form = packed ] && shards=3
		[ $src = demo ] && class=bitlinear   # demo's f32 scales: 1/w needs F64 for some
		d="$tmp/$src-$form"
		if ! "$PY" "$EXPORT" "$tmp/$src.gguf" "$d" --form $form --shards $shards \
			--linear-class $class 2> "$tmp/err.txt"; then
			bad "export $src $form: $(cat "$tmp/err.txt")"
			continue
		fi
		"$BITNET" convert "$d" "$d.gguf" > "$tmp/out.txt" 2>&1 ||
			{ bad "convert $src $form: $(cat "$tmp/out.txt")"; continue; }
		ok "$(head -1 "$tmp/out.txt")"
		logits "$d.gguf" "$d.bin"
		if cmp -s "$tmp/$src.ref.bin" "$d.bin"; then
			ok "$src $form (shards $shards$([ $form = packed ] && echo ", $class")): logits bit-identical"
		else
			bad "$src $form: logits differ from the source's"
		fi
		same_tensors "$tmp/$src.gguf" "$d.gguf"
		ids=$("$BITNET" tokenize --model "$d.gguf" --special "$TEXT")
		[ "$ids" = "$ids_ref" ] || bad "$src $form: tokens '$ids' != '$ids_ref'"
		# the numpy reference reading the checkpoint itself, as transformers reads it
		[ $src = tiny ] || continue
		if "$PY" "$top_srcdir/tools/train/ref.py" logits "$d" --tokens $TOKS --out "$d.hfref.bin" \
			> /dev/null 2> "$tmp/err.txt"; then
			r=$("$top_builddir/tests/cmp-logits" -q "$tmp/$src.ref.bin" "$d.hfref.bin") &&
				ok "$src $form: engine vs ref.py on the checkpoint: $r" ||
				bad "$src $form: engine vs ref.py on the checkpoint: $r"
		else
			bad "ref.py $d: $(cat "$tmp/err.txt")"
		fi
	done
done
grep -q '"dtype":"F64"' "$tmp/demo-packed/model.safetensors" &&
	ok "demo packed: some weight_scale needed F64 to be exact"

# the TQ types: tiny's scales are exact in f16, so the logits stay identical
for t in tq2_0 tq1_0; do
	if "$BITNET" convert --type $t "$tmp/tiny-bf16" "$tmp/tiny-$t.gguf" > "$tmp/out.txt" 2>&1; then
		logits "$tmp/tiny-$t.gguf" "$tmp/tiny-$t.bin"
		cmp -s "$tmp/tiny.ref.bin" "$tmp/tiny-$t.bin" && ok "tiny --type $t: logits bit-identical" ||
			bad "tiny --type $t: logits differ"
	else
		bad "convert --type $t: $(cat "$tmp/out.txt")"
	fi
done
# demo's f32 scales are rounded to f16 for TQ2_0, and the tool says so
"$BITNET" convert --type tq2_0 "$tmp/demo-packed" "$tmp/demo-tq2.gguf" > "$tmp/out.txt" 2>&1 ||
	bad "demo --type tq2_0: $(cat "$tmp/out.txt")"
grep -q "scales rounded to f16" "$tmp/out.txt" || bad "demo tq2_0: no note on rounded scales"
logits "$tmp/demo-tq2.gguf" "$tmp/demo-tq2.bin"

# ---- hostile checkpoints (python stdlib edits of the tiny exports) -------------------------
# hf_edit.py DIR ACTION...: rewrites DIR/model.safetensors or DIR/config.json
for form in packed bf16; do
	"$PY" "$EXPORT" "$tmp/tiny.gguf" "$tmp/base-$form" --form $form 2> "$tmp/err.txt" ||
		bad "export: $(cat "$tmp/err.txt")"
done
fresh() {   # NAME FORM: a copy of the single-file export of the tiny model
	rm -rf "$tmp/h-$1"
	cp -r "$tmp/base-$2" "$tmp/h-$1"
	echo "$tmp/h-$1"
}
edit() { "$PY" "$top_srcdir/tests/hf_edit.py" "$@" || bad "edit $*"; }

Q=model.layers.0.self_attn.q_proj
d=$(fresh code3 packed); edit "$d" byte $Q.weight 1000 255
expect_fail "packed code 3" "$d" "$Q.weight" "code 3" "not ternary"
d=$(fresh noscale packed); edit "$d" drop $Q.weight_scale
expect_fail "packed without weight_scale" "$d" "$Q.weight" "no $Q.weight_scale"
d=$(fresh missing packed); edit "$d" drop model.layers.1.mlp.ffn_sub_norm.weight
expect_fail "missing tensor" "$d" "model.layers.1.mlp.ffn_sub_norm.weight is missing"
d=$(fresh extra packed); edit "$d" copy model.layers.1.mlp.up_proj.weight model.layers.2.mlp.up_proj.weight
expect_fail "extra layer" "$d" "model.layers.2.mlp.up_proj.weight" "refusing to drop it"
d=$(fresh shape packed); edit "$d" config intermediate_size 768
expect_fail "shape mismatch" "$d" "model.layers.0.mlp.gate_proj.weight" "expected [192, 256]"
d=$(fresh vocab packed); edit "$d" config vocab_size 600
expect_fail "vocab_size lie" "$d" "model.embed_tokens.weight" "expected [600, 256]"
d=$(fresh arch packed); edit "$d" config model_type '"llama"'
expect_fail "model_type llama" "$d" "only BitNetForCausalLM"
d=$(fresh act packed); edit "$d" config hidden_act '"silu"'
expect_fail "silu" "$d" "hidden_act silu"
d=$(fresh rope packed); edit "$d" config rope_scaling '{"type": "linear", "factor": 2.0}'
expect_fail "rope_scaling" "$d" "rope_scaling"
d=$(fresh untied packed); edit "$d" config tie_word_embeddings false
expect_fail "untied without lm_head" "$d" "lm_head.weight is missing"
d=$(fresh nan bf16); edit "$d" bf16 model.layers.1.mlp.down_proj.weight 77 7fc0
expect_fail "NaN master weight" "$d" "model.layers.1.mlp.down_proj.weight" "not finite"
d=$(fresh inf bf16); edit "$d" bf16 model.embed_tokens.weight 5 7c00
expect_fail "inf in the embedding" "$d" "model.embed_tokens.weight" "not finite"
d=$(fresh trunc packed); head -c 5000 "$d/model.safetensors" > "$d/x" && mv "$d/x" "$d/model.safetensors"
expect_fail "truncated safetensors" "$d" "model.safetensors" "past the"
d=$(fresh badtok packed); printf '{"model": {"type": "BPE", "vocab": {"a": 0, "b": 0}}}' > "$d/tokenizer.json"
expect_fail "bad tokenizer.json" "$d" "tokenizer.json" "id 0 is used by both"

# ternary floats beside a weight_scale (autobitlinear after unpacking): same model
d=$(fresh ternary packed); edit "$d" unpack $Q.weight; edit "$d" unpack model.layers.1.mlp.down_proj.weight
if "$BITNET" convert "$d" "$d.gguf" > "$tmp/out.txt" 2>&1; then
	grep -q "from mixed" "$tmp/out.txt" || bad "ternary floats: not reported as mixed: $(cat "$tmp/out.txt")"
	logits "$d.gguf" "$d.bin"
	cmp -s "$tmp/tiny.ref.bin" "$d.bin" && ok "unpacked BF16 ternary + weight_scale: logits identical" ||
		bad "ternary floats: logits differ"
else
	bad "ternary floats: $(cat "$tmp/out.txt")"
fi
edit "$d" bf16 $Q.weight 9 3f00
expect_fail "ternary floats holding 0.5" "$d" "$Q.weight" "element [0][9] = 0.5 is not -1, 0 or +1"

# --tokenizer: tokenizer.json from elsewhere
d=$(fresh tokarg packed); mv "$d/tokenizer.json" "$tmp/elsewhere.json"
expect_fail "no tokenizer.json" "$d" "$d/tokenizer.json"
if "$BITNET" convert --tokenizer "$tmp/elsewhere.json" "$d" "$d.gguf" > "$tmp/out.txt" 2>&1; then
	logits "$d.gguf" "$d.bin"
	cmp -s "$tmp/tiny.ref.bin" "$d.bin" && ok "--tokenizer elsewhere: logits identical" ||
		bad "--tokenizer: logits differ"
else
	bad "--tokenizer: $(cat "$tmp/out.txt")"
fi

# an untied head that is present converts (output.weight) and its logits follow it
d=$(fresh head packed); edit "$d" copy model.embed_tokens.weight lm_head.weight
edit "$d" config tie_word_embeddings false
if "$BITNET" convert "$d" "$d.gguf" > "$tmp/out.txt" 2>&1; then
	grep -q "output.weight" "$tmp/out.txt" || bad "untied head: no note"
	logits "$d.gguf" "$d.bin"
	cmp -s "$tmp/tiny.ref.bin" "$d.bin" && ok "untied copy of the embedding: logits identical" ||
		bad "untied head: logits differ"
else
	bad "untied head: $(cat "$tmp/out.txt")"
fi

# --head q8_0 writes what `bitnet requant --head q8_0` makes of the f16 file, tied or untied
if "$BITNET" convert --head q8_0 "$d" "$d-q8.gguf" > "$tmp/out.txt" 2>&1 &&
	"$BITNET" requant --head q8_0 --quiet "$d.gguf" "$d-rq.gguf" 2>> "$tmp/out.txt"; then
	cmp -s "$d-q8.gguf" "$d-rq.gguf" && ok "untied head --head q8_0: the bytes requant writes" ||
		bad "untied head --head q8_0: differs from requant's file"
else
	bad "untied head --head q8_0: $(cat "$tmp/out.txt")"
fi
if "$BITNET" convert --head q8_0 "$tmp/demo-packed" "$tmp/demo-q8.gguf" > "$tmp/out.txt" 2>&1 &&
	"$BITNET" requant --head q8_0 --quiet "$tmp/demo-packed.gguf" "$tmp/demo-rq.gguf" 2>> "$tmp/out.txt"; then
	grep -q "tied LM head written as output.weight (q8_0)" "$tmp/out.txt" || bad "--head q8_0: no note"
	cmp -s "$tmp/demo-q8.gguf" "$tmp/demo-rq.gguf" && ok "demo --head q8_0: the bytes requant writes" ||
		bad "demo --head q8_0: differs from requant's file"
else
	bad "demo --head q8_0: $(cat "$tmp/out.txt")"
fi
"$BITNET" convert --head q4_0 a b > /dev/null 2>&1 && bad "--head q4_0 accepted"

[ $fail = 0 ] && echo "PASS: convert"
exit $fail
