// cuBLAS and cuDNN for kernels/cuda: the device context's handles, bound to the op's stream,
// and the int conversion both libraries' descriptors need.
#pragma once

#include <cublas_v2.h>
#include <cudnn.h>

#include <cstdint>

#include "runtime/context.h"
#include "runtime/cuda_check.h"
#include "runtime/error.h"
#include "runtime/stream.h"

namespace mb::cuda {

// The device's cuBLAS handle, set to run on `stream`.
inline cublasHandle_t cublas_handle(const Stream& stream) {
  auto handle = static_cast<cublasHandle_t>(Context::get(stream.device()).cublas_handle());
  MB_CUBLAS_CHECK(cublasSetStream(handle, static_cast<cudaStream_t>(stream.handle())));
  return handle;
}

// The device's cuDNN handle, set to run on `stream`.
inline cudnnHandle_t cudnn_handle(const Stream& stream) {
  auto handle = static_cast<cudnnHandle_t>(Context::get(stream.device()).cudnn_handle());
  MB_CUDNN_CHECK(cudnnSetStream(handle, static_cast<cudaStream_t>(stream.handle())));
  return handle;
}

// cuDNN and cuBLAS take int sizes: a larger value is a micro-batch too large for them.
inline int to_int(std::int64_t value, const char* what) {
  MB_CHECK(value >= 0 && value <= 0x7fffffff, "cuDNN/cuBLAS: ", what, " = ", value,
           " does not fit in int. Fix: use a smaller micro-batch");
  return static_cast<int>(value);
}

}  // namespace mb::cuda
