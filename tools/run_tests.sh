#!/usr/bin/env bash
# README command (2): install, build (CUDA backend compiled in where nvcc exists) and run
# the whole test suite. GPU tests skip with a reason where no device exists.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cd "${MB_BUILD_DIR:-build}"
ctest -j "$(nproc)" --output-on-failure --timeout 900
