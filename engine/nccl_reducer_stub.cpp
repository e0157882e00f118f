// A build without CUDA: no device buckets to reduce.
#include "engine/nccl_reducer.h"
#include "runtime/error.h"

namespace mb {

std::unique_ptr<DeviceReducer> make_nccl_reducer(Communicator&, const Device& device) {
  MB_THROW(InvalidArgument, "NCCL all-reduce on ", device.str(),
           " needs the CUDA backend, and this build has none. Fix: rebuild with "
           "-DMB_WITH_CUDA=ON, or train on --device cpu");
}

}  // namespace mb
