#!/usr/bin/env python3
"""End-to-end comparison of microbatch's bench/train_bench with PyTorch on the same GPU.

For each model it trains the same batch, micro-batch, input size and optimizer in both,
alternating the two (each measurement in a fresh process, so neither holds the other's
cached memory), and reports:
  - samples/s, ours / PyTorch                       (target >= 1.0 on ResNet-50 and ResNet-18)
  - peak allocated memory, ours / PyTorch           (target <= 1.0)
        ours: the arena's peak allocated bytes over the timed steps;
        PyTorch: torch.cuda.max_memory_allocated() over the timed steps
  - the largest micro-batch each fits under the same memory limit, ours / PyTorch
                                                    (target >= 1.0)
        ours: train_bench --memory-limit L (a trial fits when it ran as one micro-batch
        without re-planning); PyTorch: torch.cuda.set_per_process_memory_fraction(L / total)
        (a trial fits when no torch.OutOfMemoryError was raised); doubling, then bisecting.
Targets are reported, not asserted.

The PyTorch side is what users write: torchvision models, channels-first fp32 with TF32
allowed, cudnn.benchmark on, the host batch pinned and each micro-batch copied with
non_blocking=True, gradient accumulation with the loss divided by the number of
micro-batches, then optimizer.step() once per batch.

This script needs a CUDA GPU and PyTorch; it is not run in CI. `--dry-run` prints what it
would run without importing torch or starting anything. Only the standard library is
imported at module level; torch and torchvision are imported inside the PyTorch worker.

Run (GPU machine): python3 bench/compare_pytorch.py --train-bench build-gpu/bench/train_bench \
    --out results.json
"""

import argparse
import datetime
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time

# name: (in_channels, image_size, num_classes)
MODELS = {
    "resnet50": (3, 224, 1000),
    "resnet18": (3, 224, 1000),
    "resnet34": (3, 224, 1000),
    "vgg16": (3, 224, 1000),
    "mobilenet_v2": (3, 224, 1000),
    "lenet5": (1, 28, 10),
}

_BYTE_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
    "g": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
}


def parse_bytes(text):
    """Byte sizes as our --memory-limit reads them (allocator/byte_size.h): K/M/G and
    KiB/MiB/GiB binary, KB/MB/GB decimal, case-insensitive."""
    s = text.strip().lower()
    number = s.rstrip("abcdefghijklmnopqrstuvwxyz ").strip()
    unit = s[len(number):].strip()
    if unit not in _BYTE_UNITS or not number:
        raise ValueError(f"memory size '{text}' is not valid: use e.g. 8GiB, 512MiB, 1.5G")
    return int(float(number) * _BYTE_UNITS[unit])


# ----------------------------------------------------------------------------------------
# The PyTorch worker (a separate process; the only place torch is imported)


def _torch_model(name, num_classes):
    import torch.nn as nn
    import torchvision

    if name == "lenet5":  # as models/lenet.cpp: ReLU and max pooling, 28x28 input
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes))
    return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)


