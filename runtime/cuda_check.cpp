// CUDA error reporting and MB_LAUNCH_BLOCKING.
#include "runtime/cuda_check.h"

#include <cstdlib>
#include <string>

namespace mb::detail {

void throw_cuda_error(const char* expression, const char* file, int line, const char* library,
                      const char* error_name, const char* description) {
  std::string text =
      concat(file, ":", line, ": ", library, " call failed: ", expression, ": ", error_name);
  if (description != nullptr && description[0] != '\0') text += concat(" (", description, ")");
  throw CudaError(text, file, line);
}

bool launch_blocking() {
  static const bool blocking = [] {
    const char* value = std::getenv("MB_LAUNCH_BLOCKING");
    return value != nullptr && std::string(value) == "1";
  }();
  return blocking;
}

void check_launch(const char* file, int line) {
  cudaError_t status = cudaGetLastError();
  if (status == cudaSuccess && launch_blocking()) status = cudaDeviceSynchronize();
  if (status != cudaSuccess) {
    cudaGetLastError();
    throw_cuda_error("kernel launch", file, line, "CUDA", cudaGetErrorName(status),
                     cudaGetErrorString(status));
  }
}

}  // namespace mb::detail
