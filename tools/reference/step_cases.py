"""Whole training steps in PyTorch: the truth for tests/mbp/torch_step_reference_test.cpp.

tests/mbp/exactness_test.cpp proves that a split equals our own full batch; these fixtures
say what the full batch (or, with BatchNorm, the documented micro-batch semantics) must
give, computed by PyTorch autograd and torch.optim in float64 from the exact float32
inputs and initial weights stored here (float64 results rounded to float32 on writing).

  step_lenet5_sgd.safetensors     LeNet-5 (models/lenet.cpp), two SGD steps (momentum 0.9,
                                  weight decay on weights only), B = 24 of 1x28x28. The
                                  reference is plain full-batch training: mean cross-entropy
                                  over the 24 samples, backward, optimizer.step(). The C++
                                  test runs it as [10, 10, 4].
  step_resnet20_sgd.safetensors   ResNet-20 (models/resnet.cpp), one SGD step, B = 16 of
                                  3x8x8 as [6, 6, 4]. BatchNorm makes the split part of
                                  the definition, so the reference is PyTorch gradient
                                  accumulation with the same split (see resnet20_case).
  step_segment_ignore.safetensors a 2-conv per-pixel classifier, B = 10 of 3x8x8 with
                                  labels [10, 8, 8] holding ignore_index 255 in uneven
                                  proportions, one SGD step with reduction mean (label
                                  smoothing 0.1) and, from the same start, one with
                                  reduction sum (label smoothing 0.05). Reference: full batch.

Budget (2.5 MiB for the three files): ResNet-20 has 272,474 parameters, 1.09 MB per copy,
so its initial weights are not stored but defined by a formula both sides evaluate
(`formula_values`: a splitmix64 hash of the tensor name and element index, scaled to
PyTorch's default bound 1/sqrt(fan_in)); the fixture stores per-tensor checksums so the
test proves it rebuilt exactly these values. LeNet-5 and the segmentation model start
from torch's own initialization (torch.manual_seed(seed)), stored.

Learning rates are large (1.0 for LeNet-5, 2.0 for ResNet-20, 2.0 / 0.01 for mean / sum)
on purpose: the updates are then 1-50% of the parameters, so an error in the update is
not hidden under the float32 rounding of the parameter itself (at lr 0.1 every difference
the test saw was exactly that one rounding). These are one- and two-step checks of the
arithmetic, not training recipes.

ReLU inputs keep a margin from zero. A ReLU input within float32 round-off of 0 takes
either side of the mask depending on the order of a sum (which GEMM kernel OpenBLAS picks
for the CPU), and one flipped element moved ResNet-20's update by 100x the test's bound on
an AVX-512 machine while it passed on others (3x32x32 images: 3.3 M ReLU inputs, 21 of
them within 1e-5 of 0, float32 PyTorch off float64 by up to 2e-5). So the ResNet-20 images
are 8x8 px and drawn until every ReLU input of the float64 forward is at least
RELU_MARGIN_FACTOR times farther from 0 than the largest difference between a float32
PyTorch forward and the float64 one over all ReLU inputs; metadata "relu_margin",
"relu_input_float32_error" and "image_draws" record the draw.

Every fixture also records, in metadata "one_over_k_relative_change", how far the update
moves (max over tensors of max|change| / max|update|) when the micro-batch factor n_k/B
is replaced by 1/K (the MBP paper's code): the test checks its tolerance is far below it.
"""
import math
import os
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fixture_io import fp32_values, write_fixture

IGNORE_INDEX = 255
BN_MOMENTUM = 0.1
BN_EPS = 1e-5
# How far from 0 every ReLU input of the ResNet-20 fixture must be, in units of the largest
# float32 error of any ReLU input (see the top of this file).
RELU_MARGIN_FACTOR = 2.5


# ---- the formula for ResNet-20's initial state (mirrored in the C++ test) ----------------

_MASK = (1 << 64) - 1


def _fnv1a64(text):
    h = 0xCBF29CE484222325
    for byte in text.encode():
        h = ((h ^ byte) * 0x100000001B3) & _MASK
    return h


