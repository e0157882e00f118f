// BLAS sgemm, row-major.
#include "kernels/cpu/gemm.h"

#include <cblas.h>

#include "runtime/error.h"

namespace mb::cpu {

void gemm(const Stream& /*stream*/, bool transpose_a, bool transpose_b, std::int64_t m,
          std::int64_t n, std::int64_t k, const float* a, std::int64_t lda, const float* b,
          std::int64_t ldb, float* c, std::int64_t ldc, GradientMode mode) {
  MB_CHECK(m >= 0 && n >= 0 && k >= 0, "gemm: negative size m=", m, " n=", n, " k=", k);
  if (m == 0 || n == 0) return;
  const float beta = mode == GradientMode::Accumulate ? 1.0f : 0.0f;
  cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans,
              transpose_b ? CblasTrans : CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), 1.0f, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta,
              c, static_cast<int>(ldc));
}

}  // namespace mb::cpu
