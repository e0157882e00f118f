// Device memory as a MemoryResource: cudaMalloc/cudaFree on one device, events for
// stream-ordered reuse. The only place in microbatch that calls cudaMalloc for tensors.
// Built only with the CUDA backend; no_cuda_memory_resource.cpp stands in otherwise.
#include <limits>

#include "runtime/error.h"
#include "runtime/memory_resource.h"

#include <cuda_runtime.h>

namespace mb {
namespace {

// Switches to `device` for the scope and back again.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    cudaGetDevice(&previous_);
    if (previous_ != device) cudaSetDevice(device);
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }

 private:
  int previous_ = 0;
};

class CudaMemoryResource final : public MemoryResource {
 public:
  explicit CudaMemoryResource(int device) : device_(device) {}

  void* reserve(std::size_t bytes) override {
    DeviceGuard guard(device_);
    void* ptr = nullptr;
    cudaError_t status = cudaMalloc(&ptr, bytes);
    if (status != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free error so later calls are not blamed
      return nullptr;
    }
    return ptr;
  }
  void release(void* ptr, std::size_t) noexcept override {
    DeviceGuard guard(device_);
    cudaFree(ptr);
  }
  MemoryKind kind() const override { return MemoryKind::Cuda; }
  int device_index() const override { return device_; }
  std::size_t device_free_bytes() const override {
    DeviceGuard guard(device_);
    std::size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return free_bytes;
  }
  std::string name() const override { return "cuda:" + std::to_string(device_); }

  void* record_event(StreamHandle stream) override {
    DeviceGuard guard(device_);
    cudaEvent_t event = nullptr;
    if (cudaEventCreateWithFlags(&event, cudaEventDisableTiming) != cudaSuccess) return nullptr;
    cudaEventRecord(event, static_cast<cudaStream_t>(stream));
    return event;
  }
  bool event_completed(void* event) override {
    if (event == nullptr) return true;
    cudaError_t status = cudaEventQuery(static_cast<cudaEvent_t>(event));
    if (status == cudaErrorNotReady) {
      cudaGetLastError();
      return false;
    }
    return true;
  }
  void destroy_event(void* event) noexcept override {
    if (event != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(event));
  }

 private:
  int device_;
};

}  // namespace

std::unique_ptr<MemoryResource> make_cuda_memory_resource(int device_index) {
  int count = 0;
  cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();
    MB_THROW(CudaError, "cannot use cuda:", device_index, ": ", cudaGetErrorName(status), " (",
             cudaGetErrorString(status), "). Fix: run with --device cpu");
  }
  if (device_index < 0 || device_index >= count) {
    MB_THROW(CudaError, "cannot use cuda:", device_index, ": ", count,
             " CUDA device(s) present. Fix: pick cuda:0..", count - 1, " or --device cpu");
  }
  return std::make_unique<CudaMemoryResource>(device_index);
}

}  // namespace mb
