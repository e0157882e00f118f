"""Optimizer, learning-rate schedule and gradient-clipping references (tests/fixtures/optim_*).

Read by tests/engine/optimizer_reference_test.cpp. Every reference is computed in float64
from the exact float32 inputs stored beside it (fp32_values), with every hyperparameter
rounded to float32 first, since that is what our kernels receive; so a test sees our own
float32 round-off and nothing else.

Optimizer files (optim_<case>.safetensors), three steps on fixed gradients:
  initial.<p>              the parameter before the first step
  grad<t>.<p>              the raw gradient handed to step t (t = 1, 2, 3); the update uses
                           grad_scale * grad<t>.<p> (metadata grad_scale)
  step<t>.<p>              the parameter after step t, and step<t>.<p>.abs the same update
                           run on absolute values (the magnitude of fixture.h's bound)
  state.<p>.<name>         optimizer state after step 3 under our state names
                           (momentum_buffer, exp_avg, exp_avg_sq), with .abs
  metadata: params (comma-separated, in order), decay (the parameters in the decayed
  group; the rest are biases and BatchNorm affine parameters: no weight decay, no LARS
  trust ratio), lrs (one per step), grad_scale and the optimizer's hyperparameters.

optim_lr_schedule.safetensors: <config>.lr[i] = torch's lr for the optimizer step with
  0-based index i (the lr after i calls of scheduler.step()), and for the warmup configs
  <config>.torch_linear_lr[i], plain LinearLR(start_factor) with the same total_iters,
  which documents the one-step offset of our warmup (see _lr_schedule_cases).

optim_clip.safetensors: one training step of a Linear(6 -> 4) model with mean softmax
  cross-entropy, torch.nn.utils.clip_grad_norm_ (norm_type 2) and torch.optim.SGD.
"""
import os
import warnings

import torch
import torch.nn.functional as F

from fixture_io import fp32_values, write_fixture

STEPS = 3

# (name, shape, decayed): a conv / BatchNorm / linear stack, named like a model.
PARAMS = [
    ("conv.weight", (4, 3, 3, 3), True),
    ("conv.bias", (4,), False),
    ("bn.weight", (4,), False),
    ("bn.bias", (4,), False),
    ("fc.weight", (5, 8), True),
    ("fc.bias", (5,), False),
]


def f32(value):
    """A Python float holding the float32 nearest to value (what our float options hold)."""
    return float(torch.tensor(value, dtype=torch.float32).item())


def _problem(gen, params=PARAMS, zero_weight=None, zero_grad=None):
    """Initial float32 parameters and three float32 gradient sets."""
    initial, grads = {}, [{} for _ in range(STEPS)]
    for name, shape, _ in params:
        if name.startswith("bn.weight"):
            value = 1.0 + 0.2 * torch.randn(shape, generator=gen)
        else:
            value = torch.rand(shape, generator=gen) - 0.5
        if name == zero_weight:
            value = torch.zeros(shape)
        initial[name] = value.to(torch.float32)
        for t in range(STEPS):
            grad = 0.1 * torch.randn(shape, generator=gen)
            if name == zero_grad:
                grad = torch.zeros(shape)
            grads[t][name] = grad.to(torch.float32)
    return initial, grads


def _torch_run(make_optimizer, initial, grads, lrs, grad_scale, state_names):
    """Runs a torch optimizer in float64; returns params after each step and final state."""
    params = {n: torch.nn.Parameter(fp32_values(v).clone()) for n, v in initial.items()}
    optimizer = make_optimizer(params)
    after = []
    for t in range(STEPS):
        for group in optimizer.param_groups:
            group["lr"] = lrs[t]
        for n, p in params.items():
            p.grad = grad_scale * fp32_values(grads[t][n])
        optimizer.step()
        after.append({n: p.detach().clone() for n, p in params.items()})
    state = {}
    for n, p in params.items():
        for ours, theirs in state_names.items():
            state[f"{n}.{ours}"] = optimizer.state[p][theirs].clone()
    return after, state


def _groups(params, decay, weight_decay):
    """torch parameter groups: the decayed weights and the rest (biases, BatchNorm)."""
    return [
        {"params": [params[n] for n in params if n in decay], "weight_decay": weight_decay},
        {"params": [params[n] for n in params if n not in decay], "weight_decay": 0.0},
    ]


