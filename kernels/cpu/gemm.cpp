// BLAS sgemm, row-major. OpenBLAS runs single-threaded (kernels/threads.h); a large
// product is cut into fixed blocks of rows or columns of C, each one sgemm call, computed in
// parallel. The cut depends on m, n and k only, and every element of C is summed over the
// whole of k by one call, so results do not depend on the thread count.
#include "kernels/cpu/gemm.h"

#include <cblas.h>

#include <algorithm>

#include "kernels/cpu/parallel.h"
#include "runtime/error.h"

namespace mb::cpu {
namespace {

// Rows or columns of C per block, and the smallest product worth cutting (m * n * k).
constexpr std::int64_t kGemmBlock = 256;
constexpr std::int64_t kMinBlockedWork = std::int64_t{1} << 21;

void sgemm(bool transpose_a, bool transpose_b, std::int64_t m, std::int64_t n, std::int64_t k,
           const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
           std::int64_t ldc) {
  cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans,
              transpose_b ? CblasTrans : CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), 1.0f, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta,
              c, static_cast<int>(ldc));
}

}  // namespace

void gemm(const Stream& /*stream*/, bool transpose_a, bool transpose_b, std::int64_t m,
          std::int64_t n, std::int64_t k, const float* a, std::int64_t lda, const float* b,
          std::int64_t ldb, float* c, std::int64_t ldc, GradientMode mode) {
  MB_CHECK(m >= 0 && n >= 0 && k >= 0, "gemm: negative size m=", m, " n=", n, " k=", k);
  if (m == 0 || n == 0) return;
  ensure_threads_configured();
  const float beta = mode == GradientMode::Accumulate ? 1.0f : 0.0f;
  const std::int64_t work = m * n * std::max<std::int64_t>(k, 1);
  if (work < kMinBlockedWork || std::max(m, n) <= kGemmBlock) {
    sgemm(transpose_a, transpose_b, m, n, k, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  if (n >= m) {
    // Columns [j0, j1) of C need columns j0.. of op(B): B[k, n] at b + j0, or B^T's rows.
    parallel_blocks(n, kGemmBlock, work, [&](std::int64_t j0, std::int64_t j1) {
      const float* b_block = transpose_b ? b + j0 * ldb : b + j0;
      sgemm(transpose_a, transpose_b, m, j1 - j0, k, a, lda, b_block, ldb, beta, c + j0, ldc);
    });
  } else {
    // Rows [i0, i1) of C need rows i0.. of op(A): A[m, k] at a + i0 * lda, or A^T's columns.
    parallel_blocks(m, kGemmBlock, work, [&](std::int64_t i0, std::int64_t i1) {
      const float* a_block = transpose_a ? a + i0 : a + i0 * lda;
      sgemm(transpose_a, transpose_b, i1 - i0, n, k, a_block, lda, b, ldb, beta, c + i0 * ldc, ldc);
    });
  }
}

}  // namespace mb::cpu
