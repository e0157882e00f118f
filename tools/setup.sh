#!/usr/bin/env bash
# Installs what microbatch needs (Debian packages) and builds it into build/.
# Used by both README commands; safe to run again (installs only what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(cmake ninja-build g++ googletest libgtest-dev libbenchmark-dev libopenblas-dev
          libdnnl-dev libturbojpeg0-dev libspng-dev zlib1g-dev libcli11-dev nlohmann-json3-dev dataset-fashion-mnist gnuplot-nox
          libopenmpi-dev openmpi-bin)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

build_dir="${MB_BUILD_DIR:-build}"
cmake_args=(-S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release
            "-DMB_WITH_CUDA=${MB_WITH_CUDA:-AUTO}" "-DMB_WITH_IMAGES=${MB_WITH_IMAGES:-ON}")
[ -n "${MB_CUDA_ARCHITECTURES:-}" ] && cmake_args+=("-DCMAKE_CUDA_ARCHITECTURES=${MB_CUDA_ARCHITECTURES}")
cmake "${cmake_args[@]}" > "$build_dir.configure.log" 2>&1 || { cat "$build_dir.configure.log"; exit 1; }
grep "microbatch:" "$build_dir.configure.log" || true
cmake --build "$build_dir" -j "$(nproc)" "$@"
