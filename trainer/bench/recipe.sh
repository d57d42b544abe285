#!/usr/bin/env bash
# The accuracy recipe of issue 2: tcnn-small trained from scratch by `trainer train` and
# by the same recipe in PyTorch (recipe_torch.py), on kth-tips-grey with 128 px fragments
# and on kylberg6 with 256 px fragments. Same split rule, fragment sampling idea,
# optimiser and hyper-parameters; results land in trainer/bench/results/ and a summary
# table is printed. Takes tens of minutes of CPU: run it on a quiet machine.
#
#   make build && bash trainer/bench/recipe.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${BIN:-$ROOT/bin}
DATA=${DATA:-$ROOT/../shared/data}
PY=${PY:-/usr/bin/python3}
RES=${RES:-$ROOT/trainer/bench/results}
THREADS=${THREADS:-2}
EPOCHS=${EPOCHS:-20}
SEED=${SEED:-1}
COMMON=(--model tcnn-small --epochs "$EPOCHS" --batch 32 --lr 0.01 --momentum 0.9 --wd 5e-4 --seed "$SEED"
	--threads "$THREADS" --test-fraction 0.2)
mkdir -p "$RES"

# dataset:fragment size
for job in kth-tips-grey:128 kylberg6:256; do
	ds=${job%%:*}
	size=${job##*:}
	out=$(mktemp -d)
	echo "== go $ds ($size px)" >&2
	"$BIN/trainer" train --data "$DATA/$ds" --size "$size" --progress log --out "$out" "${COMMON[@]}"
	cp "$out/metrics.json" "$RES/$ds-go.json"
	echo "== torch $ds ($size px)" >&2
	"$PY" "$ROOT/trainer/bench/recipe_torch.py" --data "$DATA/$ds" --size "$size" --out "$RES/$ds-torch.json" "${COMMON[@]}"
	rm -rf "$out"
done

"$PY" - "$RES" <<'PYEOF'
import json, os, sys
res = sys.argv[1]
print("%-14s %-6s %10s %10s %12s %9s" % ("dataset", "engine", "fragment", "image", "train s", "samples/s"))
for ds in ("kth-tips-grey", "kylberg6"):
    acc = {}
    for eng in ("go", "torch"):
        p = os.path.join(res, "%s-%s.json" % (ds, eng))
        if not os.path.exists(p):
            continue
        r = json.load(open(p))
        acc[eng] = (r["fragment_level"]["accuracy"], r["image_level"]["accuracy"])
        print("%-14s %-6s %10.4f %10.4f %12.1f %9.1f" % (ds, eng, acc[eng][0], acc[eng][1], r["train_seconds"], r["train_samples_per_s"]))
    if len(acc) == 2:
        print("%-14s %-6s %+10.2f %+10.2f   (points, go - torch)" % (ds, "diff", 100 * (acc["go"][0] - acc["torch"][0]), 100 * (acc["go"][1] - acc["torch"][1])))
PYEOF
