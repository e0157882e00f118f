// NCCL all-reduce of gradient buckets in CUDA memory: the DeviceReducer the MPI communicator
// hands device buckets to (engine/nccl_reducer.h).
//
// Note: libnccl.so.2 is loaded with dlopen by the first device bucket, not linked. A binary
// needs NCCL only for a data-parallel CUDA run, so CPU runs, single-process GPU runs and
// machines without NCCL use the same binaries; on GPU machines PyTorch's pip wheel usually
// supplies one (nvidia/nccl/lib). The function types come from the toolkit's <nccl.h>, so a
// pointer that does not match NCCL's signature does not compile.
//
// Note: each reduce runs on the reducer's own stream, between two events: the first orders
// it after the caller's queued work (the backward that wrote the bucket), the second lets
// wait() order the caller's stream after it on the device, without blocking the host. The
// bucket's memory is allocated on the caller's stream; it needs no record_stream, because
// wait() (or the pending reduce's destructor) orders every later use of that stream, its
// frees included, after the reduce.
#include "engine/nccl_reducer.h"

#include <dlfcn.h>
#include <nccl.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "runtime/cuda_check.h"
#include "runtime/error.h"

namespace mb {
namespace {

constexpr const char* kNcclLibrary = "libnccl.so.2";

// The entry points of libnccl.so.2 that this file calls. Members carry NCCL's own names, so
// an error message (which quotes the failing expression) and a grep name NCCL's API.
struct NcclLibrary {
  decltype(&::ncclGetUniqueId) ncclGetUniqueId = nullptr;
  decltype(&::ncclCommInitRank) ncclCommInitRank = nullptr;
  decltype(&::ncclAllReduce) ncclAllReduce = nullptr;
  decltype(&::ncclCommDestroy) ncclCommDestroy = nullptr;
  decltype(&::ncclCommAbort) ncclCommAbort = nullptr;
  decltype(&::ncclGetErrorString) ncclGetErrorString = nullptr;
  decltype(&::ncclCommGetAsyncError) ncclCommGetAsyncError = nullptr;
  // Optional (NCCL 2.13 and later): the detail behind the last failure; null when absent.
  decltype(&::ncclGetLastError) ncclGetLastError = nullptr;
};

std::string dl_error_text() {
  const char* text = dlerror();
  return text != nullptr ? text : "no reason given by the dynamic loader";
}

// Opens libnccl.so.2 and resolves every entry point, or throws naming the fix. The handle
// is never closed: NCCL's proxy threads may run until the process exits.
NcclLibrary load_nccl() {
  void* handle = dlopen(kNcclLibrary, RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    MB_THROW(InvalidArgument, "NCCL all-reduce of device gradients needs ", kNcclLibrary,
             ", which could not be loaded: ", dl_error_text(),
             ". Fix: install NCCL (libnccl2) or put the directory holding ", kNcclLibrary,
             " on LD_LIBRARY_PATH; PyTorch's pip wheel ships one under nvidia/nccl/lib");
  }
  NcclLibrary library;
  std::string missing;
  const auto resolve = [&](auto& function, const char* name, bool required) {
    dlerror();
    function = reinterpret_cast<std::remove_reference_t<decltype(function)>>(dlsym(handle, name));
    if (function == nullptr && required) missing += std::string(missing.empty() ? "" : ", ") + name;
  };
  resolve(library.ncclGetUniqueId, "ncclGetUniqueId", true);
  resolve(library.ncclCommInitRank, "ncclCommInitRank", true);
  resolve(library.ncclAllReduce, "ncclAllReduce", true);
  resolve(library.ncclCommDestroy, "ncclCommDestroy", true);
  resolve(library.ncclCommAbort, "ncclCommAbort", true);
  resolve(library.ncclGetErrorString, "ncclGetErrorString", true);
  resolve(library.ncclCommGetAsyncError, "ncclCommGetAsyncError", true);
  resolve(library.ncclGetLastError, "ncclGetLastError", false);
  if (!missing.empty()) {
    dlclose(handle);
    MB_THROW(InvalidArgument, "the ", kNcclLibrary, " that was loaded lacks ", missing,
             ". Fix: install NCCL 2.4 or later (libnccl2), or put the directory holding a "
             "newer ",
             kNcclLibrary, " first on LD_LIBRARY_PATH");
  }
  return library;
}

// Loaded once per process. A failed load throws out of the static's initialization, so the
// next call tries again (after the user fixed LD_LIBRARY_PATH in a long-lived process, say).
const NcclLibrary& nccl_library() {
  static const NcclLibrary library = load_nccl();
  return library;
}

const char* nccl_result_name(ncclResult_t result) {
  switch (result) {
    case ncclSuccess: return "ncclSuccess";
    case ncclUnhandledCudaError: return "ncclUnhandledCudaError";
    case ncclSystemError: return "ncclSystemError";
    case ncclInternalError: return "ncclInternalError";
    case ncclInvalidArgument: return "ncclInvalidArgument";
    case ncclInvalidUsage: return "ncclInvalidUsage";
    case ncclRemoteError: return "ncclRemoteError";
    case ncclInProgress: return "ncclInProgress";
    default: return "unknown ncclResult_t";
  }
}

// Throws mb::CudaError, like the other CUDA libraries' checks: the call, NCCL's name and
// text for the result, NCCL's last warning where the library keeps one, and where to look.
[[noreturn]] void throw_nccl_error(const NcclLibrary& nccl, ncclResult_t result,
                                   const char* expression, const char* file, int line,
                                   ncclComm_t comm) {
  std::string description = nccl.ncclGetErrorString(result);
  if (nccl.ncclGetLastError != nullptr) {
    const char* last = nccl.ncclGetLastError(comm);
    if (last != nullptr && last[0] != '\0') description += detail::concat("; ", last);
  }
  description += "; run with NCCL_DEBUG=WARN for NCCL's own log";
  detail::throw_cuda_error(expression, file, line, "NCCL", nccl_result_name(result),
                           description.c_str());
}

// MB_NCCL_CHECK(library, comm, call): `call` returns an ncclResult_t; `comm` (or nullptr)
// is the communicator it concerns, for NCCL's last-error text.
#define MB_NCCL_CHECK(library, comm, call)                                             \
  do {                                                                                 \
    const ncclResult_t mb_nccl_result_ = (call);                                       \
    if (mb_nccl_result_ != ncclSuccess) {                                              \
      throw_nccl_error((library), mb_nccl_result_, #call, __FILE__, __LINE__, (comm)); \
    }                                                                                  \
  } while (false)

// Makes `device` current for a scope and then restores the caller's: NCCL binds a
// communicator to the current device, and streams and events belong to the device current
// when they are made.
class DeviceScope {
 public:
  explicit DeviceScope(const Device& device) {
    MB_CUDA_CHECK(cudaGetDevice(&previous_));
    MB_CUDA_CHECK(cudaSetDevice(device.index()));
  }
  ~DeviceScope() { cudaSetDevice(previous_); }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
};

// One NCCL communicator with its stream and a pool of events. The reducer and every pending
// reduce share it, so a pending reduce may outlive the reducer (a trainer unwinding after an
// error destroys them in either order) and the event it waits on stays valid.
class NcclChannel {
 public:
  // A collective over `bootstrap`: rank 0 makes the unique id, every rank joins.
  NcclChannel(const NcclLibrary& nccl, Communicator& bootstrap, const Device& device)
      : nccl_(nccl), device_(device) {
    try {
      ncclUniqueId id{};
      if (bootstrap.rank() == 0) MB_NCCL_CHECK(nccl_, nullptr, nccl_.ncclGetUniqueId(&id));
      bootstrap.broadcast(&id, sizeof id, 0);
      DeviceScope scope(device_);
      MB_NCCL_CHECK(nccl_, nullptr,
                    nccl_.ncclCommInitRank(&comm_, bootstrap.size(), id, bootstrap.rank()));
      // Non-blocking: the reduces must not serialize with legacy-default-stream work.
      MB_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    } catch (...) {
      release();
      throw;
    }
  }
  ~NcclChannel() { release(); }
  NcclChannel(const NcclChannel&) = delete;
  NcclChannel& operator=(const NcclChannel&) = delete;

  const NcclLibrary& nccl() const { return nccl_; }
  const Device& device() const { return device_; }
  ncclComm_t comm() const { return comm_; }
  cudaStream_t stream() const { return stream_; }

  // An event from the pool (made on first need: the pool grows to the most reduces in
  // flight at once, a handful per step). Call with device() current.
  cudaEvent_t take_event() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!free_events_.empty()) {
        cudaEvent_t event = free_events_.back();
        free_events_.pop_back();
        return event;
      }
    }
    cudaEvent_t event = nullptr;
    MB_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    return event;
  }

