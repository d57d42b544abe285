"""Turns bench.sh's JSON lines into the table of engines, ratios and goals.

Usage: python3 table.py lines.jsonl

Every line is {"label": "<engine> <path> [<model>]", "load": "...", "result": {...}}.
Rates keep each engine's best round; peak RSS its largest. Every ratio compares
engines of the same run, so load from elsewhere on the machine cancels as far as it
can: read the ratios, not the absolute figures.
"""
import json
import sys

RATES = ("train_samples_per_s", "infer_samples_per_s", "gflops", "infer_gflops", "mean_gflops")


def load(path):
    best, loads, isa, rounds = {}, [], {}, {}
    for raw in open(path):
        r = json.loads(raw)
        parts = r["label"].split(" ")
        if parts[0] == "torch-isa":
            isa[parts[1]] = r["result"]["isa"]
            continue
        key = tuple(parts)
        rounds[key] = rounds.get(key, 0) + 1
        if r.get("load"):
            loads.append(float(r["load"].split()[0]))
        b = best.setdefault(key, {})
        for k, v in r["result"].items():
            if k in RATES and isinstance(v, (int, float)) and k in b:
                b[k] = max(b[k], v)
            elif k == "peak_rss_mb" and k in b:
                b[k] = max(b[k], v)
            else:
                b[k] = v
    return best, loads, isa, rounds


def fmt(v, spec="%.1f"):
    return spec % v if isinstance(v, (int, float)) else "-"


def ratio(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return a / b
    return None


def main():
    best, loads, isa, rounds = load(sys.argv[1])
    paths = []
    for key in best:
        if key[1] not in paths:
            paths.append(key[1])
    models = []
    for key in best:
        if len(key) == 3 and key[2] not in models:
            models.append(key[2])
    n = max(rounds.values()) if rounds else 0
    print()
    print("best of %d round(s) per engine; 1-minute load average during the run %s" % (
        n, "%.1f-%.1f" % (min(loads), max(loads)) if loads else "unknown"))
    for p in paths:
        if p in isa:
            print("PyTorch on path %s: oneDNN isa %s" % (p, isa[p] or "unknown"))

    print()
    print("sgemm, n x n, %s threads" % next((b.get("threads") for k, b in best.items() if k[0].startswith("sgemm")), "-"))
    print("%-7s %-7s %9s %9s %-10s %-8s %8s" % ("path", "engine", "best", "mean", "blas core", "kernel", "x blas"))
    sgemm = {}
    for p in paths:
        blas = best.get(("sgemm-blas", p), {})
        # Engines report their mean rate over the measuring time, so the reference
        # is the BLAS's mean rate too (the best single call is shown beside it).
        sgemm[p] = blas.get("mean_gflops")
        for eng in ("blas", "packed"):
            e = best.get(("sgemm-" + eng, p))
            if not e:
                continue
            r = ratio(e.get("mean_gflops"), blas.get("mean_gflops"))
            print("%-7s %-7s %9s %9s %-10s %-8s %8s" % (p, eng, fmt(e.get("gflops")), fmt(e.get("mean_gflops")),
                                                     e.get("blas_core", "-"), e.get("kernel", "-"), fmt(r, "%.2f")))

    print()
    print("models: samples/s; GFLOP/s training (backward = 2x forward) and inference; x torch and")
    print("x ort are rates over the peer's on the same path; x sgemm is GFLOP/s over that path's BLAS sgemm (mean)")
    hdr = ("model", "path", "engine", "train/s", "infer/s", "trGF/s", "inGF/s", "rss MB", "kernels",
           "tr x torch", "in x torch", "in x ort", "tr x sgemm", "in x sgemm")
    print("%-10s %-6s %-9s %8s %8s %7s %7s %7s %-34s %10s %10s %8s %10s %10s" % hdr)
    goals = []
    for m in models:
        for p in paths:
            torch = best.get(("torch", p, m), {})
            ort = best.get(("ort", p, m), {})
            for eng in ("torch", "go", "go-purego", "ort"):
                e = best.get((eng, p, m))
                if not e:
                    continue
                if eng == "go" or eng == "go-purego":
                    kern = "%s conv=%s blas=%s" % (e.get("kernel", "?"), e.get("conv", "?"), e.get("blas_core", "?"))
                elif eng == "torch":
                    kern = "onednn=%s" % (isa.get(p) or "?")
                else:
                    kern = "ort-%s" % e.get("ort_version", "?")
                print("%-10s %-6s %-9s %8s %8s %7s %7s %7s %-34s %10s %10s %8s %10s %10s" % (
                    m, p, eng, fmt(e.get("train_samples_per_s")), fmt(e.get("infer_samples_per_s")),
                    fmt(e.get("gflops")), fmt(e.get("infer_gflops")), fmt(e.get("peak_rss_mb")), kern[:34],
                    fmt(ratio(e.get("train_samples_per_s"), torch.get("train_samples_per_s")), "%.2f"),
                    fmt(ratio(e.get("infer_samples_per_s"), torch.get("infer_samples_per_s")), "%.2f"),
                    fmt(ratio(e.get("infer_samples_per_s"), ort.get("infer_samples_per_s")), "%.2f"),
                    fmt(ratio(e.get("gflops"), sgemm.get(p)), "%.2f"),
                    fmt(ratio(e.get("infer_gflops"), sgemm.get(p)), "%.2f")))
            go = best.get(("go", p, m), {})
            pg = best.get(("go-purego", p, m), {})
            if p == "avx512":
                goals.append(("%s avx512: training GFLOP/s / sgemm peak" % m, ratio(go.get("gflops"), sgemm.get(p)), 0.8))
                goals.append(("%s avx512: inference / ONNX Runtime" % m, ratio(go.get("infer_samples_per_s"), ort.get("infer_samples_per_s")), 0.95))
            if p == "avx2":
                goals.append(("%s avx2: training / PyTorch-AVX2" % m, ratio(go.get("train_samples_per_s"), torch.get("train_samples_per_s")), 1.2))
                goals.append(("%s avx2: training GFLOP/s / Haswell sgemm" % m, ratio(go.get("gflops"), sgemm.get(p)), 0.7))
            goals.append(("%s %s: pure-Go / cgo training" % (m, p), ratio(pg.get("train_samples_per_s"), go.get("train_samples_per_s")), 0.9))
            goals.append(("%s %s: pure-Go / cgo inference" % (m, p), ratio(pg.get("infer_samples_per_s"), go.get("infer_samples_per_s")), 0.9))
    for p in paths:
        go = best.get(("go", p, "tcnn-small"))
        if go and isinstance(go.get("peak_rss_mb"), (int, float)):
            goals.append(("tcnn-small %s: 150 MB / peak RSS training" % p, 150 / go["peak_rss_mb"], 1.0))

    print()
    print("goals (ratio of this run, target, verdict)")
    for name, v, want in goals:
        if v is None:
            verdict, shown = "not measured", "-"
        else:
            verdict, shown = ("met" if v >= want else "NOT met"), "%.2f" % v
        print("  %-48s %6s  >= %-5s %s" % (name, shown, want, verdict))


if __name__ == "__main__":
    main()
