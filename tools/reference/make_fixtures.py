#!/usr/bin/env python3
"""Generates the PyTorch reference fixtures in tests/fixtures/ (run by hand, not in CI).

    /usr/bin/python3 tools/reference/make_fixtures.py [--only layers|optimizers|steps|images]

Needs Debian's python3-torch (CPU), and python3-torchvision for the images group. References
are computed in float64 from the exact float32 inputs, so what a test sees as the difference
is our float32 round-off alone; the tests state the bound they allow. Each group lives in its own module:
  layer_cases.py      every layer, forward and backward
  optimizer_cases.py  SGD / AdamW / LARS for three steps, LR schedules, gradient clipping
  step_cases.py       whole training steps: LeNet-5 and ResNet-20 with uneven splits
  image_cases.py      torchvision's ImageFolder order, RandomResizedCrop fallback, PIL
                      bilinear resized_crop, Resize + CenterCrop (imported only when run)
The fixtures must stay under 5 MiB in all (they are committed).
"""
import argparse
import importlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import layer_cases  # noqa: E402
import optimizer_cases  # noqa: E402
import step_cases  # noqa: E402

GROUPS = {"layers": layer_cases, "optimizers": optimizer_cases, "steps": step_cases,
          "images": "image_cases"}  # a name: imported when run (it needs torchvision)
LIMIT_BYTES = 5 * 1024 * 1024
SEED = 20261202


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(GROUPS), action="append")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                      "tests", "fixtures"))
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    started = time.time()
    for name in args.only or sorted(GROUPS):
        group_started = time.time()
        group = GROUPS[name]
        if isinstance(group, str):
            group = importlib.import_module(group)
        written = group.generate(out, SEED)
        size = sum(s for _, s in written)
        print(f"{name}: {len(written)} file(s), {size / 1024:.1f} KiB, "
              f"{time.time() - group_started:.1f} s")
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)
                if f.endswith(".safetensors"))
    print(f"all fixtures: {total / 1024:.1f} KiB in {out} "
          f"(limit {LIMIT_BYTES // 1024} KiB), {time.time() - started:.1f} s, torch {torch.__version__}")
    if total > LIMIT_BYTES:
        sys.exit(f"fixtures take {total} bytes, over the {LIMIT_BYTES}-byte limit: shrink the cases")


if __name__ == "__main__":
    main()
