#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz (build-fuzz: clang, ASan, UBSan, CPU backend)
# and runs each for SECONDS (default 30; CI uses 30, run it for an hour or a night by hand)
# on a scratch copy of its seed corpus: tests/fuzz/corpus/<target>/ is never grown; the
# grown corpus is left in <out>/<target>/corpus. Prints per target the executions, exec/s,
# the final coverage (cov: edges, ft: features) and the corpus size. Exits 1 when any target
# reports a crash, leak, timeout or out-of-memory, naming the reproducer; rerun one with
#   build-fuzz/tests/fuzz/<target> <reproducer>
# Installs clang, libFuzzer's runtime and llvm-symbolizer (Debian packages) when missing.
# Environment: MB_FUZZ_BUILD_DIR (build-fuzz), MB_FUZZ_JOBS (build jobs, nproc),
# MB_FUZZ_TARGETS (space-separated subset), MB_FUZZ_PARALLEL (targets fuzzed at once, 1;
# each is one process on one core), MB_FUZZ_RSS_MB (memory limit per input, 2048),
# MB_FUZZ_OUT (where runs go, <build>/fuzz-runs).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: tools/run_fuzz.sh [SECONDS]  (seconds per target, default 30)" >&2
  exit 2
fi
build_dir="${MB_FUZZ_BUILD_DIR:-build-fuzz}"
jobs="${MB_FUZZ_JOBS:-$(nproc)}"
read -r -a targets <<< "${MB_FUZZ_TARGETS:-idx_fuzz fashion_mnist_fuzz cifar10_fuzz safetensors_fuzz image_fuzz}"
parallel="${MB_FUZZ_PARALLEL:-1}"
rss_mb="${MB_FUZZ_RSS_MB:-2048}"
out_root="${MB_FUZZ_OUT:-$build_dir/fuzz-runs}"

# Note: a probe link is the only reliable check. Debian's clang package does not depend on
# libFuzzer's and the sanitizers' runtime (libclang-rt-dev) nor on llvm-symbolizer (llvm),
# without which a finding's stack is bare addresses.
toolchain_works() {
  local probe
  probe="$(mktemp -d)"
  printf '%s\n' '#include <cstddef>' '#include <cstdint>' \
    'extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t*, std::size_t) { return 0; }' \
    > "$probe/probe.cpp"
  local ok=0
  clang++ -fsanitize=fuzzer,address,undefined "$probe/probe.cpp" -o "$probe/probe" \
    > /dev/null 2>&1 && command -v llvm-symbolizer > /dev/null || ok=1
  rm -rf "$probe"
  return $ok
}
if ! command -v clang++ > /dev/null || ! toolchain_works; then
  echo "run_fuzz: installing clang, libclang-rt-dev (libFuzzer) and llvm (llvm-symbolizer)"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    clang libclang-rt-dev llvm
  toolchain_works || { echo "run_fuzz: clang++ -fsanitize=fuzzer still does not link" >&2; exit 1; }
fi

if [ ! -f "$build_dir/build.ninja" ]; then
  launcher=()
  command -v ccache > /dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  # -O1 -g without NDEBUG: library assertions stay on and reports have line numbers.
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DMB_FUZZ=ON \
    -DMB_WITH_CUDA=OFF -DMB_BUILD_TESTS=OFF -DMB_BUILD_BENCH=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g" \
    "${launcher[@]}" > "$build_dir.configure.log" 2>&1 ||
    { cat "$build_dir.configure.log"; exit 1; }
fi
build_start=$(date +%s)
cmake --build "$build_dir" -j "$jobs" --target "${targets[@]}"
echo "run_fuzz: build $(($(date +%s) - build_start)) s"

# Leaks are findings; UBSan stops at the first report (also compiled in: no recover).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

dict_of() {
  case "$1" in
    idx_fuzz | fashion_mnist_fuzz) echo tests/fuzz/idx.dict ;;
    safetensors_fuzz) echo tests/fuzz/safetensors.dict ;;
  esac
}

# One target: fuzz it, then write one table row to <run_dir>/row and the report lines (for a
# failure) to <run_dir>/report.
fuzz_one() {
  local target="$1" run_dir="$out_root/$1"
  rm -rf "$run_dir"
  mkdir -p "$run_dir/corpus" "$run_dir/artifacts"
  cp tests/fuzz/corpus/"$target"/* "$run_dir/corpus/"
  local dict options=()
  dict="$(dict_of "$target")"
  [ -n "$dict" ] && options+=("-dict=$dict")
  local log="$run_dir/fuzz.log" status=0 start
  start=$(date +%s)
  # -timeout: one input running 10 s is a hang (each takes milliseconds); -rss_limit_mb also
  # sets the per-allocation limit, so a gzip bomb shows as an oom- finding, not a dead CI.
  "$build_dir/tests/fuzz/$target" -max_total_time="$seconds" -rss_limit_mb="$rss_mb" \
    -timeout=10 -print_final_stats=1 -artifact_prefix="$run_dir/artifacts/" "${options[@]}" \
    "$run_dir/corpus" > "$log" 2>&1 || status=$?
  local elapsed=$(($(date +%s) - start)) execs rate stats_line cov ft corpus findings
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  stats_line=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
  cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<< "$stats_line")
  ft=$(sed -n 's/.*ft: \([0-9]*\).*/\1/p' <<< "$stats_line")
  corpus=$(sed -n 's/.*corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<< "$stats_line")
  # slow-unit-* files are reports, not failures; crash-, leak-, timeout-, oom- are.
  findings=$(find "$run_dir/artifacts" -type f ! -name 'slow-unit-*' | sort)
  local result=ok
  if [ "$status" -ne 0 ] || [ -n "$findings" ]; then
    result="FAILED (exit $status)"
  fi
  printf '%-20s %8s %12s %9s %7s %7s %12s  %s\n' "$target" "$elapsed" "${execs:-?}" \
    "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corpus:-?}" "$result" > "$run_dir/row"
  : > "$run_dir/report"
  if [ "$result" != ok ]; then
    {
      grep -E 'INFO: Seed: |ERROR: |SUMMARY: |runtime error|^    #[0-9]+ ' "$log" | head -24 |
        cut -c1-200 | sed 's/^/    /'
      for finding in $findings; do
        echo "    reproducer: $finding  (rerun: $build_dir/tests/fuzz/$target $finding)"
      done
      [ -z "$findings" ] && echo "    no reproducer written"
      echo "    log: $log"
    } > "$run_dir/report"
  fi
}

echo "run_fuzz: ${#targets[@]} targets, $seconds s each, $parallel at a time"
running=0
for target in "${targets[@]}"; do
  if [ "$running" -ge "$parallel" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  fuzz_one "$target" &
  running=$((running + 1))
done
wait || true

failed=0
printf '%-20s %8s %12s %9s %7s %7s %12s  %s\n' target seconds execs exec/s cov ft corpus result
for target in "${targets[@]}"; do
  if [ -f "$out_root/$target/row" ]; then
    cat "$out_root/$target/row" "$out_root/$target/report"
    grep -q ' ok$' "$out_root/$target/row" || failed=1
  else
    echo "$target: no result (see $out_root/$target/fuzz.log)"
    failed=1
  fi
done
exit "$failed"
