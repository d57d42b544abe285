#!/usr/bin/python3
"""PyTorch peer of `trainer bench`: builds the identical network from a texgrid model
spec (configs/models/*.json), trains and infers on random data with the same batch,
thread count and fragment size, and prints one JSON line with the same fields.

Run with Debian's PyTorch:  /usr/bin/python3 trainer/bench/peer_torch.py --model configs/models/tcnn-small.json
"""
import argparse
import json
import os
import resource
import sys
import time

import torch
import torch.nn as nn


def build(spec, classes, size):
    """Returns an nn.Sequential equal to the Go engine's network and the forward FLOPs
    per sample (a multiply-add counted as two, as trainer/spec does)."""
    layers = []
    c, h, w = spec.get("input_channels", 1), size, size
    flops = 0
    for l in spec["layers"]:
        t = l["type"]
        if t == "conv":
            k, s, p = l["kernel"], l.get("stride", 1), l.get("pad", 0)
            conv = nn.Conv2d(c, l["filters"], k, stride=s, padding=p)
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers.append(conv)
            h, w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            flops += 2 * l["filters"] * h * w * c * k * k
            c = l["filters"]
        elif t == "relu":
            layers.append(nn.ReLU(inplace=True))
        elif t == "maxpool":
            k = l["kernel"]
            s = l.get("stride", k)
            layers.append(nn.MaxPool2d(k, stride=s))
            h, w = (h - k) // s + 1, (w - k) // s + 1
        elif t == "energy":
            layers.append(nn.AdaptiveAvgPool2d(1))
            layers.append(nn.Flatten())
            h = w = 1
        elif t == "dense":
            units = classes if l["units"] == "classes" else l["units"]
            fc = nn.Linear(c, units)
            nn.init.kaiming_normal_(fc.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(fc.bias)
            layers.append(fc)
            flops += 2 * units * c
            c = units
        elif t == "dropout":
            layers.append(nn.Dropout(l.get("rate", 0.0)))
        else:
            raise SystemExit("unknown layer type %r" % t)
    return nn.Sequential(*layers), flops


def load_spec(arg):
    if os.path.exists(arg):
        path = arg
    else:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        path = os.path.join(root, "configs", "models", arg.removesuffix(".json") + ".json")
    with open(path) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tcnn-small")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--classes", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=10)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    spec = load_spec(a.model)
    net, flops = build(spec, a.classes, a.size)
    opt = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.rand(a.batch, spec.get("input_channels", 1), a.size, a.size) - 0.5
    y = torch.randint(0, a.classes, (a.batch,))
    half = a.seconds / 2

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()

    net.train()
    train_step()  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < half or n == 0:
        train_step()
        n += a.batch
    train_rate = n / (time.perf_counter() - t0)

    net.eval()
    with torch.no_grad():
        net(x)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < half or n == 0:
            net(x)
            n += a.batch
        infer_rate = n / (time.perf_counter() - t0)

    gf = flops / 1e9
    print(json.dumps({
        "engine": "torch-" + torch.__version__,
        "blas": "mkldnn" if torch.backends.mkldnn.is_available() else "native",
        "model": spec["name"], "batch": a.batch, "threads": a.threads, "size": a.size, "classes": a.classes,
        "train_samples_per_s": round(train_rate, 1), "infer_samples_per_s": round(infer_rate, 1),
        "gflops": round(3 * gf * train_rate, 1), "infer_gflops": round(gf * infer_rate, 1),
        "forward_gflop_per_sample": round(gf, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    sys.exit(main())
