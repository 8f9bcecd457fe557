# The exact commands that produced models/demo.gguf and its reference data, run from the top
# of the source tree with Debian 12's python3-torch 1.13.1 and python3-numpy (tools/train/README.md).
/usr/bin/python3 tools/train/train.py --seed 1 --steps 700 --out models/demo.gguf
/usr/bin/python3 tools/train/mkdata.py models/demo.gguf models/demo
