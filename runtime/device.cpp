// Device parsing and CUDA detection that never aborts.
#include "runtime/device.h"

#include <cstdlib>

#include "runtime/error.h"

#if MB_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace mb {

Device Device::parse(const std::string& text) {
  if (text == "auto") return default_device();
  if (text == "cpu") return Device::cpu();
  if (text == "cuda") return Device::cuda(0);
  if (text.rfind("cuda:", 0) == 0) {
    const std::string digits = text.substr(5);
    bool ok = !digits.empty() && digits.size() < 4 &&
              digits.find_first_not_of("0123456789") == std::string::npos;
    if (ok) return Device::cuda(std::atoi(digits.c_str()));
  }
  MB_THROW(InvalidArgument, "unknown device '", text,
           "'. Fix: use auto, cpu, cuda or cuda:N (N = the GPU's index)");
}

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index_);
}

bool cuda_built() {
  return MB_WITH_CUDA != 0;
}

CudaAvailability cuda_availability() {
  CudaAvailability result;
#if MB_WITH_CUDA
  cudaRuntimeGetVersion(&result.runtime_version);
  cudaError_t driver_status = cudaDriverGetVersion(&result.driver_version);
  if (driver_status != cudaSuccess || result.driver_version == 0) {
    cudaGetLastError();
    result.reason = "no NVIDIA driver found (libcuda not loadable)";
    return result;
  }
  int count = 0;
  cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();
    result.reason = std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
    return result;
  }
  if (count == 0) {
    result.reason = "the driver reports no CUDA device";
    return result;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    result.devices.push_back(CudaDeviceInfo{i, prop.name, prop.major, prop.minor,
                                            prop.totalGlobalMem, prop.multiProcessorCount});
  }
  result.available = !result.devices.empty();
  if (!result.available) result.reason = "no CUDA device answered a properties query";
#else
  result.reason = "this build has no CUDA backend (MB_WITH_CUDA=OFF or no nvcc at build time)";
#endif
  return result;
}

void require_device(const Device& device) {
  if (device.is_cpu()) return;
  CudaAvailability cuda = cuda_availability();
  if (!cuda.available) {
    MB_THROW(CudaError, "device ", device.str(), " unavailable: ", cuda.reason,
             ". Fix: run with --device cpu");
  }
  if (device.index() < 0 || device.index() >= static_cast<int>(cuda.devices.size())) {
    MB_THROW(CudaError, "device ", device.str(), " unavailable: ", cuda.devices.size(),
             " CUDA device(s) present. Fix: use cuda:0..",
             static_cast<int>(cuda.devices.size()) - 1, " or --device cpu");
  }
}

Device default_device() {
  return cuda_availability().available ? Device::cuda(0) : Device::cpu();
}

}  // namespace mb
