// GEMM: dispatch to the CPU or CUDA twin.
#include "kernels/gemm.h"

#include "kernels/cpu/gemm.h"
#include "kernels/cuda/gemm.h"
#include "kernels/dispatch.h"

namespace mb {

void gemm(const Stream& stream, bool transpose_a, bool transpose_b, std::int64_t m, std::int64_t n,
          std::int64_t k, const float* a, std::int64_t lda, const float* b, std::int64_t ldb,
          float* c, std::int64_t ldc, GradientMode mode) {
  MB_DISPATCH(stream, gemm, transpose_a, transpose_b, m, n, k, a, lda, b, ldb, c, ldc, mode);
}

}  // namespace mb
