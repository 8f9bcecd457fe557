#!/usr/bin/env node
// Generates tests/tokenizer-cases.json: reference token ids from Hugging Face's own tokenizer
// (the Rust library through its Node binding, npm package tokenizers@0.23.2).
//
//   cd /tmp && npm install tokenizers@0.23.2
//   NODE_PATH=/tmp/node_modules node tests/gen-hf-cases.js \
//       tokenizer.json tests/tokenizer-strings.json tests/tokenizer-cases.json
//
// For every string it records two id lists, never with BOS (addSpecialTokens: false):
//   "special": the file as published: HF matches added tokens such as "<|eot_id|>" in the
//              text, which is bitnet's parse_special = true.
//   "plain":   parse_special = false. The Node binding has no split_special_tokens option, so
//              this mode is produced by loading the same tokenizer.json with the added tokens
//              marked "special" removed from added_tokens; their texts are then ordinary text
//              for the pre-tokenizer and BPE, which is what split_special_tokens=True does in
//              Python (non-special added tokens, USER_DEFINED for bitnet, stay matched).
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const { Tokenizer } = require('tokenizers');

async function main() {
  const [tokPath, strPath, outPath] = process.argv.slice(2);
  if (!outPath) {
    console.error('usage: gen-hf-cases.js TOKENIZER.json STRINGS.json OUT.json');
    process.exit(2);
  }
  const raw = fs.readFileSync(tokPath);
  const sha = crypto.createHash('sha256').update(raw).digest('hex');
  const special = Tokenizer.fromString(raw.toString('utf8'));
  const j = JSON.parse(raw.toString('utf8'));
  j.added_tokens = (j.added_tokens || []).filter((t) => !t.special);
  const plain = Tokenizer.fromString(JSON.stringify(j));
  const strings = JSON.parse(fs.readFileSync(strPath, 'utf8'));
  const cases = [];
  for (const text of strings) {
    const a = await special.encode(text, null, { addSpecialTokens: false });
    const b = await plain.encode(text, null, { addSpecialTokens: false });
    cases.push({ text, special: a.getIds(), plain: b.getIds() });
  }
  const out = {
    generator: 'tests/gen-hf-cases.js with npm tokenizers@0.23.2 (Hugging Face tokenizers, Rust)',
    tokenizer_sha256: sha,
    cases,
  };
  // one case per line keeps the file diffable
  const body = cases.map((c) => '  ' + JSON.stringify(c)).join(',\n');
  fs.writeFileSync(outPath, '{\n"generator": ' + JSON.stringify(out.generator) +
    ',\n"tokenizer_sha256": ' + JSON.stringify(sha) + ',\n"cases": [\n' + body + '\n]}\n');
  console.error(`${cases.length} cases written to ${outPath}`);
}

main().catch((e) => { console.error(e); process.exit(1); });
