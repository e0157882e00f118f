// BatchNorm2d on CUDA at the sizes of real networks (label gpu; skips without a device).
//
// 1. ResNet-50's BatchNorm shapes (64 to 2048 channels, small batches) against the CPU twin:
//    training forward and backward over two micro-batches (Overwrite, then Accumulate), the
//    running statistics from their pooled sums (which fold more than one block of sums on
//    the device), then evaluation with 2048 channels (more channels than one block of the
//    inference statistics kernel covers). Plain and with the fused ReLU.
// 2. Tensors beyond 32-bit indices (kernels/cuda/batch_norm.cu computes a row's offset,
//    row * hw, in 64 bits): one of more than 2^31 elements (past the signed range) and one of
//    more than 2^32 (past the unsigned range; an earlier version switched index types at
//    n * c * hw + 512 = 2^32, which the two sizes straddle). Each needs three such tensors
//    on the device (x, y which
//    becomes the output gradient, and the input gradient: 24 and 48 GiB); a test skips,
//    saying so, when the arena cannot hold them. The inputs are periodic with an odd period,
//    so an element read or written at an index wrapped modulo 2^31 or 2^32 holds another
//    value, and outputs start as NaN, so an element never written shows. Truth: the means,
//    sums, outputs and gradients of a few channels computed here in double, among them the
//    channel whose last plane straddles the boundary and the last channel (all its last
//    plane beyond it).
//
// Tolerances. Both backends sum per channel in double and round once to float, so forward
// outputs agree to rtol / atol 1e-5 and input gradients to rtol 1e-4, atol 1e-5; weight and
// bias gradients (sums of up to 25,000 terms of order 1, stored as float) to 1e-4. With the
// fused ReLU, an element whose normalized value is within rounding of 0 may take the other
// side of the mask on one backend (the CPU rounds (x - mean) * scale + shift twice, CUDA's
// fma once): its gradient then differs, and through the channel's gradient means so does the
// rest of that channel's input gradient, by about 1 / (values per channel). Such elements
// are rare (about 1e-7 of them), so up to two channels' worth may differ there, within a
// relative L2 error of 5% overall. Against the double truth: outputs and input gradients
// within 1e-5 relative (the kernel's float mean and 1/sqrt(var + eps) are within an ulp of
// the truth's), the saved statistics within 1e-6, the fp64 sums within 1e-9 of the sum of
// absolute values; an index off by 2^31 or 2^32 misses by order 1.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/batch_norm.h"
#include "layers/batch_norm2d.h"
#include "runtime/allocator_registry.h"
#include "runtime/memory_resource.h"
#include "runtime/stream.h"
#include "tests/layers/gradcheck.h"
#include "tests/test_util.h"

