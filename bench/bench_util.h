// Helpers shared by the plain bench programs (bench/*_main.cpp): the median of timings,
// seeded synthetic data shaped for a zoo model, and "model:batch:memory-limit" cases.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/loader.h"
#include "data/synthetic.h"
#include "models/zoo.h"
#include "runtime/error.h"

namespace mb::bench {

inline double median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const std::size_t mid = values.size() / 2;
  return values.size() % 2 == 1 ? values[mid] : 0.5 * (values[mid - 1] + values[mid]);
}

// A copy of a host tensor in the pinned batch pool (data/loader.h), where the loader's
// batches live, so a benchmark's host-to-device copies overlap compute as training's do
// (from pageable memory a copy cannot run asynchronously).
inline Tensor in_batch_pool(const Tensor& host) {
  TensorOptions options;
  options.dtype = host.dtype();
  options.tag = MemoryTag::Data;
  options.allocator = host_batch_allocator();
  Tensor out = Tensor::empty(host.shape(), options);
  out.copy_from(host);
  return out;
}

// `samples` seeded inputs and labels for `model` as configured (at most 10 classes are
// used, so a small batch still sees several; segmentation models get label maps), in the
// pinned batch pool.
inline Dataset synthetic_data_for(const std::string& model, const ModelConfig& config,
                                  std::int64_t samples, std::uint64_t seed) {
  SyntheticOptions synthetic;
  synthetic.samples = samples;
  synthetic.channels = config.in_channels;
  synthetic.height = synthetic.width = config.image_size;
  synthetic.num_classes = std::min<std::int64_t>(config.num_classes, 10);
  synthetic.segmentation = find_model(model).segmentation;
  synthetic.seed = seed;
  Dataset data = make_synthetic(synthetic);
  data.images = in_batch_pool(data.images);
  data.labels = in_batch_pool(data.labels);
  return data;
}

struct BatchCase {
  std::string model;
  std::int64_t batch = 0;
  std::string memory_limit;  // empty: the default
};

// "model:batch:memory-limit", e.g. "lenet5:2048:16MiB" or "resnet20:256:".
inline BatchCase parse_batch_case(const std::string& text) {
  const std::size_t first = text.find(':');
  const std::size_t second = first == std::string::npos ? first : text.find(':', first + 1);
  MB_CHECK(second != std::string::npos, "case '", text,
           "' is not model:batch:memory-limit (e.g. lenet5:2048:16MiB, or resnet20:256: for "
           "the default limit)");
  BatchCase c;
  c.model = text.substr(0, first);
  const std::string batch = text.substr(first + 1, second - first - 1);
  MB_CHECK(!batch.empty() && batch.find_first_not_of("0123456789") == std::string::npos &&
               batch.size() < 10 && std::stoll(batch) > 0,
           "case '", text, "': the batch '", batch, "' is not a positive integer");
  c.batch = std::stoll(batch);
  c.memory_limit = text.substr(second + 1);
  return c;
}

}  // namespace mb::bench
