// Helpers shared by tests.
#pragma once

#include <gtest/gtest.h>

#include "runtime/device.h"

// Skips the current test, with the reason, when no CUDA device can be used.
#define MB_SKIP_WITHOUT_CUDA()                                                      \
  do {                                                                              \
    ::mb::CudaAvailability mb_cuda_ = ::mb::cuda_availability();                    \
    if (!mb_cuda_.available) GTEST_SKIP() << "no CUDA device: " << mb_cuda_.reason; \
  } while (false)
