# The exact commands that produced models/demo.gguf and its reference data, run from the top
# of the source tree with Debian 12's python3-torch 1.13.1 and python3-numpy (tools/train/README.md).
# nice: training runs on one thread of a shared machine; it does not change the result.
nice /usr/bin/python3 tools/train/train.py --seed 1 --steps 2000 --eval-every 500 --out models/demo.gguf
/usr/bin/python3 tools/train/mkdata.py models/demo.gguf models/demo
