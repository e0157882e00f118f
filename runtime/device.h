// Devices: the CPU, or one CUDA GPU. Asking about CUDA never crashes: on a machine without
// a GPU or driver (or a build without the CUDA backend) the answer is "unavailable" with
// the reason.
#pragma once

#include <string>
#include <vector>

namespace mb {

enum class DeviceType { CPU, CUDA };

class Device {
 public:
  constexpr Device() = default;
  constexpr Device(DeviceType type, int index) : type_(type), index_(index) {}
  static constexpr Device cpu() { return Device(DeviceType::CPU, -1); }
  static constexpr Device cuda(int index = 0) { return Device(DeviceType::CUDA, index); }
  // "cpu", "cuda", "cuda:1", or "auto" (default_device()). Throws mb::InvalidArgument
  // naming the accepted forms.
  static Device parse(const std::string& text);

  DeviceType type() const { return type_; }
  int index() const { return index_; }
  bool is_cpu() const { return type_ == DeviceType::CPU; }
  bool is_cuda() const { return type_ == DeviceType::CUDA; }
  std::string str() const;

  bool operator==(const Device& other) const {
    return type_ == other.type_ && index_ == other.index_;
  }
  bool operator!=(const Device& other) const { return !(*this == other); }

 private:
  DeviceType type_ = DeviceType::CPU;
  int index_ = -1;
};

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  std::size_t total_bytes = 0;
  int multiprocessors = 0;
};

struct CudaAvailability {
  bool available = false;
  std::string reason;  // why not, when !available
  int driver_version = 0;
  int runtime_version = 0;
  std::vector<CudaDeviceInfo> devices;
};

// Probes once per call; cheap enough for startup paths.
CudaAvailability cuda_availability();
bool cuda_built();  // was the CUDA backend compiled in?

// Throws mb::InvalidArgument (cpu always fine) or mb::CudaError with the reason when
// `device` cannot be used.
void require_device(const Device& device);

// The one error for CUDA work in a build without the CUDA backend: mb::CudaError saying
// that `what` needs the backend and how to get it.
[[noreturn]] void throw_cuda_not_built(const std::string& what);

// "cuda" when a usable GPU exists, else "cpu".
Device default_device();

}  // namespace mb
