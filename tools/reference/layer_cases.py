"""PyTorch references for every layer, forward and backward (tests/fixtures/layers_*.safetensors).

One file per case, read by tests/layers/torch_reference_test.cpp. Tensor names:
  input, weight, bias, ...  the float32 inputs and parameters (parameters under our names)
  grad_output               a fixed random upstream gradient
  output, <name>.grad       references, computed in float64 from the exact float32 inputs
  <key>.abs                 the magnitude for the round-off bound (tests/fixture.h): the same
                            computation on absolute values, where the op is a sum of products
Metadata holds the hyper-parameters the test needs to build the same layer.
"""
import os
import zlib

import torch
import torch.nn.functional as F

from fixture_io import fp32_values, write_fixture

PREFIX = "layers_"


class Draw:
    """Float32 random tensors from a generator seeded by (seed, case name), so adding or
    reordering cases leaves the others' values unchanged."""

    def __init__(self, seed, case):
        self.generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(case.encode()))

    def normal(self, *shape, scale=1.0, shift=0.0):
        values = torch.randn(shape, generator=self.generator, dtype=torch.float64)
        return (values * scale + shift).to(torch.float32)

    def uniform(self, low, high, *shape):
        values = torch.rand(shape, generator=self.generator, dtype=torch.float64)
        return (low + (high - low) * values).to(torch.float32)

    def integers(self, low, high, *shape):
        return torch.randint(low, high, shape, generator=self.generator, dtype=torch.int64)


def differentiate(fn, inputs, grad_output):
    """fn(**inputs) on float64 copies of the exact float32 inputs: (output, {name: gradient})."""
    leaves = {name: fp32_values(t).requires_grad_() for name, t in inputs.items()}
    output = fn(**leaves)
    grads = torch.autograd.grad(output, list(leaves.values()), fp32_values(grad_output))
    return output.detach(), dict(zip(leaves, grads))


def sum_of_products_case(fn, inputs, grad_output):
    """For an op linear in each input (conv, linear, pooling by averaging, upsampling): values,
    gradients, and their magnitudes, the same computation on |inputs| and |grad_output|."""
    output, grads = differentiate(fn, inputs, grad_output)
    output_abs, grads_abs = differentiate(
        fn, {name: t.abs() for name, t in inputs.items()}, grad_output.abs())
    tensors = dict(inputs)
    tensors.update({"grad_output": grad_output, "output": output, "output.abs": output_abs})
    for name in inputs:
        tensors[f"{name}.grad"] = grads[name]
        tensors[f"{name}.grad.abs"] = grads_abs[name]
    return tensors


