// Helpers the CPU convolution tests share: uniform values in [-1, 1) from a seed, and a
// square-image ConvGeometry from its numbers.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "kernels/conv.h"

namespace mb::testing {

inline std::vector<float> random_values(std::size_t size, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> values(size);
  for (float& v : values) v = dist(rng);
  return values;
}

inline ConvGeometry conv_geometry(std::int64_t batch, std::int64_t cin, std::int64_t size,
                                  std::int64_t cout, int kernel, int stride, int padding,
                                  int dilation, int groups) {
  ConvGeometry g;
  g.batch = batch;
  g.in_channels = cin;
  g.in_h = g.in_w = size;
  g.out_channels = cout;
  g.kernel_h = g.kernel_w = kernel;
  g.stride = stride;
  g.padding = padding;
  g.dilation = dilation;
  g.groups = groups;
  return g;
}

}  // namespace mb::testing
