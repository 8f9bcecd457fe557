#!/usr/bin/env python3
"""Reproduction check of the committed demo model (not part of make check:
it retrains, 20-40 minutes on one core).

Runs the exact training command recorded in models/demo.cmd into a
temporary directory, then evaluates the new file with the numpy reference on
the token sequences of models/demo.prompts.txt and compares its logits with
models/demo.ref.bin by the golden rules (per position max relative error
<= 1e-2, median <= 1e-4, argmax identical).  Also says whether the two files
are bitwise identical.

Usage: python3 tools/train/reproduce.py [--model NEW.gguf]   (--model: skip training)
"""

import argparse
import hashlib
import os
import shlex
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import ref  # noqa: E402

MODELS = os.path.join(TOP, "models")


def read_ref_bins(path):
    out = []
    with open(path, "rb") as f:
        while True:
            h = f.read(8)
            if not h:
                break
            n, v = np.frombuffer(h, dtype="<i4")
            out.append(np.frombuffer(f.read(4 * int(n) * int(v)), dtype="<f4").reshape(n, v))
    return out


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="an already retrained file")
    args = ap.parse_args()

    new = args.model
    if not new:
        tmp = tempfile.mkdtemp(prefix="bitnet-demo-")
        new = os.path.join(tmp, "demo.gguf")
        with open(os.path.join(MODELS, "demo.cmd")) as f:
            cmd = [l for l in f.read().splitlines() if l and not l.startswith("#")][0]
        argv = shlex.split(cmd)
        # the committed command writes models/demo.gguf: redirect it
        argv[argv.index("--out") + 1] = new
        argv = [sys.executable if a in ("python3", "/usr/bin/python3") else a for a in argv]
        print("running:", " ".join(argv), flush=True)
        subprocess.run(argv, cwd=TOP, check=True)

    m = ref.Model(new)
    refs = read_ref_bins(os.path.join(MODELS, "demo.ref.bin"))
    ok = True
    with open(os.path.join(MODELS, "demo.prompts.txt")) as f:
        lines = [l.rstrip("\n").split("\t") for l in f if l.strip()]
    for (name, toks, text, _cont), want in zip(lines, refs):
        got = m.forward([int(t) for t in toks.split(",")])
        mx, med, top = ref.compare(got, want)
        good = mx <= 1e-2 and med <= 1e-4 and top == want.shape[0]
        ok &= good
        print("%s %-8s max_rel=%.2e median_rel=%.2e top1=%d/%d"
              % ("PASS" if good else "FAIL", name, mx, med, top, want.shape[0]))
    same = sha(new) == sha(os.path.join(MODELS, "demo.gguf"))
    print("new file %s bitwise identical to models/demo.gguf: %s" % (new, "yes" if same else "no"))
    print("reproduction:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
