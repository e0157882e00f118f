// Typed access to a device's context for CUDA code.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "runtime/context.h"

namespace mb {

inline cudaStream_t compute_stream(const Device& device) {
  return static_cast<cudaStream_t>(Context::get(device).compute_stream());
}
inline cublasHandle_t cublas_handle(const Device& device) {
  return static_cast<cublasHandle_t>(Context::get(device).cublas_handle());
}
inline cudnnHandle_t cudnn_handle(const Device& device) {
  return static_cast<cudnnHandle_t>(Context::get(device).cudnn_handle());
}

}  // namespace mb