def formula_values(name, count, seed):
    """count values c_i in (-1, 1): c_i = (2 * (h_i >> 40) + 1 - 2^24) / 2^24 (exact in
    float64), h_i = splitmix64(key + (i + 1) * 0x9E3779B97F4A7C15 mod 2^64),
    key = fnv1a64(name) XOR seed. Returned as float64."""
    key = np.uint64(_fnv1a64(name) ^ (seed & _MASK))
    with np.errstate(over="ignore"):
        index = np.arange(1, count + 1, dtype=np.uint64)
        z = key + index * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    top = (z >> np.uint64(40)).astype(np.float64)
    return (2.0 * top + 1.0 - 2.0 ** 24) / 2.0 ** 24


def formula_tensor(name, shape, scale, offset, seed):
    """float32(offset + scale * c), computed in float64 and rounded once."""
    count = int(np.prod(shape)) if len(shape) else 1
    values = offset + scale * formula_values(name, count, seed)
    return torch.from_numpy(values.astype(np.float32)).reshape(shape)


def formula_state(model, seed):
    """The initial state of ResNet-20 by name (see the module docstring):
    conv / linear weight and linear bias: U-like in (-b, b), b = 1/sqrt(fan_in);
    BN weight 1 + 0.25 c, bias 0.1 c, running_mean 0.1 c, running_var 1 + 0.5 c,
    num_batches_tracked 0."""
    state = OrderedDict()
    fan_in = {}
    for name, p in model.named_parameters():
        if p.dim() > 1:
            fan_in[name.rsplit(".", 1)[0]] = p[0].numel()
    for name, t in model.state_dict().items():
        module, leaf = name.rsplit(".", 1)
        shape = list(t.shape)
        if leaf == "num_batches_tracked":
            state[name] = torch.zeros((), dtype=torch.int64)
        elif module in fan_in:  # conv / linear weight and bias
            state[name] = formula_tensor(name, shape, 1.0 / math.sqrt(fan_in[module]), 0.0, seed)
        elif leaf == "weight":
            state[name] = formula_tensor(name, shape, 0.25, 1.0, seed)
        elif leaf == "bias":
            state[name] = formula_tensor(name, shape, 0.1, 0.0, seed)
        elif leaf == "running_mean":
            state[name] = formula_tensor(name, shape, 0.1, 0.0, seed)
        elif leaf == "running_var":
            state[name] = formula_tensor(name, shape, 0.5, 1.0, seed)
        else:
            raise ValueError(f"formula_state: no rule for {name}")
    return state


def checksum(values):
    """sum_i v_i * ((i mod 13) - 6) in float64 over the flattened tensor: catches a changed
    value and a permutation alike (mirrored in the C++ test)."""
    flat = values.reshape(-1).to(torch.float64)
    weights = (torch.arange(flat.numel(), dtype=torch.int64) % 13 - 6).to(torch.float64)
    return float((flat * weights).sum())


# ---- models with our zoo's names ----------------------------------------------------------


