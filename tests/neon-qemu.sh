#!/bin/sh
# Cross-compiles the NEON plugin, the scalar reference and tests/neon-driver.c for aarch64
# (static) and runs the op comparison under qemu-aarch64 (-cpu max: has the dot-product
# extension; the plain ASIMD path is forced by the driver's feature masks).
# Exit 77 (skip) only when the cross compiler or qemu is absent.
: "${top_srcdir:?}"
CC_A64=${AARCH64_CC:-}
QEMU=${QEMU_AARCH64:-}
if [ -z "$CC_A64" ] || ! command -v "$CC_A64" >/dev/null 2>&1; then
	echo "SKIP: no aarch64 cross compiler (AARCH64_CC='$CC_A64')"
	exit 77
fi
if [ -z "$QEMU" ] || ! command -v "$QEMU" >/dev/null 2>&1; then
	echo "SKIP: no qemu-aarch64 (QEMU_AARCH64='$QEMU')"
	exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/neon-qemu.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
flags="-std=gnu11 -O2 -ffp-contract=off -Wall -Wextra -Wno-unused-parameter -I$top_srcdir/include -I$top_srcdir/tests"
set -e
"$CC_A64" $flags -c -o "$tmp/neon.o" "$top_srcdir/plugins/kernel-neon.c"
"$CC_A64" $flags -DBN_KERNEL_BUILTIN -c -o "$tmp/scalar.o" "$top_srcdir/plugins/kernel-scalar.c"
"$CC_A64" $flags -c -o "$tmp/driver.o" "$top_srcdir/tests/neon-driver.c"
"$CC_A64" -static -o "$tmp/neon-driver" "$tmp/driver.o" "$tmp/neon.o" "$tmp/scalar.o" -lm
set +e
"$QEMU" -cpu max "$tmp/neon-driver"
rc=$?
[ $rc -eq 0 ] && echo "PASS: NEON plugin matches scalar under qemu-aarch64" || echo "FAIL: rc $rc"
exit $rc
