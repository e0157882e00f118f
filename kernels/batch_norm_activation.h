// The activation BatchNorm's kernels fuse after the normalization and the residual add
// (kernels/batch_norm.h), shared by the public ops and both twins.
#pragma once

#include <cstdint>

namespace mb {

enum class BnActivation : std::uint8_t { None, ReLU, ReLU6 };

}  // namespace mb
