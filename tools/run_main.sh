#!/usr/bin/env bash
# README command (1): install, build and run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec "${MB_BUILD_DIR:-build}/tools/microbatch" --version
