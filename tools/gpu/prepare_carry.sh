#!/usr/bin/env bash
# Builds, on this machine (no GPU needed), everything tools/gpu/run_all.sh runs on the GPU
# machine, and packs it into build-gpu-carry/bundle.tar.xz for the device tool's `carry`.
#
# Why build here: the GPU machine has nvcc, cmake and ninja but no GoogleTest, Google
# Benchmark, CLI11, nlohmann_json or OpenBLAS, and its device time is scarce. Debian 12's
# glibc 2.36 / libstdc++ (GCC 12) binaries run on its newer Ubuntu userland.
#
# What the bundle holds (build-gpu as the relative path build-gpu/, without objects):
#  - the executables (tests, benches, tools/microbatch) built for sm_90, Release;
#  - the CTest files, with GoogleTest discovery already done here (ctest -N runs every test
#    binary with --gtest_list_tests), so ctest on the GPU machine needs no discovery;
#  - lib/: the shared libraries the GPU machine lacks (OpenBLAS, libgfortran, libquadmath,
#    Google Benchmark, ...), found with ldd; CUDA, cuBLAS and cuDNN are NOT copied (too large;
#    run_all.sh finds the GPU machine's own);
#  - lib/GoogleTestAddTests.cmake, in case a discovery must rerun there;
#  - .mb_source_dir: this checkout's absolute path, compiled into the tests (test data) and
#    written into the CTest files; run_all.sh links that path to the copy there.
#
# Usage: tools/gpu/prepare_carry.sh [TARGET ...]   (default: all targets)
#   env: MB_GPU_BUILD_DIR (default build-gpu), MB_JOBS (default 2)
# Then: device run with carry ["build-gpu-carry"] and command
#   tools/gpu/run_all.sh "$OUT"
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build_name=${MB_GPU_BUILD_DIR:-build-gpu}
build="$repo/$build_name"
carry="$repo/build-gpu-carry"
jobs=${MB_JOBS:-2}

cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DMB_WITH_CUDA=ON -DMB_WITH_ONEDNN=OFF -DMB_WITH_IMAGES=OFF >"$build.configure.log"
ninja -C "$build" -j"$jobs" "$@"

# GoogleTest discovery here, so the GPU machine only reads the lists.
(cd "$build" && ctest -N >/dev/null)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
dest="$stage/build-gpu"
mkdir -p "$dest/lib"
# Executables and CTest files, keeping the tree's layout.
(cd "$build" && find . -path ./lib -prune -o -path '*/CMakeFiles' -prune -o -type f \
  \( -perm -u+x -o -name '*.cmake' \) -print) | while read -r file; do
  mkdir -p "$dest/$(dirname "$file")"
  cp -p "$build/$file" "$dest/$file"
done
# Shared libraries the GPU machine lacks: everything ldd resolves outside glibc, the
# compiler runtime and CUDA (those are there, or too large to carry).
find "$dest" -type f -perm -u+x ! -name '*.cmake' -exec ldd {} \; 2>/dev/null |
  awk '/=> \// {print $3}' | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so* | libm.so* | libdl.so* | librt.so* | libpthread.so* | ld-linux* | libgcc_s.so* | \
      libstdc++.so* | libz.so*) ;;
    libcuda.so* | libcudart.so* | libcublas* | libcudnn* | libnv*) ;;
    *) cp -L "$lib" "$dest/lib/" ;;
  esac
done
cmake_modules=$(cmake --system-information 2>/dev/null |
  awk -F'"' '/^CMAKE_ROOT /{print $2; exit}')/Modules
cp "$cmake_modules/GoogleTestAddTests.cmake" "$dest/lib/" 2>/dev/null || true
# Where this checkout lives: compiled into the tests and written in the CTest files.
echo "$repo" >"$dest/.mb_source_dir"
echo "$build" >"$dest/.mb_build_dir"
git -C "$repo" rev-parse --short HEAD >"$dest/.mb_commit" 2>/dev/null || echo unknown >"$dest/.mb_commit"

mkdir -p "$carry"
tar -C "$stage" -cf - build-gpu | xz -T"$jobs" -6 >"$carry/bundle.tar.xz.tmp"
mv "$carry/bundle.tar.xz.tmp" "$carry/bundle.tar.xz"
echo "bundle: $carry/bundle.tar.xz ($(du -h "$carry/bundle.tar.xz" | cut -f1)," \
  "$(find "$dest" -type f -perm -u+x ! -name '*.cmake' ! -path '*/lib/*' | wc -l) executables," \
  "libs: $(ls "$dest/lib" | tr '\n' ' '))"
if [ "$(stat -c %s "$carry/bundle.tar.xz")" -gt $((48 * 1024 * 1024)) ]; then
  echo "warning: the bundle is over 48 MiB; the device tool carries 64 MiB with the tree" >&2
fi
