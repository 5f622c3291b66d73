#!/usr/bin/python3
# Parity of the C FID Inception-v3 (src/inception*.c) with a float64 PyTorch model of pytorch-fid's network,
# written out here and cross-checked against torchvision's Inception3 where the two agree, random weights.
"""Usage (from the repo root, after `make build/libdiffuse.a`):
    /usr/bin/python3 tests/ref/inception_ref.py [--keep DIR]

1. Builds the FID Inception-v3 in float64 (the blocks of pytorch-fid: FIDInceptionA, FIDInceptionC,
   FIDInceptionE_1, FIDInceptionE_2, with torchvision's stem, InceptionB and InceptionD) with random
   weights and random BatchNorm statistics (positive variances), all float32-representable.
2. Cross-checks it against torchvision's Inception3 (init_weights=False, aux_logits=False,
   transform_input=False) loaded with the same state dict: the stem, Mixed_6a (InceptionB) and Mixed_7a
   (InceptionD) give the same outputs; the A, C and E blocks do too once their FID pooling is switched
   back to torchvision's, and differ with it (so the FID patches are live).
3. Saves the state dict as a .pth (float32, with num_batches_tracked, like a torch.save'd state dict),
   converts it with scripts/fid_inception_to_safetensors.py, and checks that the converter refuses
   torchvision's own Inception3 state dict.
4. Builds tests/ref/inception_features.c against build/libdiffuse.a and compares its features (float64
   and float32 paths) with the float64 model's pool3 features, images preprocessed as pytorch-fid does
   (bilinear resize to 299x299 of images in [0, 1], then 2x - 1), on gray 28x28, RGB 32x32, RGB
   299x299 (no resize) and RGB 320x300 (down-scaling) images.
Exit status 1 on any failure; prints what was compared and the largest differences.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
# the library's link line, as the Makefile has it
LDLIBS = subprocess.run(["make", "-s", "-C", ROOT, "print-LIB_DEPS"], capture_output=True, text=True,
                        check=True).stdout.split()

F64_TOL = 1e-5      # C float64 path vs PyTorch float64: max |diff| / max |ref|
# C float32 path vs PyTorch float64. Each of the 20 layers on the longest path rounds its inputs to float32
# and sums up to 4032 products in float32: measured 1.3e-7 to 1.9e-7 here, and PyTorch's own float32 lands
# at 1.5e-7 to 2.5e-6 (its resize weights are float32). 1e-5 leaves room for unlucky cancellation, while a
# real error (a wrong padding, weight, pool or branch order) moves the features by 1e-2 or more.
F32_TOL = 1e-5
BLOCK_TOL = 1e-12   # this model vs torchvision's, both float64, same weights: the same arithmetic


# ---------------------------------------------------------------------------------------------------
# the FID Inception-v3, in pytorch-fid's state-dict names
# ---------------------------------------------------------------------------------------------------

class BasicConv(nn.Module):
    """Convolution without bias, BatchNorm (eps 0.001, eval mode), ReLU."""

    def __init__(self, cin, cout, k, stride=1, pad=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def pool_branch_input(x, kind):
    """The pool branch's pooling: 'avg_tf' averages only the pixels inside the image (TensorFlow's
    pooling, pytorch-fid's A, C and E_1 patch), 'max' is E_2's 3x3 max pool, 'avg' torchvision's."""
    if kind == "avg_tf":
        return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    if kind == "max":
        return F.max_pool2d(x, 3, stride=1, padding=1)
    return F.avg_pool2d(x, 3, stride=1, padding=1)