  // Back to the pool once nothing will be enqueued on it again: a stream that waits on an
  // event waits on the record current at the time of cudaStreamWaitEvent, so re-recording
  // the event afterwards does not disturb that wait.
  void return_event(cudaEvent_t event) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    try {
      free_events_.push_back(event);
    } catch (...) {
      cudaEventDestroy(event);
    }
  }

 private:
  // Never throws (destructor and failed constructor); errors are ignored, since the
  // process is unwinding or done with NCCL.
  void release() noexcept {
    int previous = 0;
    const cudaError_t state = cudaGetDevice(&previous);
    if (state == cudaErrorCudartUnloading) {
      // A reducer held by a static (the launched communicator) dies after the CUDA runtime
      // at exit; NCCL cannot tear down on a dead runtime, and the driver reclaims it all.
      cudaGetLastError();
      return;
    }
    const bool restore = state == cudaSuccess;
    cudaSetDevice(device_.index());
    if (comm_ != nullptr) {
      // A communicator with a pending asynchronous error (a peer died, the network failed)
      // can hang ncclCommDestroy, which completes outstanding work; abort does not wait.
      ncclResult_t async_error = ncclSuccess;
      const bool healthy = nccl_.ncclCommGetAsyncError(comm_, &async_error) == ncclSuccess &&
                           async_error == ncclSuccess;
      if (healthy) {
        nccl_.ncclCommDestroy(comm_);
      } else {
        nccl_.ncclCommAbort(comm_);
      }
      comm_ = nullptr;
    }
    for (cudaEvent_t event : free_events_) cudaEventDestroy(event);
    free_events_.clear();
    // Work still queued on the stream finishes first: the runtime defers the release.
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    stream_ = nullptr;
    if (restore) cudaSetDevice(previous);
    // An ignored failure must not be reported later by an unrelated kernel launch check.
    cudaGetLastError();
  }

  const NcclLibrary& nccl_;
  Device device_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  std::mutex mutex_;
  std::vector<cudaEvent_t> free_events_;
};