def conv2d_cases(seed):
    """Conv2d: stride, padding, dilation, groups, depthwise, 1x1 (our pointwise path), with and
    without bias. Parameters "weight" [out, in / groups, k, k] and "bias" [out], as torch."""
    specs = [
        # name, N, C_in, C_out, size, k, stride, padding, dilation, groups, bias
        ("conv2d_basic", 2, 3, 4, 7, 3, 1, 1, 1, 1, True),
        ("conv2d_stride2_nobias", 2, 3, 5, 8, 3, 2, 1, 1, 1, False),
        ("conv2d_dilation2", 2, 3, 4, 9, 3, 1, 2, 2, 1, True),
        ("conv2d_groups2", 2, 4, 6, 7, 3, 1, 1, 1, 2, True),
        ("conv2d_depthwise", 3, 4, 4, 7, 3, 2, 1, 1, 4, True),
        ("conv2d_pointwise", 2, 4, 3, 5, 1, 1, 0, 1, 1, True),
        ("conv2d_k5_groups_dilation_stride", 2, 6, 4, 9, 3, 2, 2, 2, 2, False),
        ("conv2d_k5_pad2", 2, 2, 3, 7, 5, 1, 2, 1, 1, True),
    ]
    for name, n, cin, cout, size, k, stride, padding, dilation, groups, bias in specs:
        draw = Draw(seed, name)
        inputs = {"input": draw.normal(n, cin, size, size),
                  "weight": draw.normal(cout, cin // groups, k, k, scale=0.5)}
        if bias:
            inputs["bias"] = draw.normal(cout)

        def fn(input, weight, bias=None):
            return F.conv2d(input, weight, bias, stride, padding, dilation, groups)

        out_size = (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1
        grad_output = draw.normal(n, cout, out_size, out_size)
        tensors = sum_of_products_case(fn, inputs, grad_output)
        yield name, tensors, {"in_channels": cin, "out_channels": cout, "kernel_size": k,
                              "stride": stride, "padding": padding, "dilation": dilation,
                              "groups": groups, "bias": bias}


def conv_transpose2d_cases(seed):
    """ConvTranspose2d (no groups, no dilation, as ours): stride 1, stride 2 with output_padding,
    the U-Net 2x2/2 and the 4x4/2 pad 1 upsamplers. "weight" is [in, out, k, k], as torch."""
    specs = [
        # name, N, C_in, C_out, size, k, stride, padding, output_padding, bias
        ("conv_transpose2d_basic", 2, 4, 3, 5, 3, 1, 1, 0, True),
        ("conv_transpose2d_stride2_output_padding", 2, 3, 4, 5, 3, 2, 1, 1, True),
        ("conv_transpose2d_k2_stride2_nobias", 2, 4, 2, 5, 2, 2, 0, 0, False),
        ("conv_transpose2d_k4_stride2_pad1", 2, 3, 3, 5, 4, 2, 1, 0, True),
    ]
    for name, n, cin, cout, size, k, stride, padding, output_padding, bias in specs:
        draw = Draw(seed, name)
        inputs = {"input": draw.normal(n, cin, size, size),
                  "weight": draw.normal(cin, cout, k, k, scale=0.5)}
        if bias:
            inputs["bias"] = draw.normal(cout)

        def fn(input, weight, bias=None):
            return F.conv_transpose2d(input, weight, bias, stride, padding, output_padding)

        out_size = (size - 1) * stride - 2 * padding + k + output_padding
        grad_output = draw.normal(n, cout, out_size, out_size)
        tensors = sum_of_products_case(fn, inputs, grad_output)
        yield name, tensors, {"in_channels": cin, "out_channels": cout, "kernel_size": k,
                              "stride": stride, "padding": padding,
                              "output_padding": output_padding, "bias": bias}


def linear_cases(seed):
    """Linear: y = x W^T + b, "weight" [out, in], "bias" [out]."""
    for name, n, fan_in, fan_out, bias in [("linear_basic", 4, 7, 5, True),
                                           ("linear_nobias", 3, 12, 3, False)]:
        draw = Draw(seed, name)
        inputs = {"input": draw.normal(n, fan_in),
                  "weight": draw.normal(fan_out, fan_in, scale=0.5)}
        if bias:
            inputs["bias"] = draw.normal(fan_out)
        tensors = sum_of_products_case(F.linear, inputs, draw.normal(n, fan_out))
        yield name, tensors, {"in_features": fan_in, "out_features": fan_out, "bias": bias}


def batch_norm_cases(seed):
    """BatchNorm2d in training (batch statistics, then one running-statistics update with
    torch's unbiased variance and momentum: running = (1 - m) running + m batch) and in eval
    (running statistics). Ours and torch share the convention and defaults (eps 1e-5,
    momentum 0.1). Initial running statistics are random so a wrong momentum shows.

    Our layer takes eps as a double and the kernels use it as float32, so the reference uses
    that float32 value (metadata keeps the value passed to the constructor).

    Magnitudes (the |.| form of each computation; u-multiples of them bound the round-off of
    any float32 evaluation, see the test): with a = (|x| + mu) * invstd, where mu is mean|x|
    in training (it bounds the error of the computed mean) and |running_mean| in eval,
      output.abs       = (|x| + mu) invstd |w| + |b|
      input.grad.abs   = |w| invstd (|g| + mean|g| + a mean(|g| a))          (training)
                       = |w| invstd |g|                                       (eval)
      weight.grad.abs  = sum |g| a,  bias.grad.abs = sum |g|
      running_mean.after.abs = (1 - m) |rm| + m mean|x|
      running_var.after.abs  = (1 - m) rv + m n/(n-1) mean((|x| + mean|x|)^2)
    (n = N H W, the values per channel).
    """
    specs = [
        # name, N, C, size, eps, momentum, training
        ("batch_norm2d_train", 4, 3, 5, 1e-5, 0.1, True),
        ("batch_norm2d_train_momentum_eps", 2, 2, 3, 1e-3, 0.3, True),
        ("batch_norm2d_eval", 2, 3, 5, 1e-5, 0.1, False),
    ]
    for name, n, c, size, eps, momentum, training in specs:
        draw = Draw(seed, name)
        shift = draw.normal(1, c, 1, 1, scale=2.0)
        x = (draw.normal(n, c, size, size, scale=1.5).double() + shift.double()).to(torch.float32)
        inputs = {"input": x, "weight": draw.normal(c, scale=0.5, shift=1.0),
                  "bias": draw.normal(c, scale=0.5)}
        running_mean = draw.normal(c)
        running_var = draw.uniform(0.5, 2.0, c)
        grad_output = draw.normal(n, c, size, size)
        rm64, rv64 = fp32_values(running_mean), fp32_values(running_var)

        eps32 = float(torch.tensor(eps, dtype=torch.float32))

        def fn(input, weight, bias):
            return F.batch_norm(input, rm64, rv64, weight, bias, training, momentum, eps32)

        output, grads = differentiate(fn, inputs, grad_output)

        xd, gd = fp32_values(x), fp32_values(grad_output).abs()
        wd, bd = fp32_values(inputs["weight"]).abs(), fp32_values(inputs["bias"]).abs()
        per_channel = (1, c, 1, 1)
        count = n * size * size
        if training:
            var = xd.var((0, 2, 3), unbiased=False, keepdim=True)
            mu = xd.abs().mean((0, 2, 3), keepdim=True)
        else:
            var = fp32_values(running_var).view(per_channel)
            mu = fp32_values(running_mean).view(per_channel).abs()
        invstd = 1.0 / torch.sqrt(var + eps32)
        a = (xd.abs() + mu) * invstd
        w4, b4 = wd.view(per_channel), bd.view(per_channel)
        tensors = dict(inputs)
        tensors.update({"grad_output": grad_output, "output": output,
                        "input.grad": grads["input"], "weight.grad": grads["weight"],
                        "bias.grad": grads["bias"],
                        "weight.grad.abs": (gd * a).sum((0, 2, 3)),
                        "bias.grad.abs": gd.sum((0, 2, 3))})
        tensors["output.abs"] = a * w4 + b4
        if training:
            tensors["input.grad.abs"] = w4 * invstd * (
                gd + gd.mean((0, 2, 3), keepdim=True) + a * (gd * a).mean((0, 2, 3), keepdim=True))
            tensors["running_mean.before"] = running_mean
            tensors["running_var.before"] = running_var
            tensors["running_mean.after"] = rm64
            tensors["running_var.after"] = rv64
            tensors["running_mean.after.abs"] = (
                (1 - momentum) * fp32_values(running_mean).abs() + momentum * mu.flatten())
            tensors["running_var.after.abs"] = (
                (1 - momentum) * fp32_values(running_var) + momentum * count / (count - 1) *
                ((xd.abs() + mu) ** 2).mean((0, 2, 3)))
            tensors["num_batches_tracked.after"] = torch.tensor(1, dtype=torch.int32)
            # torch's own update, cross-checked against the definition.
            unbiased = xd.var((0, 2, 3), unbiased=True)
            expected = (1 - momentum) * fp32_values(running_var) + momentum * unbiased
            assert torch.allclose(rv64, expected, rtol=1e-12, atol=0), name
        else:
            tensors["input.grad.abs"] = w4 * invstd * gd
            tensors["running_mean"] = running_mean
            tensors["running_var"] = running_var
        yield name, tensors, {"channels": c, "eps": eps, "momentum": momentum,
                              "training": training, "count_per_channel": count}


def pooling_cases(seed):
    """MaxPool2d (output exact; the input gradient sums the windows that chose a pixel),
    AvgPool2d (count_include_pad, floor mode, as ours) and GlobalAvgPool2d (adaptive 1x1)."""
    max_specs = [("max_pool2d_k2", 2, 3, 6, 2, 2, 0),
                 ("max_pool2d_k3_s2_p1", 2, 3, 7, 3, 2, 1),
                 ("max_pool2d_k3_s1", 2, 2, 6, 3, 1, 0)]
    for name, n, c, size, k, stride, padding in max_specs:
        draw = Draw(seed, name)
        x = draw.normal(n, c, size, size)
        out_size = (size + 2 * padding - k) // stride + 1
        grad_output = draw.normal(n, c, out_size, out_size)

        def fn(input):
            return F.max_pool2d(input, k, stride, padding)

        output, grads = differentiate(fn, {"input": x}, grad_output)
        # The gradient is linear in grad_output for fixed x: |g| through the same windows.
        _, grads_abs = differentiate(fn, {"input": x}, grad_output.abs())
        tensors = {"input": x, "grad_output": grad_output, "output": output,
                   "input.grad": grads["input"], "input.grad.abs": grads_abs["input"]}
        yield name, tensors, {"kernel_size": k, "stride": stride, "padding": padding}

    avg_specs = [("avg_pool2d_k2", 2, 3, 6, 2, 2, 0),
                 ("avg_pool2d_k3_s2_p1", 2, 3, 7, 3, 2, 1),
                 ("avg_pool2d_k3_s1_p1", 2, 2, 5, 3, 1, 1)]
    for name, n, c, size, k, stride, padding in avg_specs:
        draw = Draw(seed, name)
        x = draw.normal(n, c, size, size)
        out_size = (size + 2 * padding - k) // stride + 1

        def fn(input):
            return F.avg_pool2d(input, k, stride, padding, ceil_mode=False, count_include_pad=True)

        tensors = sum_of_products_case(fn, {"input": x}, draw.normal(n, c, out_size, out_size))
        yield name, tensors, {"kernel_size": k, "stride": stride, "padding": padding}

    name = "global_avg_pool2d"
    draw = Draw(seed, name)
    tensors = sum_of_products_case(lambda input: F.adaptive_avg_pool2d(input, 1),
                                   {"input": draw.normal(3, 4, 5, 6)}, draw.normal(3, 4, 1, 1))
    yield name, tensors, {}


def activation_cases(seed):
    """ReLU and ReLU6 (exact ops). The inputs include exact 0 and 6, where torch's gradient is
    0 (x > 0, and 0 < x < 6), and values beyond 6."""
    for name, fn in [("relu", F.relu), ("relu6", F.relu6)]:
        draw = Draw(seed, name)
        x = draw.normal(2, 3, 5, 5, scale=4.0, shift=1.0).flatten()
        x[::7] = 0.0
        x[3::11] = 6.0
        x = x.view(2, 3, 5, 5)
        grad_output = draw.normal(2, 3, 5, 5)
        output, grads = differentiate(lambda input: fn(input), {"input": x}, grad_output)
        boundary = (x == 0) | (x == 6) if name == "relu6" else (x == 0)
        assert bool((grads["input"][boundary] == 0).all()), name
        yield name, {"input": x, "grad_output": grad_output, "output": output,
                     "input.grad": grads["input"]}, {}


def upsample_cases(seed):
    """UpsampleNearest2d by 2 and 3: forward exact, backward sums a scale x scale block."""
    for name, scale in [("upsample_nearest2d_x2", 2), ("upsample_nearest2d_x3", 3)]:
        draw = Draw(seed, name)
        x = draw.normal(2, 3, 4, 5)
        grad_output = draw.normal(2, 3, 4 * scale, 5 * scale)
        tensors = sum_of_products_case(
            lambda input: F.interpolate(input, scale_factor=scale, mode="nearest"),
            {"input": x}, grad_output)
        yield name, tensors, {"scale": scale}


def elementwise_cases(seed):
    """Residual add (one correctly rounded float32 addition: exact) and channel concat (a copy)
    with their backward: the add passes grad_output to both operands, concat splits it."""
    name = "add"
    draw = Draw(seed, name)
    inputs = {"a": draw.normal(2, 3, 4, 4), "b": draw.normal(2, 3, 4, 4, scale=3.0)}
    grad_output = draw.normal(2, 3, 4, 4)
    output, grads = differentiate(lambda a, b: a + b, inputs, grad_output)
    yield name, {**inputs, "grad_output": grad_output, "output": output,
                 "a.grad": grads["a"], "b.grad": grads["b"]}, {}

    name = "concat"
    draw = Draw(seed, name)
    inputs = {"a": draw.normal(2, 3, 4, 5), "b": draw.normal(2, 2, 4, 5)}
    grad_output = draw.normal(2, 5, 4, 5)
    output, grads = differentiate(lambda a, b: torch.cat([a, b], 1), inputs, grad_output)
    yield name, {**inputs, "grad_output": grad_output, "output": output,
                 "a.grad": grads["a"], "b.grad": grads["b"]}, {"channels_a": 3}


def cross_entropy_cases(seed):
    """Softmax cross-entropy: mean and sum, label smoothing, ignore_index (classification
    [N, C] and segmentation [N, C, H, W] with labels [N, H, W]). As ours, the gradient is
    seed_scale * d(loss)/d(logits), the loss reduced per the options (so Mean divides by the
    valid count); seed_scale is a float32 value. Logits are uniform in [-4, 4].

    Magnitudes, per valid element with d = z - max z, S = sum exp(d), lse = max z + log S,
    target t = (1 - eps) one_hot + eps / C:
      loss.abs        = reduced sum of |max z| + |lse| + (1 - eps)|z_label| + eps/C sum|z| + 1
      logits.grad.abs = |scale| (softmax(z) + t), scale = seed_scale (/ valid count for Mean)
    and metadata logit_spread = max over elements of (max z - min z), which bounds |d|.
    """
    specs = [
        # name, shape (N, C[, H, W]), reduction, smoothing, ignore_index, ignored, seed_scale
        ("cross_entropy_mean", (8, 5), "mean", 0.0, -100, 0, 0.75),
        ("cross_entropy_sum", (8, 5), "sum", 0.0, -100, 0, 0.125),
        ("cross_entropy_smoothing", (6, 7), "mean", 0.1, -100, 0, 1.0),
        ("cross_entropy_ignore_index", (10, 4), "mean", 0.0, -100, 3, 1.0),
        ("cross_entropy_sum_smoothing_ignore", (10, 4), "sum", 0.2, -100, 2, 0.05),
        ("cross_entropy_segmentation_mean", (2, 4, 5, 5), "mean", 0.1, 255, 9, 0.5),
        ("cross_entropy_segmentation_sum", (3, 3, 4, 4), "sum", 0.0, 255, 7, 1.0 / 41),
    ]
    for name, shape, reduction, smoothing, ignore_index, ignored, seed_scale in specs:
        draw = Draw(seed, name)
        n, c, spatial = shape[0], shape[1], shape[2:]
        logits = draw.uniform(-4.0, 4.0, *shape)
        labels = draw.integers(0, c, n, *spatial)
        flat = labels.view(-1)
        flat[torch.randperm(flat.numel(), generator=draw.generator)[:ignored]] = ignore_index
        # Ours takes both as float32: the reference uses those values.
        seed_scale = float(torch.tensor(seed_scale, dtype=torch.float32))
        label_smoothing, smoothing = smoothing, float(torch.tensor(smoothing, dtype=torch.float32))

        z = fp32_values(logits).requires_grad_()
        loss = F.cross_entropy(z, labels, reduction=reduction, label_smoothing=smoothing,
                               ignore_index=ignore_index)
        (grad,) = torch.autograd.grad(loss, z)
        grad = grad * seed_scale

        # The definition, elementwise over [element, class], to cross-check torch.
        zc = z.detach().movedim(1, -1).reshape(-1, c)
        valid = flat != ignore_index
        zv, yv = zc[valid], flat[valid]
        lse = torch.logsumexp(zv, 1)
        z_label = zv.gather(1, yv[:, None])[:, 0]
        per_element = lse - (1 - smoothing) * z_label - smoothing / c * zv.sum(1)
        count = int(valid.sum())
        reduce = (lambda v: v.sum() / count) if reduction == "mean" else (lambda v: v.sum())
        assert torch.allclose(loss, reduce(per_element), rtol=1e-12, atol=0), name

        scale = seed_scale / count if reduction == "mean" else seed_scale
        target = torch.full_like(zc, smoothing / c)
        target[torch.arange(zc.shape[0])[valid], yv] += 1 - smoothing
        grad_abs = scale * (torch.softmax(zc, 1) + target)
        grad_abs[~valid] = 0.0
        grad_abs = grad_abs.view(n, *spatial, c).movedim(-1, 1)
        max_z = zv.max(1).values
        loss_abs = reduce(max_z.abs() + lse.abs() + (1 - smoothing) * z_label.abs()
                          + smoothing / c * zv.abs().sum(1) + 1.0)
        spread = float((zc.max(1).values - zc.min(1).values).max())
        correct = int((zv.argmax(1) == yv).sum())
        tensors = {"logits": logits, "labels": labels, "loss": loss.detach(), "loss.abs": loss_abs,
                   "logits.grad": grad, "logits.grad.abs": grad_abs}
        yield name, tensors, {"reduction": reduction, "label_smoothing": label_smoothing,
                              "ignore_index": ignore_index, "seed_scale": repr(seed_scale),
                              "valid_count": count, "correct": correct, "logit_spread": spread}


GROUPS = [conv2d_cases, conv_transpose2d_cases, linear_cases, batch_norm_cases, pooling_cases,
          activation_cases, upsample_cases, elementwise_cases, cross_entropy_cases]


def generate(out_dir, seed):
    """Writes every case to out_dir/layers_<case>.safetensors and removes layers_* files that no
    case writes any more. Returns [(filename, size in bytes)]."""
    written = []
    for group in GROUPS:
        for case, tensors, metadata in group(seed):
            filename = f"{PREFIX}{case}.safetensors"
            size = write_fixture(os.path.join(out_dir, filename), tensors, case, seed, metadata)
            written.append((filename, size))
    names = {filename for filename, _ in written}
    for stale in os.listdir(out_dir):
        if stale.startswith(PREFIX) and stale.endswith(".safetensors") and stale not in names:
            os.remove(os.path.join(out_dir, stale))
    return written