class BlockA(nn.Module):
    def __init__(self, cin, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv(cin, 64, 1)
        self.branch5x5_1 = BasicConv(cin, 48, 1)
        self.branch5x5_2 = BasicConv(48, 64, 5, pad=2)
        self.branch3x3dbl_1 = BasicConv(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv(64, 96, 3, pad=1)
        self.branch3x3dbl_3 = BasicConv(96, 96, 3, pad=1)
        self.branch_pool = BasicConv(cin, pool_features, 1)
        self.pool = "avg_tf"

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(pool_branch_input(x, self.pool))
        return torch.cat([a, b, c, d], 1)


class BlockB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = BasicConv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv(64, 96, 3, pad=1)
        self.branch3x3dbl_3 = BasicConv(96, 96, 3, stride=2)

    def forward(self, x):
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class BlockC(nn.Module):
    def __init__(self, cin, c7):
        super().__init__()
        self.branch1x1 = BasicConv(cin, 192, 1)
        self.branch7x7_1 = BasicConv(cin, c7, 1)
        self.branch7x7_2 = BasicConv(c7, c7, (1, 7), pad=(0, 3))
        self.branch7x7_3 = BasicConv(c7, 192, (7, 1), pad=(3, 0))
        self.branch7x7dbl_1 = BasicConv(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv(c7, c7, (7, 1), pad=(3, 0))
        self.branch7x7dbl_3 = BasicConv(c7, c7, (1, 7), pad=(0, 3))
        self.branch7x7dbl_4 = BasicConv(c7, c7, (7, 1), pad=(3, 0))
        self.branch7x7dbl_5 = BasicConv(c7, 192, (1, 7), pad=(0, 3))
        self.branch_pool = BasicConv(cin, 192, 1)
        self.pool = "avg_tf"

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = self.branch7x7dbl_1(x)
        for m in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            c = m(c)
        d = self.branch_pool(pool_branch_input(x, self.pool))
        return torch.cat([a, b, c, d], 1)


class BlockD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = BasicConv(cin, 192, 1)
        self.branch3x3_2 = BasicConv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv(192, 192, (1, 7), pad=(0, 3))
        self.branch7x7x3_3 = BasicConv(192, 192, (7, 1), pad=(3, 0))
        self.branch7x7x3_4 = BasicConv(192, 192, 3, stride=2)

    def forward(self, x):
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_1(x)
        for m in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b = m(b)
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    """pool 'avg_tf': FIDInceptionE_1 (Mixed_7b); 'max': FIDInceptionE_2 (Mixed_7c)."""

    def __init__(self, cin, pool):
        super().__init__()
        self.branch1x1 = BasicConv(cin, 320, 1)
        self.branch3x3_1 = BasicConv(cin, 384, 1)
        self.branch3x3_2a = BasicConv(384, 384, (1, 3), pad=(0, 1))
        self.branch3x3_2b = BasicConv(384, 384, (3, 1), pad=(1, 0))
        self.branch3x3dbl_1 = BasicConv(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv(448, 384, 3, pad=1)
        self.branch3x3dbl_3a = BasicConv(384, 384, (1, 3), pad=(0, 1))
        self.branch3x3dbl_3b = BasicConv(384, 384, (3, 1), pad=(1, 0))
        self.branch_pool = BasicConv(cin, 192, 1)
        self.pool = pool

    def forward(self, x):
        a = self.branch1x1(x)
        t = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(t), self.branch3x3_2b(t)], 1)
        t = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(t), self.branch3x3dbl_3b(t)], 1)
        d = self.branch_pool(pool_branch_input(x, self.pool))
        return torch.cat([a, b, c, d], 1)


