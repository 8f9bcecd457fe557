"""Byte-level BPE (gpt2 / llama-bpe) for the demo model: training on the
corpus, encoding, decoding.

Token ids 0-255 are the 256 bytes, written in the GPT-2 byte alphabet
(bytes 0x21-0x7E, 0xA1-0xAC, 0xAE-0xFF keep their code point, the other 68
map in increasing order to U+0100...); then one token per merge, in merge
order; then the four control tokens <|begin_of_text|> <|end_of_text|>
<|eot_id|> <|pad|>, like the golden models.

The pre-tokenizer is the LLaMA-3 pattern.  Python's `re` has no \\p{L} /
\\p{N}, so letters are [^\\W\\d_] and numbers \\d: exact for ASCII text (the
demo corpus is ASCII), an approximation elsewhere.
"""

import re
from collections import Counter

CONTROL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|pad|>"]

_L = r"[^\W\d_]"
_N = r"\d"
_NOT_LN_CRLF = r"(?:[^\r\n\w]|_)"
_NOT_S_LN = r"(?:[^\s\w]|_)"
PRETOK = re.compile(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
    r"|" + _NOT_LN_CRLF + r"?" + _L + r"+"
    r"|" + _N + r"{1,3}"
    r"| ?" + _NOT_S_LN + r"+[\r\n]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+")


def byte_alphabet():
    """byte value -> GPT-2 alphabet character"""
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    m = {}
    nxt = 0x100
    for b in range(256):
        if b in keep:
            m[b] = chr(b)
        else:
            m[b] = chr(nxt)
            nxt += 1
    return m


BYTE2CH = byte_alphabet()
CH2BYTE = {c: b for b, c in BYTE2CH.items()}


def pretokenize(text):
    return PRETOK.findall(text)


def to_alphabet(piece):
    return "".join(BYTE2CH[b] for b in piece.encode("utf-8"))


def train(texts, n_merges):
    """Classic BPE: repeatedly merge the most frequent adjacent pair.
    Ties go to the lexicographically smallest pair, so the result depends
    only on the corpus."""
    words = Counter()
    for t in texts:
        for p in pretokenize(t):
            words[to_alphabet(p)] += 1
    # word -> list of symbols
    seqs = {w: list(w) for w in words}
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for w, cnt in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += cnt
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], _neg(kv[0])))[0]
        merges.append(best)
        a, b = best
        for w in words:
            s = seqs[w]
            if len(s) < 2:
                continue
            out = []
            i = 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return merges


class _neg:
    """Reverse ordering of a tuple of strings, so max() prefers the
    lexicographically smallest pair on equal counts."""
    def __init__(self, v):
        self.v = v

    def __lt__(self, o):
        return self.v > o.v

    def __eq__(self, o):
        return self.v == o.v


class Tokenizer:
    def __init__(self, tokens, merges, token_types, bos, eos, eot, pad, add_bos=True):
        self.tokens = tokens
        self.types = token_types
        self.ids = {t: i for i, t in enumerate(tokens)}
        self.ranks = {tuple(m.split(" ")): r for r, m in enumerate(merges)}
        self.merges = merges
        self.bos, self.eos, self.eot, self.pad = bos, eos, eot, pad
        self.add_bos = add_bos

    @classmethod
    def build(cls, merges):
        """Vocabulary from a merge list: bytes, merges, control tokens."""
        tokens = [BYTE2CH[b] for b in range(256)]
        seen = set(tokens)
        mlist = []
        for a, b in merges:
            mlist.append(a + " " + b)
            if a + b not in seen:
                tokens.append(a + b)
                seen.add(a + b)
        types = [1] * len(tokens)
        n = len(tokens)
        tokens += CONTROL_TOKENS
        types += [3] * 4
        return cls(tokens, mlist, types, n, n + 1, n + 2, n + 3)

    @classmethod
    def from_gguf_kv(cls, kv):
        if kv.get("tokenizer.ggml.model") != "gpt2":
            raise ValueError("tokenizer model %r not supported" % kv.get("tokenizer.ggml.model"))
        return cls(kv["tokenizer.ggml.tokens"], kv.get("tokenizer.ggml.merges", []),
                   kv.get("tokenizer.ggml.token_type", [1] * len(kv["tokenizer.ggml.tokens"])),
                   kv.get("tokenizer.ggml.bos_token_id"), kv.get("tokenizer.ggml.eos_token_id"),
                   kv.get("tokenizer.ggml.eot_token_id"), kv.get("tokenizer.ggml.padding_token_id"),
                   kv.get("tokenizer.ggml.add_bos_token", True))

    def _bpe(self, piece):
        if piece in self.ids:  # llama-bpe ignore_merges: a whole vocab piece is one token
            return [self.ids[piece]]
        s = list(piece)
        while len(s) > 1:
            best = None
            for i in range(len(s) - 1):
                r = self.ranks.get((s[i], s[i + 1]))
                if r is not None and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            i = best[1]
            s = s[:i] + [s[i] + s[i + 1]] + s[i + 2:]
        return [self.ids[x] for x in s]

    def encode(self, text, add_bos=None):
        """Plain text only: control-token strings in the text are not parsed."""
        if add_bos is None:
            add_bos = self.add_bos
        out = [self.bos] if add_bos else []
        for p in pretokenize(text):
            out += self._bpe(to_alphabet(p))
        return out

    def decode(self, ids):
        bs = bytearray()
        for i in ids:
            if self.types[i] == 3:
                continue
            bs += bytes(CH2BYTE[c] for c in self.tokens[i])
        return bs.decode("utf-8", errors="replace")