// An event taken from a channel's pool, given back when the lease ends.
class EventLease {
 public:
  explicit EventLease(NcclChannel& channel) : channel_(&channel), event_(channel.take_event()) {}
  ~EventLease() { reset(); }
  EventLease(EventLease&& other) noexcept
      : channel_(std::exchange(other.channel_, nullptr)),
        event_(std::exchange(other.event_, nullptr)) {}
  EventLease& operator=(EventLease&&) = delete;
  EventLease(const EventLease&) = delete;
  EventLease& operator=(const EventLease&) = delete;

  cudaEvent_t get() const { return event_; }
  explicit operator bool() const { return event_ != nullptr; }
  void reset() noexcept {
    if (event_ != nullptr) channel_->return_event(event_);
    event_ = nullptr;
    channel_ = nullptr;
  }

 private:
  NcclChannel* channel_ = nullptr;
  cudaEvent_t event_ = nullptr;
};

cudaStream_t cuda_stream_of(const Stream& stream) {
  return static_cast<cudaStream_t>(stream.handle());
}

// A reduce of nothing: there is no work to order after.
class EmptyReduce final : public PendingReduce {
 public:
  void wait() override {}
};

class NcclPendingReduce final : public PendingReduce {
 public:
  NcclPendingReduce(std::shared_ptr<NcclChannel> channel, EventLease done, const Stream& stream)
      : channel_(std::move(channel)), done_(std::move(done)), stream_(stream) {}
  // The contract: a reduce never waited for is waited for (device-side, so the bucket's
  // memory is not reused on `stream` while NCCL still writes it).
  ~NcclPendingReduce() override {
    if (done_ && cudaStreamWaitEvent(cuda_stream_of(stream_), done_.get(), 0) != cudaSuccess) {
      cudaGetLastError();  // not to be blamed on a later kernel launch
    }
  }

