#!/usr/bin/env bash
# Speed of the Go engine against its peers on this machine, in one run: PyTorch
# (Debian's python3-torch, trainer/bench/peer_torch.py building the same network from
# the same spec), the Go engine with OpenBLAS (bin/trainer, built by `make build`), the
# Go engine on gonum's pure-Go BLAS (built here with CGO_ENABLED=0 when go is on PATH),
# and ONNX Runtime inference when bin/trainer has bench-ort and $TEXGRID_ORT_LIB exists.
# Each engine runs alone, one after the other, for BENCH_SECONDS (half training, half
# inference). Prints every JSON line, then a table of samples/s and ratios go/torch.
#
#   make build && bash trainer/bench/bench.sh
#   MODELS="tcnn-small" THREADS=2 BATCH=32 SIZE=256 BENCH_SECONDS=10 bash trainer/bench/bench.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${BIN:-$ROOT/bin}
TRAINER=$BIN/trainer
PY=${PY:-/usr/bin/python3}
MODELS=${MODELS:-tcnn-small tcnn3}
PUREGO_MODELS=${PUREGO_MODELS-tcnn-small}
THREADS=${THREADS:-2}
BATCH=${BATCH:-32}
SIZE=${SIZE:-256}
SECS=${BENCH_SECONDS:-10}
REPEAT=${REPEAT:-1} # rounds of all engines; the table keeps each engine's best round
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"

[[ -x $TRAINER ]] || { echo "bench: $TRAINER missing; run make build" >&2; exit 1; }
COMMON=(--batch "$BATCH" --threads "$THREADS" --size "$SIZE" --seconds "$SECS")
LINES=$OUT/lines.jsonl
: >"$LINES"

PUREGO=""
if command -v go >/dev/null && [[ -n $PUREGO_MODELS ]]; then
	PUREGO=$OUT/trainer-purego
	(cd "$ROOT" && CGO_ENABLED=0 go build -o "$PUREGO" ./trainer/cmd/trainer)
fi
HAVE_ORT=""
if grep -q bench-ort <<<"$("$TRAINER" 2>&1)" && [[ -n ${TEXGRID_ORT_LIB:-} && -e ${TEXGRID_ORT_LIB:-} ]]; then
	HAVE_ORT=1
fi

run() { # label, command...
	local label=$1
	shift
	echo "== $label: $*" >&2
	local line
	if line=$("$@"); then
		echo "$line" >&2
		printf '{"label": "%s", "result": %s}\n' "$label" "$line" >>"$LINES"
	else
		echo "bench: $label failed" >&2
	fi
}

for round in $(seq "$REPEAT"); do
for model in $MODELS; do
	run "torch $model" "$PY" "$ROOT/trainer/bench/peer_torch.py" --model "$model" "${COMMON[@]}"
	run "go $model" "$TRAINER" bench --model "$model" "${COMMON[@]}"
	if [[ -n $PUREGO && " $PUREGO_MODELS " == *" $model "* ]]; then
		run "go-purego $model" "$PUREGO" bench --model "$model" "${COMMON[@]}"
	fi
	if [[ -n $HAVE_ORT ]]; then
		run "ort $model" "$TRAINER" bench-ort --onnx-from-spec "$model" --batch "$BATCH" --threads "$THREADS" --size "$SIZE" --seconds "$SECS"
	fi
done
done

"$PY" - "$LINES" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    kind, model = r["label"].split(" ", 1)
    best = by.setdefault(model, {}).setdefault(kind, {})
    for k, v in r["result"].items():
        if k in ("train_samples_per_s", "infer_samples_per_s", "gflops", "infer_gflops") and k in best:
            best[k] = max(best[k], v)
        elif k == "peak_rss_mb" and k in best:
            best[k] = max(best[k], v)
        else:
            best[k] = v
print("\nbest of %d round(s) per engine" % max(1, sum(1 for r in rows if r["label"] == rows[0]["label"])))
print()
print("%-11s %-10s %10s %10s %8s %8s %8s %9s %9s" % ("model", "engine", "train/s", "infer/s", "GFLOP/s", "rss MB", "blas", "train x", "infer x"))
for model, engines in by.items():
    t = engines.get("torch", {})
    def num(v):
        return "%.1f" % v if isinstance(v, (int, float)) else str(v)
    for kind in ("torch", "go", "go-purego", "ort"):
        e = engines.get(kind)
        if not e:
            continue
        def ratio(field):
            if e.get(field) and t.get(field):
                return "%.2f" % (e[field] / t[field])
            return "-"
        print("%-11s %-10s %10s %10s %8s %8s %8s %9s %9s" % (
            model, kind, num(e.get("train_samples_per_s", "-")), num(e.get("infer_samples_per_s", "-")),
            num(e.get("gflops", e.get("infer_gflops", "-"))), num(e.get("peak_rss_mb", "-")), e.get("blas", e.get("ort_version", "-")),
            ratio("train_samples_per_s"), ratio("infer_samples_per_s")))
print("\nratios are engine / torch on the same machine in the same run; GFLOP/s is training (3x forward FLOPs) where trained, else inference")
PYEOF
