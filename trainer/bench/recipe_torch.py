#!/usr/bin/python3
"""The accuracy recipe of `trainer train`, in PyTorch: same network (built from the same
spec by peer_torch.build), same train/test split (texgrid's SplitOf rule), same
fragment sampling idea (every epoch, N fragments: a uniformly random eligible training
image, a uniformly random position), same optimiser and hyper-parameters, same
evaluation (grid fragments with stride size/2 over every test image; fragment-level
accuracy and image-level accuracy of the mean fragment probabilities).

  /usr/bin/python3 trainer/bench/recipe_torch.py --data ../shared/data/kylberg6 --size 256 \
      --epochs 30 --fragments-per-epoch 1920 --out trainer/bench/results/kylberg6-torch.json

Only 8-bit grey, non-interlaced PNG is decoded (what both shipped datasets hold); any
other file is skipped with its reason, as `trainer train` does.
"""
import argparse
import hashlib
import json
import os
import struct
import sys
import time
import zlib

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_torch import build, load_spec  # noqa: E402


def split_of(cls, name, test_fraction):
    """texgrid's data.SplitOf: sha256("texgrid-split/v1\\0" + class + "/" + name), first
    8 bytes big-endian, test when below test_fraction * 2^64."""
    h = hashlib.sha256(("texgrid-split/v1\x00" + cls + "/" + name).encode()).digest()
    return "test" if float(struct.unpack(">Q", h[:8])[0]) < test_fraction * 18446744073709551616.0 else "train"


def read_grey_png(path):
    """Decodes an 8-bit greyscale non-interlaced PNG into a uint8 array [H, W]."""
    with open(path, "rb") as f:
        b = f.read()
    if b[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, w = 8, [], None
    while pos < len(b):
        n, typ = struct.unpack(">I4s", b[pos:pos + 8])
        chunk = b[pos + 8:pos + 8 + n]
        pos += 12 + n
        if typ == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            if depth != 8 or ctype != 0 or interlace != 0:
                raise ValueError("only 8-bit grey non-interlaced PNG is supported")
        elif typ == b"IDAT":
            idat.append(chunk)
        elif typ == b"IEND":
            break
    if w is None:
        raise ValueError("PNG without IHDR")
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8).reshape(h, w + 1)
    out = np.zeros((h, w), dtype=np.uint8)
    prev = np.zeros(w, dtype=np.int32)
    for y in range(h):
        ft, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        if ft == 0:
            cur = line
        elif ft == 1:
            cur = np.cumsum(line) % 256
        elif ft == 2:
            cur = (line + prev) % 256
        elif ft == 3:
            cur = np.empty(w, dtype=np.int32)
            left = 0
            for x in range(w):
                left = (int(line[x]) + ((left + int(prev[x])) >> 1)) & 255
                cur[x] = left
        elif ft == 4:
            cur = np.empty(w, dtype=np.int32)
            a, c = 0, 0
            for x in range(w):
                bb = int(prev[x])
                p = a + bb - c
                pa, pb, pc = abs(p - a), abs(p - bb), abs(p - c)
                pr = a if pa <= pb and pa <= pc else (bb if pb <= pc else c)
                a = (int(line[x]) + pr) & 255
                cur[x] = a
                c = bb
        else:
            raise ValueError("bad PNG filter %d" % ft)
        out[y] = cur
        prev = cur
    return out


