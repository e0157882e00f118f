// Where work runs: a device and, on CUDA, one of its streams; events that order work
// between streams; and the two memory primitives every floor above uses (copy, fill).
//
// Every kernel op takes a Stream first, so an op's CPU and CUDA twins share one signature
// and the dispatch (kernels/dispatch.h) is a single decision on stream.device(). On the CPU
// a Stream is just "the host": work is done when the call returns and events are no-ops.
//
// Note: the CUDA implementation lives in runtime/context.cpp, the one file of runtime/ that
// talks to the CUDA runtime; this header needs no CUDA headers.
#pragma once

#include <cstddef>
#include <cstdint>

#include "runtime/device.h"
#include "runtime/memory_resource.h"

namespace mb {

class Event;

class Stream {
 public:
  Stream() = default;  // the host
  Stream(const Device& device, StreamHandle handle) : device_(device), handle_(handle) {}
  // The device's compute stream (CUDA: a non-blocking stream owned by its Context; never
  // the legacy default stream) and its copy stream (host-to-device staging).
  static Stream compute(const Device& device);
  static Stream copy(const Device& device);

  const Device& device() const { return device_; }
  StreamHandle handle() const { return handle_; }
  bool is_cpu() const { return device_.is_cpu(); }
  bool is_cuda() const { return device_.is_cuda(); }

  // Waits until the work queued on this stream has finished (CPU: returns at once).
  void synchronize() const;
  // Work queued on this stream after this call starts after `event` completed.
  void wait(const Event& event) const;

 private:
  Device device_ = Device::cpu();
  StreamHandle handle_ = nullptr;
};

// A point in a stream's work (cudaEvent_t without timing on CUDA; nothing on the CPU).
// Movable, not copyable.
class Event {
 public:
  explicit Event(const Device& device);
  ~Event();
  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  // Marks the current end of `stream`'s queued work.
  void record(const Stream& stream);
  void* handle() const { return event_; }

 private:
  Device device_;
  void* event_ = nullptr;
};

// Copies `bytes` between any two of host and device memory, ordered on `stream`. On CUDA it
// returns before the copy completes (stream.synchronize() waits); on the CPU it is done.
void copy_bytes(void* dst, const void* src, std::size_t bytes, const Stream& stream);
// Writes `pattern` into `count` consecutive 32-bit words at `dst` (memory of stream's
// device), ordered on `stream` like copy_bytes.
void fill_words(void* dst, std::uint32_t pattern, std::size_t count, const Stream& stream);

}  // namespace mb
