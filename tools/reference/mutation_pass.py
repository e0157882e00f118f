#!/usr/bin/env python3
"""The mutation pass: breaks the engine's semantics one place at a time and runs the suite.

    python3 tools/reference/mutation_pass.py BUILD_DIR [--only NAME ...] [--json OUT]

Each mutation replaces one exact snippet of a library file (it must occur once), rebuilds
BUILD_DIR (configured from this checkout), runs `ctest --stop-on-failure` and records the
first test that failed; then the file is restored (its content, with a new modification
time, so no build keeps a stale mutant). A mutation no test catches is a hole in the suite:
the script exits 1 and names it. Run it in a checkout nobody else edits (a git worktree).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# (name, area, file, snippet, replacement)
MUTATIONS = [
    ("decay-on-biases", "optimizer", "engine/optimizer.cpp",
     "slot.weight_decay = p.decay ? options_.weight_decay : 0.0f;",
     "slot.weight_decay = options_.weight_decay;"),
    ("adamw-no-bias-correction", "optimizer", "kernels/cpu/optimizers.cpp",
     "const double bias_correction1 = 1.0 - std::pow(static_cast<double>(o.beta1), o.step);",
     "const double bias_correction1 = 1.0;"),
    ("nesterov-ignored", "optimizer", "engine/optimizer.cpp",
     "o.nesterov = options_.nesterov;", "o.nesterov = false;"),
    ("lars-no-trust-ratio", "optimizer", "engine/optimizer.cpp",
     "slot.use_trust_ratio = p.decay;", "slot.use_trust_ratio = false;"),
    ("warmup-removed", "schedule", "engine/lr_schedule.cpp",
     "if (warmup_steps > 0 && step < warmup_steps) {",
     "if (false && warmup_steps > 0 && step < warmup_steps) {"),
    ("cosine-off-by-one", "schedule", "engine/lr_schedule.cpp",
     "static_cast<double>(step - warmup_steps) /",
     "static_cast<double>(step + 1 - warmup_steps) /"),
    ("clipping-disabled", "clipping", "engine/trainer.cpp",
     "if (options_.clip_norm > 0.0 && result.grad_norm > options_.clip_norm) {",
     "if (false && options_.clip_norm > 0.0) {"),
    ("sum-as-mean", "loss", "layers/softmax_cross_entropy.cpp",
     "if (reduction == Reduction::Sum) return loss_sum;",
     "if (false) return loss_sum;"),
    ("label-smoothing-ignored", "loss", "kernels/cpu/softmax_cross_entropy.cpp",
     "const float smooth_per_class = label_smoothing / static_cast<float>(classes);\n"
     "  const float on_target = 1.0f - label_smoothing;",
     "const float smooth_per_class = 0.0f * label_smoothing / static_cast<float>(classes);\n"
     "  const float on_target = 1.0f;"),
    ("ignore-index-counted", "ignore_index", "engine/trainer.cpp",
     "valid += data[i] != ignore_index ? 1 : 0;", "valid += 1;"),
    ("factor-one-over-k", "accumulation", "engine/trainer.cpp",
     "factor = static_cast<float>(static_cast<double>(loss.valid_count) /\n"
     "                                  static_cast<double>(std::max<std::int64_t>(total_valid, 1)));",
     "factor = 1.0f / static_cast<float>(plan_.count());"),
    ("conv-weight-grad-overwrite", "accumulation", "layers/conv2d.cpp",
     "weight_->grad.data<float>(), state.mode);",
     "weight_->grad.data<float>(), GradientMode::Overwrite);"),
    ("bn-biased-running-var", "batch_norm", "layers/batch_norm2d.cpp",
     "const double unbiased_var = biased_var * n / (n - 1.0);",
     "const double unbiased_var = biased_var;"),
    ("bn-commit-drops-micro-batch", "batch_norm", "layers/batch_norm2d.cpp",
     "  batch_norm_fold_statistics(stream(), base + 2 * channels_, base, 2 * channels_);\n"
     "  committed_count_ += pending_count_;",
     "  committed_count_ += 0 * pending_count_;"),
    ("dropout-keyed-by-position", "dropout", "layers/dropout.cpp",
     "key.sample_offset = state.sample_offset;", "key.sample_offset = 0;"),
    ("planner-verification-no-op", "planner", "engine/planner.cpp",
     "for (int round = 0; (round < 6 || verified == 0) && plan.micro_batch > plan.profile.probe_large;",
     "for (int round = 0; false && plan.micro_batch > plan.profile.probe_large;"),
    ("planner-margin-ignored", "planner", "engine/planner.cpp",
     "const std::size_t overhead = plan.margin_bytes + profile.fixed_bytes;\n  std::int64_t m = 0;",
     "const std::size_t overhead = profile.fixed_bytes;\n  std::int64_t m = 0;"),
    ("bn-values-per-channel-rule", "planner", "engine/planner.cpp",
     "(kMinValuesPerChannel + values_per_sample - 1) / values_per_sample);",
     "(2 + values_per_sample - 1) / values_per_sample);"),
    ("oom-skips-abort", "oom", "engine/trainer.cpp",
     "  model_->clear_cache();\n  model_->abort_micro_batch();\n  feeder_.reset();",
     "  model_->clear_cache();\n  feeder_.reset();"),
    ("oom-inplace-continues", "oom", "engine/trainer.cpp",
     "if (options_.accumulation == AccumulationMode::InPlace && k > 0) {",
     "if (false && k > 0) {"),
    ("resume-labels-next-epoch", "resume", "engine/fit.cpp",
     ": TrainingPosition{epoch, report.step_in_epoch};", ": TrainingPosition{epoch + 1, 0};"),
    ("resume-drops-optimizer-state", "resume", "engine/checkpoint.cpp",
     "    load_into(opt_file, optimizer_state(trainer.optimizer()));\n", ""),
    ("resume-forgets-step", "resume", "engine/checkpoint.cpp",
     "  trainer.set_steps(info.step);\n  return info;", "  return info;"),
    ("eval-normalizes-by-subset", "resume", "tools/cli.cpp",
     "data.normalization = !saved.empty() ? saved : published_normalization(a.dataset);",
     "data.normalization = Normalization{};"),
]


def sh(cmd, cwd):
    return subprocess.run(cmd, cwd=cwd, shell=True, capture_output=True, text=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("build_dir")
    parser.add_argument("--only", action="append")
    parser.add_argument("--json")
    args = parser.parse_args()
    build = os.path.abspath(args.build_dir)
    results = []
    for name, area, rel, snippet, replacement in MUTATIONS:
        if args.only and name not in args.only:
            continue
        path = os.path.join(ROOT, rel)
        original = open(path).read()
        if original.count(snippet) != 1:
            sys.exit(f"{name}: the snippet occurs {original.count(snippet)} times in {rel}")
        started = time.time()
        try:
            with open(path, "w") as f:
                f.write(original.replace(snippet, replacement))
            built = sh(f"ninja -C {build}", ROOT)
            if built.returncode != 0:
                caught, how = ["(build failed)"], built.stdout[-400:]
            else:
                run = sh("ctest -j2 --stop-on-failure --timeout 900", build)
                caught = re.findall(r"^\s*\d+ - (\S+).*\((?:Failed|SEGFAULT|Timeout|Exception|Subprocess aborted)\)", run.stdout, re.M)
                how = "" if caught else run.stdout[-300:]
        finally:
            with open(path, "w") as f:
                f.write(original)
        entry = {"mutation": name, "area": area, "file": rel, "caught_by": caught,
                 "seconds": round(time.time() - started, 1)}
        if how and not caught:
            entry["output"] = how
        results.append(entry)
        print(f"{name:32s} {area:13s} -> {', '.join(caught) or 'NOT CAUGHT'} "
              f"({entry['seconds']} s)", flush=True)
    sh(f"ninja -C {build}", ROOT)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    missed = [r["mutation"] for r in results if not r["caught_by"]]
    if missed:
        sys.exit(f"not caught: {', '.join(missed)}")


if __name__ == "__main__":
    main()
