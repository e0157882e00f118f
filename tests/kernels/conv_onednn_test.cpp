// The CPU convolution's oneDNN path (kernels/cpu/conv_onednn.h) against an independent
// truth: direct convolutions summed in double, within the Higham bound gamma_k * sum |a||b|
// (k the length of each output's sum), for the three ops in both modes, on geometries with
// groups, dilation, strides that leave a far-side pad, 1x1 and 7x7 kernels and batches that
// are not a multiple of its chunk. The reference path (im2col + GEMM) is held to the same
// truth. Thread-count invariance of both paths: tests/kernels/threads_test.cpp.
#include "kernels/cpu/conv_onednn.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "allocator/pool_allocator.h"
#include "kernels/conv.h"
#include "runtime/allocator_registry.h"
#include "runtime/error.h"
#include "tests/kernels/conv_test_util.h"

namespace mb {
namespace {

using testing::random_values;

// Truth: each op as the direct sum over (input channel of the group, kernel row, column) in
// double, with the sum of absolute terms for the error bound.
struct Truth {
  std::vector<double> value, magnitude;
  std::int64_t terms = 0;  // the longest sum behind one value
};

// Visits every (n, o, i, j, c, ki, kj) term of the convolution with its x and w indices.
template <typename Visit>
void for_each_term(const ConvGeometry& g, Visit&& visit) {
  const std::int64_t group_in = g.in_channels / g.groups, group_out = g.out_channels / g.groups;
  for (std::int64_t n = 0; n < g.batch; ++n)
    for (std::int64_t o = 0; o < g.out_channels; ++o) {
      const std::int64_t group = o / group_out;
      for (std::int64_t i = 0; i < g.out_h(); ++i)
        for (std::int64_t j = 0; j < g.out_w(); ++j)
          for (std::int64_t c = 0; c < group_in; ++c)
            for (int ki = 0; ki < g.kernel_h; ++ki)
              for (int kj = 0; kj < g.kernel_w; ++kj) {
                const std::int64_t h = i * g.stride - g.padding + ki * g.dilation;
                const std::int64_t w = j * g.stride - g.padding + kj * g.dilation;
                if (h < 0 || h >= g.in_h || w < 0 || w >= g.in_w) continue;
                const std::int64_t xi =
                    ((n * g.in_channels + group * group_in + c) * g.in_h + h) * g.in_w + w;
                const std::int64_t wi = ((o * group_in + c) * g.kernel_h + ki) * g.kernel_w + kj;
                const std::int64_t yi = ((n * g.out_channels + o) * g.out_h() + i) * g.out_w() + j;
                visit(xi, wi, yi);
              }
    }
}

enum class Op { Forward, Data, Filter };

Truth truth(Op op, const ConvGeometry& g, const std::vector<float>& a, const std::vector<float>& b,
            std::size_t out_size) {
  Truth t;
  t.value.assign(out_size, 0.0);
  t.magnitude.assign(out_size, 0.0);
  std::vector<std::int64_t> count(out_size, 0);
  for_each_term(g, [&](std::int64_t xi, std::int64_t wi, std::int64_t yi) {
    std::int64_t at = 0;
    double term = 0.0;
    if (op == Op::Forward) {  // a = x, b = w
      at = yi;
      term = static_cast<double>(a[xi]) * b[wi];
    } else if (op == Op::Data) {  // a = w, b = dy
      at = xi;
      term = static_cast<double>(a[wi]) * b[yi];
    } else {  // a = x, b = dy
      at = wi;
      term = static_cast<double>(a[xi]) * b[yi];
    }
    t.value[at] += term;
    t.magnitude[at] += std::fabs(term);
    ++count[at];
  });
  for (std::int64_t c : count) t.terms = std::max(t.terms, c);
  return t;
}

constexpr auto geometry = testing::conv_geometry;

struct Case {
  const char* name;
  ConvGeometry g;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> list = {
      {"3x3 pad 1, batch 17 (chunks of 8, 8, 1)", geometry(17, 16, 12, 16, 3, 1, 1, 1, 1)},
      {"3x3 stride 2 pad 1 on 8 px (no far-side pad)", geometry(9, 8, 8, 16, 3, 2, 1, 1, 1)},
      {"7x7 stride 2 pad 3, 3 channels (a stem)", geometry(4, 3, 20, 8, 7, 2, 3, 1, 1)},
      {"1x1 stride 2 (a downsample)", geometry(10, 16, 8, 32, 1, 2, 0, 1, 1)},
      {"1x1, batch 3", geometry(3, 24, 6, 40, 1, 1, 0, 1, 1)},
      {"groups 2, dilation 2", geometry(9, 8, 14, 8, 3, 1, 2, 2, 2)},
      {"depthwise stride 2", geometry(12, 16, 10, 16, 3, 2, 1, 1, 16)},
      {"5x5 no padding, odd channels", geometry(5, 5, 11, 7, 5, 1, 0, 1, 1)},
      {"one sample", geometry(1, 32, 9, 32, 3, 1, 1, 1, 1)},
  };
  return list;
}

// Runs `op` on the path chosen; returns the destination (which held `initial` before:
// Accumulate adds onto it).
std::vector<float> run(Op op, const ConvGeometry& g, const std::vector<float>& a,
                       const std::vector<float>& b, std::vector<float> out, GradientMode mode) {
  const Stream host;
  if (op == Op::Forward) {
    conv2d_forward(host, g, a.data(), b.data(), out.data(), mode);
  } else if (op == Op::Data) {
    conv2d_backward_data(host, g, a.data(), b.data(), out.data(), mode);
  } else {
    conv2d_backward_filter(host, g, a.data(), b.data(), out.data(), mode);
  }
  return out;
}

const char* op_name(Op op) {
  return op == Op::Forward ? "forward" : op == Op::Data ? "backward-data" : "backward-filter";
}

void check_path(cpu::CpuConvPath path) {
  const cpu::CpuConvPath saved = cpu::cpu_conv_path();
  cpu::set_cpu_conv_path(path);
  for (const Case& c : cases()) {
    const ConvGeometry& g = c.g;
    const std::size_t x_size = static_cast<std::size_t>(g.batch * g.in_channels * g.in_h * g.in_w);
    const std::size_t w_size = static_cast<std::size_t>(
        g.out_channels * (g.in_channels / g.groups) * g.kernel_h * g.kernel_w);
    const std::size_t y_size =
        static_cast<std::size_t>(g.batch * g.out_channels * g.out_h() * g.out_w());
    const auto x = random_values(x_size, 1), w = random_values(w_size, 2),
               dy = random_values(y_size, 3);
    for (Op op : {Op::Forward, Op::Data, Op::Filter}) {
      const std::vector<float>& a = op == Op::Data ? w : x;
      const std::vector<float>& b = op == Op::Forward ? w : dy;
      const std::size_t out_size = op == Op::Forward ? y_size : op == Op::Data ? x_size : w_size;
      const Truth t = truth(op, g, a, b, out_size);
      const auto initial = random_values(out_size, 4);
      for (GradientMode mode : {GradientMode::Overwrite, GradientMode::Accumulate}) {
        const bool add = mode == GradientMode::Accumulate;
        const std::int64_t runs_before = cpu::onednn_conv_runs();
        const std::vector<float> got = run(op, g, a, b, initial, mode);
        const std::string what =
            std::string(c.name) + " " + op_name(op) + (add ? " accumulate" : " overwrite");
        if (path == cpu::CpuConvPath::OneDnn) {
          // The filter gradient of a batch that makes one fixed chunk stays on the reference.
          const bool filter_single_chunk = op == Op::Filter && g.batch < 2;
          EXPECT_EQ(cpu::onednn_conv_runs() - runs_before, filter_single_chunk ? 0 : 1)
              << what << ": the oneDNN path did not run";
        }
        const double gamma =
            (static_cast<double>(t.terms) + 2) * std::numeric_limits<float>::epsilon();
        std::size_t bad = 0;
        double worst = 0.0;
        for (std::size_t i = 0; i < out_size; ++i) {
          const double expected = t.value[i] + (add ? initial[i] : 0.0);
          const double bound = gamma * (t.magnitude[i] + (add ? std::fabs(initial[i]) : 0.0)) +
                               std::numeric_limits<float>::min();
          const double error = std::fabs(got[i] - expected);
          worst = std::max(worst, error / bound);
          bad += error > bound;
        }
        EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << out_size
                           << " values outside the bound, worst at " << worst << "x it";
      }
    }
  }
  cpu::set_cpu_conv_path(saved);
}

TEST(CpuConvolution, TheOneDnnPathMatchesDirectSumsWithinTheRoundingBound) {
  if (!cpu::onednn_built()) GTEST_SKIP() << "built without oneDNN (libdnnl-dev not found)";
  check_path(cpu::CpuConvPath::OneDnn);
}

TEST(CpuConvolution, TheReferencePathMatchesDirectSumsWithinTheRoundingBound) {
  check_path(cpu::CpuConvPath::Reference);
}

TEST(CpuConvolution, TheOneDnnWorkspaceDoesNotGrowWithTheBatch) {
  // Chunks of fixed size, per thread: the workspace a forward and a backward-data take is
  // the same for 16 samples and for 64 (so the planner's bytes per sample stay what the
  // layers keep).
  if (!cpu::onednn_built()) GTEST_SKIP() << "built without oneDNN (libdnnl-dev not found)";
  const cpu::CpuConvPath saved = cpu::cpu_conv_path();
  cpu::set_cpu_conv_path(cpu::CpuConvPath::OneDnn);
  auto peak_workspace = [](std::int64_t batch, Op op) {
    const ConvGeometry g = geometry(batch, 16, 16, 16, 3, 1, 1, 1, 1);
    const std::size_t io = static_cast<std::size_t>(batch * 16 * 16 * 16);
    const auto a = random_values(op == Op::Data ? 16 * 16 * 9 : io, 1);
    const auto b = random_values(op == Op::Forward ? 16 * 16 * 9 : io, 2);
    auto pool = std::make_shared<PoolAllocator>(make_host_memory_resource(), PoolOptions{});
    ScopedAllocator scope(Device::cpu(), pool);
    run(op, g, a, b, std::vector<float>(io), GradientMode::Overwrite);
    return pool->peak_allocated();
  };
  for (Op op : {Op::Forward, Op::Data}) {
    EXPECT_EQ(peak_workspace(16, op), peak_workspace(64, op)) << op_name(op);
  }
  cpu::set_cpu_conv_path(saved);
}

TEST(CpuConvolution, ChoosingOneDnnWithoutItNamesTheFix) {
  if (cpu::onednn_built()) GTEST_SKIP() << "built with oneDNN";
  try {
    cpu::set_cpu_conv_path(cpu::CpuConvPath::OneDnn);
    FAIL() << "no error";
  } catch (const InvalidArgument& error) {
    EXPECT_NE(std::string(error.what()).find("libdnnl-dev"), std::string::npos);
  }
}

}  // namespace
}  // namespace mb
