#!/usr/bin/env python3
"""Bytes per training sample: microbatch against PyTorch, side by side in one run.

For each case (model, image size[, cap]) it runs bench/memory_bench (ours: the planner's
probe, an allocator-level peak above the baseline, and the planned micro-batch under the
cap) and measures PyTorch's side in this process: the tensors autograd saves for backward
in one training forward (model.train(), cross-entropy loss), counted once per storage
through torch.autograd.graph.saved_tensors_hooks, at two batch sizes; the difference per
sample is PyTorch's bytes/sample (the parameters it saves cancel out). That is a lower
bound on PyTorch's training peak per sample (backward's temporaries come on top), so the
ratio ours / PyTorch's is a conservative view of ours. Under a cap it also reports the
micro-batch PyTorch could at most reach: (cap - weights, gradients and momentum) / its
saved bytes per sample ("implied": an upper bound, not a run).

  PyTorch models: torchvision's (resnet18/34/50/101/152, vgg11/16 with and without BN,
  mobilenet_v2; weights=None) and, for lenet5 and resnet20, the fixtures' twins in
  tools/reference/step_cases.py.

Needs Debian's python3-torch and python3-torchvision (run it with /usr/bin/python3); never
run by CI.
Run: /usr/bin/python3 bench/compare_memory.py --memory-bench build/bench/memory_bench \\
         --out bench/results/<date>-cpu-<commit>/compare_memory.jsonl [--cases ...]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

DEFAULT_CASES = ["lenet5:28", "resnet20:32", "resnet18:112", "resnet18:224", "resnet50:112",
                 "resnet50:224", "vgg11_bn:224", "mobilenet_v2:224", "resnet50:224:4GiB",
                 "resnet50:224:8GiB"]
UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "K": 1 << 10, "M": 1 << 20,
         "G": 1 << 30, "B": 1}


def parse_bytes(text):
    for unit in sorted(UNITS, key=len, reverse=True):
        if text.endswith(unit):
            return int(float(text[:-len(unit)]) * UNITS[unit])
    return int(text)


def torch_model(name, image_size):
    import torch.nn as nn  # noqa: F401 (torch must import before torchvision)
    if name in ("lenet5", "resnet20"):
        sys.path.insert(0, os.path.join(HERE, "..", "tools", "reference"))
        import step_cases
        return step_cases.lenet5() if name == "lenet5" else step_cases.resnet20()
    import torchvision
    builder = getattr(torchvision.models, name, None)
    if builder is None:
        raise SystemExit(f"compare_memory: no PyTorch twin for '{name}'")
    return builder(num_classes=1000)


def input_shape(name, image_size):
    return (1, image_size, image_size) if name == "lenet5" else (3, image_size, image_size)


def saved_bytes(model, batch, shape, classes):
    import torch
    import torch.nn.functional as F
    seen = {}

    def pack(tensor):
        storage = tensor.storage()
        seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    images = torch.rand((batch,) + shape)
    labels = torch.randint(0, classes, (batch,))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = F.cross_entropy(model(images), labels)
    total = sum(seen.values())
    loss.backward()
    model.zero_grad(set_to_none=True)
    return total


def torch_side(name, image_size, small, large):
    import torch
    torch.manual_seed(0)
    model = torch_model(name, image_size)
    model.train()
    classes = 10 if name in ("lenet5", "resnet20") else 1000
    shape = input_shape(name, image_size)
    at_small = saved_bytes(model, small, shape, classes)
    at_large = saved_bytes(model, large, shape, classes)
    parameters = sum(p.numel() for p in model.parameters())
    return {"saved_bytes_per_sample": (at_large - at_small) // (large - small),
            "saved_at": {str(small): at_small, str(large): at_large},
            "parameters": parameters, "version": torch.__version__}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--memory-bench", default="build/bench/memory_bench")
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--commit", default="")
    parser.add_argument("--fuse", default="both", choices=["on", "off", "both"],
                        help="ours with the fused layers, the plain ones, or both (default)")
    parser.add_argument("--recompute", default="off", choices=["on", "off", "both"],
                        help="ResNets also (both) or only (on) with their stages recomputed")
    parser.add_argument("--out", help="JSON lines written here (via a temporary file)")
    args = parser.parse_args()

    ours = subprocess.run([args.memory_bench, "--batch", str(args.batch), "--commit", args.commit,
                           "--fuse", args.fuse, "--recompute", args.recompute,
                           "--cases"] + args.cases, check=True,
                          capture_output=True, text=True)
    lines = []
    torch_rows = {}  # (model, image size): PyTorch's side, measured once for both of ours
    for line in ours.stdout.splitlines():
        row = json.loads(line)
        size = row["image_size"]
        key = (row["model"], size)
        if key not in torch_rows:
            torch_rows[key] = torch_side(row["model"], size, 2, 4)
        theirs = torch_rows[key]
        per_sample = theirs["saved_bytes_per_sample"]
        result = {"kind": "compare_memory", "model": row["model"], "image_size": size,
                  "fused": row.get("fused", False),
                  "recompute_segments": row.get("recompute_segments", False), "ours": row,
                  "pytorch": theirs,
                  "ours_measured_vs_pytorch_saved": row["measured_bytes_per_sample"] / per_sample,
                  "ours_analytic_vs_pytorch_saved": row["analytic_bytes_per_sample"] / per_sample,
                  "cpu": platform.processor() or platform.machine()}
        if "memory_limit" in row:
            cap = parse_bytes(row["memory_limit"])
            fixed = 3 * 4 * theirs["parameters"]  # weights, gradients, SGD momentum in fp32
            implied = max(0, (cap - fixed) // per_sample)
            result["pytorch_implied_max_micro_batch"] = implied
            result["ours_planned_vs_pytorch_implied"] = (
                row["planned_micro_batch"] / implied if implied else None)
        print(json.dumps(result), flush=True)
        lines.append(json.dumps(result))
    if args.out:
        directory = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=directory, delete=False) as tmp:
            tmp.write("\n".join(lines) + "\n")
        os.replace(tmp.name, args.out)


if __name__ == "__main__":
    main()