def _sgd_magnitudes(initial, grads, lrs, grad_scale, momentum, nesterov, decay, weight_decay):
    """torch.optim.SGD's recurrences on absolute values: fixture.h's |a| . |b|."""
    mag_w, mag_buf, after = {}, {}, []
    for n, v in initial.items():
        mag_w[n] = fp32_values(v).abs()
    for t in range(STEPS):
        for n in initial:
            wd = weight_decay if n in decay else 0.0
            d = abs(grad_scale) * fp32_values(grads[t][n]).abs() + wd * mag_w[n]
            if momentum != 0.0:
                mag_buf[n] = d if t == 0 else momentum * mag_buf[n] + d
                d = d + momentum * mag_buf[n] if nesterov else mag_buf[n]
            mag_w[n] = mag_w[n] + lrs[t] * d
        after.append(dict(mag_w))
    return after, {f"{n}.momentum_buffer": b for n, b in mag_buf.items()}


def _adamw_magnitudes(initial, grads, lrs, grad_scale, beta1, beta2, eps, decay, weight_decay,
                      exp_avg_sq):
    """AdamW on absolute values: |w| decayed plus step_size * (the magnitude of m) / denom
    per step, denom from the reference's own v (all its terms are positive)."""
    mag_w = {n: fp32_values(v).abs() for n, v in initial.items()}
    mag_m = {n: torch.zeros_like(mag_w[n]) for n in initial}
    v = {n: torch.zeros_like(mag_w[n]) for n in initial}
    after = []
    for t in range(STEPS):
        step = t + 1
        for n in initial:
            g = grad_scale * fp32_values(grads[t][n])
            wd = weight_decay if n in decay else 0.0
            mag_m[n] = beta1 * mag_m[n] + (1.0 - beta1) * g.abs()
            v[n] = beta2 * v[n] + (1.0 - beta2) * g * g
            denom = v[n].sqrt() / (1.0 - beta2**step) ** 0.5 + eps
            step_size = lrs[t] / (1.0 - beta1**step)
            mag_w[n] = mag_w[n] * (1.0 - lrs[t] * wd) + step_size * mag_m[n] / denom
        after.append(dict(mag_w))
    state = {}
    for n in initial:
        state[f"{n}.exp_avg"] = mag_m[n]
        state[f"{n}.exp_avg_sq"] = exp_avg_sq[n]
    return after, state


# LARS after You, Gitman & Ginsburg 2017, "Large Batch Training of Convolutional Networks",
# Algorithm 1, for a parameter with the trust ratio (conv and linear weights):
#     g = grad_scale * grad
#     local_lr = eta * ||w|| / (||g|| + beta * ||w||)       (norms over the whole tensor)
#     v = m * v + gamma_t * local_lr * (g + beta * w)
#     w = w - v
# eta: trust coefficient; beta: weight decay; m: momentum; gamma_t: the global lr.
# Choices the paper leaves open, fixed here and stated in the file's metadata:
#  - excluded parameters (biases, BatchNorm affine): plain momentum SGD, no trust ratio and
#    no weight decay: v = m * v + gamma_t * g (as in NVIDIA's and MLPerf's ResNet-50 LARS);
#  - zero norms: local_lr = 1 when ||w|| == 0 or ||g|| == 0 (the paper's formula would give
#    0 for a zero tensor, freezing it forever; TF/MLPerf's LARS uses 1 there too);
#  - no epsilon in the denominator (ours adds 1e-9: a relative change below 1e-9, far under
#    float32 round-off for the norms used here);
#  - gamma_t is constant over the three steps. Our engine keeps the momentum buffer without
#    the lr (buf = m * buf + local_lr * (g + beta * w); w -= lr * buf, torch.optim.SGD's and
#    NVIDIA apex LARC's placement), which equals the paper's v = lr * buf exactly when the
#    lr does not change; the stored momentum_buffer is therefore v / gamma.
def _lars_run(initial, grads, lr, grad_scale, momentum, eta, decay, weight_decay):
    w = {n: fp32_values(v).clone() for n, v in initial.items()}
    v = {n: torch.zeros_like(w[n]) for n in initial}
    mag_w = {n: w[n].abs() for n in initial}
    mag_v = {n: torch.zeros_like(w[n]) for n in initial}
    after, mags = [], []
    for t in range(STEPS):
        for n in initial:
            g = grad_scale * fp32_values(grads[t][n])
            if n in decay:
                weight_norm = w[n].norm().item()
                grad_norm = g.norm().item()
                if weight_norm > 0.0 and grad_norm > 0.0:
                    local_lr = eta * weight_norm / (grad_norm + weight_decay * weight_norm)
                else:
                    local_lr = 1.0
                update = local_lr * (g + weight_decay * w[n])
                mag_update = local_lr * (g.abs() + weight_decay * mag_w[n])
            else:
                update, mag_update = g, g.abs()
            v[n] = momentum * v[n] + lr * update
            mag_v[n] = momentum * mag_v[n] + lr * mag_update
            w[n] = w[n] - v[n]
            mag_w[n] = mag_w[n] + mag_v[n]
        after.append({n: x.clone() for n, x in w.items()})
        mags.append({n: x.clone() for n, x in mag_w.items()})
    state = {f"{n}.momentum_buffer": v[n] / lr for n in initial}
    mag_state = {f"{n}.momentum_buffer": mag_v[n] / lr for n in initial}
    return after, mags, state, mag_state


