// Conv2d (and Linear) forward + backward timing on ResNet-like shapes, CPU and CUDA.
//
// Each benchmark runs one forward and one backward (Overwrite, input gradient on except for
// the stem) per iteration and reports FLOP/s, counting 2 x multiply-adds for the forward
// and for each of the backward products (input and weight gradient). The CPU numbers are
// also given as a percentage of a large square SGEMM measured in the same run (the best the
// BLAS does on this machine). GPU variants time with CUDA events (manual time) at a larger
// batch, with TF32 as the context allows, and skip without a device.
// After timing, the output and the weight gradient are checked to be finite and non-zero.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "allocator/default_allocator.h"
#include "kernels/cpu/gemm.h"
#include "layers/conv2d.h"
#include "layers/linear.h"
#include "runtime/context.h"
#include "runtime/device.h"
#include "runtime/gradient_mode.h"
#include "runtime/stream.h"

namespace mb {
namespace {

struct ConvShape {
  const char* name;
  std::int64_t in_channels, out_channels, size;
  int kernel, stride, padding;
  bool input_grad;
};

// A CPU tensor of U(-1, 1) values.
Tensor random_tensor(const Shape& shape, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> values(static_cast<std::size_t>(shape.numel()));
  for (float& v : values) v = dist(rng);
  return Tensor::from_vector(values, shape);
}

const ConvShape kShapes[] = {
    {"stem_7x7s2_3to64_224", 3, 64, 224, 7, 2, 3, false},
    {"3x3_64to64_56", 64, 64, 56, 3, 1, 1, true},
    {"3x3s2_64to128_56", 64, 128, 56, 3, 2, 1, true},
    {"3x3_128to128_28", 128, 128, 28, 3, 1, 1, true},
    {"1x1_64to256_56", 64, 256, 56, 1, 1, 0, true},
    {"3x3_256to256_14", 256, 256, 14, 3, 1, 1, true},
};

// Best SGEMM rate (FLOP/s) at 1024^3 on the CPU, measured once per run.
double cpu_gemm_peak() {
  static const double peak = [] {
    const std::int64_t n = 1024;
    std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n, 0.0f);
    double best = 0.0;
    for (int repeat = 0; repeat < 5; ++repeat) {
      const auto start = std::chrono::steady_clock::now();
      cpu::gemm(Stream(), false, false, n, n, n, a.data(), n, b.data(), n, c.data(), n,
                GradientMode::Overwrite);
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      best = std::max(best, 2.0 * n * n * n / seconds);
    }
    return best;
  }();
  return peak;
}

// Forward + backward FLOPs of one iteration.
std::int64_t step_flops(const Module& module, const Shape& input, bool input_grad) {
  const std::int64_t forward = module.forward_flops(input);
  return forward * (input_grad ? 3 : 2);
}

bool finite_and_nonzero(const std::vector<float>& values) {
  bool nonzero = false;
  for (float v : values) {
    if (!std::isfinite(v)) return false;
    nonzero = nonzero || v != 0.0f;
  }
  return nonzero;
}

void run_conv(benchmark::State& state, const ConvShape& s, const Device& device,
              std::int64_t batch) {
  Conv2d conv(s.in_channels, s.out_channels, s.kernel, s.stride, s.padding, 1, 1, false);
  conv.to_device(device);
  const Shape input_shape{batch, s.in_channels, s.size, s.size};
  Tensor x = random_tensor(input_shape, 1).to(device);
  Tensor g = random_tensor(conv.output_shape(input_shape), 2).to(device);
  BackwardState backward_state;
  backward_state.need_input_grad = s.input_grad;
  Tensor y;
  double cpu_seconds = 0.0;
  if (device.is_cuda()) {
    // Warm up: the first call chooses and caches the cuDNN algorithms.
    y = conv.forward(x, RunState{});
    conv.backward(g, backward_state);
    Timer timer(device, Context::get(device).compute_stream());
    for (auto _ : state) {
      timer.start();
      y = conv.forward(x, RunState{});
      conv.backward(g, backward_state);
      timer.stop();
      state.SetIterationTime(timer.elapsed_ms() / 1e3);
    }
    Context::get(device).synchronize();
  } else {
    const auto start = std::chrono::steady_clock::now();
    for (auto _ : state) {
      y = conv.forward(x, RunState{});
      conv.backward(g, backward_state);
    }
    cpu_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  const double flops = static_cast<double>(step_flops(conv, input_shape, s.input_grad));
  state.counters["FLOP/s"] =
      benchmark::Counter(flops * state.iterations(), benchmark::Counter::kIsRate);
  if (device.is_cpu()) {
    // Rate of this run divided by the measured GEMM peak, in percent.
    state.counters["pct_of_gemm_peak"] =
        100.0 * flops * static_cast<double>(state.iterations()) / cpu_seconds / cpu_gemm_peak();
  }
  if (!finite_and_nonzero(y.to_vector()) || !finite_and_nonzero(conv.weight().grad.to_vector())) {
    state.SkipWithError("output or weight gradient is not finite and non-zero");
  }
}

void register_benchmarks() {
  for (const ConvShape& s : kShapes) {
    benchmark::RegisterBenchmark(
        (std::string("BM_Conv2dCpu/") + s.name).c_str(),
        [s](benchmark::State& state) { run_conv(state, s, Device::cpu(), 2); })
        ->UseRealTime()  // BLAS runs on several threads: rates per wall-clock second
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(
        (std::string("BM_Conv2dGpu/") + s.name).c_str(),
        [s](benchmark::State& state) {
          const CudaAvailability cuda = cuda_availability();
          if (!cuda.available) {
            state.SkipWithError(("no CUDA device: " + cuda.reason).c_str());
            return;
          }
          run_conv(state, s, Device::cuda(0), 32);
        })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }
}

// Linear 2048 -> 1000 (ResNet-50 classifier) at batch 32 on the CPU.
void BM_LinearCpu(benchmark::State& state) {
  Linear linear(2048, 1000);
  Tensor x = random_tensor({32, 2048}, 1);
  Tensor g = random_tensor({32, 1000}, 2);
  Tensor y;
  for (auto _ : state) {
    y = linear.forward(x, RunState{});
    linear.backward(g, BackwardState{});
  }
  const double flops = 3.0 * static_cast<double>(linear.forward_flops(x.shape()));
  state.counters["FLOP/s"] =
      benchmark::Counter(flops * state.iterations(), benchmark::Counter::kIsRate);
  if (!finite_and_nonzero(y.to_vector())) state.SkipWithError("output is not finite");
}
BENCHMARK(BM_LinearCpu)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace mb

int main(int argc, char** argv) {
  mb::install_default_allocators();
  mb::register_benchmarks();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