  void wait() override {
    if (!done_) return;
    MB_CUDA_CHECK(cudaStreamWaitEvent(cuda_stream_of(stream_), done_.get(), 0));
    done_.reset();
  }

 private:
  // Declared first, destroyed last: the lease gives its event back to this channel.
  std::shared_ptr<NcclChannel> channel_;
  EventLease done_;
  Stream stream_;
};

class NcclReducer final : public DeviceReducer {
 public:
  explicit NcclReducer(std::shared_ptr<NcclChannel> channel) : channel_(std::move(channel)) {}

  std::unique_ptr<PendingReduce> start(float* data, std::int64_t count,
                                       const Stream& stream) override {
    const Device& device = channel_->device();
    MB_CHECK(count >= 0, "an all-reduce of ", count, " values");
    if constexpr (sizeof(std::size_t) < sizeof(std::int64_t)) {
      MB_CHECK(static_cast<std::uint64_t>(count) <= std::numeric_limits<std::size_t>::max(),
               "an all-reduce of ", count, " values does not fit size_t");
    }
    MB_CHECK(stream.is_cuda() && stream.device() == device, "the NCCL reducer of ", device.str(),
             " was given a stream of ", stream.device().str());
    if (count == 0) return std::make_unique<EmptyReduce>();
    MB_CHECK(data != nullptr, "an all-reduce of ", count, " values at a null pointer");

    const NcclLibrary& nccl = channel_->nccl();
    const ncclComm_t comm = channel_->comm();
    // Fail here, naming the cause, rather than enqueue onto a communicator that an earlier
    // reduce (or a peer's failure) has already broken.
    ncclResult_t async_error = ncclSuccess;
    MB_NCCL_CHECK(nccl, comm, nccl.ncclCommGetAsyncError(comm, &async_error));
    if (async_error != ncclSuccess) {
      throw_nccl_error(nccl, async_error, "an earlier NCCL operation (ncclCommGetAsyncError)",
                       __FILE__, __LINE__, comm);
    }

    DeviceScope scope(device);
    const cudaStream_t caller = cuda_stream_of(stream);
    const cudaStream_t comm_stream = channel_->stream();
    {
      // Given back as soon as the wait is enqueued (see NcclChannel::return_event).
      EventLease ready(*channel_);
      MB_CUDA_CHECK(cudaEventRecord(ready.get(), caller));
      MB_CUDA_CHECK(cudaStreamWaitEvent(comm_stream, ready.get(), 0));
    }
    MB_NCCL_CHECK(nccl, comm,
                  nccl.ncclAllReduce(data, data, static_cast<std::size_t>(count), ncclFloat,
                                     ncclSum, comm, comm_stream));
    EventLease done(*channel_);
    MB_CUDA_CHECK(cudaEventRecord(done.get(), comm_stream));
    return std::make_unique<NcclPendingReduce>(channel_, std::move(done), stream);
  }

 private:
  std::shared_ptr<NcclChannel> channel_;
};

}  // namespace

std::unique_ptr<DeviceReducer> make_nccl_reducer(Communicator& bootstrap, const Device& device) {
  MB_CHECK(device.is_cuda(), "NCCL all-reduce needs a CUDA device, not ", device.str());
  require_device(device);
  const NcclLibrary& nccl = nccl_library();
  return std::make_unique<NcclReducer>(std::make_shared<NcclChannel>(nccl, bootstrap, device));
}

}  // namespace mb
