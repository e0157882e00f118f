// The one dispatch point: in a build without the CUDA backend, CUDA work anywhere (an op,
// a device, device memory) ends in the same typed error, which names the fix.
#include "kernels/dispatch.h"

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "allocator/default_allocator.h"
#include "kernels/activation.h"
#include "runtime/error.h"

namespace mb {
namespace {

void expect_not_built_error(const std::function<void()>& call, const std::string& what) {
  try {
    call();
    ADD_FAILURE() << what << " did not throw";
  } catch (const CudaError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("needs the CUDA backend"), std::string::npos) << message;
    EXPECT_NE(message.find("-DMB_WITH_CUDA=ON"), std::string::npos) << message;
    EXPECT_NE(message.find("--device cpu"), std::string::npos) << message;
  }
}

TEST(Dispatch, CudaWorkWithoutTheBackendIsOneTypedError) {
  if (cuda_built()) GTEST_SKIP() << "this build has the CUDA backend";
  std::vector<float> x(4, 1.0f), y(4);
  const Stream cuda_stream(Device::cuda(0), nullptr);
  expect_not_built_error([&] { relu_forward(cuda_stream, x.data(), y.data(), 4); },
                         "relu_forward on cuda:0");
  expect_not_built_error([] { require_device(Device::cuda(0)); }, "require_device(cuda:0)");
  expect_not_built_error([] { make_default_allocator(Device::cuda(0)); },
                         "make_default_allocator(cuda:0)");
}

TEST(Dispatch, CpuStreamRunsTheCpuTwin) {
  std::vector<float> x = {-1.0f, 2.0f, -3.0f, 4.0f}, y(4, 9.0f);
  relu_forward(Stream(), x.data(), y.data(), 4);
  EXPECT_EQ(y, (std::vector<float>{0.0f, 2.0f, 0.0f, 4.0f}));
}

}  // namespace
}  // namespace mb
