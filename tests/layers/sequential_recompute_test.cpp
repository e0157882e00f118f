// Sequential::set_recompute (segment recomputation, layers/module.h) on a hand-built segment
// that holds every kind of state a recomputed forward must reproduce or must not count
// twice: BatchNorm (batch statistics), Dropout (masks keyed by step and sample index), a
// fused BatchNorm + ReLU and a Conv2d recomputing its input from it.
//
// Truth: the same segment keeping its activations (set_recompute(false)), initialized
// identically; for memory, the allocator's live bytes after forward against the analytic
// trace (Module::saved_bytes).
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>

#include "allocator/passthrough_allocator.h"
#include "layers/activation.h"
#include "layers/batch_norm2d.h"
#include "layers/conv2d.h"
#include "layers/dropout.h"
#include "layers/init.h"
#include "runtime/allocator_registry.h"
#include "runtime/memory_resource.h"
#include "tests/models/step_compare.h"

namespace mb {
namespace {

// [conv, segment{conv, bn, relu, dropout, conv, bn, relu (fused into bn), conv}, conv]; the
// outer convolutions give the segment an input with a gradient and an output that another
// layer reads.
std::shared_ptr<Sequential> make_net(bool recompute) {
  auto segment = std::make_shared<Sequential>();
  segment->add("conv1", std::make_shared<Conv2d>(4, 6, 3, 1, 1));
  segment->add("bn1", std::make_shared<BatchNorm2d>(6));
  segment->add("relu1", std::make_shared<ReLU>());
  segment->add("drop", std::make_shared<Dropout>(0.3f, 5));
  segment->add("conv2", std::make_shared<Conv2d>(6, 6, 3, 1, 1));
  segment->add("bn2", std::make_shared<BatchNorm2d>(6));
  segment->add("relu2", std::make_shared<ReLU>());
  segment->add("conv3", std::make_shared<Conv2d>(6, 4, 1));
  segment->set_recompute(recompute);
  auto net = std::make_shared<Sequential>();
  net->add("stem", std::make_shared<Conv2d>(3, 4, 3, 1, 1));
  net->add("segment", segment);
  net->add("head", std::make_shared<Conv2d>(4, 2, 1));
  net->fuse_memory_bound_layers();
  std::uint32_t stream = 0;
  for (auto& [name, p] : net->named_parameters()) fill_uniform(p->value, 0.5f, 21, stream++);
  return net;
}

RunState training_state(std::int64_t micro) {
  RunState state;
  state.seed = 99;
  state.step = 4;
  state.sample_offset = 3 * micro;
  return state;
}

// Two micro-batches through begin/commit/end_batch, the loss sum(y * weights).
Tensor train(Sequential& net, const Tensor& input, Tensor* output) {
  net.begin_batch();
  Tensor grad_input;
  for (int micro = 0; micro < 2; ++micro) {
    *output = net.forward(input, training_state(micro));
    Tensor seed = Tensor::empty(output->shape());
    fill_uniform(seed, 1.0f, 31, static_cast<std::uint32_t>(micro));
    BackwardState backward;
    backward.mode = micro == 0 ? GradientMode::Overwrite : GradientMode::Accumulate;
    grad_input = net.backward(seed, backward);
    net.commit_micro_batch();
  }
  net.end_batch();
  return grad_input;
}

TEST(SequentialRecompute, DropoutMasksBatchNormStatisticsAndGradientsAreThoseOfKeeping) {
  Tensor input = Tensor::empty(Shape{3, 3, 8, 8});
  fill_uniform(input, 1.5f, 41, 0);
  auto recomputed = make_net(true);
  auto kept = make_net(false);
  Tensor out_recomputed, out_kept;
  const Tensor grad_recomputed = train(*recomputed, input, &out_recomputed);
  const Tensor grad_kept = train(*kept, input, &out_kept);
  testing::expect_bitwise_equal(out_recomputed, out_kept, "output");
  testing::expect_bitwise_equal(grad_recomputed, grad_kept, "input gradient");
  const auto a = recomputed->named_parameters();
  const auto b = kept->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    testing::expect_bitwise_equal(a[i].second->grad, b[i].second->grad, "grad " + a[i].first);
  }
  const auto a_buffers = recomputed->named_buffers();
  const auto b_buffers = kept->named_buffers();
  for (std::size_t i = 0; i < a_buffers.size(); ++i) {
    if (a_buffers[i].second->dtype() != DType::Float32) {
      EXPECT_EQ(a_buffers[i].second->to_vector_int(), b_buffers[i].second->to_vector_int())
          << a_buffers[i].first << ": BatchNorm counted a recomputed forward as a batch";
      continue;
    }
    testing::expect_bitwise_equal(*a_buffers[i].second, *b_buffers[i].second,
                                  "buffer " + a_buffers[i].first);
  }
}

// Live bytes while the net's training forward output is held (the forward's caches).
std::size_t bytes_kept_by_forward(bool recompute, const Tensor& input) {
  auto exact = std::make_shared<PassThroughAllocator>(make_host_memory_resource());
  ScopedAllocator scope(Device::cpu(), exact);
  auto net = make_net(recompute);
  const std::size_t before = exact->report().allocated;
  const Tensor output = net->forward(input, training_state(0));
  const std::size_t after = exact->report().allocated;
  return after - before;
}

TEST(SequentialRecompute, ForwardKeepsOnlyTheSegmentsInputAsTheTraceSays) {
  Tensor input = Tensor::empty(Shape{8, 3, 32, 32});
  fill_uniform(input, 1.0f, 43, 0);
  const double measured = static_cast<double>(bytes_kept_by_forward(false, input)) -
                          static_cast<double>(bytes_kept_by_forward(true, input));
  const double predicted = static_cast<double>(make_net(false)->saved_bytes(input.shape())) -
                           static_cast<double>(make_net(true)->saved_bytes(input.shape()));
  // The segment's activations: two [8, 6, 32, 32] BatchNorm inputs and the dropout's output
  // (the fused ReLUs keep nothing), about 600 KiB; the rest is the pass-through allocator's
  // 512-byte rounding of the statistics.
  EXPECT_GT(predicted, 500.0 * 1024);
  EXPECT_NEAR(measured, predicted, 8.0 * 1024) << "measured " << measured << " B less kept";
}

}  // namespace
}  // namespace mb
