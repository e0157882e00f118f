// Row-major single-precision GEMM through cuBLAS (the device context's handle, set to the
// stream; TF32 per Context::allow_tf32()). CPU twin: kernels/cpu/gemm.h; contract:
// kernels/gemm.h.
#pragma once

#include <cstdint>

#include "runtime/gradient_mode.h"
#include "runtime/stream.h"

namespace mb::cuda {

void gemm(const Stream& stream, bool transpose_a, bool transpose_b, std::int64_t m, std::int64_t n,
          std::int64_t k, const float* a, std::int64_t lda, const float* b, std::int64_t ldb,
          float* c, std::int64_t ldc, GradientMode mode);

}  // namespace mb::cuda
