// Every layer against PyTorch: forward and backward on the CPU device compared with the
// fixtures tests/fixtures/layers_<case>.safetensors (tools/reference/layer_cases.py, torch in
// float64 from the exact float32 inputs). Each layer is built from the fixture's metadata and
// its parameters are loaded by our names (named_parameters), so a name or layout that differs
// from torch's fails here.
//
// Bounds (tests/fixture.h): expect_within_roundoff(actual, fixture, key, K) allows
// gamma_(K+1) * magnitude per element, the magnitude being "<key>.abs", the same computation on
// absolute values. K is the largest number of float32 roundings any term of the result can go
// through, stated per case below. Ops that only select or copy values are compared exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "layers/activation.h"
#include "layers/batch_norm2d.h"
#include "layers/conv2d.h"
#include "layers/conv_transpose2d.h"
#include "layers/elementwise.h"
#include "layers/linear.h"
#include "layers/pooling.h"
#include "layers/softmax_cross_entropy.h"
#include "layers/upsample.h"
#include "tests/fixture.h"

namespace mb {
namespace {

using testing::expect_within_roundoff;
using testing::Fixture;

Fixture load(const std::string& case_name) {
  return Fixture("layers_" + case_name + ".safetensors");
}

int integer(const Fixture& fixture, const std::string& key) {
  return static_cast<int>(fixture.number(key));
}

bool flag(const Fixture& fixture, const std::string& key) {
  return fixture.meta(key) == "true";
}

// Copies each parameter of `module` from the fixture tensor of the same name.
void load_parameters(Module& module, const Fixture& fixture) {
  for (auto& [name, parameter] : module.named_parameters()) {
    parameter->value.copy_from(fixture.tensor(name));
  }
}

// For ops that select or copy values: equal values (so -0 == +0), NaN never equal.
void expect_exact(const Tensor& actual, const Fixture& fixture, const std::string& key) {
  const Tensor& reference = fixture.tensor(key);
  ASSERT_EQ(actual.shape(), reference.shape()) << key << " in " << fixture.path();
  const std::vector<float> ours = actual.to_vector();
  const std::vector<float> ref = reference.to_vector();
  std::size_t mismatches = 0, first = 0;
  for (std::size_t i = 0; i < ours.size(); ++i) {
    if (ours[i] == ref[i]) continue;
    if (mismatches++ == 0) first = i;
  }
  EXPECT_EQ(mismatches, 0u) << key << " (" << fixture.path() << "): " << mismatches << " of "
                            << ours.size() << " elements differ; first at " << first << ": ours "
                            << ours[first] << ", reference " << ref[first];
}

std::string case_name(const ::testing::TestParamInfo<std::string>& info) {
  return info.param;
}

class Reference : public ::testing::TestWithParam<std::string> {};

// ---- Conv2d ----
// Output: a GEMM over the C_in/groups * k * k patch, then the bias added: K = patch + 1.
// Input gradient: a GEMM over C_out/groups into columns, then col2im adds at most k * k
// columns; a term sees at most C_out/groups + k*k - 1 <= C_out/groups * k * k roundings.
// Weight gradient: per sample a GEMM over OH * OW, accumulated over N: K = N * OH * OW.
// Bias gradient: a sum over N * OH * OW values.
class Conv2dReference : public Reference {};

TEST_P(Conv2dReference, ForwardBackward) {
  const Fixture f = load(GetParam());
  const std::int64_t in = integer(f, "in_channels"), out = integer(f, "out_channels");
  const int k = integer(f, "kernel_size"), groups = integer(f, "groups");
  const bool bias = flag(f, "bias");
  Conv2d conv(in, out, k, integer(f, "stride"), integer(f, "padding"), integer(f, "dilation"),
              groups, bias);
  load_parameters(conv, f);
  const Tensor output = conv.forward(f.tensor("input"), RunState{});
  expect_within_roundoff(output, f, "output", in / groups * k * k + (bias ? 1 : 0));
  const Tensor grad_input = conv.backward(f.tensor("grad_output"), BackwardState{});
  expect_within_roundoff(grad_input, f, "input.grad", out / groups * k * k);
  const double positions = static_cast<double>(output.dim(0) * output.dim(2) * output.dim(3));
  expect_within_roundoff(conv.weight().grad, f, "weight.grad", positions);
  ASSERT_EQ(conv.has_bias(), f.has("bias.grad"));
  if (bias) expect_within_roundoff(conv.bias()->grad, f, "bias.grad", positions);
}

INSTANTIATE_TEST_SUITE_P(Layers, Conv2dReference,
                         ::testing::Values("conv2d_basic", "conv2d_stride2_nobias",
                                           "conv2d_dilation2", "conv2d_groups2", "conv2d_depthwise",
                                           "conv2d_pointwise", "conv2d_k5_groups_dilation_stride",
                                           "conv2d_k5_pad2"),
                         case_name);

// ---- ConvTranspose2d ----
// The adjoint of a Conv2d. Output: a GEMM over C_in into columns, col2im adds at most k * k
// of them, then the bias: K = C_in * k * k + 1 (as for Conv2d's input gradient). Input
// gradient: that Conv2d's forward, a C_out * k * k patch. Weight gradient: a GEMM over the
// input's H * W per sample, accumulated over N. Bias gradient: N * OH * OW values.
class ConvTranspose2dReference : public Reference {};

TEST_P(ConvTranspose2dReference, ForwardBackward) {
  const Fixture f = load(GetParam());
  const std::int64_t in = integer(f, "in_channels"), out = integer(f, "out_channels");
  const int k = integer(f, "kernel_size");
  const bool bias = flag(f, "bias");
  ConvTranspose2d conv(in, out, k, integer(f, "stride"), integer(f, "padding"),
                       integer(f, "output_padding"), bias);
  load_parameters(conv, f);
  const Tensor& input = f.tensor("input");
  const Tensor output = conv.forward(input, RunState{});
  expect_within_roundoff(output, f, "output", in * k * k + (bias ? 1 : 0));
  const Tensor grad_input = conv.backward(f.tensor("grad_output"), BackwardState{});
  expect_within_roundoff(grad_input, f, "input.grad", out * k * k);
  expect_within_roundoff(conv.weight().grad, f, "weight.grad",
                         static_cast<double>(input.dim(0) * input.dim(2) * input.dim(3)));
  ASSERT_EQ(conv.has_bias(), f.has("bias.grad"));
  if (bias) {
    expect_within_roundoff(conv.bias()->grad, f, "bias.grad",
                           static_cast<double>(output.dim(0) * output.dim(2) * output.dim(3)));
  }
}

INSTANTIATE_TEST_SUITE_P(Layers, ConvTranspose2dReference,
                         ::testing::Values("conv_transpose2d_basic",
                                           "conv_transpose2d_stride2_output_padding",
                                           "conv_transpose2d_k2_stride2_nobias",
                                           "conv_transpose2d_k4_stride2_pad1"),
                         case_name);

// ---- Linear ----
// Output: a dot product over in_features, then the bias: K = in + 1. Input gradient: over
// out_features. Weight and bias gradients: over the N samples.
class LinearReference : public Reference {};

TEST_P(LinearReference, ForwardBackward) {
  const Fixture f = load(GetParam());
  const std::int64_t in = integer(f, "in_features"), out = integer(f, "out_features");
  const bool bias = flag(f, "bias");
  Linear linear(in, out, bias);
  load_parameters(linear, f);
  const Tensor& input = f.tensor("input");
  expect_within_roundoff(linear.forward(input, RunState{}), f, "output", in + (bias ? 1 : 0));
  const Tensor grad_input = linear.backward(f.tensor("grad_output"), BackwardState{});
  expect_within_roundoff(grad_input, f, "input.grad", out);
  const double samples = static_cast<double>(input.dim(0));
  expect_within_roundoff(linear.weight().grad, f, "weight.grad", samples);
  ASSERT_EQ(linear.has_bias(), f.has("bias.grad"));
  if (bias) expect_within_roundoff(linear.bias()->grad, f, "bias.grad", samples);
}

INSTANTIATE_TEST_SUITE_P(Layers, LinearReference,
                         ::testing::Values("linear_basic", "linear_nobias"), case_name);

// ---- BatchNorm2d ----
// R = values per channel (N * H * W). The bounds are those of a float32 evaluation whose
// per-channel reductions each cost R roundings (Higham); our CPU twin reduces in fp64, well
// inside them, and a float32 twin (CUDA) must meet the same ones. Magnitudes: see
// batch_norm_cases() in tools/reference/layer_cases.py; a = (|x| + mean|x|) * invstd.
// Training:
//  output = (x - mean) * invstd * w + b: the mean's error is R u mean|x|, the variance's
//    relative error R u (half of it in invstd), plus sqrt, division, subtraction, two
//    products and the add: K = 2R + 6.
//  input gradient = w invstd (g - mean(g) - xhat mean(g xhat)): xhat carries (1.5R + 5) u a
//    from the mean and invstd, mean(g xhat) (2.5R + 6) u mean(|g| a), their product the sum
//    of both, w * invstd (0.5R + 4) u, and four elementwise roundings: K = 5R + 20.
//  weight gradient = sum g xhat: xhat's (1.5R + 5) plus the R-term sum: K = 3R + 6.
//  bias gradient = sum g: K = R.
//  running mean = (1 - m) rm + m mean: the mean (R), two products and the add: K = R + 3.
//  running var = (1 - m) rv + m n/(n-1) var: the variance (R + 2: squares and n/(n-1)), two
//    products and the add: K = R + 5.
// Eval (running statistics are inputs): output: subtraction, sqrt, division, two products
// and the add: K = 6; input gradient w invstd g: K = 4; weight gradient: xhat's 4 roundings
// and the R-term sum: K = R + 5; bias gradient: K = R.
class BatchNorm2dReference : public Reference {};

TEST_P(BatchNorm2dReference, ForwardBackwardRunningStatistics) {
  const Fixture f = load(GetParam());
  const bool training = flag(f, "training");
  BatchNorm2d bn(integer(f, "channels"), f.number("eps"), f.number("momentum"));
  load_parameters(bn, f);
  // Training starts from random running statistics (so a misapplied momentum shows).
  const std::string state_suffix = training ? ".before" : "";
  for (auto& [name, buffer] : bn.named_buffers()) {
    if (buffer->dtype() == DType::Float32) buffer->copy_from(f.tensor(name + state_suffix));
  }
  RunState state;
  state.training = training;
  const Tensor output = bn.forward(f.tensor("input"), state);
  const double r = f.number("count_per_channel");
  ASSERT_EQ(r, static_cast<double>(output.dim(0) * output.dim(2) * output.dim(3)));
  expect_within_roundoff(output, f, "output", training ? 2 * r + 6 : 6);
  const Tensor grad_input = bn.backward(f.tensor("grad_output"), BackwardState{});
  expect_within_roundoff(grad_input, f, "input.grad", training ? 5 * r + 20 : 4);
  expect_within_roundoff(bn.weight().grad, f, "weight.grad", training ? 3 * r + 6 : r + 5);
  expect_within_roundoff(bn.bias().grad, f, "bias.grad", r);

  // Standalone use: one training forward, then end_batch() updates the running statistics.
  bn.end_batch();
  if (training) {
    expect_within_roundoff(bn.running_mean(), f, "running_mean.after", r + 3);
    expect_within_roundoff(bn.running_var(), f, "running_var.after", r + 5);
    EXPECT_EQ(bn.num_batches_tracked().to_vector_int(),
              f.tensor("num_batches_tracked.after").to_vector_int());
  } else {
    expect_exact(bn.running_mean(), f, "running_mean");
    expect_exact(bn.running_var(), f, "running_var");
    EXPECT_EQ(bn.num_batches_tracked().to_vector_int(), std::vector<std::int32_t>{0});
  }
}

INSTANTIATE_TEST_SUITE_P(Layers, BatchNorm2dReference,
                         ::testing::Values("batch_norm2d_train", "batch_norm2d_train_momentum_eps",
                                           "batch_norm2d_eval"),
                         case_name);

// ---- Pooling ----
// A pixel lies in at most W = ceil(k / s)^2 windows.
double windows_per_pixel(const Fixture& f) {
  const int k = integer(f, "kernel_size"), s = integer(f, "stride");
  const double per_axis = static_cast<double>((k + s - 1) / s);
  return per_axis * per_axis;
}

// MaxPool2d: the output selects an input value (exact); the input gradient sums the W
// upstream values whose window chose the pixel: K = W.
class MaxPool2dReference : public Reference {};

TEST_P(MaxPool2dReference, ForwardBackward) {
  const Fixture f = load(GetParam());
  MaxPool2d pool(integer(f, "kernel_size"), integer(f, "stride"), integer(f, "padding"));
  expect_exact(pool.forward(f.tensor("input"), RunState{}), f, "output");
  const Tensor grad_input = pool.backward(f.tensor("grad_output"), BackwardState{});
  expect_within_roundoff(grad_input, f, "input.grad", windows_per_pixel(f));
}

INSTANTIATE_TEST_SUITE_P(Layers, MaxPool2dReference,
                         ::testing::Values("max_pool2d_k2", "max_pool2d_k3_s2_p1",
                                           "max_pool2d_k3_s1"),
                         case_name);

// AvgPool2d (count_include_pad): the output is a k * k sum and one division: K = k*k + 1.
// The input gradient: g * (1 / k^2) (two roundings) summed over W windows: K = W + 2.
class AvgPool2dReference : public Reference {};

TEST_P(AvgPool2dReference, ForwardBackward) {
  const Fixture f = load(GetParam());
  const int k = integer(f, "kernel_size");
  AvgPool2d pool(k, integer(f, "stride"), integer(f, "padding"));
  expect_within_roundoff(pool.forward(f.tensor("input"), RunState{}), f, "output", k * k + 1);
  const Tensor grad_input = pool.backward(f.tensor("grad_output"), BackwardState{});
  expect_within_roundoff(grad_input, f, "input.grad", windows_per_pixel(f) + 2);
}

INSTANTIATE_TEST_SUITE_P(Layers, AvgPool2dReference,
                         ::testing::Values("avg_pool2d_k2", "avg_pool2d_k3_s2_p1",
                                           "avg_pool2d_k3_s1_p1"),
                         case_name);

// GlobalAvgPool2d: an H*W sum and a division: K = H*W + 1; the input gradient
// g * (1 / (H*W)): K = 2.
TEST(GlobalAvgPool2dReference, ForwardBackward) {
  const Fixture f = load("global_avg_pool2d");
  GlobalAvgPool2d pool;
  const Tensor& input = f.tensor("input");
  expect_within_roundoff(pool.forward(input, RunState{}), f, "output",
                         static_cast<double>(input.dim(2) * input.dim(3) + 1));
  expect_within_roundoff(pool.backward(f.tensor("grad_output"), BackwardState{}), f, "input.grad",
                         2);
}

// ---- ReLU, ReLU6: select values, exact; the inputs hold exact 0 and 6 ----
TEST(ActivationReference, ReLU) {
  const Fixture f = load("relu");
  ReLU relu;
  expect_exact(relu.forward(f.tensor("input"), RunState{}), f, "output");
  expect_exact(relu.backward(f.tensor("grad_output"), BackwardState{}), f, "input.grad");
}

TEST(ActivationReference, ReLU6) {
  const Fixture f = load("relu6");
  ReLU6 relu6;
  expect_exact(relu6.forward(f.tensor("input"), RunState{}), f, "output");
  expect_exact(relu6.backward(f.tensor("grad_output"), BackwardState{}), f, "input.grad");
}

// ---- UpsampleNearest2d: the output copies (exact), the input gradient sums a scale x scale
// block: K = scale^2 ----
class UpsampleNearest2dReference : public Reference {};

TEST_P(UpsampleNearest2dReference, ForwardBackward) {
  const Fixture f = load(GetParam());
  const int scale = integer(f, "scale");
  UpsampleNearest2d upsample(scale);
  expect_exact(upsample.forward(f.tensor("input"), RunState{}), f, "output");
  expect_within_roundoff(upsample.backward(f.tensor("grad_output"), BackwardState{}), f,
                         "input.grad", scale * scale);
}

INSTANTIATE_TEST_SUITE_P(Layers, UpsampleNearest2dReference,
                         ::testing::Values("upsample_nearest2d_x2", "upsample_nearest2d_x3"),
                         case_name);

// ---- Residual add and channel concat ----
// a + b is one correctly rounded float32 addition of the values whose exact sum torch rounds
// once: exact, through add() and through add_into() (how a block sums its branches'
// gradients). Its backward passes grad_output to both operands unchanged (nothing to run).
TEST(ElementwiseReference, Add) {
  const Fixture f = load("add");
  expect_exact(add(f.tensor("a"), f.tensor("b")), f, "output");
  Tensor sum = f.tensor("a").clone();
  add_into(sum, f.tensor("b"));
  expect_exact(sum, f, "output");
  expect_exact(f.tensor("grad_output"), f, "a.grad");
  expect_exact(f.tensor("grad_output"), f, "b.grad");
}

// Concat copies; its backward, split_channels, copies the gradient apart.
TEST(ElementwiseReference, ConcatChannels) {
  const Fixture f = load("concat");
  expect_exact(concat_channels(f.tensor("a"), f.tensor("b")), f, "output");
  const auto [grad_a, grad_b] = split_channels(f.tensor("grad_output"), integer(f, "channels_a"));
  expect_exact(grad_a, f, "a.grad");
  expect_exact(grad_b, f, "b.grad");
}

// ---- Softmax cross-entropy ----
// C classes, D = ceil(logit_spread) (the largest max z - min z of an element, so
// |z - max z| <= D). Per element, S = sum exp(z - max z): each argument is rounded (a
// relative error of up to D u in its exp), exp adds one, the sum C - 1: S carries
// (C + D) u relative, log S (C + D + 1) u absolute, which the "+ 1" per element of
// loss.abs takes. The other terms (|max z|, |lse|, (1 - eps)|z_label|, eps/C sum|z|) see at
// most C + 3 roundings; the fp64 reduction is exact enough; our double loss is rounded to
// float32 for the comparison (1): K = C + D + 4.
// Gradient scale * (softmax - target): exp (D + 1), 1/S (C + D + 1), the product (1), the
// target (2), the subtraction (1), scale = seed_scale / valid (1) and the product (1):
// K = C + 2D + 6 on |scale| (softmax + target). Ignored elements have magnitude 0: their
// gradient must be exactly 0.
class SoftmaxCrossEntropyReference : public Reference {};

TEST_P(SoftmaxCrossEntropyReference, LossAndGradient) {
  const Fixture f = load(GetParam());
  LossOptions options;
  options.reduction = f.meta("reduction") == "sum" ? Reduction::Sum : Reduction::Mean;
  options.label_smoothing = static_cast<float>(f.number("label_smoothing"));
  options.ignore_index = integer(f, "ignore_index");
  const float seed_scale = static_cast<float>(f.number("seed_scale"));
  const SoftmaxCrossEntropy loss(options);
  const Tensor& logits = f.tensor("logits");
  const LossResult result = loss.forward_backward(logits, f.tensor("labels"), seed_scale);

  EXPECT_EQ(result.valid_count, integer(f, "valid_count"));
  EXPECT_EQ(result.correct, integer(f, "correct"));
  const double classes = static_cast<double>(logits.dim(1));
  const double spread = std::ceil(f.number("logit_spread"));
  const Tensor reported = Tensor::from_vector({static_cast<float>(result.loss)}, Shape{});
  expect_within_roundoff(reported, f, "loss", classes + spread + 4);
  expect_within_roundoff(result.grad_logits, f, "logits.grad", classes + 2 * spread + 6);

  // Evaluation reports the same loss, without a gradient.
  const LossResult evaluated = loss.forward(logits, f.tensor("labels"));
  EXPECT_EQ(evaluated.loss, result.loss);
  EXPECT_FALSE(evaluated.grad_logits.defined());
}

INSTANTIATE_TEST_SUITE_P(Layers, SoftmaxCrossEntropyReference,
                         ::testing::Values("cross_entropy_mean", "cross_entropy_sum",
                                           "cross_entropy_smoothing", "cross_entropy_ignore_index",
                                           "cross_entropy_sum_smoothing_ignore",
                                           "cross_entropy_segmentation_mean",
                                           "cross_entropy_segmentation_sum"),
                         case_name);

}  // namespace
}  // namespace mb
