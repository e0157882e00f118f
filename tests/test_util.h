// Helpers shared by tests.
#pragma once

#include <gtest/gtest.h>

#include "runtime/context.h"
#include "runtime/device.h"

// Skips the current test, with the reason, when no CUDA device can be used.
#define MB_SKIP_WITHOUT_CUDA()                                                      \
  do {                                                                              \
    ::mb::CudaAvailability mb_cuda_ = ::mb::cuda_availability();                    \
    if (!mb_cuda_.available) GTEST_SKIP() << "no CUDA device: " << mb_cuda_.reason; \
  } while (false)

namespace mb::testing {

// TF32 off (full fp32, as the CPU computes) and deterministic mode as asked on CUDA device 0
// for the scope; both restored after.
class ScopedCudaMath {
 public:
  explicit ScopedCudaMath(bool deterministic)
      : context_(Context::get(Device::cuda(0))),
        tf32_(context_.allow_tf32()),
        deterministic_(context_.deterministic()) {
    context_.set_allow_tf32(false);
    context_.set_deterministic(deterministic);
  }
  ~ScopedCudaMath() {
    context_.set_allow_tf32(tf32_);
    context_.set_deterministic(deterministic_);
  }
  ScopedCudaMath(const ScopedCudaMath&) = delete;
  ScopedCudaMath& operator=(const ScopedCudaMath&) = delete;

 private:
  Context& context_;
  bool tf32_, deterministic_;
};

}  // namespace mb::testing
