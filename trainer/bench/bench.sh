#!/usr/bin/env bash
# Speed of the Go engine against its peers on this machine, in one run, on each
# instruction-set path the CPU has:
#
#   avx512  the trainer's AVX-512 kernels; peers: PyTorch (Debian's python3-torch,
#           trainer/bench/peer_torch.py building the same network from the same spec),
#           ONNX Runtime inference (bin/trainer bench-ort, when $TEXGRID_ORT_LIB exists),
#           and OpenBLAS sgemm at n=2048 on the same threads, with the core OpenBLAS
#           picks by itself ($OPENBLAS_CORETYPE and $OPENBLAS_L2_SIZE unset for that
#           command alone): the machine's sgemm peak.
#   avx2    the AVX-512 kernels switched off (TEXGRID_GEMM_ISA=avx2) and OpenBLAS held
#           to its Haswell kernels (OPENBLAS_CORETYPE=Haswell), as on most volunteers'
#           CPUs; peers: PyTorch held to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2,
#           ATEN_CPU_CAPABILITY=avx2, OpenBLAS Haswell) and OpenBLAS sgemm on Haswell
#           kernels.
#
# On each path the Go engine runs twice: built with -tags openblas (bin/trainer, from
# `make build`) and without cgo (built here with CGO_ENABLED=0 when go is on PATH).
# Engines run one at a time, interleaved: every round runs every engine of every path
# once, and the table keeps each engine's best round (REPEAT rounds), so that load
# from elsewhere on a shared machine hits all engines alike and the ratios, all taken
# within this one run, stay meaningful. Every engine says which kernels it ran.
#
#   make build && bash trainer/bench/bench.sh
#   MODELS="tcnn-small" PATHS="avx2" REPEAT=3 BENCH_SECONDS=6 bash trainer/bench/bench.sh
#
# Knobs: MODELS, PUREGO_MODELS, PATHS (default: the paths the CPU has), THREADS, BATCH,
# SIZE, BENCH_SECONDS (per engine, half training and half inference), SGEMM_N,
# SGEMM_SECONDS, REPEAT, BIN, OUT (keeps lines.jsonl and table.txt), SAVE=1 (also
# writes the JSON lines and the tables to trainer/bench/results/<cpu>/bench-<time>.txt,
# one folder per CPU model, for committing; `make bench` sets it).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${BIN:-$ROOT/bin}
TRAINER=$BIN/trainer
PY=${PY:-/usr/bin/python3}
MODELS=${MODELS:-tcnn-small tcnn3}
PUREGO_MODELS=${PUREGO_MODELS-tcnn-small tcnn3}
THREADS=${THREADS:-2}
BATCH=${BATCH:-32}
SIZE=${SIZE:-256}
SECS=${BENCH_SECONDS:-10}
SGEMM_N=${SGEMM_N:-2048}
SGEMM_SECS=${SGEMM_SECONDS:-4}
REPEAT=${REPEAT:-2}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"

[[ -x $TRAINER ]] || { echo "bench: $TRAINER missing; run make build" >&2; exit 1; }
grep -q bench-sgemm <<<"$("$TRAINER" 2>&1)" || { echo "bench: $TRAINER has no bench-sgemm; run make build" >&2; exit 1; }
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
HAVE_TORCH=""
if "$PY" -c 'import torch' 2>/dev/null; then
	HAVE_TORCH=1
fi

# The paths this CPU has: the trainer's best kernel says whether AVX-512 is there.
BEST=$("$TRAINER" bench-sgemm --engine packed --n 64 --seconds 0.001 | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["kernel"])')
if [[ -z ${PATHS:-} ]]; then
	case $BEST in
	avx512) PATHS="avx512 avx2" ;;
	avx2) PATHS="avx2" ;;
	*) PATHS="generic" ;;
	esac
fi

# path_env prints the environment of one path's engines: the trainer's kernels, and
# OpenBLAS's and PyTorch's held to the same instruction set where it is avx2. The
# avx512 path leaves OpenBLAS to the machine's settings, as a volunteer's run would.
path_env() {
	case $1 in
	avx2) echo "TEXGRID_GEMM_ISA=avx2 OPENBLAS_CORETYPE=Haswell ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2" ;;
	generic) echo "TEXGRID_GEMM_ISA=generic" ;;
	*) echo "TEXGRID_GEMM_ISA=$1" ;;
	esac
}

