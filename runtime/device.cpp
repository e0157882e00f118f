// Device parsing and the checks that a device can be used. CUDA detection itself lives in
// runtime/context.cpp, runtime's one CUDA unit.
#include "runtime/device.h"

#include <cstdlib>

#include "runtime/error.h"

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

void require_device(const Device& device) {
  if (device.is_cpu()) return;
  if (!cuda_built()) throw_cuda_not_built("device " + device.str());
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

void throw_cuda_not_built(const std::string& what) {
  MB_THROW(CudaError, what,
           " needs the CUDA backend, which this build does not have (configured with "
           "MB_WITH_CUDA=OFF, or nvcc, cuBLAS or cuDNN missing at build time). Fix: rebuild with "
           "-DMB_WITH_CUDA=ON on a machine with the CUDA toolkit, or run with --device cpu");
}

Device default_device() {
  return cuda_availability().available ? Device::cuda(0) : Device::cpu();
}

}  // namespace mb
