// Elementwise sums and channel routing: dispatch to the CPU or CUDA twin.
#include "kernels/elementwise.h"

#include "kernels/cpu/elementwise.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/dispatch.h"

namespace mb {

void add(const Stream& stream, const float* a, const float* b, float* out, std::int64_t count) {
  MB_DISPATCH(stream, add, a, b, out, count);
}

void add_into(const Stream& stream, float* dst, const float* src, std::int64_t count) {
  MB_DISPATCH(stream, add_into, dst, src, count);
}

void concat_channels(const Stream& stream, const float* a, const float* b, float* out,
                     std::int64_t outer, std::int64_t channels_a, std::int64_t channels_b,
                     std::int64_t inner) {
  MB_DISPATCH(stream, concat_channels, a, b, out, outer, channels_a, channels_b, inner);
}

void split_channels(const Stream& stream, const float* in, float* a, float* b, std::int64_t outer,
                    std::int64_t channels_a, std::int64_t channels_b, std::int64_t inner) {
  MB_DISPATCH(stream, split_channels, in, a, b, outer, channels_a, channels_b, inner);
}

}  // namespace mb