namespace mb {
namespace {

using testing::expect_close;
using testing::random_tensor;

const Device kGpu = Device::cuda(0);

// --- 1. ResNet-50's shapes against the CPU -------------------------------------------------

// Offsets and scales per channel, so channels have distinct statistics.
Tensor channel_data(const Shape& shape, std::uint64_t seed) {
  return testing::channel_data(shape, seed, [](float v, std::int64_t ch) {
    return v * (0.5f + 0.25f * static_cast<float>(ch % 5)) + 0.5f * static_cast<float>(ch % 11 - 5);
  });
}

struct LayerCase {
  Shape input;
  BnActivation activation;
  std::vector<std::int64_t> split;  // micro-batches
};

const std::vector<LayerCase> kLayerCases = {
    {Shape{2, 64, 112, 112}, BnActivation::None, {1, 1}},  // bn1, after the stem
    {Shape{3, 256, 56, 56}, BnActivation::ReLU, {2, 1}},   // layer1's expansion
    {Shape{4, 512, 28, 28}, BnActivation::None, {3, 1}},   // layer2
    {Shape{4, 2048, 7, 7}, BnActivation::ReLU, {2, 2}},    // layer4
};

TEST(BatchNormLargeGpu, ResNet50ShapesMatchTheCpu) {
  MB_SKIP_WITHOUT_CUDA();
  std::uint64_t seed = 20;
  for (const LayerCase& lc : kLayerCases) {
    const std::int64_t channels = lc.input[1];
    const bool relu = lc.activation == BnActivation::ReLU;
    const std::string what = lc.input.to_string() + (relu ? " + ReLU" : "");
    SCOPED_TRACE(what);
    // Up to two channels' worth of elements may take the other side of ReLU's mask.
    const double mask_fraction = relu ? 2.0 / static_cast<double>(channels) : 0.0;
    BatchNorm2d cpu_bn(channels), gpu_bn(channels);
    const Tensor weight = random_tensor(Shape{channels}, ++seed, 0.5f, 1.5f);
    const Tensor bias = random_tensor(Shape{channels}, ++seed, -0.5f, 0.5f);
    for (BatchNorm2d* bn : {&cpu_bn, &gpu_bn}) {
      bn->weight().value.copy_from(weight);
      bn->bias().value.copy_from(bias);
      bn->set_activation(lc.activation);
    }
    gpu_bn.to_device(kGpu);
    const Tensor x = channel_data(lc.input, ++seed);
    const Tensor grad = random_tensor(lc.input, ++seed);
    RunState training;
    training.training = true;

    cpu_bn.begin_batch();
    gpu_bn.begin_batch();
    std::int64_t begin = 0;
    for (std::size_t k = 0; k < lc.split.size(); ++k) {
      const std::int64_t end = begin + lc.split[k];
      const Tensor xs = x.slice(begin, end), gs = grad.slice(begin, end);
      BackwardState state;
      state.mode = k == 0 ? GradientMode::Overwrite : GradientMode::Accumulate;
      const Tensor y_cpu = cpu_bn.forward(xs, training);
      const Tensor y_gpu = gpu_bn.forward(xs.to(kGpu), training);
      ASSERT_EQ(y_gpu.device(), kGpu);
      expect_close(y_gpu.to_vector(), y_cpu.to_vector(), 1e-5, 1e-5, what + " output");
      const Tensor dx_cpu = cpu_bn.backward(gs, state);
      const Tensor dx_gpu = gpu_bn.backward(gs.to(kGpu), state);
      expect_close(dx_gpu.to_vector(), dx_cpu.to_vector(), 1e-4, 1e-5, what + " input gradient",
                   mask_fraction);
      cpu_bn.commit_micro_batch();
      gpu_bn.commit_micro_batch();
      begin = end;
    }
    expect_close(gpu_bn.weight().grad.to_vector(), cpu_bn.weight().grad.to_vector(), 1e-4, 1e-4,
                 what + " weight gradient", mask_fraction);
    expect_close(gpu_bn.bias().grad.to_vector(), cpu_bn.bias().grad.to_vector(), 1e-4, 1e-4,
                 what + " bias gradient", mask_fraction);
    cpu_bn.end_batch();
    gpu_bn.end_batch();
    expect_close(gpu_bn.running_mean().to_vector(), cpu_bn.running_mean().to_vector(), 1e-5, 1e-6,
                 what + " running_mean");
    expect_close(gpu_bn.running_var().to_vector(), cpu_bn.running_var().to_vector(), 1e-5, 1e-6,
                 what + " running_var");
    EXPECT_EQ(gpu_bn.num_batches_tracked().to_vector_int(), std::vector<std::int32_t>{1});

    // Evaluation: the running statistics, and the backward of a normalization by constants.
    RunState eval;
    eval.training = false;
    const Tensor y_cpu = cpu_bn.forward(x, eval);
    const Tensor y_gpu = gpu_bn.forward(x.to(kGpu), eval);
    expect_close(y_gpu.to_vector(), y_cpu.to_vector(), 1e-5, 1e-5, what + " eval output");
    const Tensor dx_cpu = cpu_bn.backward(grad, BackwardState{});
    const Tensor dx_gpu = gpu_bn.backward(grad.to(kGpu), BackwardState{});
    expect_close(dx_gpu.to_vector(), dx_cpu.to_vector(), 1e-5, 1e-6, what + " eval input gradient",
                 relu ? 1e-4 : 0.0);
  }
}

// --- 2. Index width ------------------------------------------------------------------------

constexpr std::int64_t kChannels = 1024;
constexpr std::int64_t kSide = 1025;
constexpr std::int64_t kPlane = kSide * kSide;  // 1,050,625
// Odd periods: 2^31 and 2^32 are not multiples of them.
constexpr std::int64_t kPeriodX = 1000003;
constexpr std::int64_t kPeriodGrad = 999983;
constexpr float kEps = 1e-5f;

std::vector<float> uniform_tile(std::int64_t size, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> values(static_cast<std::size_t>(size));
  for (float& v : values) v = dist(rng);
  return values;
}

// device[e] = tile[e mod tile.size()] for e < count: one copy of the tile from the host, then
// device-to-device copies that double the filled prefix (a multiple of the period each time).
void fill_periodic(const Stream& stream, float* device, std::int64_t count,
                   const std::vector<float>& tile) {
  const std::int64_t period = static_cast<std::int64_t>(tile.size());
  std::int64_t filled = std::min(count, period);
  copy_bytes(device, tile.data(), static_cast<std::size_t>(filled) * sizeof(float), stream);
  while (filled < count) {
    const std::int64_t length = std::min(filled, count - filled);
    copy_bytes(device + filled, device, static_cast<std::size_t>(length) * sizeof(float), stream);
    filled += length;
  }
  stream.synchronize();
}

// The first plane (sample, channel) of an [n, kChannels, kPlane] tensor that holds element
// `boundary`.
std::int64_t straddling_channel(std::int64_t boundary) {
  return (boundary / kPlane) % kChannels;
}

// Why the arena cannot hold three [n, 1024, 1025, 1025] float tensors (and a GiB to spare),
// or "" when it can.
std::string missing_memory(std::int64_t n) {
  const std::size_t bytes = static_cast<std::size_t>(n * kChannels * kPlane) * sizeof(float);
  const std::size_t needed = 3 * bytes + (std::size_t{1} << 30);
  std::shared_ptr<Allocator> allocator = allocator_for(kGpu);
  allocator->empty_cache();
  const std::size_t available = allocator->report().available();
  if (available >= needed) return "";
  return "three tensors of " + format_bytes(bytes) + " need " + format_bytes(needed) +
         ", the CUDA arena has " + format_bytes(available) + " (device free memory " +
         format_bytes(make_cuda_memory_resource(0)->device_free_bytes()) + ")";
}

// Copies channel `ch`'s planes of an [n, kChannels, kPlane] device tensor to the host.
std::vector<float> channel_values(const Stream& stream, const Tensor& t, std::int64_t n,
                                  std::int64_t ch) {
  std::vector<float> values(static_cast<std::size_t>(n * kPlane));
  const float* base = t.data<float>();
  for (std::int64_t s = 0; s < n; ++s) {
    copy_bytes(values.data() + s * kPlane, base + (s * kChannels + ch) * kPlane,
               static_cast<std::size_t>(kPlane) * sizeof(float), stream);
  }
  stream.synchronize();
  return values;
}

// Expects |actual - expected| <= tolerance * (1 + |expected|) for every element; reports
// the count and the first miss with its element index in the tensor.
void expect_channel_close(const std::vector<float>& actual, const std::vector<double>& expected,
                          double tolerance, std::int64_t ch, const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size());
  std::size_t failures = 0, first = 0;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    if (!(std::fabs(actual[i] - expected[i]) <= tolerance * (1.0 + std::fabs(expected[i])))) {
      if (failures++ == 0) first = i;
    }
  }
  if (failures > 0) {
    const std::int64_t sample = static_cast<std::int64_t>(first) / kPlane;
    const std::int64_t element =
        (sample * kChannels + ch) * kPlane + static_cast<std::int64_t>(first) % kPlane;
    ADD_FAILURE() << what << ", channel " << ch << ": " << failures << " of " << actual.size()
                  << " elements differ; first: element " << element << " of the tensor is "
                  << actual[first] << ", expected " << expected[first];
  }
}