def lenet5():
    """models/lenet.cpp at 1x28x28, 10 classes."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 6, 5, padding=2)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(6, 16, 5)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(16 * 5 * 5, 120)), ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(120, 84)), ("relu4", nn.ReLU()),
        ("fc3", nn.Linear(84, 10)),
    ]))


class BasicBlock(nn.Module):
    """models/blocks.cpp ResidualBlock (bottleneck false): conv-bn-relu-conv-bn + shortcut,
    relu; a 1x1 conv + BN shortcut named downsample.0/.1 when the shape changes."""

    def __init__(self, in_channels, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU()  # called twice; no state, so the state_dict is unchanged
        self.downsample = None
        if stride != 1 or in_channels != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, planes, 1, stride, 0, bias=False),
                nn.BatchNorm2d(planes, eps=BN_EPS, momentum=BN_MOMENTUM))

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        shortcut = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + shortcut)


def resnet20(num_classes=10):
    """models/resnet.cpp make_resnet20: conv1 (3x3, 16, no bias), bn1, relu, three stages of
    three BasicBlocks (16, 32, 64 planes; stride 2 entering stages 2 and 3), global average
    pool, flatten, fc."""
    layers = [("conv1", nn.Conv2d(3, 16, 3, 1, 1, bias=False)),
              ("bn1", nn.BatchNorm2d(16, eps=BN_EPS, momentum=BN_MOMENTUM)), ("relu", nn.ReLU())]
    channels = 16
    for i, planes in enumerate((16, 32, 64)):
        blocks = []
        for b in range(3):
            blocks.append(BasicBlock(channels, planes, 2 if (b == 0 and i > 0) else 1))
            channels = planes
        layers.append((f"layer{i + 1}", nn.Sequential(*blocks)))
    layers += [("avgpool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
               ("fc", nn.Linear(channels, num_classes))]
    return nn.Sequential(OrderedDict(layers))


def segmenter():
    """The per-pixel classifier the C++ test composes: conv1 3->8 (3x3, pad 1), relu,
    conv2 8->4 (1x1); logits [N, 4, H, W]."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 8, 3, padding=1)), ("relu", nn.ReLU()),
        ("conv2", nn.Conv2d(8, 4, 1)),
    ]))


# ---- shared pieces ------------------------------------------------------------------------


def sgd(model, lr, momentum, weight_decay):
    """torch.optim.SGD with our decay mask: weight decay on conv / linear weights only
    (not on biases, not on BatchNorm's weight and bias), as layers/ mark Parameter::decay."""
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.dim() > 1 else no_decay).append(p)
    return torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}],
                           lr=lr, momentum=momentum)


def float64_copy(model, state):
    """The model in float64, loaded with the exact float32 values of `state`."""
    model.load_state_dict(state)
    model.double()
    return model


