// Philox-based uniform initialization.
#include "layers/init.h"

#include <vector>

#include "runtime/philox.h"

namespace mb {

void fill_uniform(Tensor& t, float bound, std::uint64_t seed, std::uint32_t stream_id) {
  std::vector<float> values(static_cast<std::size_t>(t.numel()));
  for (std::size_t i = 0; i < values.size(); ++i) {
    const float u = philox_element_uniform(seed, stream_id, 0, 0, static_cast<std::uint32_t>(i));
    values[i] = (2.0f * u - 1.0f) * bound;
  }
  t.copy_from(Tensor::from_vector(values, t.shape()));
}

}  // namespace mb
