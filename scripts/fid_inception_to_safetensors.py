#!/usr/bin/python3
# Converts pytorch-fid's FID Inception-v3 weights (pt_inception-2015-12-05-*.pth, a state dict saved by
# torch.save) into the safetensors file diffuse reads: the same tensor names, float32, little-endian.
"""Converts pytorch-fid's FID Inception-v3 weights (pt_inception-2015-12-05-6726825d.pth from
https://github.com/mseitzer/pytorch-fid/releases) into OUT.safetensors for `diffuse eval --features`.
Tensor names are kept as they are in the state dict (Conv2d_1a_3x3.conv.weight, Mixed_5b.branch1x1.bn.
running_var, ..., fc.weight); every float tensor is written as F32; BatchNorm's num_batches_tracked
counters are left out (the network does not use them). A file that does not hold the FID Inception-v3
(for instance torchvision's ImageNet Inception-v3, with 1000 classes and AuxLogits) is refused.
Needs python3-torch (for torch.load) and numpy.
"""
import argparse
import json
import os
import sys

import numpy as np

# Tensors whose presence and shape tell the FID Inception-v3 apart from other networks with the same
# naming scheme (torchvision's Inception3 has fc 1000 x 2048 and usually AuxLogits.*).
ANCHORS = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch_pool.bn.running_var": (192,),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}
PREFIXES = ("Conv2d_", "Mixed_", "fc.")


def refuse(path, why):
    print(f"{path}: not pytorch-fid's FID Inception-v3 weights ({why})", file=sys.stderr)
    sys.exit(1)


def load_state_dict(path):
    import torch  # only here: --help works without torch

    try:
        sd = torch.load(path, map_location="cpu")
    except Exception as e:  # a file torch cannot read: one line, not a traceback
        refuse(path, f"torch.load failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        refuse(path, "not a state dict of tensors")
    return sd


def check(path, sd):
    for name, shape in ANCHORS.items():
        if name not in sd:
            refuse(path, f"no tensor {name}")
        if tuple(sd[name].shape) != shape:
            refuse(path, f"{name} has shape {list(sd[name].shape)}, expected {list(shape)}")
    for name in sd:
        if not name.startswith(PREFIXES):
            refuse(path, f"unexpected tensor {name}")


def to_array(t):
    return np.ascontiguousarray(t.detach().cpu().float().numpy().astype("<f4", copy=False))


def write_safetensors(path, arrays, metadata):
    header, offset = {"__metadata__": metadata}, 0
    for name, a in arrays:
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data section starts 8-byte aligned
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for _, a in arrays:
            f.write(a.tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", metavar="IN.pth", help="pytorch-fid's FID Inception-v3 state dict")
    ap.add_argument("output", metavar="OUT.safetensors", help="the file to write (atomically)")
    a = ap.parse_args()
    if not os.path.isfile(a.input):
        print(f"{a.input}: no such file", file=sys.stderr)
        sys.exit(1)
    sd = load_state_dict(a.input)
    check(a.input, sd)
    arrays = [(k, to_array(v)) for k, v in sd.items() if not k.endswith("num_batches_tracked")]
    meta = {"format": "pt", "source": os.path.basename(a.input), "network": "pytorch-fid FID Inception-v3"}
    write_safetensors(a.output, arrays, meta)
    total = sum(x.size for _, x in arrays)
    print(f"{a.output}: {len(arrays)} tensors, {total} values")


if __name__ == "__main__":
    main()
