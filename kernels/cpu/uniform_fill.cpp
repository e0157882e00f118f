// Philox parameter initialization on the CPU (reference implementation).
#include "kernels/cpu/uniform_fill.h"

#include <algorithm>

#include "kernels/cpu/parallel.h"
#include "runtime/philox.h"

namespace mb::cpu {

void uniform_fill(const Stream& /*stream*/, float* output, std::int64_t count, float bound,
                  std::uint64_t seed, std::uint32_t stream_id) {
  const PhiloxKey key = philox_key(seed, stream_id);
  // Blocks of kElementBlock (a multiple of 4) keep every group of four in one block.
  parallel_elements(count, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t group_begin = begin; group_begin < end; group_begin += 4) {
      const PhiloxCounter counter{static_cast<std::uint32_t>(group_begin >> 2), 0, 0, 0x6D62u};
      const PhiloxOutput bits = philox4x32_10(counter, key);
      const std::int64_t group_end = std::min(group_begin + 4, end);
      for (std::int64_t i = group_begin; i < group_end; ++i) {
        output[i] = (2.0f * philox_uniform(bits.v[i - group_begin]) - 1.0f) * bound;
      }
    }
  });
}

}  // namespace mb::cpu
