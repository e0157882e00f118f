// Philox parameter initialization: the dispatch.
#include "kernels/uniform_fill.h"

#include "kernels/cpu/uniform_fill.h"
#include "kernels/cuda/uniform_fill.h"
#include "kernels/dispatch.h"

namespace mb {

void uniform_fill(const Stream& stream, float* output, std::int64_t count, float bound,
                  std::uint64_t seed, std::uint32_t stream_id) {
  MB_DISPATCH(stream, uniform_fill, output, count, bound, seed, stream_id);
}

}  // namespace mb
