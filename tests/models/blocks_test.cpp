// Composite modules route gradients through two paths: finite-difference checks of
// ResNet's blocks, MobileNetV2's inverted residual, and (sampled) U-Net's skip connections.
// Fused residual blocks recompute their outputs: bit for bit, and nothing of them is kept
// (bytes counted by hand from the shapes against the allocator's live bytes).
#include "models/blocks.h"

#include <gtest/gtest.h>

#include "allocator/passthrough_allocator.h"
#include "layers/init.h"
#include "models/zoo.h"
#include "runtime/allocator_registry.h"
#include "runtime/memory_resource.h"
#include "tests/layers/gradcheck.h"
#include "tests/models/step_compare.h"

namespace mb {
namespace {

// Random BatchNorm affine parameters and running statistics. With the defaults (bias 0),
// a window of ReLU-zeroed inputs gives a pre-activation of exactly 0: central differences
// then sit on the kink and measure half the gradient.
void randomize_batch_norms(Module& model, std::uint64_t seed) {
  for (auto& [name, p] : model.named_parameters()) {
    if (p->value.ndim() != 1 || p->decay) continue;  // BatchNorm weight and bias
    const bool weight = name.size() >= 6 && name.compare(name.size() - 6, 6, "weight") == 0;
    p->value.copy_from(testing::random_tensor(p->value.shape(), seed++, weight ? 0.5f : -0.5f,
                                              weight ? 1.5f : 0.5f));
  }
  for (auto& [name, b] : model.named_buffers()) {
    if (b->dtype() != DType::Float32) continue;
    const bool var = name.find("running_var") != std::string::npos;
    b->copy_from(testing::random_tensor(b->shape(), seed++, var ? 0.5f : -0.2f, var ? 2.0f : 0.2f));
  }
}

testing::GradCheckOptions block_options() {
  testing::GradCheckOptions options;
  // What these tests check is the routing of gradients through two paths, so BatchNorm runs
  // in evaluation mode (an affine map; its training-mode gradient is checked in
  // tests/layers). Small steps: a 1e-2 step would cross ReLU kinks.
  // A conv weight moves every output of its channel at once, so a few central differences
  // straddle a ReLU kink: allow 8% of elements to miss if the vector as a whole agrees.
  // (A lost shortcut or skip gradient is off everywhere, far beyond that.)
  options.state.training = false;
  options.eps = 1e-4;
  options.allowed_mismatch_fraction = 0.08;
  options.rtol = 3e-2;
  options.atol = 1e-2;  // float32 noise of a 1e-4 central difference
  return options;
}

TEST(Blocks, BasicBlockWithIdentityShortcut) {
  ResidualBlock block(4, 4, 1, false);
  initialize_parameters(block, 1);
  randomize_batch_norms(block, 100);
  testing::check_gradients(block, testing::random_tensor({2, 4, 5, 5}, 2), 3, block_options());
}

TEST(Blocks, BasicBlockWithProjection) {
  ResidualBlock block(3, 4, 2, false);
  initialize_parameters(block, 4);
  randomize_batch_norms(block, 200);
  testing::check_gradients(block, testing::random_tensor({2, 3, 6, 6}, 5), 6, block_options());
}

TEST(Blocks, Bottleneck) {
  ResidualBlock block(4, 2, 2, true);
  initialize_parameters(block, 7);
  randomize_batch_norms(block, 300);
  testing::check_gradients(block, testing::random_tensor({2, 4, 4, 4}, 8), 9, block_options());
}

TEST(Blocks, InvertedResidualWithAndWithoutShortcut) {
  InvertedResidual with_shortcut(4, 4, 1, 2);
  initialize_parameters(with_shortcut, 10);
  randomize_batch_norms(with_shortcut, 400);
  testing::check_gradients(with_shortcut, testing::random_tensor({2, 4, 4, 4}, 11), 12,
                           block_options());
  InvertedResidual strided(3, 5, 2, 1);
  initialize_parameters(strided, 13);
  randomize_batch_norms(strided, 500);
  testing::check_gradients(strided, testing::random_tensor({2, 3, 5, 5}, 14), 15, block_options());
}

// U-Net is too large for a full check: compare a few input-gradient elements, spread over
// the image, with central differences. Every skip connection reaches the input.
TEST(Blocks, UNetInputGradientAtSampledPixels) {
  ModelConfig config;
  config.in_channels = 1;
  config.image_size = 16;
  config.num_classes = 2;
  auto unet = build_model("unet", config);
  Tensor input = testing::random_tensor({2, 1, 16, 16}, 21);
  randomize_batch_norms(*unet, 600);
  const Shape out_shape = unet->output_shape(input.shape());
  Tensor r = testing::random_tensor(out_shape, 22);
  const std::vector<float> rv = r.to_vector();
  RunState state;
  state.training = false;  // affine BatchNorm: a smooth function apart from ReLU kinks
  unet->forward(input, state);
  Tensor grad = unet->backward(r, BackwardState{});
  const std::vector<float> analytic = grad.to_vector();
  auto loss = [&](const Tensor& x) {
    std::vector<float> y = unet->forward(x, state).to_vector();
    unet->clear_cache();
    double sum = 0.0;
    for (std::size_t i = 0; i < y.size(); ++i) sum += static_cast<double>(rv[i]) * y[i];
    return sum;
  };
  // Across a deep net a few central differences cross a ReLU or max-pool switch, so the
  // sampled vector is compared as a whole (relative L2 error under 10%).
  const double eps = 1e-3;
  double diff_norm = 0.0, numeric_norm = 0.0;
  for (std::int64_t index : {0, 37, 135, 255, 300, 511, 64, 190}) {
    Tensor x = input.clone();
    float* xd = x.data<float>();
    const float saved = xd[index];
    xd[index] = saved + static_cast<float>(eps);
    const double plus = loss(x);
    xd[index] = saved - static_cast<float>(eps);
    const double minus = loss(x);
    const double numeric = (plus - minus) / (2 * eps);
    diff_norm += (analytic[index] - numeric) * (analytic[index] - numeric);
    numeric_norm += numeric * numeric;
  }
  EXPECT_GT(numeric_norm, 0.0);
  EXPECT_LT(std::sqrt(diff_norm), 0.1 * std::sqrt(numeric_norm));
}

// Three fused BasicBlocks as a stage: 8 -> 16 channels with stride 2 (a downsample
// shortcut), then two identity blocks, each linked to the one before (fusion's chain).
std::shared_ptr<Sequential> fused_stage() {
  auto stage = std::make_shared<Sequential>();
  stage->add("0", std::make_shared<ResidualBlock>(8, 16, 2, false));
  stage->add("1", std::make_shared<ResidualBlock>(16, 16, 1, false));
  stage->add("2", std::make_shared<ResidualBlock>(16, 16, 1, false));
  stage->fuse_memory_bound_layers();
  std::uint32_t stream = 0;
  for (auto& [name, p] : stage->named_parameters()) fill_uniform(p->value, 0.4f, 5, stream++);
  return stage;
}

TEST(Blocks, FusedBlocksRecomputeTheirOutputsBitForBit) {
  auto stage = fused_stage();
  Tensor input = Tensor::empty(Shape{4, 8, 16, 16});
  fill_uniform(input, 1.0f, 9, 0);
  RunState state;
  std::vector<Tensor> outputs;
  Tensor x = input;
  for (const auto& [name, block] : stage->children()) {
    x = block->forward(x, state);
    outputs.push_back(x);
  }
  for (std::size_t k = 0; k < outputs.size(); ++k) {
    RecomputeSource* source = stage->children()[k].second->recompute_source();
    ASSERT_NE(source, nullptr) << "block " << k << " is fused";
    EXPECT_TRUE(source->can_recompute(outputs[k])) << "block " << k;
    EXPECT_FALSE(source->can_recompute(input)) << "block " << k;
    testing::expect_bitwise_equal(source->recompute_output(), outputs[k],
                                  "block " + std::to_string(k) + " output");
  }
}

TEST(Blocks, FusedBlocksKeepNoneOfTheirOutputs) {
  auto exact = std::make_shared<PassThroughAllocator>(make_host_memory_resource());
  ScopedAllocator scope(Device::cpu(), exact);
  auto stage = fused_stage();
  Tensor input = Tensor::empty(Shape{4, 8, 16, 16});
  fill_uniform(input, 1.0f, 9, 0);
  RunState state;
  // A first step creates what lasts (gradients, BatchNorm's sums).
  stage->forward(input, state);
  stage->backward(Tensor::full(Shape{4, 16, 8, 8}, 1.0f), BackwardState{});
  const std::size_t before = exact->report().allocated;
  const Tensor output = stage->forward(input, state);
  const std::size_t kept = exact->report().allocated - before;
  // By hand: every BatchNorm keeps its input ([4, 16, 8, 8]: block 0's bn1, bn2 and
  // downsample BatchNorm, blocks 1 and 2's bn1 and bn2) and its mean and invstd (16 floats
  // each, 512 bytes apiece from the pass-through allocator); the convolutions keep the
  // stage's input (allocated before) or nothing (recomputed from a BatchNorm or from the
  // block before), and no block keeps its output. Only the output the caller holds adds.
  const std::size_t activation = 4 * 16 * 8 * 8 * sizeof(float);
  const std::size_t batch_norms = 7;
  const std::size_t expected = batch_norms * activation + batch_norms * 2 * 512 + activation;
  EXPECT_EQ(kept, expected) << "kept " << kept << " bytes; " << expected
                            << " with no block output kept, " << expected + 2 * activation
                            << " if blocks 0 and 1 kept theirs";
}

}  // namespace
}  // namespace mb
