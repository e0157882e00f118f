// Helpers for tests that compare two builds of a zoo model that must train identically
// (fusion, segment recomputation): a training step through the module hooks the engine
// calls, bitwise comparison of tensors, and the probe's bytes per sample.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "allocator/passthrough_allocator.h"
#include "engine/trainer.h"
#include "layers/init.h"
#include "layers/softmax_cross_entropy.h"
#include "models/zoo.h"
#include "runtime/allocator_registry.h"
#include "runtime/memory_resource.h"

namespace mb::testing {

// A batch of `samples` for zoo model `info` at `size` px: uniform inputs in [-2, 2] and
// labels (i * 7 + 3) mod `classes` (per pixel for segmentation models).
struct Batch {
  Tensor input;
  Tensor labels;
};
inline Batch small_batch(const ModelInfo& info, std::int64_t size, std::int64_t classes,
                         std::int64_t samples = 3) {
  Batch batch;
  batch.input = Tensor::empty(Shape{samples, info.in_channels, size, size});
  fill_uniform(batch.input, 2.0f, 11, 0);
  std::vector<std::int32_t> labels;
  const std::int64_t count = info.segmentation ? samples * size * size : samples;
  for (std::int64_t i = 0; i < count; ++i) {
    labels.push_back(static_cast<std::int32_t>((i * 7 + 3) % classes));
  }
  batch.labels = Tensor::from_vector_int(
      labels, info.segmentation ? Shape{samples, size, size} : Shape{samples});
  return batch;
}

// Bitwise equality of two float tensors; reports the first mismatch.
inline void expect_bitwise_equal(const Tensor& actual, const Tensor& expected,
                                 const std::string& what) {
  ASSERT_TRUE(actual.defined() && expected.defined()) << what;
  ASSERT_EQ(actual.shape(), expected.shape()) << what;
  const std::vector<float> a = actual.to_vector();
  const std::vector<float> b = expected.to_vector();
  std::size_t mismatches = 0;
  std::size_t first = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0 && mismatches++ == 0) first = i;
  }
  EXPECT_EQ(mismatches, 0u) << what << ": " << mismatches << " of " << a.size()
                            << " values differ, first at " << first << ": "
                            << (a.empty() ? 0.0f : a[first]) << " vs "
                            << (b.empty() ? 0.0f : b[first]);
}

struct StepResult {
  Tensor logits;
  Tensor grad_input;
  float loss = 0.0f;
};

// Two training micro-batches of `input` (gradients accumulated) and one full-batch end:
// the engine's calls, so BatchNorm's pooled statistics are covered as well.
inline StepResult train_step(Module& model, const Tensor& input, const Tensor& labels) {
  model.begin_batch();
  StepResult result;
  for (int micro = 0; micro < 2; ++micro) {
    RunState state;
    state.sample_offset = micro * input.dim(0);
    result.logits = model.forward(input, state);
    LossResult loss = SoftmaxCrossEntropy().forward_backward(result.logits, labels);
    result.loss += loss.loss;
    BackwardState backward;
    backward.mode = micro == 0 ? GradientMode::Overwrite : GradientMode::Accumulate;
    result.grad_input = model.backward(loss.grad_logits, backward);
    model.commit_micro_batch();
  }
  model.end_batch();
  return result;
}

// A training step of `a` and of `b` on the same input and labels, and the expectation that
// logits, input gradient, every parameter's gradient, every float buffer (BatchNorm's
// running statistics) and an evaluation forward are equal bit for bit.
inline void expect_identical_training(Module& a, Module& b, const Tensor& input,
                                      const Tensor& labels, const std::string& what) {
  const StepResult x = train_step(a, input, labels);
  const StepResult y = train_step(b, input, labels);
  EXPECT_EQ(x.loss, y.loss) << what;
  expect_bitwise_equal(x.logits, y.logits, what + " logits");
  expect_bitwise_equal(x.grad_input, y.grad_input, what + " input gradient");
  const auto a_params = a.named_parameters();
  const auto b_params = b.named_parameters();
  ASSERT_EQ(a_params.size(), b_params.size()) << what;
  for (std::size_t i = 0; i < a_params.size(); ++i) {
    ASSERT_EQ(a_params[i].first, b_params[i].first) << what;
    expect_bitwise_equal(a_params[i].second->grad, b_params[i].second->grad,
                         what + " grad " + a_params[i].first);
  }
  const auto a_buffers = a.named_buffers();
  const auto b_buffers = b.named_buffers();
  ASSERT_EQ(a_buffers.size(), b_buffers.size()) << what;
  for (std::size_t i = 0; i < a_buffers.size(); ++i) {
    if (a_buffers[i].second->dtype() != DType::Float32) {
      EXPECT_EQ(a_buffers[i].second->to_vector_int(), b_buffers[i].second->to_vector_int())
          << what << " buffer " << a_buffers[i].first;
      continue;
    }
    expect_bitwise_equal(*a_buffers[i].second, *b_buffers[i].second,
                         what + " buffer " + a_buffers[i].first);
  }
  // Evaluation (running statistics, the fused activation in the inference kernel).
  RunState eval;
  eval.training = false;
  expect_bitwise_equal(a.forward(input, eval), b.forward(input, eval), what + " evaluation logits");
}

// The bytes per sample of a training step of `model` at `sample` ([C, H, W]; `label`: one
// sample's label shape), measured by the production probe (Trainer::measure) through a
// pass-through allocator with probes at 16 and 18 samples, as
// tests/models/memory_estimate_test.cpp explains; `profile` receives the whole measurement.
inline MemoryProfile measure_training_memory(std::shared_ptr<Module> model, const Shape& sample,
                                             const Shape& label) {
  ScopedAllocator exact(Device::cpu(),
                        std::make_shared<PassThroughAllocator>(make_host_memory_resource()));
  TrainerOptions options;
  options.planner.min_micro_batch = 16;
  Trainer trainer(std::move(model), options);
  return trainer.measure(sample, label);
}

}  // namespace mb::testing