def _write_optimizer_case(out_dir, seed, case, params, initial, grads, after, mags, state,
                          mag_state, decay, lrs, grad_scale, extra):
    tensors = {}
    for n in initial:
        tensors[f"initial.{n}"] = initial[n]
        for t in range(STEPS):
            tensors[f"grad{t + 1}.{n}"] = grads[t][n]
            tensors[f"step{t + 1}.{n}"] = after[t][n]
            tensors[f"step{t + 1}.{n}.abs"] = mags[t][n]
    for key, value in state.items():
        tensors[f"state.{key}"] = value
        tensors[f"state.{key}.abs"] = mag_state[key]
    metadata = {
        "params": ",".join(n for n, _, _ in params),
        "decay": ",".join(n for n, _, d in params if n in decay),
        "lrs": ",".join(repr(x) for x in lrs),
        "grad_scale": repr(grad_scale),
    }
    metadata.update(extra)
    filename = f"optim_{case}.safetensors"
    size = write_fixture(os.path.join(out_dir, filename), tensors, case, seed, metadata)
    return filename, size


def _optimizer_cases(out_dir, seed):
    written = []
    lrs = [f32(0.1), f32(0.05), f32(0.2)]  # a different lr per step: it is taken per step
    momentum = f32(0.9)
    weight_decay = f32(0.05)
    decay = {n for n, _, d in PARAMS if d}

    sgd_cases = [
        # case, momentum, nesterov, weight decay, grad_scale
        ("sgd", 0.0, False, 0.0, 1.0),
        ("sgd_momentum", momentum, False, 0.0, 1.0),
        ("sgd_nesterov", momentum, True, 0.0, 1.0),
        # decay group / no-decay group, and a summed gradient of B = 8 samples scaled by 1/B
        # in the update: the decay term must not be scaled.
        ("sgd_weight_decay", momentum, False, weight_decay, 0.125),
    ]
    for index, (case, m, nesterov, wd, grad_scale) in enumerate(sgd_cases):
        gen = torch.Generator().manual_seed(seed + index)
        initial, grads = _problem(gen)
        if grad_scale != 1.0:
            grads = [{n: (g / grad_scale).to(torch.float32) for n, g in step.items()}
                     for step in grads]

        def make(params, m=m, nesterov=nesterov, wd=wd):
            return torch.optim.SGD(_groups(params, decay, wd), lr=lrs[0], momentum=m,
                                   nesterov=nesterov)

        state_names = {"momentum_buffer": "momentum_buffer"} if m != 0.0 else {}
        after, state = _torch_run(make, initial, grads, lrs, grad_scale, state_names)
        mags, mag_state = _sgd_magnitudes(initial, grads, lrs, grad_scale, m, nesterov, decay, wd)
        extra = {"optimizer": "sgd", "reference": "torch.optim.SGD", "momentum": repr(m),
                 "nesterov": "1" if nesterov else "0", "weight_decay": repr(wd)}
        written.append(_write_optimizer_case(out_dir, seed, case, PARAMS, initial, grads, after,
                                             mags, state, mag_state, decay, lrs, grad_scale,
                                             extra))

    # AdamW, decoupled weight decay on the decayed group only.
    gen = torch.Generator().manual_seed(seed + 10)
    initial, grads = _problem(gen)
    adam_lrs = [f32(0.01), f32(0.005), f32(0.02)]
    beta1, beta2, eps, adam_wd = f32(0.9), f32(0.999), f32(1e-8), f32(0.1)

    def make_adamw(params):
        return torch.optim.AdamW(_groups(params, decay, adam_wd), lr=adam_lrs[0],
                                 betas=(beta1, beta2), eps=eps)

    after, state = _torch_run(make_adamw, initial, grads, adam_lrs, 1.0,
                              {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"})
    exp_avg_sq = {n: state[f"{n}.exp_avg_sq"] for n in initial}
    mags, mag_state = _adamw_magnitudes(initial, grads, adam_lrs, 1.0, beta1, beta2, eps, decay,
                                        adam_wd, exp_avg_sq)
    extra = {"optimizer": "adamw", "reference": "torch.optim.AdamW (amsgrad off)",
             "beta1": repr(beta1), "beta2": repr(beta2), "eps": repr(eps),
             "weight_decay": repr(adam_wd)}
    written.append(_write_optimizer_case(out_dir, seed, "adamw", PARAMS, initial, grads, after,
                                         mags, state, mag_state, decay, adam_lrs, 1.0, extra))

    # LARS (see _lars_run): eta = 0.001, the paper's trust coefficient and our default.
    eta, lars_lr, lars_wd = f32(0.001), f32(2.0), f32(5e-4)
    lars_extra = {
        "optimizer": "lars",
        "reference": "You, Gitman & Ginsburg 2017, Algorithm 1 "
                     "(tools/reference/optimizer_cases.py)",
        "momentum": repr(momentum), "weight_decay": repr(lars_wd),
        "trust_coefficient": repr(eta),
        "excluded": "biases and BatchNorm (not in decay): plain momentum SGD, no trust ratio, "
                    "no weight decay",
        "zero_norms": "local_lr = 1 when ||w|| == 0 or ||g|| == 0",
        "lr_placement": "constant lr; momentum_buffer stored as v / lr",
    }
    lars_cases = [
        ("lars", PARAMS, None, None, 0.125),
        # A zero weight (local_lr = 1 on step 1, then the trust ratio) and a weight whose
        # gradient is always zero (local_lr = 1: only weight decay moves it).
        ("lars_zero_norms",
         [("zero.weight", (3, 4), True), ("still.weight", (2, 5), True), ("fc.bias", (3,), False)],
         "zero.weight", "still.weight", 1.0),
    ]
    for index, (case, params, zero_weight, zero_grad, grad_scale) in enumerate(lars_cases):
        gen = torch.Generator().manual_seed(seed + 20 + index)
        initial, grads = _problem(gen, params, zero_weight, zero_grad)
        if grad_scale != 1.0:
            grads = [{n: (g / grad_scale).to(torch.float32) for n, g in step.items()}
                     for step in grads]
        case_decay = {n for n, _, d in params if d}
        after, mags, state, mag_state = _lars_run(initial, grads, lars_lr, grad_scale, momentum,
                                                  eta, case_decay, lars_wd)
        written.append(_write_optimizer_case(out_dir, seed, case, params, initial, grads, after,
                                             mags, state, mag_state, case_decay, [lars_lr] * STEPS,
                                             grad_scale, lars_extra))
    return written


# Our LrSchedule::at(i), for the optimizer step with 0-based index i:
#   i < W:  peak * (f + (1 - f) * (i + 1) / W)          (W warmup steps, start factor f)
#   else:   final + (peak - final) * (1 + cos(pi * min(1, (i - W) / (T - W)))) / 2   (T > W)
#           peak                                                                     (T <= W)
# torch's LinearLR(start_factor=f, total_iters=W) gives peak * (f + (1 - f) * i / W): the same
# ramp one step later (step 0 at f * peak, which is 0 for our default f = 0; ours reaches peak
# on step W - 1 and holds it on step W, where the cosine starts). So we match torch's own
# schedulers by giving LinearLR the start factor of our step 0 and one iteration less:
#   SequentialLR([LinearLR(start_factor=f + (1 - f) / W, end_factor=1, total_iters=W - 1),
#                 CosineAnnealingLR(T_max=T - W, eta_min=final)], milestones=[W])
# and record the plain LinearLR(start_factor=f, total_iters=W) too. torch's lr at index i is
# the lr after i calls of scheduler.step(), i.e. the lr of the (i + 1)-th optimizer.step().
LR_CONFIGS = [
    # name, peak, warmup steps W, start factor f, total steps T, final lr, steps recorded
    ("warmup_only", 0.4, 10, 0.1, 0, 0.0, 30),
    ("cosine_only", 0.1, 0, 0.0, 30, 0.0, 31),
    ("warmup_cosine", 0.8, 5, 0.0, 30, 0.008, 31),
]


def _scheduler_lrs(make, peak, steps):
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    optimizer = torch.optim.SGD([param], lr=peak)
    scheduler = make(optimizer)
    lrs = []
    with warnings.catch_warnings():
        # SequentialLR calls step(0) at a milestone, which torch 1.13 warns about.
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(steps):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
    return torch.tensor(lrs, dtype=torch.float64)


def _lr_schedule_cases(out_dir, seed):
    sched = torch.optim.lr_scheduler
    tensors, metadata = {}, {}
    for name, peak, warmup, start, total, final, steps in LR_CONFIGS:
        def make(optimizer, warmup=warmup, start=start, total=total, final=final):
            parts, milestones = [], []
            if warmup > 0:
                parts.append(sched.LinearLR(optimizer, start_factor=start + (1 - start) / warmup,
                                            end_factor=1.0, total_iters=warmup - 1))
            if total > warmup:
                if parts:
                    milestones.append(warmup)
                parts.append(sched.CosineAnnealingLR(optimizer, T_max=total - warmup,
                                                     eta_min=final))
            return parts[0] if len(parts) == 1 else sched.SequentialLR(optimizer, parts, milestones)

        lrs = _scheduler_lrs(make, peak, steps)
        # The closed form above, to catch a torch scheduler quirk before it becomes a truth.
        for i in range(steps):
            if i < warmup:
                expected = peak * (start + (1 - start) * (i + 1) / warmup)
            elif total > warmup:
                progress = min(1.0, (i - warmup) / (total - warmup))
                expected = final + (peak - final) * (1 + torch.cos(torch.tensor(
                    torch.pi * progress, dtype=torch.float64)).item()) / 2
            else:
                expected = peak
            assert abs(lrs[i].item() - expected) <= 1e-12 * peak, (name, i, lrs[i], expected)
        tensors[f"{name}.lr"] = lrs
        if warmup > 0 and start > 0:  # torch's LinearLR divides by zero for start_factor 0
            tensors[f"{name}.torch_linear_lr"] = _scheduler_lrs(
                lambda o, w=warmup, s=start: sched.LinearLR(o, start_factor=s, end_factor=1.0,
                                                            total_iters=w), peak, steps)
        metadata[name] = {"peak_lr": peak, "warmup_steps": warmup, "warmup_start_factor": start,
                          "total_steps": total, "final_lr": final, "steps": steps}
        metadata[f"{name}.peak_lr"] = repr(peak)
        metadata[f"{name}.warmup_steps"] = str(warmup)
        metadata[f"{name}.warmup_start_factor"] = repr(start)
        metadata[f"{name}.total_steps"] = str(total)
        metadata[f"{name}.final_lr"] = repr(final)
        metadata[f"{name}.torch"] = (
            ("SequentialLR(LinearLR(start_factor=f+(1-f)/W, total_iters=W-1), "
             "CosineAnnealingLR(T_max=T-W, eta_min=final_lr), milestones=[W])")
            if warmup > 0 and total > warmup else
            "LinearLR(start_factor=f+(1-f)/W, total_iters=W-1)" if warmup > 0 else
            "CosineAnnealingLR(T_max=T, eta_min=final_lr)")
    metadata["configs"] = ",".join(c[0] for c in LR_CONFIGS)
    metadata["index"] = "lr[i]: torch's lr after i scheduler.step() calls = our at(i)"
    filename = "optim_lr_schedule.safetensors"
    size = write_fixture(os.path.join(out_dir, filename), tensors, "lr_schedule", seed, metadata)
    return [(filename, size)]


def _clip_cases(out_dir, seed):
    """One SGD step of Linear(6 -> 4) on a batch of 8 with global-norm clipping."""
    gen = torch.Generator().manual_seed(seed + 30)
    batch, features, classes = 8, 6, 4
    weight = (torch.rand(classes, features, generator=gen) - 0.5).to(torch.float32)
    bias = (0.2 * torch.randn(classes, generator=gen)).to(torch.float32)
    x = torch.randn(batch, features, generator=gen).to(torch.float32)
    labels = torch.randint(0, classes, (batch,), generator=gen)
    tensors = {"initial.weight": weight, "initial.bias": bias, "input": x, "labels": labels}
    lr, momentum, wd = f32(0.5), f32(0.9), f32(0.01)

    # The gradient magnitude for fixture.h's bound: d(loss)/d(logits) = (p - onehot) / B, so
    # |grad W| <= ((p + onehot) / B)^T |x| and |grad b| <= sum_b (p + onehot) / B.
    with torch.no_grad():
        p = torch.softmax(fp32_values(x) @ fp32_values(weight).T + fp32_values(bias), dim=1)
        mag_logits = (p + F.one_hot(labels, classes).to(torch.float64)) / batch
        mag_grad_w = mag_logits.T @ fp32_values(x).abs()
        mag_grad_b = mag_logits.sum(0)

    def run(max_norm):
        w = torch.nn.Parameter(fp32_values(weight).clone())
        b = torch.nn.Parameter(fp32_values(bias).clone())
        loss = F.cross_entropy(fp32_values(x) @ w.T + b, labels)  # mean over the batch
        loss.backward()
        total_norm = torch.nn.utils.clip_grad_norm_([w, b], max_norm=max_norm, norm_type=2.0)
        coefficient = min(1.0, max_norm / (total_norm.item() + 1e-6))
        optimizer = torch.optim.SGD([{"params": [w], "weight_decay": wd},
                                     {"params": [b], "weight_decay": 0.0}],
                                    lr=lr, momentum=momentum)
        optimizer.step()
        return loss.item(), total_norm.item(), coefficient, w.detach(), b.detach()

    _, unclipped_norm, _, _, _ = run(float("inf"))
    metadata = {"lr": repr(lr), "momentum": repr(momentum), "weight_decay": repr(wd),
                "decay": "weight", "loss": "softmax cross-entropy, mean over the batch",
                "reference": "torch.nn.utils.clip_grad_norm_(max_norm, norm_type=2) then "
                             "torch.optim.SGD step 1", "cases": "clipped,unclipped"}
    for case, max_norm in (("clipped", 0.4 * unclipped_norm), ("unclipped", 3.0 * unclipped_norm)):
        loss, total_norm, coefficient, w, b = run(max_norm)
        tensors[f"{case}.weight"] = w
        tensors[f"{case}.bias"] = b
        scale = lr * coefficient
        tensors[f"{case}.weight.abs"] = (fp32_values(weight).abs() * (1 + lr * wd) +
                                         scale * mag_grad_w)
        tensors[f"{case}.bias.abs"] = fp32_values(bias).abs() + scale * mag_grad_b
        tensors[f"{case}.grad_norm"] = torch.tensor([total_norm], dtype=torch.float64)
        tensors[f"{case}.grad_norm.abs"] = torch.tensor(
            [torch.cat([mag_grad_w.flatten(), mag_grad_b]).norm().item()], dtype=torch.float64)
        tensors[f"{case}.loss"] = torch.tensor([loss], dtype=torch.float64)
        metadata[f"{case}.clip_norm"] = repr(max_norm)
        metadata[f"{case}.coefficient"] = repr(coefficient)
    filename = "optim_clip.safetensors"
    size = write_fixture(os.path.join(out_dir, filename), tensors, "clip", seed, metadata)
    return [(filename, size)]


def generate(out_dir, seed):
    torch.manual_seed(seed)
    return _optimizer_cases(out_dir, seed) + _lr_schedule_cases(out_dir, seed) + \
        _clip_cases(out_dir, seed)
