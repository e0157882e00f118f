// Runtime's one CUDA unit: device detection, per-device contexts (streams, cuBLAS and cuDNN
// handles), Stream and Event, the copy/fill primitives, Timer and the library versions.
//
// Note: every call into the CUDA runtime that runtime/ makes is here, so a CPU-only build
// differs from a CUDA build in this file only (and in CMake, which leaves out
// tensor_fill.cu and cuda_check.cpp).
#include "runtime/context.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <sstream>
#include <utility>

#include "runtime/error.h"
#include "runtime/stream.h"

#if MB_WITH_CUDA
#include "runtime/cuda_check.h"
#include "runtime/tensor_fill.h"
#endif

namespace mb {
namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

#if MB_WITH_CUDA
class DeviceScope {
 public:
  explicit DeviceScope(const Device& device) {
    cudaGetDevice(&previous_);
    if (device.is_cuda() && device.index() != previous_) cudaSetDevice(device.index());
  }
  ~DeviceScope() { cudaSetDevice(previous_); }

 private:
  int previous_ = 0;
};

cudaStream_t cuda_stream_of(const Stream& stream) {
  return static_cast<cudaStream_t>(stream.handle());
}
#endif

}  // namespace

// ---- Detection ----

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

std::string cuda_library_versions() {
#if MB_WITH_CUDA
  const std::size_t cudnn = cudnnGetVersion();
  int cublas_major = 0, cublas_minor = 0, cublas_patch = 0;
  cublasGetProperty(MAJOR_VERSION, &cublas_major);
  cublasGetProperty(MINOR_VERSION, &cublas_minor);
  cublasGetProperty(PATCH_LEVEL, &cublas_patch);
  std::ostringstream out;
  out << "CUDA " << CUDART_VERSION / 1000 << "." << CUDART_VERSION % 1000 / 10 << ", cuDNN "
      << cudnn / 10000 << "." << cudnn % 10000 / 100 << "." << cudnn % 100 << ", cuBLAS "
      << cublas_major << "." << cublas_minor << "." << cublas_patch;
  return out.str();
#else
  return "";
#endif
}

// ---- Context ----

Context& Context::get(const Device& device) {
  static std::mutex mutex;
  // Leaked on purpose: handles must outlive static tensors; the driver reclaims at exit.
  static auto* contexts = new std::map<int, Context*>();
  std::lock_guard<std::mutex> lock(mutex);
  const int key = device.is_cpu() ? -1 : device.index();
  auto it = contexts->find(key);
  if (it != contexts->end()) return *it->second;
  require_device(device);
  Context* context = new Context(device);
  contexts->emplace(key, context);
  return *context;
}

Context::Context(const Device& device) : device_(device) {}

Context::~Context() {
#if MB_WITH_CUDA
  if (cudnn_ != nullptr) cudnnDestroy(static_cast<cudnnHandle_t>(cudnn_));
  if (cublas_ != nullptr) cublasDestroy(static_cast<cublasHandle_t>(cublas_));
  if (compute_stream_ != nullptr) cudaStreamDestroy(static_cast<cudaStream_t>(compute_stream_));
  if (copy_stream_ != nullptr) cudaStreamDestroy(static_cast<cudaStream_t>(copy_stream_));
#endif
}

StreamHandle Context::compute_stream() {
  if (device_.is_cpu()) return nullptr;
#if MB_WITH_CUDA
  std::lock_guard<std::mutex> lock(mutex_);
  if (compute_stream_ == nullptr) {
    DeviceScope scope(device_);
    cudaStream_t stream = nullptr;
    MB_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    compute_stream_ = stream;
  }
#endif
  return compute_stream_;
}

StreamHandle Context::copy_stream() {
  if (device_.is_cpu()) return nullptr;
#if MB_WITH_CUDA
  std::lock_guard<std::mutex> lock(mutex_);
  if (copy_stream_ == nullptr) {
    DeviceScope scope(device_);
    cudaStream_t stream = nullptr;
    MB_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    copy_stream_ = stream;
  }
#endif
  return copy_stream_;
}

