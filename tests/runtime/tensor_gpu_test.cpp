// Tensor on a CUDA device: host<->device round trips, fill, views (label gpu).
#include <gtest/gtest.h>

#include "allocator/pool_allocator.h"
#include "runtime/allocator_registry.h"
#include "runtime/context.h"
#include "runtime/memory_resource.h"
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

// A tensor made without a stream (parameters through to(), gradients, optimizer state) is
// allocated on the compute stream: the block it frees serves the next compute-stream request
// at once, instead of sitting in a pool of the legacy stream that the planner counted as free.
TEST(TensorGpu, TensorsWithoutAStreamLiveOnTheComputeStream) {
  MB_SKIP_WITHOUT_CUDA();
  const Device gpu = Device::cuda(0);
  auto pool = std::make_shared<PoolAllocator>(make_cuda_memory_resource(0), PoolOptions{});
  ScopedAllocator scope(gpu, pool);
  TensorOptions no_stream;
  no_stream.device = gpu;
  void* first = nullptr;
  {
    Tensor t = Tensor::empty(Shape{1 << 20}, no_stream);
    first = t.raw_data();
  }
  TensorOptions on_compute = no_stream;
  on_compute.stream = Context::get(gpu).compute_stream();
  Tensor u = Tensor::empty(Shape{1 << 20}, on_compute);
  EXPECT_EQ(u.raw_data(), first)
      << "the block of a tensor made without a stream did not serve the compute stream";
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
