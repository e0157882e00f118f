// Conv2d, ConvTranspose2d and Linear on CUDA against the CPU backend (label gpu): outputs,
// input gradients and parameter gradients in Overwrite and Accumulate modes, with exact
// fp32 math (TF32 off) and, more loosely, with TF32 on. Skips without a device.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "layers/conv2d.h"
#include "layers/conv_transpose2d.h"
#include "layers/linear.h"
#include "runtime/context.h"
#include "tests/layers/gradcheck.h"
#include "tests/test_util.h"

#if MB_WITH_CUDA
#include <cudnn.h>

#include "kernels/cuda/conv.h"
#endif

namespace mb {
namespace {

using testing::expect_close;
using testing::random_tensor;

// Sets the device's TF32 flag for the scope and restores it.
class ScopedTf32 {
 public:
  ScopedTf32(const Device& device, bool allow)
      : context_(Context::get(device)), previous_(context_.allow_tf32()) {
    context_.set_allow_tf32(allow);
  }
  ~ScopedTf32() { context_.set_allow_tf32(previous_); }

 private:
  Context& context_;
  bool previous_;
};

std::vector<float> on_host(const Tensor& t) {
  if (t.device().is_cuda()) Context::get(t.device()).synchronize();
  return t.to_vector();
}

// Runs forward, backward (Overwrite) and a second backward (Accumulate) on both modules,
// which must hold the same parameters, and compares every result.
void expect_parity(Module& cpu_module, Module& gpu_module, const Shape& input_shape,
                   double tolerance, const std::string& what) {
  SCOPED_TRACE(what);
  const Device gpu = Device::cuda(0);
  Tensor x = random_tensor(input_shape, 1);
  Tensor y_cpu = cpu_module.forward(x, RunState{});
  Tensor y_gpu = gpu_module.forward(x.to(gpu), RunState{});
  ASSERT_EQ(y_gpu.shape(), y_cpu.shape());
  EXPECT_TRUE(y_gpu.device().is_cuda());
  expect_close(on_host(y_gpu), y_cpu.to_vector(), tolerance, tolerance, what + " forward");

  Tensor g = random_tensor(y_cpu.shape(), 2);
  Tensor dx_cpu = cpu_module.backward(g, BackwardState{});
  Tensor dx_gpu = gpu_module.backward(g.to(gpu), BackwardState{});
  ASSERT_TRUE(dx_gpu.defined());
  expect_close(on_host(dx_gpu), dx_cpu.to_vector(), tolerance, tolerance, what + " input grad");
  auto cpu_params = cpu_module.named_parameters();
  auto gpu_params = gpu_module.named_parameters();
  ASSERT_EQ(cpu_params.size(), gpu_params.size());
  for (std::size_t i = 0; i < cpu_params.size(); ++i) {
    expect_close(on_host(gpu_params[i].second->grad), cpu_params[i].second->grad.to_vector(),
                 tolerance, tolerance, what + " grad of " + cpu_params[i].first);
  }

  // A second identical micro-batch in Accumulate mode doubles the parameter gradients.
  BackwardState accumulate;
  accumulate.mode = GradientMode::Accumulate;
  accumulate.need_input_grad = false;
  gpu_module.forward(x.to(gpu), RunState{});
  EXPECT_FALSE(gpu_module.backward(g.to(gpu), accumulate).defined());
  for (std::size_t i = 0; i < cpu_params.size(); ++i) {
    std::vector<float> doubled = cpu_params[i].second->grad.to_vector();
    for (float& v : doubled) v *= 2.0f;
    expect_close(on_host(gpu_params[i].second->grad), doubled, tolerance, tolerance,
                 what + " accumulated grad of " + cpu_params[i].first);
  }
}

struct ConvCase {
  std::int64_t in_channels, out_channels;
  int kernel, stride, padding, dilation, groups;
  bool bias;
  Shape input;
};

const std::vector<ConvCase> kConvCases = {
    {3, 16, 7, 2, 3, 1, 1, false, {2, 3, 32, 32}},   // ResNet stem
    {16, 16, 3, 1, 1, 1, 1, true, {3, 16, 15, 17}},  // odd sizes
    {16, 32, 3, 2, 1, 1, 2, true, {2, 16, 14, 14}},  // groups, stride
    {16, 16, 3, 1, 2, 2, 1, true, {2, 16, 12, 12}},  // dilation
    {24, 24, 3, 2, 1, 1, 24, false, {2, 24, 9, 9}},  // depthwise
    {16, 32, 1, 2, 0, 1, 1, false, {2, 16, 8, 8}},   // downsample shortcut
};

TEST(ConvLinearGpu, Conv2dMatchesCpu) {
  MB_SKIP_WITHOUT_CUDA();
  const Device gpu = Device::cuda(0);
  for (bool tf32 : {false, true}) {
    ScopedTf32 scope(gpu, tf32);
    for (const ConvCase& c : kConvCases) {
      Conv2d cpu_conv(c.in_channels, c.out_channels, c.kernel, c.stride, c.padding, c.dilation,
                      c.groups, c.bias);
      Conv2d gpu_conv(c.in_channels, c.out_channels, c.kernel, c.stride, c.padding, c.dilation,
                      c.groups, c.bias);
      gpu_conv.to_device(gpu);
      expect_parity(
          cpu_conv, gpu_conv, c.input, tf32 ? 2e-2 : 1e-4,
          cpu_conv.describe() + " on " + c.input.to_string() + (tf32 ? " tf32" : " fp32"));
    }
  }
}

TEST(ConvLinearGpu, ConvTranspose2dMatchesCpu) {
  MB_SKIP_WITHOUT_CUDA();
  const Device gpu = Device::cuda(0);
  ScopedTf32 scope(gpu, false);
  struct Case {
    std::int64_t in, out;
    int kernel, stride, padding, output_padding;
    bool bias;
    Shape input;
  };
  for (const Case& c : std::vector<Case>{{16, 8, 4, 2, 1, 0, true, {2, 16, 8, 8}},
                                         {8, 4, 3, 2, 1, 1, true, {2, 8, 5, 7}},
                                         {8, 8, 2, 2, 0, 0, false, {1, 8, 6, 6}},
                                         {6, 4, 3, 1, 1, 0, true, {2, 6, 9, 9}}}) {
    ConvTranspose2d cpu_convt(c.in, c.out, c.kernel, c.stride, c.padding, c.output_padding, c.bias);
    ConvTranspose2d gpu_convt(c.in, c.out, c.kernel, c.stride, c.padding, c.output_padding, c.bias);
    gpu_convt.to_device(gpu);
    expect_parity(cpu_convt, gpu_convt, c.input, 1e-4, cpu_convt.describe());
  }
}

TEST(ConvLinearGpu, LinearMatchesCpu) {
  MB_SKIP_WITHOUT_CUDA();
  const Device gpu = Device::cuda(0);
  ScopedTf32 scope(gpu, false);
  for (bool bias : {true, false}) {
    Linear cpu_linear(300, 37, bias);
    Linear gpu_linear(300, 37, bias);
    gpu_linear.to_device(gpu);
    expect_parity(cpu_linear, gpu_linear, {19, 300}, 1e-4, cpu_linear.describe());
  }
}

// A host-side rule, so it runs without a device where CUDA is built: fp32 convolutions never
// take an algorithm that down-converts to fp16, and TF32 off excludes tensor-op math.
TEST(ConvLinearGpu, AlgorithmMathNeverDownConvertsToHalf) {
#if MB_WITH_CUDA
  for (const bool tf32 : {true, false}) {
    EXPECT_FALSE(cuda::cudnn_math_allowed(CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION, tf32));
    EXPECT_TRUE(cuda::cudnn_math_allowed(CUDNN_FMA_MATH, tf32));
    EXPECT_TRUE(cuda::cudnn_math_allowed(CUDNN_DEFAULT_MATH, tf32));
    EXPECT_EQ(cuda::cudnn_math_allowed(CUDNN_TENSOR_OP_MATH, tf32), tf32);
  }
#else
  GTEST_SKIP() << "the CUDA backend is not built (MB_WITH_CUDA=OFF)";
#endif
}

TEST(ConvLinearGpu, AlgorithmIsChosenOncePerShape) {
  MB_SKIP_WITHOUT_CUDA();
#if MB_WITH_CUDA
  const Device gpu = Device::cuda(0);
  Conv2d conv(8, 8, 3, 1, 1);
  conv.to_device(gpu);
  Tensor x = random_tensor({2, 8, 10, 10}, 3).to(gpu);
  Tensor y = conv.forward(x, RunState{});
  conv.backward(Tensor::zeros(y.shape(), TensorOptions{DType::Float32, gpu}), BackwardState{});
  const std::size_t after_first = cuda::conv_algorithm_cache_size();
  for (int i = 0; i < 3; ++i) {
    y = conv.forward(x, RunState{});
    conv.backward(Tensor::zeros(y.shape(), TensorOptions{DType::Float32, gpu}), BackwardState{});
  }
  EXPECT_EQ(cuda::conv_algorithm_cache_size(), after_first);
  // A new batch size is a new key for each of the three directions.
  Tensor x3 = random_tensor({3, 8, 10, 10}, 4).to(gpu);
  y = conv.forward(x3, RunState{});
  conv.backward(Tensor::zeros(y.shape(), TensorOptions{DType::Float32, gpu}), BackwardState{});
  EXPECT_EQ(cuda::conv_algorithm_cache_size(), after_first + 3);
#endif
}

}  // namespace
}  // namespace mb
