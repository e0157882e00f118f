// Row-major GEMM on cuBLAS's column-major sgemm.
#include "kernels/cuda/gemm.h"

#include "kernels/cuda/library_handles.h"
#include "runtime/error.h"

namespace mb::cuda {

void gemm(const Stream& stream, bool transpose_a, bool transpose_b, std::int64_t m, std::int64_t n,
          std::int64_t k, const float* a, std::int64_t lda, const float* b, std::int64_t ldb,
          float* c, std::int64_t ldc, GradientMode mode) {
  MB_CHECK(m >= 0 && n >= 0 && k >= 0, "cuda::gemm: negative size m=", m, " n=", n, " k=", k);
  if (m == 0 || n == 0) return;
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, and a row-major matrix
  // read column-major is its transpose: so swap the operands and keep the op flags.
  const float alpha = 1.0f, beta = mode == GradientMode::Accumulate ? 1.0f : 0.0f;
  MB_CUBLAS_CHECK(cublasSgemm(cublas_handle(stream), transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                              transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N, to_int(n, "n"),
                              to_int(m, "m"), to_int(k, "k"), &alpha, b, to_int(ldb, "ldb"), a,
                              to_int(lda, "lda"), &beta, c, to_int(ldc, "ldc")));
}

}  // namespace mb::cuda