// Forward (training) and backward of BatchNorm over an [n, 1024, 1025, 1025] tensor through
// the public ops, checked against double on the channels in `channels`.
void check_index_width(std::int64_t n, const std::vector<std::int64_t>& channels) {
  const Stream stream = Stream::compute(kGpu);
  const std::int64_t c = kChannels, total = n * c * kPlane;
  const TensorOptions options = tensor_options(kGpu, MemoryTag::Activation);
  const Shape shape{n, c, kSide, kSide};
  const std::vector<float> tile_x = uniform_tile(kPeriodX, 1),
                           tile_grad = uniform_tile(kPeriodGrad, 2);
  std::vector<float> weight(static_cast<std::size_t>(c)), bias(static_cast<std::size_t>(c));
  for (std::int64_t ch = 0; ch < c; ++ch) {
    weight[ch] = 0.5f + static_cast<float>(ch % 97) / 97.0f;
    bias[ch] = static_cast<float>(ch % 89 - 44) / 88.0f;
  }
  const float nan = std::numeric_limits<float>::quiet_NaN();
  {
    Tensor x = Tensor::empty(shape, options);
    Tensor y = Tensor::empty(shape, options);  // the output, then the output's gradient
    Tensor dx = Tensor::empty(shape, options);
    fill_periodic(stream, x.data<float>(), total, tile_x);
    y.fill(nan);
    dx.fill(nan);
    const Tensor w = Tensor::from_vector(weight, Shape{c}, options);
    const Tensor b = Tensor::from_vector(bias, Shape{c}, options);
    Tensor save_mean = Tensor::full(Shape{c}, nan, options);
    Tensor save_invstd = Tensor::full(Shape{c}, nan, options);
    Tensor grad_weight = Tensor::full(Shape{c}, nan, options);
    Tensor grad_bias = Tensor::full(Shape{c}, nan, options);
    DeviceBuffer sums(allocator_for(kGpu), static_cast<std::size_t>(2 * c) * sizeof(double),
                      MemoryTag::Other, stream.handle());
    fill_words(sums.get(), 0u, static_cast<std::size_t>(4 * c), stream);

    batch_norm_forward_training(stream, x.data<float>(), w.data<float>(), b.data<float>(), nullptr,
                                BnActivation::None, n, c, kPlane, kEps, y.data<float>(),
                                save_mean.data<float>(), save_invstd.data<float>(),
                                static_cast<double*>(sums.get()));
    std::vector<double> device_sums(static_cast<std::size_t>(2 * c));
    copy_bytes(device_sums.data(), sums.get(), device_sums.size() * sizeof(double), stream);
    stream.synchronize();
    const std::vector<float> means = save_mean.to_vector(), invstds = save_invstd.to_vector();

    // The truth per checked channel: x[e] = tile_x[e mod period].
    struct Truth {
      double mean, invstd;
    };
    std::vector<Truth> truths;
    const double count = static_cast<double>(n * kPlane);
    for (const std::int64_t ch : channels) {
      std::vector<double> values(static_cast<std::size_t>(n * kPlane));
      double sum = 0.0, sum_sq = 0.0, sum_abs = 0.0;
      for (std::int64_t s = 0; s < n; ++s) {
        const std::int64_t start = (s * c + ch) * kPlane;
        for (std::int64_t j = 0; j < kPlane; ++j) {
          const double v = tile_x[static_cast<std::size_t>((start + j) % kPeriodX)];
          values[static_cast<std::size_t>(s * kPlane + j)] = v;
          sum += v;
          sum_sq += v * v;
          sum_abs += std::fabs(v);
        }
      }
      const double mean = sum / count;
      const double variance = sum_sq / count - mean * mean;
      const double invstd = 1.0 / std::sqrt(variance + static_cast<double>(kEps));
      truths.push_back({mean, invstd});
      SCOPED_TRACE("channel " + std::to_string(ch));
      EXPECT_NEAR(device_sums[ch], sum, 1e-9 * sum_abs);
      EXPECT_NEAR(device_sums[c + ch], sum_sq, 1e-9 * sum_sq);
      EXPECT_NEAR(means[ch], mean, 1e-6 * (std::fabs(mean) + 1e-3));
      EXPECT_NEAR(invstds[ch], invstd, 1e-6 * invstd);
      std::vector<double> expected(values.size());
      for (std::size_t i = 0; i < values.size(); ++i) {
        expected[i] = (values[i] - mean) * invstd * weight[ch] + bias[ch];
      }
      expect_channel_close(channel_values(stream, y, n, ch), expected, 1e-5, ch, "output");
    }

    // Backward: the output's buffer becomes the gradient, g[e] = tile_grad[e mod period].
    fill_periodic(stream, y.data<float>(), total, tile_grad);
    batch_norm_backward(stream, y.data<float>(), x.data<float>(), save_mean.data<float>(),
                        save_invstd.data<float>(), w.data<float>(), b.data<float>(),
                        BnActivation::None, n, c, kPlane, /*batch_statistics=*/true,
                        dx.data<float>(), grad_weight.data<float>(), grad_bias.data<float>(),
                        GradientMode::Overwrite);
    stream.synchronize();
    const std::vector<float> weight_grads = grad_weight.to_vector();
    const std::vector<float> bias_grads = grad_bias.to_vector();
    for (std::size_t k = 0; k < channels.size(); ++k) {
      const std::int64_t ch = channels[k];
      SCOPED_TRACE("channel " + std::to_string(ch));
      const double mean = truths[k].mean, invstd = truths[k].invstd;
      std::vector<double> xhat(static_cast<std::size_t>(n * kPlane));
      std::vector<double> g(xhat.size());
      double sum_g = 0.0, sum_g_xhat = 0.0, sum_abs = 0.0;
      for (std::int64_t s = 0; s < n; ++s) {
        const std::int64_t start = (s * c + ch) * kPlane;
        for (std::int64_t j = 0; j < kPlane; ++j) {
          const std::size_t i = static_cast<std::size_t>(s * kPlane + j);
          xhat[i] = (tile_x[static_cast<std::size_t>((start + j) % kPeriodX)] - mean) * invstd;
          g[i] = tile_grad[static_cast<std::size_t>((start + j) % kPeriodGrad)];
          sum_g += g[i];
          sum_g_xhat += g[i] * xhat[i];
          sum_abs += std::fabs(g[i]) * (1.0 + std::fabs(xhat[i]));
        }
      }
      EXPECT_NEAR(weight_grads[ch], sum_g_xhat, 1e-5 * std::fabs(sum_g_xhat) + 1e-9 * sum_abs);
      EXPECT_NEAR(bias_grads[ch], sum_g, 1e-5 * std::fabs(sum_g) + 1e-9 * sum_abs);
      const double scale = invstd * weight[ch];
      std::vector<double> expected(xhat.size());
      for (std::size_t i = 0; i < xhat.size(); ++i) {
        expected[i] = scale * (g[i] - sum_g / count - xhat[i] * sum_g_xhat / count);
      }
      expect_channel_close(channel_values(stream, dx, n, ch), expected, 1e-5, ch, "input gradient");
    }
  }
  allocator_for(kGpu)->empty_cache();
}

