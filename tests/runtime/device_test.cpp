// Device parsing and detection: never crashes, answers with a reason.
#include "runtime/device.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "runtime/context.h"
#include "runtime/error.h"
#include "runtime/version.h"

namespace mb {
namespace {

TEST(Device, ParseAcceptsCpuCudaAndIndex) {
  EXPECT_EQ(Device::parse("cpu"), Device::cpu());
  EXPECT_EQ(Device::parse("cuda"), Device::cuda(0));
  EXPECT_EQ(Device::parse("cuda:2"), Device::cuda(2));
  EXPECT_EQ(Device::cuda(1).str(), "cuda:1");
  EXPECT_EQ(Device::parse("auto"), default_device());
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "CPU", ""}) {
    EXPECT_THROW(Device::parse(bad), InvalidArgument) << bad;
  }
}

TEST(Device, CudaAvailabilityAnswersWithAReason) {
  CudaAvailability cuda = cuda_availability();
  if (cuda.available) {
    EXPECT_FALSE(cuda.devices.empty());
  } else {
    EXPECT_FALSE(cuda.reason.empty());
    EXPECT_THROW(require_device(Device::cuda(0)), CudaError);
    EXPECT_EQ(default_device(), Device::cpu());
  }
  EXPECT_NO_THROW(require_device(Device::cpu()));
}

TEST(Device, BuildInfoNamesBackendsAndDevices) {
  const std::string info = build_info();
  EXPECT_NE(info.find("microbatch"), std::string::npos);
  EXPECT_NE(info.find(cuda_built() ? "CUDA backend: on" : "CUDA backend: off"), std::string::npos);
  EXPECT_NE(info.find("cpu"), std::string::npos);
}

TEST(Context, CpuTimerMeasuresElapsedTime) {
  Context& context = Context::get(Device::cpu());
  EXPECT_EQ(context.compute_stream(), nullptr);
  EXPECT_THROW(context.cublas_handle(), InvalidArgument);
  // A known interval: sleep_for blocks for at least its duration on the steady clock, so
  // the timer must report at least 50 ms. The upper bound only catches a wrong unit (seconds
  // read as ms gives 0.05, microseconds 50000) or a stale start: it is 40x the sleep because
  // the test machines are shared and a sleeping thread may be woken late.
  constexpr double kSleepMs = 50.0;
  Timer timer(Device::cpu());
  timer.start();
  std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(kSleepMs));
  timer.stop();
  const double elapsed = timer.elapsed_ms();
  EXPECT_GE(elapsed, kSleepMs);
  EXPECT_LT(elapsed, 40 * kSleepMs);
  // Stopping again later measures from the same start: the interval only grows.
  std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(kSleepMs));
  timer.stop();
  EXPECT_GE(timer.elapsed_ms(), elapsed + kSleepMs);
}

}  // namespace
}  // namespace mb
