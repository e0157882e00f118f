#!/usr/bin/env python3
"""microbatch's image loader against torchvision's DataLoader on the same folder, in one run.

Measures how many training images per second each side decodes and augments from an
ImageFolder tree (DIR/train/<class>/*.jpg) with the same worker count and batch size, and
prints one JSON object: both rates, the ratio ours / torchvision's, and per worker.

  torchvision: ImageFolder(DIR/train, Compose([RandomResizedCrop(224),
               RandomHorizontalFlip(), ToTensor(), Normalize(ImageNet mean, std)])) in a
               DataLoader(batch_size=B, shuffle=True, num_workers=N, persistent_workers=N>0,
               drop_last=True), torch.set_num_threads(1) in each worker; after a warm-up of
               2 batches it counts images until --seconds have passed, starting new epochs
               as needed (images/s = images / elapsed time at the last batch).
  ours:        PATH --data DIR --workers N --batch-size B --seconds S (bench/loader_bench);
               the last line of its stdout is a JSON object with at least "images_per_s"
               and "workers", passed through under "ours".

Both read the same files; unless --no-warm-cache, every file under DIR/train is read once
first so that neither side pays for disk reads the other does not (skip it for trees larger
than memory). torchvision runs first and its workers are shut down before ours starts.
Note the two pipelines end at different places: torchvision's gives normalized float32
(3, 224, 224) batches, ours 8-bit planar ones (the device normalizes them).

Needs Debian's python3-torch and python3-torchvision (run it with /usr/bin/python3); never
run by CI.
Run: /usr/bin/python3 bench/compare_loader.py --data /data/imagenet --workers 4 \\
         --ours build/bench/loader_bench --out bench/results/<date>-cpu-<commit>/compare_loader.json
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
WARMUP_BATCHES = 2


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def warm_page_cache(root):
    """Reads every file under root once; returns (files, bytes)."""
    files = total = 0
    for folder, _, names in os.walk(root, followlinks=True):
        for name in names:
            try:
                with open(os.path.join(folder, name), "rb") as f:
                    while True:
                        chunk = f.read(1 << 20)
                        if not chunk:
                            break
                        total += len(chunk)
                files += 1
            except OSError:
                pass
    return files, total


def _worker_init(_):
    import torch
    torch.set_num_threads(1)


def torchvision_rate(train_dir, workers, batch_size, seconds):
    import PIL
    import torch
    import torchvision
    from torchvision import datasets, transforms

    transform = transforms.Compose([
        transforms.RandomResizedCrop(224),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])
    dataset = datasets.ImageFolder(train_dir, transform=transform)
    if len(dataset) < batch_size:
        raise SystemExit(f"{train_dir} has {len(dataset)} images, fewer than one batch of "
                         f"{batch_size}: use a smaller --batch-size")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
        persistent_workers=workers > 0, drop_last=True,
        worker_init_fn=_worker_init if workers > 0 else None)

    state = {"iterator": None}

    def batches():
        while True:  # epochs, as many as the time asks for
            state["iterator"] = iter(loader)
            for images, _ in state["iterator"]:
                yield images.shape[0]

    stream = batches()
    for _ in range(WARMUP_BATCHES):
        next(stream)
    images = 0
    batches_seen = 0
    start = time.perf_counter()
    elapsed = 0.0
    while elapsed < seconds:
        images += next(stream)
        batches_seen += 1
        elapsed = time.perf_counter() - start
    stream.close()
    iterator = state["iterator"]
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()  # so that our side runs on idle cores

    rate = images / elapsed
    return {
        "images_per_s": rate,
        "images_per_s_per_worker": rate / max(1, workers),
        "workers": workers,
        "batch_size": batch_size,
        "seconds": elapsed,
        "images": images,
        "batches": batches_seen,
        "dataset_images": len(dataset),
        "classes": len(dataset.classes),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "pil_version": PIL.__version__,
    }


def ours_rate(binary, data, workers, batch_size, seconds):
    if not os.path.isfile(binary) or not os.access(binary, os.X_OK):
        return {"skipped": f"{binary} not found or not executable: build it "
                           "(cmake --build build --target loader_bench) or pass --ours"}
    command = [binary, "--data", data, "--workers", str(workers), "--batch-size",
               str(batch_size), "--seconds", f"{seconds:g}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=max(120.0, 3.0 * seconds + 120.0))
    except subprocess.TimeoutExpired:
        return {"failed": "timed out", "command": command}
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    result = None
    if lines:
        try:
            result = json.loads(lines[-1])
        except json.JSONDecodeError:
            result = None
    if done.returncode != 0 or not isinstance(result, dict) or "images_per_s" not in result:
        return {"failed": f"exit status {done.returncode}, no JSON result on its last line",
                "command": command, "stdout_tail": done.stdout[-2000:],
                "stderr_tail": done.stderr[-2000:]}
    result = dict(result)
    result.setdefault("command", command)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="root holding train/<class>/*.jpg")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="measured time per side, after a warm-up of 2 batches")
    parser.add_argument("--ours", default=os.path.join(HERE, "..", "build", "bench",
                                                       "loader_bench"),
                        help="our loader_bench binary (skipped with a note when missing)")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--no-warm-cache", action="store_true",
                        help="do not read the tree once first")
    args = parser.parse_args()
    if args.workers < 0 or args.batch_size < 1 or args.seconds <= 0:
        parser.error("--workers >= 0, --batch-size >= 1 and --seconds > 0")
    train_dir = os.path.join(args.data, "train")
    if not os.path.isdir(train_dir):
        parser.error(f"{train_dir} is not a folder (--data must hold train/<class>/*.jpg)")

    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.node()}
    if not args.no_warm_cache:
        files, size = warm_page_cache(train_dir)
        report["page_cache_warmed"] = {"files": files, "bytes": size}
        print(f"read {files} files ({size / 2**20:.0f} MiB) to warm the page cache",
              file=sys.stderr)

    theirs = torchvision_rate(train_dir, args.workers, args.batch_size, args.seconds)
    print(f"torchvision: {theirs['images_per_s']:.1f} images/s with {args.workers} workers",
          file=sys.stderr)
    ours = ours_rate(os.path.abspath(args.ours), args.data, args.workers, args.batch_size,
                     args.seconds)
    ratio = ratio_per_worker = None
    if "images_per_s" in ours:
        ours_rate_value = float(ours["images_per_s"])
        ours_workers = ours.get("workers", args.workers)
        ours_per_worker = ours_rate_value / max(1, int(ours_workers))
        ratio = ours_rate_value / theirs["images_per_s"]
        ratio_per_worker = ours_per_worker / theirs["images_per_s_per_worker"]
        print(f"ours: {ours_rate_value:.1f} images/s with {ours_workers} workers, "
              f"ratio {ratio:.2f}", file=sys.stderr)
    else:
        print(f"ours: {ours.get('skipped') or ours.get('failed')}", file=sys.stderr)

    report.update({"torchvision": theirs, "ours": ours, "ratio": ratio,
                   "ratio_per_worker": ratio_per_worker, "cpu": cpu_model(),
                   "cores": os.cpu_count()})
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        temp = f"{args.out}.tmp.{os.getpid()}"
        with open(temp, "w") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, args.out)


if __name__ == "__main__":
    main()
