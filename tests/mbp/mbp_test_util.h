// Shared pieces of the micro-batch engine tests: a small CNN, a seeded batch, and a
// comparison of parameter sets.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "engine/trainer.h"
#include "layers/activation.h"
#include "layers/batch_norm2d.h"
#include "layers/conv2d.h"
#include "layers/dropout.h"
#include "layers/flatten.h"
#include "layers/linear.h"
#include "layers/pooling.h"
#include "models/zoo.h"

namespace mb::testing {

enum class Extra { None, Dropout, BatchNorm };

// conv(3->8) [bn] relu maxpool conv(8->8) relu [dropout] flatten linear(8*4*4 -> 5), 8x8 input.
inline std::shared_ptr<Module> small_cnn(Extra extra, std::uint64_t seed = 3) {
  auto net = std::make_shared<Sequential>();
  net->add("conv1", std::make_shared<Conv2d>(3, 8, 3, 1, 1));
  if (extra == Extra::BatchNorm) net->add("bn1", std::make_shared<BatchNorm2d>(8));
  net->add("relu1", std::make_shared<ReLU>());
  net->add("pool", std::make_shared<MaxPool2d>(2));
  net->add("conv2", std::make_shared<Conv2d>(8, 8, 3, 1, 1));
  net->add("relu2", std::make_shared<ReLU>());
  if (extra == Extra::Dropout) net->add("drop", std::make_shared<Dropout>(0.3f, 7));
  net->add("flatten", std::make_shared<Flatten>());
  net->add("fc", std::make_shared<Linear>(8 * 4 * 4, 5));
  initialize_parameters(*net, seed);
  return net;
}

struct Batch {
  Tensor images;
  Tensor labels;
};

// `batch` MNIST-shaped images (1 x 28 x 28, uniform pixels in [0, 1)), labels 0-9.
inline Batch mnist_like_batch(std::int64_t batch, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
  std::uniform_int_distribution<int> label(0, 9);
  std::vector<float> images(static_cast<std::size_t>(batch * 28 * 28));
  for (float& v : images) v = pixel(rng);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(batch));
  for (auto& l : labels) l = label(rng);
  return {Tensor::from_vector(images, {batch, 1, 28, 28}),
          Tensor::from_vector_int(labels, {batch})};
}

// `batch` images of 3 x size x size, normal pixels, labels 0-4.
inline Batch make_batch(std::int64_t batch, std::uint64_t seed, std::int64_t size = 8) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> label(0, 4);
  std::vector<float> images(static_cast<std::size_t>(batch * 3 * size * size));
  for (float& v : images) v = normal(rng);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(batch));
  for (auto& l : labels) l = label(rng);
  Batch b;
  b.images = Tensor::from_vector(images, {batch, 3, size, size});
  b.labels = Tensor::from_vector_int(labels, {batch});
  return b;
}

inline std::vector<std::vector<float>> parameter_values(Module& model) {
  std::vector<std::vector<float>> values;
  for (auto& [name, p] : model.named_parameters()) values.push_back(p->value.to_vector());
  return values;
}

// |a - b| <= atol + rtol * |b| for every parameter element; reports the worst one.
inline void expect_parameters_close(const std::vector<std::vector<float>>& actual,
                                    const std::vector<std::vector<float>>& expected, double rtol,
                                    double atol, const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size());
  double worst = 0.0;
  std::size_t worst_tensor = 0, worst_index = 0;
  for (std::size_t t = 0; t < actual.size(); ++t) {
    ASSERT_EQ(actual[t].size(), expected[t].size());
    for (std::size_t i = 0; i < actual[t].size(); ++i) {
      const double excess = std::fabs(static_cast<double>(actual[t][i]) - expected[t][i]) -
                            (atol + rtol * std::fabs(expected[t][i]));
      if (excess > worst || std::isnan(actual[t][i])) {
        worst = std::isnan(actual[t][i]) ? INFINITY : excess;
        worst_tensor = t;
        worst_index = i;
      }
    }
  }
  EXPECT_LE(worst, 0.0) << what << ": parameter " << worst_tensor << " element " << worst_index
                        << " is " << actual[worst_tensor][worst_index] << ", full batch gives "
                        << expected[worst_tensor][worst_index];
}

}  // namespace mb::testing
