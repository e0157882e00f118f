// Single-precision GEMM, row-major (twins: kernels/cpu/gemm.h through OpenBLAS, the
// reference; kernels/cuda/gemm.h through cuBLAS, TF32 per the device context).
//
// C[m, n] (+)= op(A) op(B), where op(A) is m x k and op(B) is k x n; lda/ldb/ldc are the
// row strides of A, B, C as stored. `mode` overwrites C or adds to it.
#pragma once

#include <cstdint>

#include "runtime/gradient_mode.h"
#include "runtime/stream.h"

namespace mb {

void gemm(const Stream& stream, bool transpose_a, bool transpose_b, std::int64_t m, std::int64_t n,
          std::int64_t k, const float* a, std::int64_t lda, const float* b, std::int64_t ldb,
          float* c, std::int64_t ldc, GradientMode mode);

}  // namespace mb
