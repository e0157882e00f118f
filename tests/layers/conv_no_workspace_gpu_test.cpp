// cuDNN convolutions when no workspace fits (label gpu; skips without a device).
//
// kernels/cuda/cudnn_conv.cpp takes, per call, the first of cuDNN's candidates whose
// workspace fits what the allocator can still give (report().available()), and throws
// OutOfMemory naming the smallest workspace when none fits. Here the CUDA arena is capped at
// 64 MiB and, once the convolution's tensors are in it, every byte left under the cap is
// taken (free blocks and headroom): available() is 0, so only algorithms that need no
// workspace may run, and any allocation would fail. Forward, backward-data and
// backward-filter, overwriting and accumulating, must then still give the CPU twin's results
// (im2col + GEMM, kernels/cpu/conv.h) and allocate nothing.
//
// In deterministic mode cuDNN may have no deterministic algorithm without a workspace for a
// direction; the contract is then the OutOfMemory above, raised before anything is
// allocated, and the same call with the arena's room back gives the CPU's results.
//
// Tolerance: TF32 off, so both backends compute each output as a float32 sum of K products
// (K: the products per output element; +1 for the accumulated value). By Higham's bound each
// is within gamma_{K+1} * (|a| . |b|) of the exact value, where |a| . |b| is the same
// convolution of absolute values (computed here by the CPU twin): the two differ by at most
// twice that. A wrong algorithm or a workspace-less path that skips part of the sum misses by
// the size of the result.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "allocator/pool_allocator.h"
#include "kernels/conv.h"
#include "kernels/cpu/conv.h"
#include "runtime/allocator_registry.h"
#include "runtime/context.h"
#include "runtime/error.h"
#include "runtime/memory_resource.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"
#include "tests/kernels/conv_test_util.h"
#include "tests/test_util.h"

namespace mb {
namespace {

const Device kGpu = Device::cuda(0);
constexpr std::size_t kCap = std::size_t{64} << 20;
constexpr double kUnitRoundoff = 5.9604644775390625e-8;  // 2^-24

struct Case {
  std::int64_t batch, in_channels, size, out_channels;
  int kernel, stride, padding, groups;
};

// Shapes of the zoo's convolutions, small: 3x3, strided 3x3, 1x1, the 7x7 stem, grouped.
const std::vector<Case> kCases = {
    {8, 16, 28, 32, 3, 1, 1, 1}, {8, 32, 14, 64, 3, 2, 1, 1}, {8, 64, 7, 64, 1, 1, 0, 1},
    {4, 3, 32, 16, 7, 2, 3, 1},  {8, 32, 14, 32, 3, 1, 1, 4},
};

ConvGeometry geometry_of(const Case& c) {
  return testing::conv_geometry(c.batch, c.in_channels, c.size, c.out_channels, c.kernel, c.stride,
                                c.padding, 1, c.groups);
}

std::size_t x_size(const ConvGeometry& g) {
  return static_cast<std::size_t>(g.batch * g.in_channels * g.in_h * g.in_w);
}
std::size_t w_size(const ConvGeometry& g) {
  return static_cast<std::size_t>(g.out_channels * (g.in_channels / g.groups) * g.kernel_h *
                                  g.kernel_w);
}
std::size_t y_size(const ConvGeometry& g) {
  return static_cast<std::size_t>(g.batch * g.out_channels * g.out_h() * g.out_w());
}

std::vector<float> absolute(std::vector<float> values) {
  for (float& v : values) v = std::fabs(v);
  return values;
}

enum class Direction { Forward, BackwardData, BackwardFilter };
const char* direction_name(Direction d) {
  switch (d) {
    case Direction::Forward: return "forward";
    case Direction::BackwardData: return "backward-data";
    case Direction::BackwardFilter: return "backward-filter";
  }
  return "?";
}
constexpr Direction kDirections[] = {Direction::Forward, Direction::BackwardData,
                                     Direction::BackwardFilter};

// One convolution's inputs (host), the CPU's results and their magnitudes, per direction.
struct Problem {
  ConvGeometry g;
  std::vector<float> x, w, dy;
  std::vector<float> initial[3];    // what the destination holds before an accumulating call
  std::vector<float> expected[3];   // CPU twin
  std::vector<float> magnitude[3];  // CPU twin on absolute values (+ |initial|)
  double terms[3] = {0.0, 0.0, 0.0};

