#!/bin/sh
# Whole-network parity of the C U-Net with an independent float64 PyTorch reference (Debian's
# python3-torch). Run from the repo root after `make build/diffuse`. Exit status non-zero on any failure.
set -u
PY=/usr/bin/python3
BIN=${DIFFUSE_BIN:-build/diffuse}

status=0
echo "== reference self-check against ../shared/golden"
"$PY" tests/ref/parity.py --selfcheck || status=1
echo "== parity on random configs ($BIN)"
"$PY" tests/ref/parity.py --count 12 --bin "$BIN" || status=1
echo "== UNet2DConditionModel against a float64 PyTorch model ($BIN)"
"$PY" tests/ref/cond_parity.py --bin "$BIN" || status=1
echo "== FID Inception-v3 against float64 PyTorch (build/libdiffuse.a)"
"$PY" tests/ref/inception_ref.py || status=1
echo "== FD, KID and precision/recall against NumPy/SciPy/PyTorch (build/libdiffuse.a)"
"$PY" tests/ref/metrics_ref.py || status=1
exit $status
