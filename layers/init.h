// Parameter initialization shared by the layers and the model zoo.
#pragma once

#include <cstdint>

#include "runtime/tensor.h"

namespace mb {

// Fills `t` (any device) with U(-bound, bound) drawn from Philox keyed by (seed, stream_id):
// the same values on every platform and backend (kernels/uniform_fill.h), drawn where `t` lives.
void fill_uniform(Tensor& t, float bound, std::uint64_t seed, std::uint32_t stream_id);

}  // namespace mb