def split_sizes(batch, micro_batch):
    sizes = [micro_batch] * (batch // micro_batch)
    if batch % micro_batch:
        sizes.append(batch % micro_batch)
    return sizes


def cross_entropy(logits, labels, reduction, label_smoothing=0.0, ignore_index=-100):
    """Written out (softmax over dim 1, PyTorch's smoothing: target (1 - e) one_hot + e / C,
    ignored elements dropped, mean over the valid ones) and checked against F.cross_entropy,
    so the definition does not rest on one torch version's corner cases."""
    classes = logits.shape[1]
    log_p = F.log_softmax(logits, dim=1)
    valid = labels != ignore_index
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    nll = -log_p.gather(1, safe.unsqueeze(1)).squeeze(1)
    smooth = -log_p.sum(dim=1) / classes
    per_element = ((1.0 - label_smoothing) * nll + label_smoothing * smooth) * valid
    total = per_element.sum()
    loss = total / valid.sum() if reduction == "mean" else total
    theirs = F.cross_entropy(logits, labels, reduction=reduction, ignore_index=ignore_index,
                             label_smoothing=label_smoothing)
    assert torch.allclose(loss, theirs, rtol=1e-12, atol=0), (float(loss), float(theirs))
    return loss


def wrong_factor_change(micro_grads, counts, reference_update, lr):
    """max over tensors of max|Δ| / max|update| where Δ = lr * (Σ g_k / K - Σ (n_k/N) g_k):
    the change of a first SGD step if the factor n_k/N became 1/K."""
    total = sum(counts)
    worst = 0.0
    for name, update in reference_update.items():
        right = sum(g[name] * (n / total) for g, n in zip(micro_grads, counts))
        wrong = sum(g[name] for g in micro_grads) / len(micro_grads)
        scale = float(update.abs().max())
        if scale > 0:
            worst = max(worst, float((lr * (wrong - right)).abs().max()) / scale)
    return worst


def micro_batch_gradients(model, images, labels, sizes, loss_of):
    """Per micro-batch mean-loss gradients (for wrong_factor_change), model left unchanged
    apart from .grad, which is cleared again."""
    grads = []
    offset = 0
    for n in sizes:
        model.zero_grad(set_to_none=True)
        loss_of(model(images[offset:offset + n]), labels[offset:offset + n]).backward()
        grads.append({k: p.grad.detach().clone() for k, p in model.named_parameters()})
        offset += n
    model.zero_grad(set_to_none=True)
    return grads


# ---- (a) LeNet-5, two SGD steps, full batch -------------------------------------------------


def lenet5_case(out_dir, seed):
    batch, micro_batch, lr, momentum, weight_decay = 24, 10, 1.0, 0.9, 5e-4
    torch.manual_seed(seed)
    model = lenet5()  # torch's own initialization, float32
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    batches = [(torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))) for _ in range(2)]

    model = float64_copy(model, init)
    optimizer = sgd(model, lr, momentum, weight_decay)
    tensors = {f"init.{k}": v for k, v in init.items()}
    losses = []
    one_over_k = 0.0
    for step, (images, labels) in enumerate(batches, start=1):
        x = fp32_values(images)
        tensors[f"batch{step}.images"] = images
        tensors[f"batch{step}.labels"] = labels
        if step == 1:
            micro = micro_batch_gradients(model, x, labels, split_sizes(batch, micro_batch),
                                          lambda z, y: F.cross_entropy(z, y))
        before = {k: p.detach().clone() for k, p in model.named_parameters()}
        optimizer.zero_grad(set_to_none=True)
        loss = cross_entropy(model(x), labels, "mean")
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
        for k, p in model.named_parameters():
            tensors[f"step{step}.{k}"] = p.detach().clone()
        if step == 1:
            update = {k: p.detach() - before[k] for k, p in model.named_parameters()}
            one_over_k = wrong_factor_change(micro, split_sizes(batch, micro_batch), update, lr)
    tensors["loss"] = torch.tensor(losses, dtype=torch.float64)
    name = "step_lenet5_sgd.safetensors"
    size = write_fixture(os.path.join(out_dir, name), tensors, "lenet5_two_sgd_steps", seed, {
        "reference": "full-batch PyTorch training: per step mean cross-entropy over all 24 "
                     "samples, backward, torch.optim.SGD step (float64)",
        "model": "lenet5", "batch": batch, "micro_batch": micro_batch,
        "split": split_sizes(batch, micro_batch), "lr": lr, "momentum": momentum,
        "weight_decay": weight_decay, "weight_decay_on": "conv and linear weights only",
        "one_over_k_relative_change": one_over_k,
    })
    return [(name, size)]


# ---- (b) ResNet-20, one SGD step, gradient accumulation with BatchNorm --------------------


def relu_inputs(model, x, sizes):
    """Every ReLU input of a training forward of each micro-batch, flattened into one float64
    vector (the model's BatchNorm running statistics move: pass a copy)."""
    seen = []
    hooks = [m.register_forward_pre_hook(
        lambda m, inputs: seen.append(inputs[0].detach().double().flatten()))
        for m in model.modules() if isinstance(m, nn.ReLU)]
    model.train()
    offset = 0
    with torch.no_grad():
        for n in sizes:
            model(x[offset:offset + n])
            offset += n
    for h in hooks:
        h.remove()
    return torch.cat(seen)


