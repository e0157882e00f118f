#!/usr/bin/env bash
# The one script for the GPU machine: records the device, runs ctest (label gpu by default:
# CI runs the rest), the kernel benchmarks, train_bench's default cases and the
# PyTorch comparison, and writes JSON results plus raw logs into OUTDIR.
#
# Plan (why it looks like this):
#  - The GPU machine (device tool) gets a copy of the repo and nothing else; it has nvcc,
#    cmake, ninja, python3 with PyTorch, but no GoogleTest / Google Benchmark / CLI11 /
#    OpenBLAS. So we build HERE for sm_90 with tools/gpu/prepare_carry.sh, which packs the
#    executables, the CTest files (tests already discovered) and the missing shared
#    libraries into build-gpu-carry/bundle.tar.xz (well under the 64 MiB carry limit), and
#    this script unpacks it there into build-gpu/ and sets LD_LIBRARY_PATH (bundle libs, then
#    the machine's CUDA, cuBLAS and cuDNN, found under /usr/local/cuda* or PyTorch's
#    nvidia-* wheels). The alternative, building there, needs the GoogleTest sources
#    (/usr/src/googletest) and Google Benchmark carried too and costs device minutes.
#  - The device tool returns at most 8 files from $OUT (16 MiB each): this script writes
#    env.json, tests.json, bench.json, train_bench.jsonl, compare_pytorch.json, summary.json
#    and logs.tar.gz (every raw log), 7 files.
#  - One device command runs at most 10 minutes: choose parts with MB_PARTS and run them in
#    separate calls when all of them do not fit (each call returns its own files):
#      MB_PARTS=env,tests            ctest, label gpu (MB_CTEST_ARGS=" ": all labels)
#      MB_PARTS=env,bench,train      kernel benchmarks and train_bench --cases default
#      MB_PARTS=env,compare          bench/compare_pytorch.py
#  - Without a GPU (no nvidia-smi, or no device visible) it degrades: tests run (the gpu
#    ones skip), benchmarks run their CPU variants, train_bench runs --cases cpu-small, the
#    PyTorch comparison is skipped; the JSON files are still written.
#
#  - The budget is about 15 minutes of device time for a whole session, start included, so
#    the run is two calls, each with a fixed share (MB_CALL):
#      MB_CALL=1   env, tests, bench, train   at most 7 minutes (200 + 100 + 120 s)
#      MB_CALL=2   env, compare               at most 5 minutes (280 s, one round)
#    Every part rewrites summary.json and logs.tar.gz in OUTDIR when it ends, so a call cut
#    short still returns what finished.
#  - LD_LIBRARY_PATH (the bundle's libraries, then the machine's CUDA) is given to our own
#    programs only, never to PyTorch's processes, whose wheels carry their own CUDA libraries.
#  - --dry-run proves the script here, without a GPU: it runs against the CPU build
#    (build-cpu, or MB_BUILD) instead of the carried bundle.
#
# Usage: tools/gpu/run_all.sh [--dry-run] OUTDIR
#   here first: tools/gpu/prepare_carry.sh; MB_CALL=1 tools/gpu/run_all.sh --dry-run /tmp/o
#   device tool: run(command='MB_CALL=1 tools/gpu/run_all.sh "$OUT"', carry=["build-gpu-carry"],
#                timeout_s=480), then the same with MB_CALL=2 (timeout_s=360)
# Env: MB_CALL (1 | 2, above), MB_PARTS (default: the call's parts, else all),
#      MB_BUILD (default <repo>/build-gpu; with --dry-run <repo>/build-cpu),
#      MB_TRAIN_CASES (default: default on GPU, cpu-small on CPU), MB_BENCH_MIN_TIME (0.1),
#      MB_BENCH_FILTER (a --benchmark_filter regex), MB_CTEST_ARGS (extra ctest arguments),
#      MB_COMPARE_ARGS (extra compare_pytorch.py arguments), MB_TIMEOUT_<PART> in seconds
#      (TESTS 420, BENCH 300, TRAIN 420, COMPARE 540).
set -uo pipefail

dry_run=0
if [ "${1:-}" = --dry-run ]; then
  dry_run=1
  shift
