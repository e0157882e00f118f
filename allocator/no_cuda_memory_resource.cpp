// The CUDA memory resources of a build without the CUDA backend: device memory is an error
// naming the fix, and "pinned" host memory is ordinary aligned host memory.
#include "runtime/device.h"
#include "runtime/memory_resource.h"

namespace mb {

std::unique_ptr<MemoryResource> make_cuda_memory_resource(int device_index) {
  throw_cuda_not_built("device memory on cuda:" + std::to_string(device_index));
}

std::unique_ptr<MemoryResource> make_pinned_host_memory_resource() {
  return make_host_memory_resource();
}

}  // namespace mb
