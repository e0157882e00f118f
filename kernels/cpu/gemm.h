// Single-precision GEMM on the CPU through BLAS (OpenBLAS): the reference backend's
// workhorse for convolution (im2col) and Linear. Contract: kernels/gemm.h.
#pragma once

#include <cstdint>

#include "runtime/gradient_mode.h"
#include "runtime/stream.h"

namespace mb::cpu {

void gemm(const Stream& stream, bool transpose_a, bool transpose_b, std::int64_t m, std::int64_t n,
          std::int64_t k, const float* a, std::int64_t lda, const float* b, std::int64_t ldb,
          float* c, std::int64_t ldc, GradientMode mode);

}  // namespace mb::cpu
