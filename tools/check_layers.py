#!/usr/bin/env python3
"""Checks the floors of docs/architecture.md against the tree; exits 1 on a violation.

1. Includes: a file in a floor includes project headers only from its own floor and the
   floors below it (runtime <- allocator <- kernels <- layers <- models; data uses runtime
   and allocator; engine uses everything but models; tools, bench and tests use all).
2. CMake: each floor's CMakeLists.txt links only the mb_* targets of the floors it may use.
3. `#if MB_WITH_CUDA` (or #ifdef / defined()) appears only in kernels/dispatch.h,
   runtime/context.cpp, the CMake files, bench/ and tests/.

Usage: tools/check_layers.py [--count]   (--count prints the numbers and always exits 0)
"""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

# floor -> the floors its files may include (itself included).
USES = {
    "runtime": {"runtime"},
    "allocator": {"runtime", "allocator"},
    "kernels": {"runtime", "kernels"},
    "layers": {"runtime", "kernels", "layers"},
    "models": {"runtime", "kernels", "layers", "models"},
    "data": {"runtime", "allocator", "data"},
    "engine": {"runtime", "allocator", "kernels", "layers", "data", "engine"},
}
TOP = {"tools", "bench", "tests"}  # may include every floor
ALL = set(USES) | TOP
TARGET_FLOOR = {"mb_" + floor: floor for floor in USES}
CUDA_IF_ALLOWED = {"kernels/dispatch.h", "runtime/context.cpp"}
CUDA_IF_ALLOWED_DIRS = {"bench", "tests"}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
CUDA_IF = re.compile(r"^\s*#\s*(if|ifdef|ifndef|elif)\b.*\bMB_WITH_CUDA\b", re.M)
LINK = re.compile(r"target_link_libraries\s*\(\s*(\S+)([^)]*)\)", re.S)


def tracked(patterns):
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return [p for p in out.split("\n") if p]


def floor_of(path):
    top = path.split("/", 1)[0]
    return top if top in ALL else None


def main():
    count_only = "--count" in sys.argv[1:]
    problems = []
    sources = tracked(["*.h", "*.cpp", "*.cu", "*.cuh"])
    cuda_ifs = 0
    for path in sources:
        floor = floor_of(path)
        text = (ROOT / path).read_text(errors="replace")
        if floor in USES:
            for target in INCLUDE.findall(text):
                used = floor_of(target)
                if used is not None and used not in USES[floor]:
                    problems.append(f"{path}: includes \"{target}\": {floor}/ may use only "
                                    f"{', '.join(sorted(USES[floor]))}")
        found = len(CUDA_IF.findall(text))
        cuda_ifs += found
        if found and path not in CUDA_IF_ALLOWED and floor not in CUDA_IF_ALLOWED_DIRS:
            problems.append(f"{path}: {found} `#if MB_WITH_CUDA`: only kernels/dispatch.h and "
                            "runtime/context.cpp choose a backend at compile time (CMake picks "
                            "the CUDA-only sources)")
    for cmake in tracked(["*/CMakeLists.txt"]):
        floor = floor_of(cmake)
        if floor not in USES:
            continue
        text = (ROOT / cmake).read_text()
        for _, libraries in LINK.findall(text):
            for library in re.findall(r"\bmb_\w+", libraries):
                used = TARGET_FLOOR.get(library)
                if used is not None and used not in USES[floor]:
                    problems.append(f"{cmake}: links {library}: {floor}/ may use only "
                                    f"{', '.join(sorted(USES[floor]))}")
    if count_only:
        print(f"include and link violations: {len(problems)}; `#if MB_WITH_CUDA`: {cuda_ifs}")
        return 0
    if problems:
        print("check_layers: the floors of docs/architecture.md are broken:")
        for problem in problems:
            print("  " + problem)
        return 1
    print(f"check_layers: {len(sources)} files keep to their floors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