fi
if [ $# -ne 1 ]; then
  echo "usage: $0 [--dry-run] OUTDIR" >&2
  exit 2
fi
mkdir -p "$1"
out=$(cd "$1" && pwd)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ "$dry_run" = 1 ]; then
  build=${MB_BUILD:-$repo/build-cpu}
else
  build=${MB_BUILD:-$repo/build-gpu}
fi
case "${MB_CALL:-}" in
  1)
    default_parts=env,tests,bench,train
    : "${MB_TIMEOUT_TESTS:=200}" "${MB_TIMEOUT_BENCH:=100}" "${MB_TIMEOUT_TRAIN:=120}"
    ;;
  2)
    default_parts=env,compare
    : "${MB_TIMEOUT_COMPARE:=280}" "${MB_COMPARE_ARGS:=--rounds 1}"
    ;;
  "") default_parts=env,tests,bench,train,compare ;;
  *)
    echo "MB_CALL=${MB_CALL} is not 1 or 2" >&2
    exit 2
    ;;
esac
parts=",${MB_PARTS:-$default_parts},"
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
status_file="$logs/status.tsv"
: >"$status_file"

log() { echo "[run_all $(date -u +%H:%M:%S)] $*" | tee -a "$logs/run_all.log" >&2; }
want() { [[ "$parts" == *",$1,"* ]]; }
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$status_file"; }  # part rc note

# --- the build: unpack the carried bundle -------------------------------------------------
bundle="$repo/build-gpu-carry/bundle.tar.xz"
if [ "$dry_run" = 0 ] && [ -f "$bundle" ] && [ ! -e "$build/bench/train_bench" ]; then
  log "unpacking $bundle"
  tar -C "$(dirname "$build")" -xJf "$bundle"
  if [ "$(basename "$build")" != build-gpu ]; then mv "$(dirname "$build")/build-gpu" "$build"; fi
fi
if [ ! -d "$build" ]; then
  log "no build at $build and no bundle at $bundle: run tools/gpu/prepare_carry.sh here and" \
    "carry build-gpu-carry"
  exit 2
fi
# The tests and CTest files name the checkout and build paths of the machine that built
# them; make those paths lead here.
for pair in ".mb_source_dir:$repo" ".mb_build_dir:$build"; do
  recorded=$(cat "$build/${pair%%:*}" 2>/dev/null || true)
  here=${pair#*:}
  if [ -n "$recorded" ] && [ "$recorded" != "$here" ] && [ ! -e "$recorded" ]; then
    mkdir -p "$(dirname "$recorded")" 2>/dev/null &&
      ln -s "$here" "$recorded" 2>/dev/null &&
      log "linked $recorded -> $here" ||
      log "warning: cannot link $recorded -> $here; tests reading data files may fail"
  fi
done
# A discovery that must rerun here uses the carried GoogleTestAddTests.cmake.
if [ -f "$build/lib/GoogleTestAddTests.cmake" ]; then
  find "$build" -name '*_include.cmake' -exec sed -i \
    "s|include(\"[^\"]*/GoogleTestAddTests.cmake\")|include(\"$build/lib/GoogleTestAddTests.cmake\")|" {} +
fi

# --- libraries -------------------------------------------------------------------------------
library_path="$build/lib"
for dir in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$dir" ] && library_path="$library_path:$dir"
done
# cuDNN 9, cuBLAS 13 and NCCL 2 (loaded with dlopen by the NCCL reducer's GPU test) where
# the system has none: PyTorch's nvidia-* wheels.
have_library() {
  local dir dirs
  IFS=: read -ra dirs <<<"$library_path"
  for dir in "${dirs[@]}"; do [ -e "$dir/$1" ] && return 0; done
  ldconfig -p 2>/dev/null | grep -q "$1 "
}
for name in libcudnn.so.9 libcublas.so.13 libcublasLt.so.13 libcudart.so.13 libnccl.so.2; do
  if ! have_library "$name"; then
    found=$(find /usr/local /opt /usr/lib -name "$name" 2>/dev/null | head -1)
    [ -n "$found" ] && library_path="$library_path:$(dirname "$found")"
  fi
done
ours_library_path="$library_path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
log "LD_LIBRARY_PATH for our programs: $ours_library_path"
# Our programs with the libraries above; everything else (PyTorch) with the machine's own.
ours() { LD_LIBRARY_PATH="$ours_library_path" "$@"; }
train_bench_wrapper="$logs/train_bench"
printf '#!/usr/bin/env bash\nLD_LIBRARY_PATH=%q exec %q "$@"\n' "$ours_library_path" \
  "$build/bench/train_bench" >"$train_bench_wrapper"
chmod +x "$train_bench_wrapper"

# --- environment --------------------------------------------------------------------------
has_gpu=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then has_gpu=1; fi
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || cat "$build/.mb_commit" 2>/dev/null ||
  echo unknown)
