// Filling device memory with a 32-bit pattern (the CUDA half of Tensor::fill).
#pragma once

#include <cstddef>
#include <cstdint>

#include "runtime/memory_resource.h"

namespace mb::detail {

// Writes `pattern` into `count` consecutive 32-bit words at device pointer `dst`.
void fill_words_cuda(void* dst, std::uint32_t pattern, std::size_t count, StreamHandle stream);

}  // namespace mb::detail
