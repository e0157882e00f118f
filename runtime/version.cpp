// Version and build information.
#include "runtime/version.h"

#include <sstream>

#include "runtime/device.h"
#include "runtime/memory_report.h"

#if MB_WITH_CUDA
#include <cublas_v2.h>
#include <cudnn.h>
#endif

#ifndef MB_VERSION_STRING
#define MB_VERSION_STRING "0.0.0"
#endif
#ifndef MB_BUILD_TYPE
#define MB_BUILD_TYPE "unknown"
#endif

namespace mb {

const char* version() {
  return MB_VERSION_STRING;
}

std::string build_info() {
  std::ostringstream out;
  out << "microbatch " << version() << " (" << MB_BUILD_TYPE << ", C++" << (__cplusplus / 100 % 100)
      << ")\n";
  out << "CPU backend: on (OpenBLAS/BLAS sgemm)\n";
#if MB_WITH_CUDA
  const std::size_t cudnn = cudnnGetVersion();
  int cublas_major = 0, cublas_minor = 0, cublas_patch = 0;
  cublasGetProperty(MAJOR_VERSION, &cublas_major);
  cublasGetProperty(MINOR_VERSION, &cublas_minor);
  cublasGetProperty(PATCH_LEVEL, &cublas_patch);
  out << "CUDA backend: on (built with CUDA " << CUDART_VERSION / 1000 << "."
      << CUDART_VERSION % 1000 / 10 << ", cuDNN " << cudnn / 10000 << "." << cudnn % 10000 / 100
      << "." << cudnn % 100 << ", cuBLAS " << cublas_major << "." << cublas_minor << "."
      << cublas_patch << ")\n";
#else
  out << "CUDA backend: off\n";
#endif
  out << "devices:\n  cpu\n";
  CudaAvailability cuda = cuda_availability();
  if (cuda.available) {
    for (const CudaDeviceInfo& info : cuda.devices) {
      out << "  cuda:" << info.index << " " << info.name << " (sm_" << info.compute_major
          << info.compute_minor << ", " << format_bytes(info.total_bytes) << ", "
          << info.multiprocessors << " SMs)\n";
    }
    out << "  driver " << cuda.driver_version / 1000 << "." << cuda.driver_version % 1000 / 10
        << "\n";
  } else {
    out << "  no CUDA device: " << cuda.reason << "\n";
  }
  return out.str();
}

}  // namespace mb