def resnet20_case(out_dir, seed):
    batch, micro_batch, lr, momentum, weight_decay = 16, 6, 2.0, 0.9, 5e-4
    image_size, max_draws = 8, 2000
    sizes = split_sizes(batch, micro_batch)  # [6, 6, 4]
    model = resnet20()
    init = formula_state(model, seed)
    float32_model = resnet20()
    float32_model.load_state_dict(init)
    torch.manual_seed(seed + 1)
    for draw in range(1, max_draws + 1):
        images = torch.randn(batch, 3, image_size, image_size)
        labels = torch.randint(0, 10, (batch,))
        x = fp32_values(images)
        exact = relu_inputs(float64_copy(resnet20(), init), x, sizes)
        float32_error = float((relu_inputs(float32_model, images, sizes) - exact).abs().max())
        float32_model.load_state_dict(init)  # its running statistics moved
        margin = float(exact.abs().min())
        if margin >= RELU_MARGIN_FACTOR * float32_error:
            break
    else:
        raise RuntimeError(f"resnet20_case: in {max_draws} draws no ReLU input margin reached "
                           f"{RELU_MARGIN_FACTOR}x the float32 error")
    model = float64_copy(model, init)
    micro = micro_batch_gradients(model, x, labels, sizes, lambda z, y: F.cross_entropy(z, y))
    model.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in init.items()})

    # Every BN layer's input, per micro-batch (what our BatchNorm2d sums into Σx, Σx², n).
    bn_inputs = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            bn_inputs[name] = []
            hooks.append(module.register_forward_pre_hook(
                lambda m, inputs, name=name: bn_inputs[name].append(inputs[0].detach())))

    optimizer = sgd(model, lr, momentum, weight_decay)
    optimizer.zero_grad(set_to_none=True)
    model.train()
    loss_total = 0.0
    offset = 0
    for n in sizes:
        z = model(x[offset:offset + n])
        loss = F.cross_entropy(z, labels[offset:offset + n]) * (n / batch)
        loss.backward()  # accumulates into .grad
        loss_total += float(loss)
        offset += n
    for h in hooks:
        h.remove()
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    optimizer.step()

    tensors = {"images": images, "labels": labels, "loss": torch.tensor([loss_total])}
    for k, p in model.named_parameters():
        tensors[f"after.{k}"] = p.detach().clone()
    update = {k: p.detach() - before[k] for k, p in model.named_parameters()}
    for k, v in init.items():
        tensors[f"checksum.{k}"] = torch.tensor([checksum(v)], dtype=torch.float64)

    # Running statistics as our engine defines them (docs/architecture.md, "BatchNorm"): one
    # update per batch from the per-channel sums over ALL micro-batches' BN inputs, unbiased
    # variance. torch's own buffers (three sequential momentum updates, one per micro-batch,
    # num_batches_tracked 3) are a different definition and are not what is stored.
    sequential_gap = 0.0
    for name, inputs in bn_inputs.items():
        pooled = torch.cat(inputs, dim=0)
        mean = pooled.mean(dim=(0, 2, 3))
        var = pooled.var(dim=(0, 2, 3), unbiased=True)
        rm0, rv0 = init[f"{name}.running_mean"].double(), init[f"{name}.running_var"].double()
        running_mean = (1 - BN_MOMENTUM) * rm0 + BN_MOMENTUM * mean
        running_var = (1 - BN_MOMENTUM) * rv0 + BN_MOMENTUM * var
        tensors[f"after.{name}.running_mean"] = running_mean
        tensors[f"after.{name}.running_var"] = running_var
        tensors[f"after.{name}.num_batches_tracked"] = torch.tensor(1, dtype=torch.int32)
        module = dict(model.named_modules())[name]
        sequential_gap = max(sequential_gap,
                             float((module.running_var - running_var).abs().max() /
                                   (running_var - rv0).abs().max()))
    name = "step_resnet20_sgd.safetensors"
    size = write_fixture(os.path.join(out_dir, name), tensors, "resnet20_one_sgd_step", seed, {
        "reference": "PyTorch gradient accumulation with the split [6, 6, 4]: per micro-batch "
                     "model.train(), loss = CE_mean(micro) * n_k / 16, backward (adds into "
                     ".grad); then one torch.optim.SGD step (float64). Each micro-batch's BN "
                     "normalizes with its own batch statistics (biased variance).",
        "running_stats": "per BN layer: running = 0.9 * initial + 0.1 * s, s = mean and unbiased "
                         "variance of that layer's inputs pooled over the three micro-batches "
                         "(inputs captured by forward pre-hooks; equal to what Σx, Σx², n "
                         "summed over micro-batches give); num_batches_tracked 1 (once per batch). "
                         "Not torch's sequential per-micro-batch momentum updates.",
        "initial_state": "formula_state() in tools/reference/step_cases.py, not stored",
        "model": "resnet20", "batch": batch, "micro_batch": micro_batch, "split": sizes,
        "image_size": image_size, "image_draws": draw, "relu_margin": margin,
        "relu_input_float32_error": float32_error,
        "lr": lr, "momentum": momentum, "weight_decay": weight_decay,
        "weight_decay_on": "conv and linear weights only",
        "one_over_k_relative_change": wrong_factor_change(micro, sizes, update, lr),
        "torch_sequential_running_var_gap": sequential_gap,
    })
    return [(name, size)]