built_commit=$(cat "$build/.mb_commit" 2>/dev/null || echo unknown)
export MB_COMMIT="$commit"
date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)
device=cpu
[ "$has_gpu" = 1 ] && device=cuda
if want env; then
  {
    echo "date: $date_utc"
    echo "commit: $commit (bundle built at $built_commit)"
    uname -a
    if [ "$has_gpu" = 1 ]; then nvidia-smi; else echo "nvidia-smi: not available (no GPU)"; fi
    ours "$build/tools/microbatch" --version 2>&1 || true
    python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)' 2>&1 || true
    ours ldd "$build/bench/train_bench" 2>&1 || true
  } >"$logs/env.log" 2>&1
  record env 0 ""
fi
gpu_query() {
  [ "$has_gpu" = 1 ] && nvidia-smi --query-gpu="$1" --format=csv,noheader 2>/dev/null | head -1
}
python3 - "$out/env.json" <<EOF
import json, sys
json.dump({"date": "$date_utc", "commit": "$commit", "bundle_commit": "$built_commit",
           "has_gpu": bool($has_gpu), "device": "$device",
           "device_name": "$(gpu_query name)" or None,
           "driver": "$(gpu_query driver_version)" or None,
           "memory_total": "$(gpu_query memory.total)" or None,
           "host": "$(uname -srm)"}, open(sys.argv[1], "w"), indent=2)
EOF

# summary.json from the parts recorded so far, and every log: rewritten after each part, so a
# call cut short by its time limit still returns what finished.
write_results() {
  python3 - "$status_file" "$out/summary.json" "$commit" "$date_utc" "$has_gpu" "$dry_run" <<'EOF'
import json, os, sys
parts = []
for line in open(sys.argv[1]):
    part, rc, note = (line.rstrip("\n").split("\t") + ["", ""])[:3]
    parts.append({"part": part, "returncode": int(rc), "note": note})
with open(sys.argv[2] + ".tmp", "w") as f:
    json.dump({"commit": sys.argv[3], "date": sys.argv[4], "has_gpu": sys.argv[5] == "1",
               "dry_run": sys.argv[6] == "1", "parts": parts,
               "ok": all(p["returncode"] == 0 for p in parts)}, f, indent=2)
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
EOF
  tar -C "$logs" -czf "$out/logs.tar.gz.tmp" . && mv "$out/logs.tar.gz.tmp" "$out/logs.tar.gz"
}

# --- tests ----------------------------------------------------------------------------------
if want tests; then
  # The GPU tests (label gpu) by default: CI runs the rest on every landing, and on two cores
  # here the whole suite outlasts the part's budget. MB_CTEST_ARGS=" " runs every label.
  ctest_args=${MB_CTEST_ARGS:--L gpu}
  log "ctest $ctest_args"
  (cd "$build" && ours timeout "${MB_TIMEOUT_TESTS:-420}" ctest --output-on-failure \
    --output-junit "$logs/ctest_junit.xml" -j "$([ "$has_gpu" = 1 ] && echo 8 || echo 2)" \
    $ctest_args) >"$logs/ctest.log" 2>&1
  rc=$?
  record tests "$rc" ""
  python3 - "$logs/ctest.log" "$logs/ctest_junit.xml" "$out/tests.json" "$rc" <<'EOF'
