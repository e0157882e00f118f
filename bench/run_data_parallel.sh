#!/usr/bin/env bash
# Data-parallel throughput on this machine's CPU: the same global batches with 1 rank and
# with 2 ranks (mpirun), into bench/results/<date>-cpu-<commit>/data_parallel.jsonl with the
# command lines in command.txt. Needs a quiet machine. Usage: bench/run_data_parallel.sh [BUILD]
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
commit="$(git rev-parse --short HEAD)"
out="bench/results/$(date +%Y-%m-%d)-cpu-${commit}"
mkdir -p "$out"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
one=("$build/bench/data_parallel_bench" --commit "$commit")
two=(mpirun -np 2 "$build/bench/data_parallel_bench" --commit "$commit")
tmp="$(mktemp)"
"${one[@]}" >> "$tmp"
"${two[@]}" >> "$tmp"
mv "$tmp" "$out/data_parallel.jsonl"
{
  echo "${one[*]}"
  echo "${two[*]}"
  echo "# $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
} >> "$out/command.txt"
cat "$out/data_parallel.jsonl"
