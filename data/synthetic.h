// Seeded synthetic data sets: classification images with a label-dependent pattern, or
// segmentation images with random class rectangles. They need no files, so tests, smoke runs
// and benchmarks run anywhere, and a short training run on them beats chance.
#pragma once

#include <cstdint>

namespace mb {

struct Dataset;

struct SyntheticOptions {
  std::int64_t samples = 1024;
  std::int64_t channels = 3;
  std::int64_t height = 32;
  std::int64_t width = 32;
  std::int64_t num_classes = 10;
  // false: labels int32 [N], uniform in [0, num_classes). true: masks int32 [N, H, W].
  bool segmentation = false;
  std::uint64_t seed = 0;
  // Sample i is drawn as sample number first_sample + i (class templates and colours depend
  // on the seed only): a test split uses the same seed and a disjoint range.
  std::int64_t first_sample = 0;
};

// Deterministic for a given options value; sample i does not depend on `samples` (a
// smaller set is a prefix of a larger one). Pixel values lie in [0, 1).
//
// Classification: pixel = 0.5 * noise + 0.5 * template[label][c, h, w], with one random
// template per class, so the class means differ at every pixel (linearly separable on
// average). Segmentation: background class 0 plus 1 to 3 rectangles of random classes; a
// pixel of class k has mean colour[k][c] per channel.
Dataset make_synthetic(const SyntheticOptions& options);

}  // namespace mb
