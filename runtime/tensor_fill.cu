// fill_words_cuda: one grid-stride kernel that writes a 32-bit pattern. Tensor::fill uses
// it for nonzero values (zero goes through cudaMemsetAsync).
#include "runtime/cuda_check.h"
#include "runtime/tensor_fill.h"

namespace mb::detail {
namespace {

__global__ void fill_words_kernel(std::uint32_t* dst, std::uint32_t pattern, std::size_t count) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    dst[i] = pattern;
  }
}

}  // namespace

void fill_words_cuda(void* dst, std::uint32_t pattern, std::size_t count, StreamHandle stream) {
  if (count == 0) return;
  MB_CHECK(dst != nullptr, "fill_words_cuda: null destination");
  constexpr int kThreads = 256;
  std::size_t blocks = (count + kThreads - 1) / kThreads;
  if (blocks > 65535u * 8u) blocks = 65535u * 8u;
  fill_words_kernel<<<static_cast<unsigned>(blocks), kThreads, 0,
                      static_cast<cudaStream_t>(stream)>>>(static_cast<std::uint32_t*>(dst),
                                                           pattern, count);
  MB_CUDA_LAUNCH_CHECK();
}

}  // namespace mb::detail