TEST(BatchNormLargeGpu, UnsignedIndexBeyondTwoToThe31MatchesDouble) {
  MB_SKIP_WITHOUT_CUDA();
  constexpr std::int64_t n = 2;  // 2,151,680,000 elements: above 2^31, below 2^32 - 512
  static_assert(n * kChannels * kPlane > (std::int64_t{1} << 31), "not beyond 2^31");
  static_assert(n * kChannels * kPlane + 512 < (std::int64_t{1} << 32), "not below 2^32");
  const std::string missing = missing_memory(n);
  if (!missing.empty()) GTEST_SKIP() << missing;
  const std::int64_t straddling = straddling_channel(std::int64_t{1} << 31);
  check_index_width(n, {0, kChannels / 2, straddling, kChannels - 1});
}

TEST(BatchNormLargeGpu, SixtyFourBitIndexBeyondTwoToThe32MatchesDouble) {
  MB_SKIP_WITHOUT_CUDA();
  constexpr std::int64_t n = 4;  // 4,303,360,000 elements: beyond 2^32
  static_assert(n * kChannels * kPlane + 512 >= (std::int64_t{1} << 32), "not beyond 2^32");
  const std::string missing = missing_memory(n);
  if (!missing.empty()) GTEST_SKIP() << missing;
  const std::int64_t straddling = straddling_channel(std::int64_t{1} << 32);
  check_index_width(n, {0, kChannels / 2, straddling, kChannels - 1});
}

}  // namespace
}  // namespace mb