# ---- (c) reduction mean / sum with ignore_index, per-pixel labels --------------------------


def segment_case(out_dir, seed):
    batch, micro_batch, momentum, weight_decay = 10, 4, 0.9, 1e-3
    sizes = split_sizes(batch, micro_batch)  # [4, 4, 2]
    torch.manual_seed(seed + 2)
    model = segmenter()
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    images = torch.randn(batch, 3, 8, 8)
    labels = torch.randint(0, 4, (batch, 8, 8))
    # Uneven ignored shares per sample, so the micro-batches' valid counts are far from
    # proportional to their sample counts (the last sample is ignored entirely).
    ignored_share = torch.tensor([0.6, 0.5, 0.6, 0.5, 0.1, 0.0, 0.1, 0.1, 0.3, 1.0])
    ignored = torch.rand(batch, 8, 8) < ignored_share.view(-1, 1, 1)
    labels[ignored] = IGNORE_INDEX
    x = fp32_values(images)
    valid_per_micro = []
    offset = 0
    for n in sizes:
        valid_per_micro.append(int((labels[offset:offset + n] != IGNORE_INDEX).sum()))
        offset += n

    tensors = {f"init.{k}": v for k, v in init.items()}
    tensors["images"] = images
    tensors["labels"] = labels
    metadata = {"split": sizes, "micro_batch": micro_batch, "batch": batch,
                "ignore_index": IGNORE_INDEX, "valid_per_micro_batch": valid_per_micro,
                "valid_total": sum(valid_per_micro), "elements": labels.numel(),
                "momentum": momentum, "weight_decay": weight_decay}
    for reduction, smoothing, lr in (("mean", 0.1, 2.0), ("sum", 0.05, 0.01)):
        net = float64_copy(segmenter(), init)
        loss_of = lambda z, y: cross_entropy(z, y, reduction, smoothing, IGNORE_INDEX)  # noqa: E731
        optimizer = sgd(net, lr, momentum, weight_decay)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(net(x), labels)
        loss.backward()
        before = {k: p.detach().clone() for k, p in net.named_parameters()}
        optimizer.step()
        for k, p in net.named_parameters():
            tensors[f"{reduction}.after.{k}"] = p.detach().clone()
        tensors[f"{reduction}.loss"] = torch.tensor([float(loss)])
        if reduction == "mean":
            # The mean's micro-batch factor counts valid labels: n_k = valid in micro-batch k.
            micro = micro_batch_gradients(float64_copy(segmenter(), init), x, labels, sizes,
                                          loss_of)
            update = {k: p.detach() - before[k] for k, p in net.named_parameters()}
            metadata["one_over_k_relative_change"] = wrong_factor_change(
                micro, valid_per_micro, update, lr)
        metadata[f"{reduction}.label_smoothing"] = smoothing
        metadata[f"{reduction}.lr"] = lr
    metadata["reference"] = (
        "full-batch PyTorch step (float64): logits of all 10 samples, cross-entropy over "
        "valid pixels (labels != 255) with label smoothing, reduction 'mean' (divided by "
        "valid_total) or 'sum', backward, torch.optim.SGD step; mean and sum each start "
        "from init")
    name = "step_segment_ignore.safetensors"
    size = write_fixture(os.path.join(out_dir, name), tensors, "segment_ignore_index_mean_sum",
                         seed, metadata)
    return [(name, size)]


def generate(out_dir, seed):
    """Writes the three step fixtures into out_dir; returns [(file name, bytes)]."""
    written = []
    for case in (lenet5_case, resnet20_case, segment_case):
        written += case(out_dir, seed)
    return written
