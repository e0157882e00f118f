// BatchNorm2d and the pooling layers on CUDA against the CPU reference: outputs, input and
// parameter gradients (Overwrite and Accumulate), and BatchNorm's running statistics after
// micro-batches [7, 7, 2] with an aborted micro-batch in between; the fused BatchNorm +
// activation (+ residual) kernels. Skips without a GPU.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "layers/batch_norm2d.h"
#include "layers/pooling.h"
#include "tests/layers/gradcheck.h"
#include "tests/test_util.h"

namespace mb {
namespace {

using testing::expect_close;
using testing::random_tensor;

void set_values(Tensor& t, const std::vector<float>& values) {
  t.copy_from(Tensor::from_vector(values, t.shape()));
}

// Offsets and scales per channel, so channels have distinct statistics.
Tensor channel_data(const Shape& shape, std::uint64_t seed) {
  return testing::channel_data(shape, seed, [](float v, std::int64_t ch) {
    return v * (0.5f + 0.3f * ch) + 2.0f * static_cast<float>(ch) - 1.0f;
  });
}

// The fused kernels (kernels/batch_norm.h): BatchNorm + ReLU/ReLU6 (mask recomputed from the
// input in backward), the recomputed output (bit for bit the forward's on the same device),
// and BatchNorm + add + ReLU with the residual's gradient; CUDA against the CPU twins.
TEST(BnPoolGpu, FusedActivationResidualAndRecomputeMatchCpu) {
  MB_SKIP_WITHOUT_CUDA();
  const Device gpu = Device::cuda();
  const std::int64_t channels = 4;
  Tensor x = channel_data(Shape{6, channels, 9, 11}, 5);
  Tensor residual = random_tensor(x.shape(), 6, -2.0f, 2.0f);
  Tensor grad = random_tensor(x.shape(), 7);
  for (const BnActivation act : {BnActivation::ReLU, BnActivation::ReLU6}) {
    for (const bool with_residual : {false, true}) {
      const std::string what = std::string(act == BnActivation::ReLU ? "ReLU" : "ReLU6") +
                               (with_residual ? " + residual" : "");
      BatchNorm2d cpu_bn(channels), gpu_bn(channels);
      for (BatchNorm2d* bn : {&cpu_bn, &gpu_bn}) {
        // Scales up to 4 put part of ReLU6's input above 6.
        set_values(bn->weight().value, {0.5f, -1.0f, 4.0f, 2.0f});
        set_values(bn->bias().value, {0.1f, 0.2f, 3.0f, 0.0f});
        bn->set_activation(act);
      }
      gpu_bn.to_device(gpu);
      RunState training;
      Tensor y_cpu = with_residual ? cpu_bn.forward_residual(x, residual, training)
                                   : cpu_bn.forward(x, training);
      Tensor y_gpu = with_residual ? gpu_bn.forward_residual(x.to(gpu), residual.to(gpu), training)
                                   : gpu_bn.forward(x.to(gpu), training);
      expect_close(y_gpu.to_vector(), y_cpu.to_vector(), 1e-5, 1e-5, what + " output");
      if (!with_residual) {
        ASSERT_TRUE(gpu_bn.can_recompute(y_gpu)) << what;
        EXPECT_EQ(gpu_bn.recompute_output().to_vector(), y_gpu.to_vector())
            << what << ": the recomputed output differs from the forward's";
      }
      BackwardState state;
      Tensor dx_cpu = cpu_bn.backward(grad, state);
      Tensor dx_gpu = gpu_bn.backward(grad.to(gpu), state);
      // Where z is within a rounding of a kink, the twins' masks may differ (the CPU rounds
      // twice, CUDA's fma once): a few elements may.
      expect_close(dx_gpu.to_vector(), dx_cpu.to_vector(), 1e-4, 1e-5, what + " input gradient",
                   0.002);
      expect_close(gpu_bn.weight().grad.to_vector(), cpu_bn.weight().grad.to_vector(), 1e-4, 1e-4,
                   what + " weight gradient");
      expect_close(gpu_bn.bias().grad.to_vector(), cpu_bn.bias().grad.to_vector(), 1e-4, 1e-4,
                   what + " bias gradient");
      if (with_residual) {
        expect_close(gpu_bn.take_residual_grad().to_vector(),
                     cpu_bn.take_residual_grad().to_vector(), 0.0, 0.0, what + " residual gradient",
                     0.002);
      }
    }
  }
}

TEST(BnPoolGpu, BatchNormTrainingMicroBatchesMatchCpu) {
  MB_SKIP_WITHOUT_CUDA();
  const Device gpu = Device::cuda();
  const std::int64_t channels = 5;
  BatchNorm2d cpu_bn(channels), gpu_bn(channels);
  for (BatchNorm2d* bn : {&cpu_bn, &gpu_bn}) {
    set_values(bn->weight().value, {0.5f, -1.0f, 1.5f, 2.0f, 0.25f});
    set_values(bn->bias().value, {0.1f, 0.2f, -0.3f, 0.0f, 1.0f});
  }
  gpu_bn.to_device(gpu);
  // 16 x 17 x 19 = 5168 values per channel: several per thread of a 512-thread block.
  Tensor x = channel_data(Shape{16, channels, 17, 19}, 1);
  Tensor grad = random_tensor(x.shape(), 2);
  Tensor junk = channel_data(Shape{3, channels, 17, 19}, 3);
  RunState training;
  training.training = true;

  cpu_bn.begin_batch();
  gpu_bn.begin_batch();
  std::int64_t begin = 0;
  int index = 0;
  for (std::int64_t size : {7, 7, 2}) {
    if (index == 1) {  // an aborted micro-batch must not count on either backend
      cpu_bn.forward(junk, training);
      gpu_bn.forward(junk.to(gpu), training);
      cpu_bn.abort_micro_batch();
      gpu_bn.abort_micro_batch();
    }
    Tensor xs = x.slice(begin, begin + size), gs = grad.slice(begin, begin + size);
    BackwardState state;
    state.mode = index == 0 ? GradientMode::Overwrite : GradientMode::Accumulate;
    Tensor y_cpu = cpu_bn.forward(xs, training);
    Tensor y_gpu = gpu_bn.forward(xs.to(gpu), training);
    ASSERT_EQ(y_gpu.device(), gpu);
    expect_close(y_gpu.to_vector(), y_cpu.to_vector(), 1e-5, 1e-5, "BN output");
    Tensor dx_cpu = cpu_bn.backward(gs, state);
    Tensor dx_gpu = gpu_bn.backward(gs.to(gpu), state);
    expect_close(dx_gpu.to_vector(), dx_cpu.to_vector(), 1e-4, 1e-5, "BN input gradient");
    cpu_bn.commit_micro_batch();
    gpu_bn.commit_micro_batch();
    begin += size;
    ++index;
  }
  expect_close(gpu_bn.weight().grad.to_vector(), cpu_bn.weight().grad.to_vector(), 1e-4, 1e-4,
               "BN weight gradient");
  expect_close(gpu_bn.bias().grad.to_vector(), cpu_bn.bias().grad.to_vector(), 1e-4, 1e-4,
               "BN bias gradient");
  cpu_bn.end_batch();
  gpu_bn.end_batch();
  expect_close(gpu_bn.running_mean().to_vector(), cpu_bn.running_mean().to_vector(), 1e-5, 1e-6,
               "running_mean");
  expect_close(gpu_bn.running_var().to_vector(), cpu_bn.running_var().to_vector(), 1e-5, 1e-6,
               "running_var");
  EXPECT_EQ(gpu_bn.num_batches_tracked().to_vector_int(), std::vector<std::int32_t>{1});

  // A full-batch run on the GPU records the same running statistics.
  BatchNorm2d whole(channels);
  whole.to_device(gpu);
  whole.begin_batch();
  whole.forward(x.to(gpu), training);
  whole.end_batch();
  expect_close(whole.running_var().to_vector(), cpu_bn.running_var().to_vector(), 1e-5, 1e-6,
               "full-batch running_var");

  // Eval mode: normalization with the running statistics, and its backward.
  RunState eval;
  eval.training = false;
  Tensor y_cpu = cpu_bn.forward(x, eval);
  Tensor y_gpu = gpu_bn.forward(x.to(gpu), eval);
  expect_close(y_gpu.to_vector(), y_cpu.to_vector(), 1e-5, 1e-5, "BN eval output");
  Tensor dx_cpu = cpu_bn.backward(grad, BackwardState{});
  Tensor dx_gpu = gpu_bn.backward(grad.to(gpu), BackwardState{});
  expect_close(dx_gpu.to_vector(), dx_cpu.to_vector(), 1e-5, 1e-6, "BN eval input gradient");
}

struct PoolCase {
  std::string kind;  // "max", "avg", "global"
  Shape input;
  int kernel;
  int stride;
  int padding;
};

std::shared_ptr<Module> make_pool(const PoolCase& pc) {
  if (pc.kind == "max") return std::make_shared<MaxPool2d>(pc.kernel, pc.stride, pc.padding);
  if (pc.kind == "avg") return std::make_shared<AvgPool2d>(pc.kernel, pc.stride, pc.padding);
  return std::make_shared<GlobalAvgPool2d>();
}

TEST(BnPoolGpu, PoolingMatchesCpu) {
  MB_SKIP_WITHOUT_CUDA();
  const Device gpu = Device::cuda();
  const std::vector<PoolCase> cases = {
      {"max", Shape{4, 16, 56, 56}, 3, 2, 1},   {"max", Shape{2, 3, 7, 9}, 2, -1, 0},
      {"max", Shape{2, 5, 11, 13}, 3, 1, 1},    {"avg", Shape{4, 16, 28, 28}, 2, 2, 0},
      {"avg", Shape{2, 3, 9, 7}, 3, 2, 1},      {"avg", Shape{1, 2, 8, 8}, 4, 3, 2},
      {"global", Shape{8, 64, 7, 7}, 0, 0, 0},  {"global", Shape{3, 5, 1, 1}, 0, 0, 0},
      {"global", Shape{2, 3, 31, 33}, 0, 0, 0},
  };
  std::uint64_t seed = 10;
  for (const PoolCase& pc : cases) {
    const std::string what = pc.kind + " " + pc.input.to_string();
    std::shared_ptr<Module> cpu_pool = make_pool(pc), gpu_pool = make_pool(pc);
    gpu_pool->to_device(gpu);
    Tensor x = random_tensor(pc.input, ++seed);
    Tensor y_cpu = cpu_pool->forward(x, RunState{});
    Tensor y_gpu = gpu_pool->forward(x.to(gpu), RunState{});
    ASSERT_EQ(y_gpu.shape(), y_cpu.shape()) << what;
    expect_close(y_gpu.to_vector(), y_cpu.to_vector(), 1e-5, 1e-6, what + " output");
    Tensor g = random_tensor(y_cpu.shape(), ++seed);
    Tensor dx_cpu = cpu_pool->backward(g, BackwardState{});
    Tensor dx_gpu = gpu_pool->backward(g.to(gpu), BackwardState{});
    expect_close(dx_gpu.to_vector(), dx_cpu.to_vector(), 1e-5, 1e-6, what + " input gradient");
  }
}

}  // namespace
}  // namespace mb