run() { # label, command...
	local label=$1
	shift
	echo "== $label: $*" >&2
	local line
	if line=$("$@"); then
		echo "$line" >&2
		printf '{"label": "%s", "load": "%s", "result": %s}\n' "$label" "$(cut -d' ' -f1-3 /proc/loadavg)" "$line" >>"$LINES"
	else
		echo "bench: $label failed" >&2
	fi
}

echo "bench: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), paths: $PATHS, threads $THREADS, batch $BATCH, $SIZE px, $SECS s per engine, $REPEAT round(s)" >&2
if [[ -n $HAVE_TORCH ]]; then
	for path in $PATHS; do
		# oneDNN names the instruction set it dispatches to.
		isa=$(env $(path_env "$path") ONEDNN_VERBOSE=1 "$PY" -c 'import torch; torch.nn.functional.conv2d(torch.zeros(8, 8, 32, 32), torch.zeros(16, 8, 3, 3))' 2>&1 | grep -m1 'cpu,isa:' | sed 's/.*isa://') || true
		printf '{"label": "torch-isa %s", "result": {"isa": "%s"}}\n' "$path" "$isa" >>"$LINES"
	done
fi

for round in $(seq "$REPEAT"); do
	for path in $PATHS; do
		penv=$(path_env "$path")
		# The sgemm peak: on the avx512 path OpenBLAS picks its core itself, so any
		# core type or L2 size set in the environment is dropped for this command only.
		if [[ $path == avx2 ]]; then
			run "sgemm-blas $path" env -u OPENBLAS_L2_SIZE $penv "$TRAINER" bench-sgemm --engine blas --n "$SGEMM_N" --threads "$THREADS" --seconds "$SGEMM_SECS"
		else
			run "sgemm-blas $path" env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $penv "$TRAINER" bench-sgemm --engine blas --n "$SGEMM_N" --threads "$THREADS" --seconds "$SGEMM_SECS"
		fi
		run "sgemm-packed $path" env $penv "$TRAINER" bench-sgemm --engine packed --n "$SGEMM_N" --threads "$THREADS" --seconds "$SGEMM_SECS"
		for model in $MODELS; do
			if [[ -n $HAVE_TORCH ]]; then
				run "torch $path $model" env $penv "$PY" "$ROOT/trainer/bench/peer_torch.py" --model "$model" "${COMMON[@]}"
			fi
			run "go $path $model" env $penv "$TRAINER" bench --model "$model" "${COMMON[@]}"
			if [[ -n $PUREGO && " $PUREGO_MODELS " == *" $model "* ]]; then
				run "go-purego $path $model" env $penv "$PUREGO" bench --model "$model" "${COMMON[@]}"
			fi
			if [[ -n $HAVE_ORT && $path != avx2 ]]; then
				run "ort $path $model" "$TRAINER" bench-ort --onnx-from-spec "$model" --batch "$BATCH" --threads "$THREADS" --size "$SIZE" --seconds "$SECS"
			fi
		done
	done
done

"$PY" "$ROOT/trainer/bench/table.py" "$LINES" | tee "$OUT/table.txt"

if [[ ${SAVE:-} == 1 ]]; then
	# The folder names the CPU model the way the kernel reports it, with the family,
	# model and stepping numbers that tell apart CPUs a hypervisor gives one name.
	cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | tr -c 'A-Za-z0-9\n' '-' | tr -s '-' | sed 's/^-//; s/-$//')
	fms=$(awk -F': ' '/^cpu family/ {f=$2} /^model\t/ {m=$2} /^stepping/ {s=$2} END {print f "-" m "-" s}' /proc/cpuinfo)
	dir=$ROOT/trainer/bench/results/$cpu-$fms
	mkdir -p "$dir"
	file=$dir/bench-$(date -u +%Y%m%d-%H%M).txt
	{
		echo "# bash trainer/bench/bench.sh, $(date -u '+%Y-%m-%d %H:%M') UTC, commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
		echo "# MODELS=\"$MODELS\" PATHS=\"$PATHS\" THREADS=$THREADS BATCH=$BATCH SIZE=$SIZE BENCH_SECONDS=$SECS SGEMM_N=$SGEMM_N REPEAT=$REPEAT"
		cat "$LINES"
		cat "$OUT/table.txt"
	} >"$file"
	echo "bench: saved $file" >&2
fi