def torch_worker(spec):
    """Trains per `spec` and prints one JSON line. Runs in its own process."""
    import torch

    tf32 = spec["tf32"]
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = spec["cudnn_benchmark"]
    device = torch.device("cuda")
    total = torch.cuda.get_device_properties(0).total_memory
    if spec.get("memory_limit"):
        fraction = min(1.0, parse_bytes(spec["memory_limit"]) / total)
        torch.cuda.set_per_process_memory_fraction(fraction, 0)
    channels, size, classes = MODELS[spec["model"]]
    size = spec.get("image_size") or size
    batch, micro = spec["batch"], spec["micro_batch"]
    chunks = math.ceil(batch / micro)
    result = {"side": "pytorch", "model": spec["model"], "batch": batch, "micro_batch": micro,
              "micro_batches": chunks, "torch_version": torch.__version__,
              "device_name": torch.cuda.get_device_name(0), "total_memory_bytes": total}
    try:
        model = _torch_model(spec["model"], classes).to(device)
        model.train()
        if spec["optimizer"] == "adamw":
            optimizer = torch.optim.AdamW(model.parameters(), lr=spec["lr"])
        else:
            optimizer = torch.optim.SGD(model.parameters(), lr=spec["lr"], momentum=0.9)
        criterion = torch.nn.CrossEntropyLoss()
        generator = torch.Generator().manual_seed(spec.get("seed", 0))
        images = torch.rand(batch, channels, size, size, generator=generator).pin_memory()
        labels = torch.randint(0, min(classes, 10), (batch,), generator=generator).pin_memory()

        def step():
            optimizer.zero_grad(set_to_none=True)
            for k in range(chunks):
                x = images[k * micro:(k + 1) * micro].to(device, non_blocking=True)
                y = labels[k * micro:(k + 1) * micro].to(device, non_blocking=True)
                loss = criterion(model(x), y) / chunks
                loss.backward()
            optimizer.step()
            return loss

        for _ in range(spec["warmup"]):
            step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(spec["steps"]):
            torch.cuda.synchronize()
            start = time.perf_counter()
            loss = step()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        step_s = statistics.median(times)
        result.update({
            "ok": True,
            "samples_per_s": batch / step_s,
            "step_time_ms": 1e3 * step_s,
            "step_times_ms": [1e3 * t for t in times],
            "peak_allocated_bytes": torch.cuda.max_memory_allocated(),
            "peak_reserved_bytes": torch.cuda.max_memory_reserved(),
            "loss": float(loss.item()) * chunks,
        })
    except torch.OutOfMemoryError as error:
        result.update({"ok": False, "oom": True, "error": str(error)[:1000]})
    print(json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------
# The driver


class Runner:
    def __init__(self, args):
        self.args = args
        self.log_file = open(args.log, "a") if args.log else None

    def log(self, text):
        print(text, file=sys.stderr, flush=True)
        if self.log_file:
            self.log_file.write(text + "\n")
            self.log_file.flush()

    def ours_command(self, model, batch, micro, steps, warmup, memory_limit=None):
        a = self.args
        command = [a.train_bench, "--device", a.device, "--model", model,
                   "--batch", str(batch), "--micro-batch", str(micro),
                   "--accumulation", a.accumulation, "--optimizer", a.optimizer,
                   "--lr", str(a.lr), "--warmup", str(warmup), "--steps", str(steps)]
        if memory_limit:
            command += ["--memory-limit", memory_limit]
        if a.commit:
            command += ["--commit", a.commit]
        return command

    def torch_spec(self, model, batch, micro, steps, warmup, memory_limit=None):
        a = self.args
        return {"model": model, "batch": batch, "micro_batch": micro, "steps": steps,
                "warmup": warmup, "optimizer": a.optimizer, "lr": a.lr,
                "tf32": not a.no_tf32, "cudnn_benchmark": not a.no_cudnn_benchmark,
                "memory_limit": memory_limit}

    def torch_command(self, spec):
        return [sys.executable, os.path.abspath(__file__), "--torch-worker", json.dumps(spec)]

    def _run(self, command, timeout):
        self.log("$ " + shlex.join(command))
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"timed out after {timeout} s"}
        if done.stderr.strip():
            self.log(done.stderr.strip()[-4000:])
        lines = [l for l in done.stdout.splitlines() if l.startswith("{")]
        if not lines:
            return {"ok": False, "returncode": done.returncode,
                    "error": (done.stderr or done.stdout).strip()[-2000:]}
        result = json.loads(lines[-1])
        result.setdefault("ok", done.returncode == 0 and "error" not in result)
        result["returncode"] = done.returncode
        self.log(json.dumps(result))
        return result

    def run_ours(self, *spec_args, **kw):
        result = self._run(self.ours_command(*spec_args, **kw), self.args.timeout)
        result["side"] = "ours"
        return result

    def run_torch(self, *spec_args, **kw):
        return self._run(self.torch_command(self.torch_spec(*spec_args, **kw)), self.args.timeout)

    # A trial fits when it ran as the single requested micro-batch without re-planning.
    def ours_fits(self, model, micro, memory_limit):
        r = self.run_ours(model, micro, micro, 1, 1, memory_limit=memory_limit)
        return bool(r.get("ok")) and r.get("replans", 1) == 0 and r.get("micro_batches") == 1

    def torch_fits(self, model, micro, memory_limit):
        r = self.run_torch(model, micro, micro, 1, 1, memory_limit=memory_limit)
        return bool(r.get("ok"))

    def largest_micro_batch(self, fits):
        """Doubling from --fit-start, then bisecting until the bracket is within
        --fit-tolerance (relative); returns (largest that fitted, smallest that failed)."""
        a = self.args
        good, bad = 0, None
        m = a.fit_start
        while m <= a.fit_max:
            if fits(m):
                good, m = m, m * 2
            else:
                bad = m
                break
        if bad is None:
            return good, None
        while bad - good > max(1, int(good * a.fit_tolerance)):
            mid = (good + bad) // 2
            if fits(mid):
                good = mid
            else:
                bad = mid
        return good, bad


