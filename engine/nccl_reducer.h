// Device gradient buckets over NCCL (engine/nccl_reducer.cpp in a CUDA build, a stub
// otherwise). Used by the MPI communicator for buckets in CUDA memory.
#pragma once

#include <cstdint>
#include <memory>

#include "engine/communicator.h"
#include "runtime/device.h"
#include "runtime/stream.h"

namespace mb {

class DeviceReducer {
 public:
  virtual ~DeviceReducer() = default;
  // Starts the in-place sum over all ranks of `count` floats at `data` (device memory),
  // ordered after the work queued on `stream`; wait() orders `stream` after the sum.
  virtual std::unique_ptr<PendingReduce> start(float* data, std::int64_t count,
                                               const Stream& stream) = 0;
};

// The NCCL communicator of `bootstrap`'s group on `device`: rank 0 makes the unique id and
// broadcasts it over `bootstrap` (a collective: every rank calls this at the same point).
// libnccl.so.2 is loaded here. Throws mb::InvalidArgument naming the fix when NCCL or CUDA
// is missing.
std::unique_ptr<DeviceReducer> make_nccl_reducer(Communicator& bootstrap, const Device& device);

}  // namespace mb