class FIDInception(nn.Module):
    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv(32, 64, 3, pad=1)
        self.Conv2d_3b_1x1 = BasicConv(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv(80, 192, 3)
        self.Mixed_5b = BlockA(192, 32)
        self.Mixed_5c = BlockA(256, 64)
        self.Mixed_5d = BlockA(288, 64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b = BlockC(768, 128)
        self.Mixed_6c = BlockC(768, 160)
        self.Mixed_6d = BlockC(768, 160)
        self.Mixed_6e = BlockC(768, 192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b = BlockE(1280, "avg_tf")
        self.Mixed_7c = BlockE(2048, "max")
        self.fc = nn.Linear(2048, 1008)

    def stem(self, x):
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        return F.max_pool2d(x, 3, stride=2)

    def blocks(self):
        return [self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c]

    def pool3(self, x):
        """(N, 2048) pool3 features of network inputs x (N, 3, H, W) in [-1, 1]."""
        x = self.stem(x)
        for b in self.blocks():
            x = b(x)
        return F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)


def pytorch_fid_features(model, images):
    """pytorch-fid's InceptionV3.forward on our images (values in [-1, 1], gray repeated to RGB): back to
    [0, 1], bilinear resize to 299x299 (align_corners=False), 2x - 1, then the network."""
    x = images
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    x = (x + 1) / 2
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    x = 2 * x - 1
    return model.pool3(x)


def randomize(model, gen):
    """He-normal convolutions, BatchNorm weights and variances in [0.5, 1.5], biases and means in
    [-0.2, 0.2]; every value rounded to float32 so the .pth (float32) holds exactly these numbers."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen, dtype=torch.float64) * (2 / fan_in) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=gen, dtype=torch.float64))
                m.bias.copy_(0.4 * torch.rand(c, generator=gen, dtype=torch.float64) - 0.2)
                m.running_mean.copy_(0.4 * torch.rand(c, generator=gen, dtype=torch.float64) - 0.2)
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen, dtype=torch.float64))
                m.num_batches_tracked.fill_(1000)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen, dtype=torch.float64) / 2048 ** 0.5)
                m.bias.zero_()
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.float().double())


def rel(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    scale = float(np.max(np.abs(ref)))
    return float(np.max(np.abs(got - ref))) / (scale if scale > 0 else 1.0)


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, a in tensors:
        a = np.ascontiguousarray(a, dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        blobs.append(a.tobytes())
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + b"".join(blobs))


# ---------------------------------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------------------------------

class Report:
    def __init__(self):
        self.failed = 0

    def check(self, what, err, tol, expect_above=False):
        ok = err > tol if expect_above else err <= tol
        sign = ">" if expect_above else "<="
        print(f"  {'ok  ' if ok else 'FAIL'} {what}: {err:.3g} (want {sign} {tol:.0e})", flush=True)
        self.failed += not ok


def cross_check_torchvision(model, gen, rep):
    import torchvision

    print("== the model against torchvision's Inception3 (same float64 weights)")
    tv = torchvision.models.inception.Inception3(num_classes=1008, aux_logits=False, transform_input=False,
                                                 init_weights=False).double().eval()
    ours = model.state_dict()
    theirs = tv.state_dict()
    same = set(ours) == set(theirs) and all(ours[k].shape == theirs[k].shape for k in ours)
    print(f"  {'ok  ' if same else 'FAIL'} state dicts: {len(ours)} names, the same names and shapes")
    rep.failed += not same
    tv.load_state_dict(ours)

    def rand(*shape):
        return torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1

    with torch.no_grad():
        x = rand(2, 3, 99, 99)
        t = tv.maxpool2(tv.Conv2d_4a_3x3(tv.Conv2d_3b_1x1(tv.maxpool1(
            tv.Conv2d_2b_3x3(tv.Conv2d_2a_3x3(tv.Conv2d_1a_3x3(x)))))))
        rep.check("stem (99x99 input)", rel(model.stem(x), t), BLOCK_TOL)
        for name, cin, size in (("Mixed_6a", 288, 13), ("Mixed_7a", 768, 11)):
            x = torch.relu(rand(2, cin, size, size))
            rep.check(f"{name} ({type(getattr(tv, name)).__name__})",
                      rel(getattr(model, name)(x), getattr(tv, name)(x)), BLOCK_TOL)
        for name, cin in (("Mixed_5b", 192), ("Mixed_6b", 768), ("Mixed_7b", 1280), ("Mixed_7c", 2048)):
            x = torch.relu(rand(2, cin, 9, 9))
            blk, ref = getattr(model, name), getattr(tv, name)(x)
            fid_pool = blk.pool
            rep.check(f"{name} as FID block differs from {type(getattr(tv, name)).__name__} ({fid_pool} pool)",
                      rel(blk(x), ref), 1e-6, expect_above=True)
            blk.pool = "avg"
            rep.check(f"{name} with torchvision's pool", rel(blk(x), ref), BLOCK_TOL)
            blk.pool = fid_pool


def converter_checks(tmp, model, rep):
    print("== scripts/fid_inception_to_safetensors.py")
    conv = os.path.join(ROOT, "scripts", "fid_inception_to_safetensors.py")
    pth = os.path.join(tmp, "pt_inception-random.pth")
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save(sd, pth)
    out = os.path.join(tmp, "inception.safetensors")
    r = subprocess.run([sys.executable, conv, pth, out], capture_output=True, text=True)
    ok = r.returncode == 0 and os.path.isfile(out)
    print(f"  {'ok  ' if ok else 'FAIL'} converts a state dict with {len(sd)} entries: {r.stdout.strip()}"
          f"{r.stderr.strip()}")
    rep.failed += not ok

    import torchvision

    tvp = os.path.join(tmp, "torchvision-inception.pth")
    torch.save(torchvision.models.inception.Inception3(init_weights=False).state_dict(), tvp)
    r = subprocess.run([sys.executable, conv, tvp, os.path.join(tmp, "no.safetensors")], capture_output=True,
                       text=True)
    lines = r.stderr.strip().splitlines()
    ok = r.returncode == 1 and len(lines) == 1 and "not pytorch-fid's FID Inception-v3" in lines[0]
    print(f"  {'ok  ' if ok else 'FAIL'} refuses torchvision's Inception3 (exit {r.returncode}): "
          f"{lines[0] if lines else ''}")
    rep.failed += not ok
    return out


def build_entry_point(tmp):
    lib = os.path.join(ROOT, "build", "libdiffuse.a")
    if not os.path.isfile(lib):
        sys.exit(f"{lib} is missing: run `make build/libdiffuse.a` first")
    exe = os.path.join(tmp, "inception_features")
    cmd = ["cc", "-std=c11", "-O2", "-fopenmp", "-I" + os.path.join(ROOT, "include"), "-I" + os.path.join(ROOT, "src"),
           os.path.join(ROOT, "tests", "ref", "inception_features.c"), lib] + LDLIBS + ["-o", exe]
    subprocess.run(cmd, check=True)
    return exe


def main():
    ap = argparse.ArgumentParser(description="C FID Inception-v3 against float64 PyTorch")
    ap.add_argument("--keep", metavar="DIR", help="keep the weights, images and features in DIR")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    t0 = time.time()
    tmp = a.keep or tempfile.mkdtemp(prefix="diffuse-inception-")
    os.makedirs(tmp, exist_ok=True)
    rep = Report()
    gen = torch.Generator().manual_seed(a.seed)

    model = FIDInception().double().eval()
    randomize(model, gen)
    cross_check_torchvision(model, gen, rep)
    weights = converter_checks(tmp, model, rep)

    # images in [-1, 1], float32 values (the C program reads them as float32)
    groups = [("a_gray28", (3, 1, 28, 28)), ("b_rgb32", (2, 3, 32, 32)), ("c_rgb299", (1, 3, 299, 299)),
              ("d_rgb320x300", (1, 3, 320, 300))]
    images = {name: (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1).float().double()
              for name, shape in groups}
    imgs_path = os.path.join(tmp, "images.safetensors")
    write_safetensors(imgs_path, [(name, images[name].numpy()) for name, _ in groups])

    exe = build_entry_point(tmp)
    out = os.path.join(tmp, "features")
    t1 = time.time()
    subprocess.run([exe, weights, imgs_path, out], check=True)
    t_c = time.time() - t1
    f32 = np.fromfile(out + ".f32", dtype="<f4").reshape(-1, 2048)
    f64 = np.fromfile(out + ".f64", dtype="<f8").reshape(-1, 2048)

    print("== C features against the float64 PyTorch model (pytorch-fid's preprocessing)")
    model32 = FIDInception().float().eval()
    model32.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in model.state_dict().items()})
    row = 0
    with torch.no_grad():
        for name, shape in groups:
            n = shape[0]
            ref = pytorch_fid_features(model, images[name]).numpy()
            t32 = pytorch_fid_features(model32, images[name].float()).numpy()
            what = f"{name} {tuple(shape)}"
            rep.check(f"{what} C float64, max|ref| {np.max(np.abs(ref)):.3g}", rel(f64[row:row + n], ref), F64_TOL)
            rep.check(f"{what} C float32 (PyTorch float32: {rel(t32, ref):.3g})", rel(f32[row:row + n], ref),
                      F32_TOL)
            row += n
    ok = row == f32.shape[0] == f64.shape[0]
    if not ok:
        print(f"  FAIL the C program wrote {f32.shape[0]} and {f64.shape[0]} feature rows, expected {row}")
        rep.failed += 1
    if not a.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"inception parity: {'FAILED' if rep.failed else 'passed'} ({rep.failed} failures; C program "
          f"{t_c:.1f} s, all {time.time() - t0:.0f} s)")
    sys.exit(1 if rep.failed else 0)


if __name__ == "__main__":
    main()