def ratio(numerator, denominator):
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def median_of(runs, key):
    values = [r[key] for r in runs if r.get("ok") and r.get(key) is not None]
    return statistics.median(values) if values else None


def device_facts():
    facts = {}
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout
        name, driver, memory = [x.strip() for x in out.splitlines()[0].split(",")]
        facts = {"device_name": name, "driver": driver, "memory_total": memory}
    except (OSError, IndexError, ValueError, subprocess.TimeoutExpired):
        facts = {"device_name": "unknown (nvidia-smi not available)"}
    return facts


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=30).stdout.strip() or None
    except OSError:
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--torch-worker", help=argparse.SUPPRESS)
    parser.add_argument("--train-bench", default="build-gpu/bench/train_bench")
    parser.add_argument("--models", default="resnet50,resnet18")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating rounds (ours, PyTorch), order swapped each round")
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"])
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--accumulation", default="inplace", choices=["inplace", "buffers"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--memory-limit", default="8GiB",
                        help="cap for the largest-micro-batch search (both sides)")
    parser.add_argument("--fit-models", default=None,
                        help="models for the largest-micro-batch search (default: --models; "
                             "'none' skips it)")
    parser.add_argument("--fit-start", type=int, default=8)
    parser.add_argument("--fit-max", type=int, default=4096)
    parser.add_argument("--fit-tolerance", type=float, default=0.03)
    parser.add_argument("--no-tf32", action="store_true")
    parser.add_argument("--no-cudnn-benchmark", action="store_true")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per process")
    parser.add_argument("--commit", default=os.environ.get("MB_COMMIT"))
    parser.add_argument("--out", default="compare_pytorch.json")
    parser.add_argument("--log", default=None, help="append every command and output here")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commands that would run; import and start nothing")
    args = parser.parse_args()

    if args.torch_worker:
        torch_worker(json.loads(args.torch_worker))
        return 0

    models = [m for m in args.models.split(",") if m]
    fit_models = models if args.fit_models is None else [
        m for m in args.fit_models.split(",") if m and m != "none"]
    for m in set(models) | set(fit_models):
        if m not in MODELS:
            parser.error(f"model '{m}' is unknown; known: {', '.join(MODELS)}")
    if args.batch % args.micro_batch != 0:
        # The PyTorch side divides by the number of micro-batches (as users write it), which
        # is only the full-batch mean for equal micro-batches.
        parser.error("--batch must be a multiple of --micro-batch for a like-for-like run")
    args.commit = args.commit or git_commit()
    runner = Runner(args)

    if args.dry_run:
        for model in models:
            for r in range(args.rounds):
                ours = runner.ours_command(model, args.batch, args.micro_batch, args.steps,
                                           args.warmup)
                theirs = runner.torch_command(runner.torch_spec(
                    model, args.batch, args.micro_batch, args.steps, args.warmup))
                for command in ([ours, theirs] if r % 2 == 0 else [theirs, ours]):
                    print(shlex.join(command))
        for model in fit_models:
            print(f"# largest micro-batch of {model} under {args.memory_limit}: doubling from "
                  f"{args.fit_start} (at most {args.fit_max}), then bisecting; trials like")
            print(shlex.join(runner.ours_command(model, args.fit_start, args.fit_start, 1, 1,
                                                 memory_limit=args.memory_limit)))
            print(shlex.join(runner.torch_command(runner.torch_spec(
                model, args.fit_start, args.fit_start, 1, 1, memory_limit=args.memory_limit))))
        print(f"# results -> {args.out}")
        return 0

    if not os.path.exists(args.train_bench):
        parser.error(f"{args.train_bench} does not exist: build it (tools/gpu/prepare_carry.sh) "
                     "or pass --train-bench PATH")

    report = {"kind": "compare_pytorch", "commit": args.commit,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              **device_facts(), "settings": vars(args).copy(), "results": []}
    report["settings"].pop("torch_worker", None)
    for model in models:
        ours_runs, torch_runs = [], []
        for r in range(args.rounds):
            order = ["ours", "torch"] if r % 2 == 0 else ["torch", "ours"]
            for side in order:
                spec = (model, args.batch, args.micro_batch, args.steps, args.warmup)
                if side == "ours":
                    ours_runs.append(runner.run_ours(*spec))
                else:
                    torch_runs.append(runner.run_torch(*spec))
        entry = {"model": model, "batch": args.batch, "micro_batch": args.micro_batch,
                 "ours_runs": ours_runs, "pytorch_runs": torch_runs}
        ours_rate = median_of(ours_runs, "samples_per_s")
        torch_rate = median_of(torch_runs, "samples_per_s")
        ours_peak = median_of(ours_runs, "peak_allocated_bytes")
        torch_peak = median_of(torch_runs, "peak_allocated_bytes")
        entry["ours"] = {"samples_per_s": ours_rate, "peak_allocated_bytes": ours_peak}
        entry["pytorch"] = {"samples_per_s": torch_rate, "peak_allocated_bytes": torch_peak}
        entry["ratios"] = {"throughput": ratio(ours_rate, torch_rate),
                           "peak_memory": ratio(ours_peak, torch_peak)}
        if model in fit_models:
            ours_fit = runner.largest_micro_batch(
                lambda m: runner.ours_fits(model, m, args.memory_limit))
            torch_fit = runner.largest_micro_batch(
                lambda m: runner.torch_fits(model, m, args.memory_limit))
            entry["largest_micro_batch"] = {
                "memory_limit": args.memory_limit,
                "ours": ours_fit[0], "ours_first_failure": ours_fit[1],
                "pytorch": torch_fit[0], "pytorch_first_failure": torch_fit[1]}
            entry["ratios"]["largest_micro_batch"] = ratio(ours_fit[0], torch_fit[0])
        entry["targets"] = {"throughput": ">= 1.0", "peak_memory": "<= 1.0",
                            "largest_micro_batch": ">= 1.0"}
        report["results"].append(entry)
        with open(args.out, "w") as out:  # after every model: a partial run still leaves data
            json.dump(report, out, indent=2)

    print(f"{'model':<14}{'ours/s':>10}{'torch/s':>10}{'speed':>8}{'ours MiB':>10}"
          f"{'torch MiB':>10}{'memory':>8}{'m ours':>8}{'m torch':>8}{'m ratio':>8}")

    def fmt(value, spec):
        width = int(spec.rstrip("df").split(".")[0])
        return format(value, spec) if value is not None else "-".rjust(width)

    for e in report["results"]:
        fit = e.get("largest_micro_batch", {})
        mib = lambda b: b / 2**20 if b is not None else None  # noqa: E731
        print(f"{e['model']:<14}{fmt(e['ours']['samples_per_s'], '10.1f')}"
              f"{fmt(e['pytorch']['samples_per_s'], '10.1f')}"
              f"{fmt(e['ratios']['throughput'], '8.3f')}"
              f"{fmt(mib(e['ours']['peak_allocated_bytes']), '10.0f')}"
              f"{fmt(mib(e['pytorch']['peak_allocated_bytes']), '10.0f')}"
              f"{fmt(e['ratios']['peak_memory'], '8.3f')}"
              f"{fmt(fit.get('ours'), '8d')}{fmt(fit.get('pytorch'), '8d')}"
              f"{fmt(e['ratios'].get('largest_micro_batch'), '8.3f')}")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
