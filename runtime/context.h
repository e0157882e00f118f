// Per-device execution context: the compute and copy streams and the cuBLAS and cuDNN
// handles, created lazily on first use and destroyed cleanly at exit.
//
// Handles are opaque here (void*) so that CPU code needs no CUDA headers; CUDA code uses
// the typed accessors in runtime/cuda_context.h.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "runtime/device.h"
#include "runtime/memory_resource.h"

namespace mb {

// "CUDA 13.0, cuDNN 9.19.0, cuBLAS 13.1.0" in a CUDA build; "" otherwise.
std::string cuda_library_versions();

class Context {
 public:
  // The context of `device` (one per CUDA device; one for the CPU). Throws mb::CudaError
  // if the device cannot be used.
  static Context& get(const Device& device);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  Device device() const { return device_; }
  // nullptr on the CPU.
  StreamHandle compute_stream();
  StreamHandle copy_stream();
  void* cublas_handle();  // cublasHandle_t bound to compute_stream()
  void* cudnn_handle();   // cudnnHandle_t bound to compute_stream()
  void synchronize();

  // TF32 tensor-core math for convolutions and GEMMs (default on; off for exactness tests).
  bool allow_tf32() const { return allow_tf32_; }
  void set_allow_tf32(bool allow);
  // Deterministic mode (CLI --deterministic): run-to-run identical results on this device.
  // cuDNN takes only algorithms it marks deterministic, and one algorithm per layer and
  // direction whatever the micro-batch size (kernels/cuda/cudnn_conv.cpp); set TF32 off
  // beside it for the exactness contract. Our own kernels reduce in a fixed order always.
  bool deterministic() const { return deterministic_; }
  void set_deterministic(bool deterministic);

 private:
  explicit Context(const Device& device);

  Device device_;
  std::mutex mutex_;
  StreamHandle compute_stream_ = nullptr;
  StreamHandle copy_stream_ = nullptr;
  void* cublas_ = nullptr;
  void* cudnn_ = nullptr;
  bool allow_tf32_ = true;
  bool deterministic_ = false;
};

// Measures elapsed time: CUDA events on a stream for GPU work, a steady clock on the CPU.
class Timer {
 public:
  explicit Timer(const Device& device, StreamHandle stream = nullptr);
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;
  void start();
  void stop();
  double elapsed_ms();  // waits for the stop event

 private:
  Device device_;
  StreamHandle stream_;
  void* start_event_ = nullptr;
  void* stop_event_ = nullptr;
  double start_seconds_ = 0.0;
  double stop_seconds_ = 0.0;
};

}  // namespace mb
