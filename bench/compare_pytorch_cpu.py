#!/usr/bin/env python3
"""microbatch's CPU backend against PyTorch on the same CPU, side by side in one run.

For each case both sides train the same model, batch B split into micro-batches of m,
optimizer and thread count on synthetic data of the same shape, each measurement in a
fresh process, ours and PyTorch's alternating (so a busy moment of the machine hits both),
and the script reports samples/s (B over the median step time of the timed steps) of
each, and the ratio ours / PyTorch's, as one JSON object.

  ours:    bench/train_bench --model M --batch B --micro-batch m --optimizer O --device cpu,
           threads through OMP_NUM_THREADS (kernels/threads.h)
  PyTorch: the same models as tools/reference/step_cases.py defines them (the fixtures'
           twins of models/lenet.cpp and models/resnet.cpp), gradient accumulation with the
           loss of micro-batch k scaled by n_k / B, optimizer.step() once per batch,
           torch.set_num_threads(T)

Needs Debian's python3-torch (run it with /usr/bin/python3); never run by CI.
Run: /usr/bin/python3 bench/compare_pytorch_cpu.py --train-bench build/bench/train_bench \\
         --threads 2 --out bench/results/<date>-cpu-<commit>/compare_pytorch_cpu.json
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = [
    # name, model, input shape (C, H, W), classes, batch, micro-batch, optimizer
    {"model": "lenet5", "shape": [1, 28, 28], "batch": 4096, "micro_batch": 256,
     "optimizer": "adamw", "lr": 0.001, "warmup": 1, "steps": 4},
    {"model": "resnet20", "shape": [3, 32, 32], "batch": 512, "micro_batch": 64,
     "optimizer": "sgd", "lr": 0.05, "warmup": 1, "steps": 3},
]


def torch_worker(case, threads):
    """One measurement of PyTorch, in this (fresh) process; returns samples/s."""
    import torch
    sys.path.insert(0, os.path.join(HERE, "..", "tools", "reference"))
    import step_cases  # noqa: E402  (the fixtures' model definitions)

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = getattr(step_cases, case["model"])()
    model.train()
    if case["optimizer"] == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=case["lr"], weight_decay=0.0)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=case["lr"], momentum=0.9)
    batch, micro = case["batch"], case["micro_batch"]
    images = torch.randn([batch] + case["shape"])
    labels = torch.randint(0, 10, (batch,))
    times = []
    for step in range(case["warmup"] + case["steps"]):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=False)
        for first in range(0, batch, micro):
            x, y = images[first:first + micro], labels[first:first + micro]
            loss = torch.nn.functional.cross_entropy(model(x), y) * (x.shape[0] / batch)
            loss.backward()
        optimizer.step()
        if step >= case["warmup"]:
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def ours(train_bench, case, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    command = [train_bench, "--model", case["model"], "--batch", str(case["batch"]),
               "--micro-batch", str(case["micro_batch"]), "--optimizer", case["optimizer"],
               "--lr", str(case["lr"]), "--warmup", str(case["warmup"]),
               "--steps", str(case["steps"]), "--device", "cpu"]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    train = [line for line in lines if line.get("kind") == "train"]
    if not train:
        raise RuntimeError("train_bench printed no result: " + out[-2000:])
    return train[-1]["samples_per_s"], " ".join(command)


def theirs(case, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    command = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(case),
               "--threads", str(threads)]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-bench", default=os.path.join(HERE, "..", "build", "bench",
                                                              "train_bench"))
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(torch_worker(json.loads(args.worker), args.threads))
        return
    import torch  # only for its version; the measurements run in fresh processes
    results = []
    for case in CASES:
        mine, yours, command = [], [], ""
        for _ in range(args.repeats):
            rate, command = ours(args.train_bench, case, args.threads)
            mine.append(rate)
            yours.append(theirs(case, args.threads))
        result = dict(case, threads=args.threads, ours_samples_per_s=mine,
                      pytorch_samples_per_s=yours, ours_median=statistics.median(mine),
                      pytorch_median=statistics.median(yours), command=command)
        result["ratio"] = result["ours_median"] / result["pytorch_median"]
        results.append(result)
        print(f"{case['model']}: ours {result['ours_median']:.0f} samples/s, PyTorch "
              f"{result['pytorch_median']:.0f} samples/s, ratio {result['ratio']:.2f}",
              file=sys.stderr)
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.node(),
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "torch": torch.__version__, "cases": results}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        temp = args.out + ".tmp"
        with open(temp, "w") as f:
            f.write(text + "\n")
        os.replace(temp, args.out)


if __name__ == "__main__":
    main()