import json, re, sys
import xml.etree.ElementTree as ET
log_path, junit_path, out_path, rc = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
text = open(log_path, errors="replace").read()
summary = {"returncode": rc}
m = re.search(r"(\d+)% tests passed, (\d+) tests failed out of (\d+)", text)
if m:
    summary.update(passed_percent=int(m.group(1)), failed=int(m.group(2)), total=int(m.group(3)))
summary["failed_tests"] = re.findall(r"^\s*\d+ - (\S+) \((?:Failed|Timeout|SEGFAULT|Subprocess aborted|Not Run)\)",
                                     text, re.M)
try:
    root = ET.parse(junit_path).getroot()
    cases = root.iter("testcase")
    summary["skipped"] = sum(1 for c in cases if c.get("status") == "notrun" or c.find("skipped") is not None)
except (OSError, ET.ParseError):
    pass
json.dump(summary, open(out_path, "w"), indent=2)
EOF
  write_results
fi

# --- kernel benchmarks ------------------------------------------------------------------------
if want bench; then
  deadline=$((SECONDS + ${MB_TIMEOUT_BENCH:-300}))
  for bench in "$build"/bench/*_bench; do
    name=$(basename "$bench")
    # Programs built from bench/<name>_main.cpp (train_bench, loader_bench, ...) are plain
    # programs with flags of their own, not Google Benchmark: train_bench runs in the next
    # part, the others are not kernel benchmarks.
    [ -f "$repo/bench/${name}_main.cpp" ] && continue
    left=$((deadline - SECONDS))
    if [ "$left" -le 5 ]; then
      record "bench:$name" 124 "no time left"
      continue
    fi
    log "$name"
    ours timeout "$left" "$bench" --benchmark_format=json --benchmark_out_format=json \
      --benchmark_out="$logs/$name.json" --benchmark_min_time="${MB_BENCH_MIN_TIME:-0.1}" \
      ${MB_BENCH_FILTER:+--benchmark_filter="$MB_BENCH_FILTER"} >/dev/null 2>"$logs/$name.log"
    record "bench:$name" $? ""
  done
  python3 - "$out/bench.json" "$logs" <<'EOF'
import glob, json, os, sys
combined = {}
for path in sorted(glob.glob(os.path.join(sys.argv[2], "*_bench.json"))):
    try:
        combined[os.path.basename(path)[:-5]] = json.load(open(path))
    except (OSError, ValueError) as error:
        combined[os.path.basename(path)[:-5]] = {"error": str(error)}
json.dump(combined, open(sys.argv[1], "w"), indent=1)
EOF
  write_results
fi

# --- end-to-end training --------------------------------------------------------------------------
if want train; then
  cases=${MB_TRAIN_CASES:-$([ "$has_gpu" = 1 ] && echo default || echo cpu-small)}
  log "train_bench --cases $cases --device $device"
  ours timeout "${MB_TIMEOUT_TRAIN:-420}" "$build/bench/train_bench" --cases "$cases" \
    --device "$device" --commit "$commit" >"$out/train_bench.jsonl" 2>"$logs/train_bench.log"
  record train $? "cases=$cases"
  cp "$out/train_bench.jsonl" "$logs/"
  write_results
fi

# --- PyTorch comparison -----------------------------------------------------------------------
if want compare; then
  if [ "$has_gpu" = 1 ] && python3 -c 'import torch, torchvision' >/dev/null 2>&1; then
    log "compare_pytorch.py"
    PYTHONUNBUFFERED=1 timeout "${MB_TIMEOUT_COMPARE:-540}" python3 "$repo/bench/compare_pytorch.py" \
      --train-bench "$train_bench_wrapper" --commit "$commit" \
      --out "$out/compare_pytorch.json" --log "$logs/compare_pytorch.log" ${MB_COMPARE_ARGS:-} \
      >"$logs/compare_pytorch.stdout" 2>&1
    record compare $? ""
  else
    echo '{"skipped": "no GPU or no PyTorch on this machine"}' >"$out/compare_pytorch.json"
    record compare 0 "skipped: no GPU or no PyTorch"
  fi
  write_results
fi

# --- summary and logs -------------------------------------------------------------------------
write_results
log "results in $out: $(ls "$out" | tr '\n' ' ')"
python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); sys.exit(0 if s["ok"] else 1)' \
  "$out/summary.json"