  Problem(const ConvGeometry& geometry, std::uint32_t seed, GradientMode mode) : g(geometry) {
    x = testing::random_values(x_size(g), seed);
    w = testing::random_values(w_size(g), seed + 1);
    dy = testing::random_values(y_size(g), seed + 2);
    const std::size_t sizes[3] = {y_size(g), x_size(g), w_size(g)};
    for (int d = 0; d < 3; ++d) {
      initial[d] = mode == GradientMode::Accumulate ? testing::random_values(sizes[d], seed + 3 + d)
                                                    : std::vector<float>(sizes[d], 0.0f);
      expected[d] = initial[d];
      magnitude[d] = absolute(initial[d]);
    }
    const Stream host;
    const int per_group_in = static_cast<int>(g.in_channels / g.groups);
    const int per_group_out = static_cast<int>(g.out_channels / g.groups);
    cpu::conv2d_forward(host, g, x.data(), w.data(), expected[0].data(), mode);
    cpu::conv2d_backward_data(host, g, w.data(), dy.data(), expected[1].data(), mode);
    cpu::conv2d_backward_filter(host, g, x.data(), dy.data(), expected[2].data(), mode);
    const std::vector<float> ax = absolute(x), aw = absolute(w), ady = absolute(dy);
    const GradientMode add = GradientMode::Accumulate;
    cpu::conv2d_forward(host, g, ax.data(), aw.data(), magnitude[0].data(), add);
    cpu::conv2d_backward_data(host, g, aw.data(), ady.data(), magnitude[1].data(), add);
    cpu::conv2d_backward_filter(host, g, ax.data(), ady.data(), magnitude[2].data(), add);
    terms[0] = per_group_in * g.kernel_h * g.kernel_w;
    terms[1] = per_group_out * g.kernel_h * g.kernel_w;
    terms[2] = static_cast<double>(g.batch * g.out_h() * g.out_w());
  }
};

// Expects |actual - expected| <= 2 gamma_{K+1} |a| . |b| elementwise; reports the worst.
void expect_within_roundoff(const std::vector<float>& actual, const std::vector<float>& expected,
                            const std::vector<float>& magnitude, double terms,
                            const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  const double k = terms + 1.0;
  const double gamma = k * kUnitRoundoff / (1.0 - k * kUnitRoundoff);
  std::size_t failures = 0, worst = 0;
  double worst_ratio = 0.0;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const double bound = 2.0 * gamma * magnitude[i] + 1e-30;
    const double error = std::fabs(static_cast<double>(actual[i]) - expected[i]);
    if (!(error <= bound)) ++failures;  // NaN counts
    const double ratio = std::isnan(error) ? INFINITY : error / bound;
    if (ratio > worst_ratio || i == 0) {
      worst_ratio = ratio;
      worst = i;
    }
  }
  EXPECT_EQ(failures, 0u) << what << ": " << failures << " of " << actual.size()
                          << " elements outside the round-off bound; worst at " << worst << ": GPU "
                          << actual[worst] << ", CPU " << expected[worst] << ", error/bound "
                          << worst_ratio << " (K = " << terms << ")";
}

// Takes every byte `pool` could still hand out on `stream` (free blocks and headroom under
// the cap), largest requests first, in multiples of the pool's smallest block.
std::vector<DeviceBuffer> fill_arena(const std::shared_ptr<PoolAllocator>& pool,
                                     StreamHandle stream) {
  const std::size_t unit = PoolAllocator::kMinBlock;
  const auto whole_units = [unit](std::size_t bytes) { return bytes / unit * unit; };
  std::vector<DeviceBuffer> ballast;
  std::size_t request = whole_units(pool->report().available());
  while (request >= unit) {
    try {
      ballast.emplace_back(pool, request, MemoryTag::Other, stream);
      request = whole_units(pool->report().available());
    } catch (const OutOfMemory&) {
      request = request > unit ? std::max(unit, whole_units(request / 2)) : 0;
    }
  }
  return ballast;
}

// The device copies of a problem's tensors, destinations set to `initial` (Accumulate) or to
// NaN (Overwrite: every element must be written, none read).
struct DeviceProblem {
  Tensor x, w, dy, out[3];
  DeviceProblem(const Problem& p, GradientMode mode) {
    const TensorOptions options = tensor_options(kGpu, MemoryTag::Activation);
    x = Tensor::from_vector(p.x, Shape{static_cast<std::int64_t>(p.x.size())}, options);
    w = Tensor::from_vector(p.w, Shape{static_cast<std::int64_t>(p.w.size())}, options);
    dy = Tensor::from_vector(p.dy, Shape{static_cast<std::int64_t>(p.dy.size())}, options);
    for (int d = 0; d < 3; ++d) {
      out[d] = Tensor::from_vector(p.initial[d],
                                   Shape{static_cast<std::int64_t>(p.initial[d].size())}, options);
      if (mode == GradientMode::Overwrite) out[d].fill(std::nanf(""));
    }
  }
  void run(const Stream& stream, const ConvGeometry& g, Direction d, GradientMode mode) {
    switch (d) {
      case Direction::Forward:
        conv2d_forward(stream, g, x.data<float>(), w.data<float>(), out[0].data<float>(), mode);
        break;
      case Direction::BackwardData:
        conv2d_backward_data(stream, g, w.data<float>(), dy.data<float>(), out[1].data<float>(),
                             mode);
        break;
      case Direction::BackwardFilter:
        conv2d_backward_filter(stream, g, x.data<float>(), dy.data<float>(), out[2].data<float>(),
                               mode);
        break;
    }
  }
};

const char* mode_name(GradientMode mode) {
  return mode == GradientMode::Overwrite ? "overwrite" : "accumulate";
}

TEST(ConvNoWorkspaceGpu, ZeroWorkspaceAlgorithmsMatchTheCpuAndAllocateNothing) {
  MB_SKIP_WITHOUT_CUDA();
  testing::ScopedCudaMath math(/*deterministic=*/false);
  const Stream stream = Stream::compute(kGpu);
  std::uint32_t seed = 10;
  for (const Case& c : kCases) {
    for (const GradientMode mode : {GradientMode::Overwrite, GradientMode::Accumulate}) {
      const ConvGeometry g = geometry_of(c);
      const std::string what = g.to_string() + ", " + mode_name(mode);
      SCOPED_TRACE(what);
      const Problem problem(g, seed += 10, mode);
      auto pool = std::make_shared<PoolAllocator>(make_cuda_memory_resource(0), PoolOptions{kCap});
      ScopedAllocator scope(kGpu, pool);
      DeviceProblem device(problem, mode);
      stream.synchronize();
      std::vector<DeviceBuffer> ballast = fill_arena(pool, stream.handle());
      ASSERT_EQ(pool->report().available(), 0u) << "the arena still has room:\n"
                                                << pool->report().to_string();
      const PoolStats before = pool->stats();
      for (const Direction d : kDirections) {
        try {
          device.run(stream, g, d, mode);
        } catch (const OutOfMemory& error) {
          ADD_FAILURE() << direction_name(d)
                        << ": no algorithm without a workspace: " << error.message();
        }
      }
      stream.synchronize();
      const PoolStats after = pool->stats();
      EXPECT_EQ(after.allocations, before.allocations) << "a workspace was allocated";
      EXPECT_EQ(after.ooms, before.ooms) << "a workspace was asked for";
      ballast.clear();
      for (const Direction d : kDirections) {
        const int i = static_cast<int>(d);
        expect_within_roundoff(device.out[i].to_vector(), problem.expected[i], problem.magnitude[i],
                               problem.terms[i], direction_name(d));
      }
    }
  }
}

TEST(ConvNoWorkspaceGpu, DeterministicModeRunsWithoutAWorkspaceOrSaysWhichOneIsMissing) {
  MB_SKIP_WITHOUT_CUDA();
  testing::ScopedCudaMath math(/*deterministic=*/true);
  const Stream stream = Stream::compute(kGpu);
  std::uint32_t seed = 1000;
  for (const Case& c : kCases) {
    const GradientMode mode = GradientMode::Accumulate;
    const ConvGeometry g = geometry_of(c);
    SCOPED_TRACE(g.to_string());
    const Problem problem(g, seed += 10, mode);
    auto pool = std::make_shared<PoolAllocator>(make_cuda_memory_resource(0), PoolOptions{kCap});
    ScopedAllocator scope(kGpu, pool);
    DeviceProblem device(problem, mode);
    stream.synchronize();
    std::vector<DeviceBuffer> ballast = fill_arena(pool, stream.handle());
    ASSERT_EQ(pool->report().available(), 0u) << pool->report().to_string();
    std::vector<Direction> refused;
    for (const Direction d : kDirections) {
      const PoolStats before = pool->stats();
      try {
        device.run(stream, g, d, mode);
      } catch (const OutOfMemory& error) {
        // Raised while choosing, before any allocation: the destination is untouched.
        refused.push_back(d);
        const std::string message = error.message();
        EXPECT_NE(message.find(std::string("cuDNN ") + direction_name(d) + " workspace"),
                  std::string::npos)
            << message;
        EXPECT_NE(message.find("micro-batch"), std::string::npos) << message;
        EXPECT_GT(error.requested_bytes(), 0u) << "a zero-byte workspace always fits";
        EXPECT_EQ(error.report().available(), 0u);
      }
      stream.synchronize();
      EXPECT_EQ(pool->stats().allocations, before.allocations) << direction_name(d);
      EXPECT_EQ(pool->stats().ooms, before.ooms) << direction_name(d);
    }
    ballast.clear();
    for (const Direction d : refused) {
      ::testing::Test::RecordProperty(g.to_string() + " " + direction_name(d),
                                      "no deterministic algorithm without a workspace");
      device.run(stream, g, d, mode);  // with the arena's room back
    }
    for (const Direction d : kDirections) {
      const int i = static_cast<int>(d);
      expect_within_roundoff(device.out[i].to_vector(), problem.expected[i], problem.magnitude[i],
                             problem.terms[i], direction_name(d));
    }
  }
}

}  // namespace
}  // namespace mb
