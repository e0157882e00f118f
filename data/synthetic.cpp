// Synthetic data sets drawn with Philox, keyed by (seed, purpose) and counted by sample
// index, so every sample is reproducible on its own.
#include "data/synthetic.h"

#include <algorithm>

#include "data/dataset.h"
#include "runtime/error.h"
#include "runtime/philox.h"

namespace mb {
namespace {

// Philox stream ids: one per purpose, so draws for different purposes never coincide.
enum class Draw : std::uint32_t { Noise = 1, Template = 2, Label = 3, Rectangle = 4, Colour = 5 };

float uniform(std::uint64_t seed, Draw draw, std::int64_t sample, std::int64_t element) {
  return philox_element_uniform(seed, static_cast<std::uint32_t>(draw), 0,
                                static_cast<std::uint32_t>(sample),
                                static_cast<std::uint32_t>(element));
}

// uniform(seed, draw, sample, e) for every e in [0, count), four values per Philox call
// (the same numbers as philox_element_uniform, which spends a call per value).
void fill_uniform(std::uint64_t seed, Draw draw, std::int64_t sample, std::int64_t count,
                  float* out) {
  const PhiloxKey key = philox_key(seed, static_cast<std::uint32_t>(draw));
  for (std::int64_t e = 0; e < count; e += 4) {
    const PhiloxCounter counter{static_cast<std::uint32_t>(e >> 2),
                                static_cast<std::uint32_t>(sample), 0, 0x6D62u};
    const PhiloxOutput bits = philox4x32_10(counter, key);
    for (std::int64_t k = 0; k < 4 && e + k < count; ++k) out[e + k] = philox_uniform(bits.v[k]);
  }
}

// floor(u * n) in [0, n).
std::int64_t uniform_int(float u, std::int64_t n) {
  return std::min<std::int64_t>(static_cast<std::int64_t>(u * static_cast<float>(n)), n - 1);
}

}  // namespace

Dataset make_synthetic(const SyntheticOptions& o) {
  MB_CHECK(o.samples >= 0 && o.channels > 0 && o.height > 0 && o.width > 0,
           "make_synthetic: need samples >= 0 and positive channels, height, width; got samples ",
           o.samples, ", shape [", o.channels, ", ", o.height, ", ", o.width, "]");
  MB_CHECK(o.num_classes >= 1 && o.num_classes <= (1 << 20),
           "make_synthetic: num_classes must be in [1, 2^20], got ", o.num_classes);
  const std::int64_t n = o.samples, channels = o.channels, height = o.height, width = o.width;
  const std::int64_t plane = height * width, image = channels * plane;

  Dataset dataset;
  dataset.name = o.segmentation ? "synthetic-segmentation" : "synthetic";
  dataset.num_classes = o.num_classes;
  TensorOptions options;
  options.tag = MemoryTag::Data;
  dataset.images = Tensor::empty(Shape{n, channels, height, width}, options);
  options.dtype = DType::Int32;
  dataset.labels = Tensor::empty(o.segmentation ? Shape{n, height, width} : Shape{n}, options);
  float* pixels = dataset.images.data<float>();
  std::int32_t* labels = dataset.labels.data<std::int32_t>();

  if (!o.segmentation) {
    std::vector<float> templates(static_cast<std::size_t>(o.num_classes * image));
    for (std::int64_t k = 0; k < o.num_classes; ++k) {
      fill_uniform(o.seed, Draw::Template, k, image, templates.data() + k * image);
    }
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t id = o.first_sample + i;
      const std::int64_t label = uniform_int(uniform(o.seed, Draw::Label, id, 0), o.num_classes);
      labels[i] = static_cast<std::int32_t>(label);
      const float* pattern = templates.data() + label * image;
      float* out = pixels + i * image;
      fill_uniform(o.seed, Draw::Noise, id, image, out);
      for (std::int64_t e = 0; e < image; ++e) out[e] = 0.5f * out[e] + 0.5f * pattern[e];
    }
    return dataset;
  }

  std::vector<float> colours(static_cast<std::size_t>(o.num_classes * channels));
  for (std::int64_t k = 0; k < o.num_classes; ++k) {
    for (std::int64_t c = 0; c < channels; ++c) {
      colours[static_cast<std::size_t>(k * channels + c)] = uniform(o.seed, Draw::Colour, k, c);
    }
  }
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t id = o.first_sample + i;
    std::int32_t* mask = labels + i * plane;
    std::fill(mask, mask + plane, 0);
    const std::int64_t rectangles = 1 + uniform_int(uniform(o.seed, Draw::Rectangle, id, 0), 3);
    for (std::int64_t r = 0; r < rectangles; ++r) {
      auto draw = [&](std::int64_t k) {
        return uniform(o.seed, Draw::Rectangle, id, 1 + 8 * r + k);
      };
      const std::int64_t cls = o.num_classes > 1 ? 1 + uniform_int(draw(0), o.num_classes - 1) : 0;
      const std::int64_t y0 = uniform_int(draw(1), height), x0 = uniform_int(draw(2), width);
      const std::int64_t h = 1 + uniform_int(draw(3), std::max<std::int64_t>(1, height / 2));
      const std::int64_t w = 1 + uniform_int(draw(4), std::max<std::int64_t>(1, width / 2));
      for (std::int64_t y = y0; y < std::min(height, y0 + h); ++y) {
        for (std::int64_t x = x0; x < std::min(width, x0 + w); ++x) {
          mask[y * width + x] = static_cast<std::int32_t>(cls);
        }
      }
    }
    float* out = pixels + i * image;
    fill_uniform(o.seed, Draw::Noise, id, image, out);
    for (std::int64_t c = 0; c < channels; ++c) {
      for (std::int64_t p = 0; p < plane; ++p) {
        const float colour = colours[static_cast<std::size_t>(mask[p] * channels + c)];
        out[c * plane + p] = 0.5f * out[c * plane + p] + 0.5f * colour;
      }
    }
  }
  return dataset;
}

}  // namespace mb