def grid_positions(side, size, stride):
    ps, p = [], 0
    while p + size < side:
        ps.append(p)
        p += stride
    ps.append(side - size)
    return ps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default="tcnn-small")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--wd", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--fragments-per-epoch", type=int, default=0)
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--eval-stride", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    stride = a.eval_stride or max(1, a.size // 2)

    classes = sorted(d for d in os.listdir(a.data) if os.path.isdir(os.path.join(a.data, d)) and not d.startswith("."))
    sets = {"train": [], "test": []}
    skipped = []
    for ci, c in enumerate(classes):
        for name in sorted(os.listdir(os.path.join(a.data, c))):
            path = os.path.join(a.data, c, name)
            if name.startswith(".") or not os.path.isfile(path):
                continue
            try:
                img = read_grey_png(path)
            except Exception as e:  # noqa: BLE001 - reported, like trainer train
                skipped.append({"Path": path, "Reason": str(e)})
                continue
            if img.shape[0] < a.size or img.shape[1] < a.size:
                skipped.append({"Path": path, "Reason": "image is %dx%d, smaller than the %dx%d fragment" % (img.shape[1], img.shape[0], a.size, a.size)})
                continue
            sets[split_of(c, name, a.test_fraction)].append((c + "/" + name, ci, img))
    for s in sets.values():
        s.sort(key=lambda t: t[0])
    train, test = sets["train"], sets["test"]
    count = a.fragments_per_epoch or 10 * len(train)
    print("torch recipe: %d classes, %d train / %d test images, %d fragments of %d px per epoch" % (len(classes), len(train), len(test), count, a.size), file=sys.stderr)

    spec = load_spec(a.model)
    net, _ = build(spec, len(classes), a.size)
    opt = torch.optim.SGD(net.parameters(), lr=a.lr, momentum=a.momentum, weight_decay=a.wd)
    loss_fn = nn.CrossEntropyLoss()
    s = a.size
    epochs = []
    t_start = time.time()
    for epoch in range(a.epochs):
        t0 = time.time()
        net.train()
        xs = np.empty((count, 1, s, s), dtype=np.float32)
        ys = np.empty(count, dtype=np.int64)
        for k in range(count):
            _, label, img = train[rng.integers(len(train))]
            y0 = rng.integers(img.shape[0] - s + 1)
            x0 = rng.integers(img.shape[1] - s + 1)
            xs[k, 0] = img[y0:y0 + s, x0:x0 + s] / np.float32(255) - np.float32(0.5)
            ys[k] = label
        order = rng.permutation(count)
        tot, correct = 0.0, 0
        for lo in range(0, count, a.batch):
            idx = order[lo:lo + a.batch]
            x, y = torch.from_numpy(xs[idx]), torch.from_numpy(ys[idx])
            opt.zero_grad(set_to_none=True)
            out = net(x)
            loss = loss_fn(out, y)
            loss.backward()
            opt.step()
            tot += loss.item() * len(idx)
            correct += (out.argmax(1) == y).sum().item()
        e = {"epoch": epoch, "loss": tot / count, "train_accuracy": correct / count, "seconds": time.time() - t0}
        epochs.append(e)
        print("epoch %d/%d: loss %.4f, train accuracy %.4f, %.1f s" % (epoch + 1, a.epochs, e["loss"], e["train_accuracy"], e["seconds"]), file=sys.stderr)
    train_seconds = time.time() - t_start

    net.eval()
    frag_correct = frag_total = img_correct = 0
    n_classes = len(classes)
    confusion = [[0] * n_classes for _ in range(n_classes)]
    with torch.no_grad():
        for _, label, img in test:
            frags = [img[y:y + s, x:x + s] for y in grid_positions(img.shape[0], s, stride) for x in grid_positions(img.shape[1], s, stride)]
            x = torch.from_numpy(np.stack(frags)[:, None].astype(np.float32) / np.float32(255) - np.float32(0.5))
            probs = torch.softmax(net(x), dim=1)
            frag_correct += (probs.argmax(1) == label).sum().item()
            frag_total += len(frags)
            pred = int(probs.double().mean(0).argmax())
            img_correct += pred == label
            confusion[label][pred] += 1
    res = {
        "engine": "torch-" + torch.__version__, "model": spec["name"], "data": os.path.abspath(a.data), "classes": classes,
        "size": a.size, "config": {"Epochs": a.epochs, "BatchSize": a.batch, "LR": a.lr, "Momentum": a.momentum,
                                   "WeightDecay": a.wd, "Seed": a.seed, "Threads": a.threads},
        "fragments_per_epoch": count, "test_fraction": a.test_fraction, "eval_stride": stride,
        "train_images": len(train), "test_images": len(test), "skipped": skipped, "epochs": epochs,
        "train_seconds": train_seconds, "train_samples_per_s": a.epochs * count / train_seconds,
        "fragment_level": {"accuracy": frag_correct / frag_total, "samples": frag_total},
        "image_level": {"accuracy": img_correct / len(test), "samples": len(test), "confusion": confusion},
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print("test: fragment accuracy %.4f (%d fragments), image accuracy %.4f (%d images)" % (res["fragment_level"]["accuracy"], frag_total, res["image_level"]["accuracy"], len(test)), file=sys.stderr)


if __name__ == "__main__":
    main()
