#!/bin/sh
# Norm diagnostics, gates, the gamma rescale and strict mode (tests/ln_stats.py).
command -v python3 >/dev/null 2>&1 || { echo "SKIP: python3 not installed"; exit 77; }
exec python3 "$top_srcdir/tests/ln_stats.py"