void* Context::cublas_handle() {
  MB_CHECK(device_.is_cuda(), "cuBLAS handle requested for ", device_.str());
#if MB_WITH_CUDA
  StreamHandle stream = compute_stream();
  std::lock_guard<std::mutex> lock(mutex_);
  if (cublas_ == nullptr) {
    DeviceScope scope(device_);
    cublasHandle_t handle = nullptr;
    MB_CUBLAS_CHECK(cublasCreate(&handle));
    MB_CUBLAS_CHECK(cublasSetStream(handle, static_cast<cudaStream_t>(stream)));
    MB_CUBLAS_CHECK(
        cublasSetMathMode(handle, allow_tf32_ ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    cublas_ = handle;
  }
#endif
  return cublas_;
}

void* Context::cudnn_handle() {
  MB_CHECK(device_.is_cuda(), "cuDNN handle requested for ", device_.str());
#if MB_WITH_CUDA
  StreamHandle stream = compute_stream();
  std::lock_guard<std::mutex> lock(mutex_);
  if (cudnn_ == nullptr) {
    DeviceScope scope(device_);
    cudnnHandle_t handle = nullptr;
    MB_CUDNN_CHECK(cudnnCreate(&handle));
    MB_CUDNN_CHECK(cudnnSetStream(handle, static_cast<cudaStream_t>(stream)));
    cudnn_ = handle;
  }
#endif
  return cudnn_;
}

void Context::set_allow_tf32(bool allow) {
  std::lock_guard<std::mutex> lock(mutex_);
  allow_tf32_ = allow;
#if MB_WITH_CUDA
  if (cublas_ != nullptr) {
    MB_CUBLAS_CHECK(cublasSetMathMode(static_cast<cublasHandle_t>(cublas_),
                                      allow ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  }
#endif
}

void Context::set_deterministic(bool deterministic) {
  std::lock_guard<std::mutex> lock(mutex_);
  deterministic_ = deterministic;
}

void Context::synchronize() {
  if (device_.is_cpu()) return;
  if (compute_stream_ != nullptr) Stream(device_, compute_stream_).synchronize();
  if (copy_stream_ != nullptr) Stream(device_, copy_stream_).synchronize();
}

// ---- Stream and Event ----

Stream Stream::compute(const Device& device) {
  if (device.is_cpu()) return Stream();
  return Stream(device, Context::get(device).compute_stream());
}

Stream Stream::copy(const Device& device) {
  if (device.is_cpu()) return Stream();
  return Stream(device, Context::get(device).copy_stream());
}

void Stream::synchronize() const {
  if (is_cpu()) return;
#if MB_WITH_CUDA
  MB_CUDA_CHECK(cudaStreamSynchronize(cuda_stream_of(*this)));
#else
  throw_cuda_not_built("Stream::synchronize on " + device_.str());
#endif
}

void Stream::wait(const Event& event) const {
  if (is_cpu() || event.handle() == nullptr) return;
#if MB_WITH_CUDA
  MB_CUDA_CHECK(
      cudaStreamWaitEvent(cuda_stream_of(*this), static_cast<cudaEvent_t>(event.handle()), 0));
#endif
}

Event::Event(const Device& device) : device_(device) {
  if (device.is_cpu()) return;
#if MB_WITH_CUDA
  cudaEvent_t event = nullptr;
  MB_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  event_ = event;
#else
  throw_cuda_not_built("an event on " + device.str());
#endif
}

Event::~Event() {
#if MB_WITH_CUDA
  if (event_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(event_));
#endif
}

Event::Event(Event&& other) noexcept
    : device_(other.device_), event_(std::exchange(other.event_, nullptr)) {}

Event& Event::operator=(Event&& other) noexcept {
  // Ours goes to `other`, which destroys it.
  std::swap(device_, other.device_);
  std::swap(event_, other.event_);
  return *this;
}

void Event::record(const Stream& stream) {
  if (event_ == nullptr) return;
  MB_CHECK(stream.device() == device_, "Event of ", device_.str(), " recorded on a stream of ",
           stream.device().str());
#if MB_WITH_CUDA
  MB_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event_), cuda_stream_of(stream)));
#endif
}

// ---- Memory primitives ----

void copy_bytes(void* dst, const void* src, std::size_t bytes, const Stream& stream) {
  if (bytes == 0) return;
  if (stream.is_cpu()) {
    std::memmove(dst, src, bytes);
    return;
  }
#if MB_WITH_CUDA
  MB_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, cuda_stream_of(stream)));
#else
  throw_cuda_not_built("a copy on " + stream.device().str());
#endif
}

void fill_words(void* dst, std::uint32_t pattern, std::size_t count, const Stream& stream) {
  if (count == 0) return;
  if (stream.is_cpu()) {
    auto* words = static_cast<std::uint32_t*>(dst);
    std::fill(words, words + count, pattern);
    return;
  }
#if MB_WITH_CUDA
  if (pattern == 0) {
    MB_CUDA_CHECK(cudaMemsetAsync(dst, 0, count * sizeof(std::uint32_t), cuda_stream_of(stream)));
  } else {
    detail::fill_words_cuda(dst, pattern, count, stream.handle());
  }
#else
  throw_cuda_not_built("a fill on " + stream.device().str());
#endif
}

// ---- Timer ----

Timer::Timer(const Device& device, StreamHandle stream) : device_(device), stream_(stream) {
#if MB_WITH_CUDA
  if (device_.is_cuda()) {
    cudaEvent_t start = nullptr, stop = nullptr;
    MB_CUDA_CHECK(cudaEventCreate(&start));
    MB_CUDA_CHECK(cudaEventCreate(&stop));
    start_event_ = start;
    stop_event_ = stop;
  }
#endif
}

Timer::~Timer() {
#if MB_WITH_CUDA
  if (start_event_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(start_event_));
  if (stop_event_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(stop_event_));
#endif
}

void Timer::start() {
#if MB_WITH_CUDA
  if (start_event_ != nullptr) {
    MB_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(start_event_),
                                  static_cast<cudaStream_t>(stream_)));
    return;
  }
#endif
  start_seconds_ = now_seconds();
}

void Timer::stop() {
#if MB_WITH_CUDA
  if (stop_event_ != nullptr) {
    MB_CUDA_CHECK(
        cudaEventRecord(static_cast<cudaEvent_t>(stop_event_), static_cast<cudaStream_t>(stream_)));
    return;
  }
#endif
  stop_seconds_ = now_seconds();
}

double Timer::elapsed_ms() {
#if MB_WITH_CUDA
  if (stop_event_ != nullptr) {
    MB_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(stop_event_)));
    float ms = 0.0f;
    MB_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start_event_),
                                       static_cast<cudaEvent_t>(stop_event_)));
    return ms;
  }
#endif
  return (stop_seconds_ - start_seconds_) * 1000.0;
}

}  // namespace mb
