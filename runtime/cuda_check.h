// Checking macros for CUDA, cuBLAS and cuDNN calls. Include only from CUDA-enabled code.
//
// Each failure throws mb::CudaError with the expression, file, line and the library's own
// error name. MB_CUDA_LAUNCH_CHECK() follows every kernel launch: it checks the launch and,
// with MB_LAUNCH_BLOCKING=1 in the environment, synchronizes so the failing kernel is named.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "runtime/error.h"

namespace mb::detail {

[[noreturn]] void throw_cuda_error(const char* expression, const char* file, int line,
                                   const char* library, const char* error_name,
                                   const char* description);
bool launch_blocking();  // MB_LAUNCH_BLOCKING=1, read once
void check_launch(const char* file, int line);

}  // namespace mb::detail

#define MB_CUDA_CHECK(expr)                                             \
  do {                                                                  \
    cudaError_t mb_status_ = (expr);                                    \
    if (mb_status_ != cudaSuccess) {                                    \
      cudaGetLastError();                                               \
      ::mb::detail::throw_cuda_error(#expr, __FILE__, __LINE__, "CUDA", \
                                     cudaGetErrorName(mb_status_),      \
                                     cudaGetErrorString(mb_status_));   \
    }                                                                   \
  } while (false)

#define MB_CUBLAS_CHECK(expr)                                             \
  do {                                                                    \
    cublasStatus_t mb_status_ = (expr);                                   \
    if (mb_status_ != CUBLAS_STATUS_SUCCESS) {                            \
      ::mb::detail::throw_cuda_error(#expr, __FILE__, __LINE__, "cuBLAS", \
                                     cublasGetStatusName(mb_status_),     \
                                     cublasGetStatusString(mb_status_));  \
    }                                                                     \
  } while (false)

#define MB_CUDNN_CHECK(expr)                                               \
  do {                                                                     \
    cudnnStatus_t mb_status_ = (expr);                                     \
    if (mb_status_ != CUDNN_STATUS_SUCCESS) {                              \
      ::mb::detail::throw_cuda_error(#expr, __FILE__, __LINE__, "cuDNN",   \
                                     cudnnGetErrorString(mb_status_), ""); \
    }                                                                      \
  } while (false)

#define MB_CUDA_LAUNCH_CHECK() ::mb::detail::check_launch(__FILE__, __LINE__)
