// Version and build information.
#include "runtime/version.h"

#include <sstream>

#include "runtime/context.h"
#include "runtime/device.h"
#include "runtime/memory_report.h"

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
  if (cuda_built()) {
    out << "CUDA backend: on (built with " << cuda_library_versions() << ")\n";
  } else {
    out << "CUDA backend: off\n";
  }
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
