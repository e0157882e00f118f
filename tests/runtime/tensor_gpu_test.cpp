// Tensor on a CUDA device: host<->device round trips, fill, views (label gpu).
#include <gtest/gtest.h>

#include "runtime/context.h"
#include "runtime/tensor.h"
#include "tests/test_util.h"

namespace mb {
namespace {

TEST(TensorGpu, RoundTripFillAndSlice) {
  MB_SKIP_WITHOUT_CUDA();
  TensorOptions on_gpu;
  on_gpu.device = Device::cuda(0);
  std::vector<float> values(1000);
  for (int i = 0; i < 1000; ++i) values[i] = 0.5f * i;
  Tensor d = Tensor::from_vector(values, {10, 100}, on_gpu);
  EXPECT_EQ(d.to_vector(), values);
  Tensor slice = d.slice(2, 4);
  slice.fill(3.0f);
  std::vector<float> expected = values;
  for (int i = 200; i < 400; ++i) expected[i] = 3.0f;
  EXPECT_EQ(d.to_vector(), expected);
  Tensor back = d.to(Device::cpu());
  EXPECT_TRUE(back.device().is_cpu());
  EXPECT_EQ(back.to_vector(), expected);
}

TEST(TensorGpu, ContextHandlesAndTimer) {
  MB_SKIP_WITHOUT_CUDA();
  Context& context = Context::get(Device::cuda(0));
  EXPECT_NE(context.compute_stream(), nullptr);
  EXPECT_NE(context.cublas_handle(), nullptr);
  EXPECT_NE(context.cudnn_handle(), nullptr);
  Timer timer(Device::cuda(0), context.compute_stream());
  timer.start();
  timer.stop();
  EXPECT_GE(timer.elapsed_ms(), 0.0);
}

}  // namespace
}  // namespace mb
