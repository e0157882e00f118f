// CUDA parity for the ops of layers/{activation,dropout,elementwise,upsample,
// softmax_cross_entropy}: each runs on the GPU and on the CPU reference with the same
// inputs and must agree (bitwise where the arithmetic is identical, to a tolerance where
// the order of float operations differs). Sizes are odd on purpose, and some pointers are
// offset by one float, so both the float4 and the scalar paths run. Skips without a device.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/elementwise.h"
#include "layers/activation.h"
#include "layers/dropout.h"
#include "layers/elementwise.h"
#include "layers/softmax_cross_entropy.h"
#include "layers/upsample.h"
#include "runtime/error.h"
#include "runtime/stream.h"
#include "tests/layers/gradcheck.h"
#include "tests/test_util.h"

namespace mb {
namespace {

const Device kGpu = Device::cuda(0);

Tensor on_gpu(const Tensor& t) {
  return t.to(kGpu);
}

// Runs `module` forward and backward on CPU and GPU with the same input and gradient.
template <typename M>
void expect_module_parity(M& cpu_module, M& gpu_module, const Tensor& input, const RunState& state,
                          double tolerance) {
  gpu_module.to_device(kGpu);
  const Tensor y_cpu = cpu_module.forward(input, state);
  const Tensor y_gpu = gpu_module.forward(on_gpu(input), state);
  EXPECT_EQ(y_gpu.device(), kGpu);
  testing::expect_close(y_gpu.to_vector(), y_cpu.to_vector(), tolerance, tolerance,
                        cpu_module.type_name() + " forward");
  const Tensor g = testing::random_tensor(y_cpu.shape(), 99);
  const Tensor dx_cpu = cpu_module.backward(g, BackwardState{});
  const Tensor dx_gpu = gpu_module.backward(on_gpu(g), BackwardState{});
  testing::expect_close(dx_gpu.to_vector(), dx_cpu.to_vector(), tolerance, tolerance,
                        cpu_module.type_name() + " backward");
}

TEST(ElementwiseGpu, ActivationsMatchCpu) {
  MB_SKIP_WITHOUT_CUDA();
  const Tensor x = testing::random_tensor(Shape{3, 5, 7, 9}, 1, -3.0f, 9.0f);
  ReLU relu_cpu, relu_gpu;
  expect_module_parity(relu_cpu, relu_gpu, x, RunState{}, 0.0);
  ReLU6 relu6_cpu, relu6_gpu;
  expect_module_parity(relu6_cpu, relu6_gpu, x, RunState{}, 0.0);
}

TEST(ElementwiseGpu, DropoutMasksMatchCpuAndSplits) {
  MB_SKIP_WITHOUT_CUDA();
  RunState state;
  state.seed = 42;
  state.step = 7;
  const Tensor x = testing::random_tensor(Shape{16, 3, 5, 7}, 2, 0.5f, 1.5f);
  Dropout cpu_dropout(0.3f, 4), gpu_dropout(0.3f, 4);
  expect_module_parity(cpu_dropout, gpu_dropout, x, state, 0.0);
  // A micro-batch on the GPU equals the matching rows of the CPU's full batch.
  const std::vector<float> full = cpu_dropout.forward(x, state).to_vector();
  RunState part_state = state;
  part_state.sample_offset = 7;
  const std::vector<float> part =
      gpu_dropout.forward(on_gpu(x.slice(7, 14).clone()), part_state).to_vector();
  const std::vector<float> expected(full.begin() + 7 * 105, full.begin() + 14 * 105);
  EXPECT_EQ(part, expected);
}

TEST(ElementwiseGpu, UpsampleMatchesCpu) {
  MB_SKIP_WITHOUT_CUDA();
  UpsampleNearest2d cpu_up(2), gpu_up(2);
  expect_module_parity(cpu_up, gpu_up, testing::random_tensor(Shape{2, 3, 5, 7}, 3), RunState{},
                       1e-6);
}

TEST(ElementwiseGpu, FunctionalOpsMatchCpu) {
  MB_SKIP_WITHOUT_CUDA();
  const Tensor a = testing::random_tensor(Shape{3, 4, 5, 7}, 4);
  const Tensor b = testing::random_tensor(Shape{3, 4, 5, 7}, 5);
  const Tensor c = testing::random_tensor(Shape{3, 2, 5, 7}, 6);
  EXPECT_EQ(add(on_gpu(a), on_gpu(b)).to_vector(), add(a, b).to_vector());
  Tensor acc_gpu = on_gpu(a), acc_cpu = a.clone();
  add_into(acc_gpu, on_gpu(b));
  add_into(acc_cpu, b);
  EXPECT_EQ(acc_gpu.to_vector(), acc_cpu.to_vector());
  const Tensor cat_gpu = concat_channels(on_gpu(a), on_gpu(c));
  EXPECT_EQ(cat_gpu.to_vector(), concat_channels(a, c).to_vector());
  const auto [first, second] = split_channels(cat_gpu, 4);
  EXPECT_EQ(first.to_vector(), a.to_vector());
  EXPECT_EQ(second.to_vector(), c.to_vector());
  const Tensor relu_out = testing::random_tensor(Shape{3, 4, 5, 7}, 7, -1.0f, 1.0f);
  EXPECT_EQ(relu_backward_from_output(on_gpu(relu_out), on_gpu(b)).to_vector(),
            relu_backward_from_output(relu_out, b).to_vector());
  EXPECT_THROW(add(on_gpu(a), b), InvalidArgument);  // devices differ
}

TEST(ElementwiseGpu, MisalignedPointersUseTheScalarPath) {
  MB_SKIP_WITHOUT_CUDA();
  const Tensor x = testing::random_tensor(Shape{1031}, 8);
  Tensor buffer = on_gpu(x), source = on_gpu(x);
  // Rows 1.. of a [1031, 1] view start one float past a 16-byte boundary.
  Tensor shifted = buffer.view({1031, 1}).slice(1, 1031);
  const Tensor shifted_source = source.view({1031, 1}).slice(1, 1031);
  // x + x == 2 * x exactly, so the result is known bit for bit; element 0 must stay as is.
  add_into(Stream::compute(kGpu), shifted.data<float>(), shifted_source.data<float>(),
           shifted.numel());
  const std::vector<float> xv = x.to_vector(), result = buffer.to_vector();
  EXPECT_EQ(result[0], xv[0]);
  for (std::size_t i = 1; i < xv.size(); ++i) ASSERT_EQ(result[i], 2.0f * xv[i]) << i;
}

TEST(ElementwiseGpu, SoftmaxCrossEntropyMatchesCpu) {
  MB_SKIP_WITHOUT_CUDA();
  struct Case {
    Shape logits, labels;
  };
  // 1000 classes (ImageNet) exercises the warp-per-row path with many classes per lane.
  const Case cases[] = {{Shape{37, 10}, Shape{37}},
                        {Shape{5, 1000}, Shape{5}},
                        {Shape{3, 6, 9, 11}, Shape{3, 9, 11}}};
  for (const Reduction reduction : {Reduction::Mean, Reduction::Sum}) {
    for (const Case& c : cases) {
      LossOptions options;
      options.reduction = reduction;
      options.label_smoothing = 0.1f;
      const SoftmaxCrossEntropy loss(options);
      const Tensor logits = testing::random_tensor(c.logits, 9, -5.0f, 5.0f);
      std::vector<std::int32_t> label_values(static_cast<std::size_t>(c.labels.numel()));
      for (std::size_t i = 0; i < label_values.size(); ++i) {
        label_values[i] = i % 7 == 3 ? -100 : static_cast<std::int32_t>((i * 31) % c.logits[1]);
      }
      const Tensor labels = Tensor::from_vector_int(label_values, c.labels);
      const LossResult expected = loss.forward_backward(logits, labels, 0.25f);
      for (const bool labels_on_gpu : {false, true}) {
        const LossResult r =
            loss.forward_backward(on_gpu(logits), labels_on_gpu ? on_gpu(labels) : labels, 0.25f);
        EXPECT_EQ(r.valid_count, expected.valid_count);
        EXPECT_EQ(r.correct, expected.correct);
        EXPECT_NEAR(r.loss_sum, expected.loss_sum, 1e-5 * std::fabs(expected.loss_sum));
        EXPECT_NEAR(r.loss, expected.loss, 1e-5 * std::fabs(expected.loss));
        EXPECT_EQ(r.grad_logits.device(), kGpu);
        testing::expect_close(r.grad_logits.to_vector(), expected.grad_logits.to_vector(), 1e-4,
                              1e-7, "grad_logits " + c.logits.to_string());
      }
      EXPECT_NEAR(loss.forward(on_gpu(logits), labels).loss, expected.loss,
                  1e-5 * std::fabs(expected.loss));
    }
  }
  const Tensor bad = Tensor::from_vector_int({0, 12, 1}, Shape{3});
  EXPECT_THROW(SoftmaxCrossEntropy().forward(on_gpu(Tensor::zeros(Shape{3, 10})), on_gpu(bad)),
               InvalidArgument);
}

}  // namespace
}  // namespace mb
