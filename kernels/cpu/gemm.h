// Single-precision GEMM on the CPU through BLAS (OpenBLAS): the reference backend's
// workhorse for convolution (im2col) and Linear.
#pragma once

#include <cstdint>

namespace mb::cpu {

// C = alpha * op(A) * op(B) + beta * C, row-major. op(A) is m x k, op(B) is k x n, C is
// m x n; lda/ldb/ldc are the row strides of A, B, C as stored.
void gemm(bool transpose_a, bool transpose_b, std::int64_t m, std::int64_t n, std::int64_t k,
          float alpha, const float* a, std::int64_t lda, const float* b, std::int64_t ldb,
          float beta, float* c, std::int64_t ldc);

}  // namespace mb::cpu
