// Philox parameter initialization: the dispatch.
#include "kernels/uniform_fill.h"

#include "kernels/cpu/uniform_fill.h"
#include "kernels/cuda/uniform_fill.h"
#include "kernels/dispatch.h"
#include "runtime/error.h"

namespace mb {

void uniform_fill(const Stream& stream, float* output, std::int64_t count, float bound,
                  std::uint64_t seed, std::uint32_t stream_id) {
  MB_CHECK(count >= 0 && count <= (std::int64_t{1} << 32), "uniform_fill: ", count,
           " elements is outside [0, 2^32] (a 32-bit element counter)");
  if (count == 0) return;
  MB_CHECK(output != nullptr, "uniform_fill: null output");
  MB_DISPATCH(stream, uniform_fill, output, count, bound, seed, stream_id);
}

}  // namespace mb
