// Context: lazily created streams and library handles per device; Timer.
#include "runtime/context.h"

#include <chrono>
#include <map>

#include "runtime/error.h"

#if MB_WITH_CUDA
#include "runtime/cuda_check.h"
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
#endif

}  // namespace

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

void Context::synchronize() {
#if MB_WITH_CUDA
  if (device_.is_cuda()) {
    if (compute_stream_ != nullptr)
      MB_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(compute_stream_)));
    if (copy_stream_ != nullptr)
      MB_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(copy_stream_)));
  }
#endif
}

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
