// Memory-bound kernels of the elementwise family (ReLU, add, add_into, scale, fill, concat,
// nearest upsample, dropout, fused softmax cross-entropy), CPU and CUDA.
//
// Every benchmark reports bytes processed (reads + writes of one pass) and, as a counter,
// the percentage of a copy bandwidth measured in the same run (memcpy on the CPU,
// cudaMemcpy device-to-device on the GPU). The working sets (16 Mi floats per operand,
// 64 MiB) exceed an H100's 50 MiB L2, so every GPU pass streams from HBM. GPU variants time
// with CUDA events (manual time) and skip without a device. After timing, each output is
// checked: finite on the CPU,
// equal to the CPU twin on the GPU.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "allocator/default_allocator.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/dropout.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/softmax_cross_entropy.h"
#include "kernels/cpu/upsample.h"
#include "runtime/context.h"
#include "runtime/device.h"
#include "runtime/tensor.h"

#if MB_WITH_CUDA
#include "kernels/cuda/activation.h"
#include "kernels/cuda/dropout.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/softmax_cross_entropy.h"
#include "kernels/cuda/upsample.h"
#include "runtime/cuda_check.h"
#include "runtime/cuda_context.h"
#endif

namespace mb {
namespace {

constexpr std::int64_t kCount = 16 * 1024 * 1024;      // floats per operand
constexpr std::int64_t kPlanes = 256, kSide = 128;     // upsample: 256 planes of 128x128 -> 256x256
constexpr std::int64_t kRows = 4096, kClasses = 1000;  // classification loss

std::vector<float> random_values(std::int64_t count, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<float> values(static_cast<std::size_t>(count));
  for (float& v : values) v = dist(rng);
  return values;
}

std::vector<std::int32_t> labels_for(std::int64_t rows) {
  std::vector<std::int32_t> labels(static_cast<std::size_t>(rows));
  for (std::int64_t i = 0; i < rows; ++i)
    labels[i] = static_cast<std::int32_t>((i * 37) % kClasses);
  return labels;
}

cpu::DropoutKey dropout_key() {
  cpu::DropoutKey key;
  key.p = 0.5f;
  key.seed = 1234;
  key.step = 1;
  return key;
}

// Best host copy rate in bytes/s (read + write), measured once per run.
double cpu_copy_peak() {
  static const double peak = [] {
    std::vector<float> a(kCount, 1.0f), b(kCount, 0.0f);
    double best = 0.0;
    for (int repeat = 0; repeat < 5; ++repeat) {
      const auto start = std::chrono::steady_clock::now();
      std::memcpy(b.data(), a.data(), a.size() * sizeof(float));
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      best = std::max(best, 2.0 * a.size() * sizeof(float) / seconds);
    }
    benchmark::DoNotOptimize(b.data());
    return best;
  }();
  return peak;
}

// One op: buffers (host), the bytes one pass moves, and how to run it on the CPU.
struct Op {
  const char* name;
  std::int64_t bytes;
};

struct Buffers {
  std::vector<float> a = random_values(kCount, 1);
  std::vector<float> b = random_values(kCount, 2);
  std::vector<float> out = std::vector<float>(2 * kCount);
  std::vector<std::int32_t> labels = labels_for(kRows);
};

Buffers& buffers() {
  static Buffers instance;
  return instance;
}

constexpr std::int64_t kFloat = sizeof(float);

void run_cpu(const std::string& op, Buffers& m) {
  if (op == "relu_forward") {
    cpu::relu_forward(m.a.data(), m.out.data(), kCount);
  } else if (op == "relu_backward") {
    cpu::relu_backward(m.a.data(), m.b.data(), m.out.data(), kCount);
  } else if (op == "add") {
    cpu::add(m.a.data(), m.b.data(), m.out.data(), kCount);
  } else if (op == "add_into") {
    cpu::add_into(m.out.data(), m.a.data(), kCount);
  } else if (op == "scale") {
    cpu::scale(m.out.data(), 1.0f, kCount);
  } else if (op == "fill") {
    cpu::fill(m.out.data(), 0.5f, kCount);
  } else if (op == "concat_channels") {
    cpu::concat_channels(m.a.data(), m.b.data(), m.out.data(), 64, 32, 32, kCount / (64 * 32));
  } else if (op == "upsample_forward") {
    cpu::upsample_nearest2d_forward(m.a.data(), m.out.data(), kPlanes, kSide, kSide, 2);
  } else if (op == "upsample_backward") {
    cpu::upsample_nearest2d_backward(m.a.data(), m.out.data(), kPlanes / 4, kSide, kSide, 2);
  } else if (op == "dropout") {
    cpu::dropout_apply(m.a.data(), m.out.data(), 64, kCount / 64, dropout_key());
  } else if (op == "softmax_cross_entropy") {
    benchmark::DoNotOptimize(cpu::softmax_cross_entropy(
        m.a.data(), m.labels.data(), kRows, kClasses, 1, 0.1f, -100, 1.0f, m.out.data()));
  }
}

std::int64_t bytes_of(const std::string& op) {
  if (op == "relu_forward" || op == "scale" || op == "dropout") return 2 * kCount * kFloat;
  if (op == "relu_backward" || op == "add" || op == "add_into") return 3 * kCount * kFloat;
  if (op == "fill") return kCount * kFloat;
  if (op == "concat_channels") return 4 * kCount * kFloat;
  if (op == "upsample_forward") return 5 * kPlanes * kSide * kSide * kFloat;
  if (op == "upsample_backward") return 5 * (kPlanes / 4) * kSide * kSide * kFloat;
  if (op == "softmax_cross_entropy") return 2 * kRows * kClasses * kFloat;
  return 0;
}

const char* const kOps[] = {"relu_forward",
                            "relu_backward",
                            "add",
                            "add_into",
                            "scale",
                            "fill",
                            "concat_channels",
                            "upsample_forward",
                            "upsample_backward",
                            "dropout",
                            "softmax_cross_entropy"};

// The output of one pass, from the CPU twin on fresh inputs (for validation).
std::vector<float> reference_output(const std::string& op, std::int64_t count) {
  Buffers& m = buffers();
  std::fill(m.out.begin(), m.out.end(), 0.0f);
  run_cpu(op, m);
  return std::vector<float>(m.out.begin(), m.out.begin() + count);
}

std::int64_t output_count(const std::string& op) {
  if (op == "concat_channels") return 2 * kCount;
  if (op == "upsample_forward") return 4 * kPlanes * kSide * kSide;
  if (op == "upsample_backward") return (kPlanes / 4) * kSide * kSide;
  if (op == "softmax_cross_entropy") return kRows * kClasses;
  return kCount;
}

void BM_Cpu(benchmark::State& state, std::string op) {
  Buffers& m = buffers();
  double seconds = 0.0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    run_cpu(op, m);
    benchmark::ClobberMemory();
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  const std::int64_t bytes = bytes_of(op);
  state.SetBytesProcessed(state.iterations() * bytes);
  state.counters["pct_of_memcpy"] =
      100.0 * static_cast<double>(bytes) * state.iterations() / seconds / cpu_copy_peak();
  // Validation: the output is finite (the GPU variants compare against this CPU twin).
  for (std::size_t i = 0; i < static_cast<std::size_t>(output_count(op)); i += 4099) {
    if (!std::isfinite(m.out[i])) {
      state.SkipWithError("non-finite output");
      break;
    }
  }
}

#if MB_WITH_CUDA
struct DeviceBuffers {
  Tensor a, b, out, labels, totals;
  DeviceBuffers() {
    const Device gpu = Device::cuda(0);
    a = Tensor::from_vector(buffers().a, Shape{kCount}).to(gpu);
    b = Tensor::from_vector(buffers().b, Shape{kCount}).to(gpu);
    out = Tensor::zeros(Shape{2 * kCount}, TensorOptions{DType::Float32, gpu});
    labels = Tensor::from_vector_int(buffers().labels, Shape{kRows}).to(gpu);
    totals = Tensor::zeros(Shape{8}, TensorOptions{DType::Float32, gpu});
  }
};

void run_gpu(const std::string& op, DeviceBuffers& m, cudaStream_t s) {
  const float* a = m.a.data<float>();
  const float* b = m.b.data<float>();
  float* out = m.out.data<float>();
  if (op == "relu_forward") {
    cuda::relu_forward(a, out, kCount, s);
  } else if (op == "relu_backward") {
    cuda::relu_backward(a, b, out, kCount, s);
  } else if (op == "add") {
    cuda::add(a, b, out, kCount, s);
  } else if (op == "add_into") {
    cuda::add_into(out, a, kCount, s);
  } else if (op == "scale") {
    cuda::scale(out, 1.0f, kCount, s);
  } else if (op == "fill") {
    cuda::fill(out, 0.5f, kCount, s);
  } else if (op == "concat_channels") {
    cuda::concat_channels(a, b, out, 64, 32, 32, kCount / (64 * 32), s);
  } else if (op == "upsample_forward") {
    cuda::upsample_nearest2d_forward(a, out, kPlanes, kSide, kSide, 2, s);
  } else if (op == "upsample_backward") {
    cuda::upsample_nearest2d_backward(a, out, kPlanes / 4, kSide, kSide, 2, s);
  } else if (op == "dropout") {
    cuda::dropout_apply(a, out, 64, kCount / 64, dropout_key(), s);
  } else if (op == "softmax_cross_entropy") {
    cuda::softmax_cross_entropy(a, m.labels.data<std::int32_t>(), kRows, kClasses, 1, 0.1f, -100,
                                1.0f, cuda::CrossEntropyGradScale::Sum, out,
                                static_cast<cuda::CrossEntropyDeviceTotals*>(m.totals.raw_data()),
                                s);
  }
}

// Device-to-device copy rate in bytes/s (read + write), measured once per run.
double gpu_copy_peak(DeviceBuffers& m, cudaStream_t stream) {
  static const double peak = [&] {
    Timer timer(Device::cuda(0), stream);
    double best = 0.0;
    for (int repeat = 0; repeat < 10; ++repeat) {
      timer.start();
      MB_CUDA_CHECK(cudaMemcpyAsync(m.out.data<float>(), m.a.data<float>(), kCount * kFloat,
                                    cudaMemcpyDeviceToDevice, stream));
      timer.stop();
      best = std::max(best, 2.0 * kCount * kFloat / (timer.elapsed_ms() * 1e-3));
    }
    return best;
  }();
  return peak;
}

void BM_Gpu(benchmark::State& state, std::string op) {
  if (!cuda_availability().available) {
    state.SkipWithError("no CUDA device");
    return;
  }
  static DeviceBuffers m;
  cudaStream_t stream = compute_stream(Device::cuda(0));
  Timer timer(Device::cuda(0), stream);
  run_gpu(op, m, stream);  // warm-up
  double seconds = 0.0;
  for (auto _ : state) {
    timer.start();
    run_gpu(op, m, stream);
    timer.stop();
    const double elapsed = timer.elapsed_ms() * 1e-3;
    state.SetIterationTime(elapsed);
    seconds += elapsed;
  }
  const std::int64_t bytes = bytes_of(op);
  state.SetBytesProcessed(state.iterations() * bytes);
  state.counters["pct_of_d2d_copy"] =
      100.0 * static_cast<double>(bytes) * state.iterations() / seconds / gpu_copy_peak(m, stream);
  if (op != "add_into" && op != "scale") {
    run_gpu(op, m, stream);
    const std::int64_t count = output_count(op);
    const std::vector<float> gpu = m.out.slice(0, count).to_vector();
    const std::vector<float> expected = reference_output(op, count);
    for (std::size_t i = 0; i < expected.size(); ++i) {
      if (std::fabs(gpu[i] - expected[i]) > 1e-5f + 1e-4f * std::fabs(expected[i])) {
        state.SkipWithError("GPU output differs from the CPU twin");
        break;
      }
    }
  }
}
#endif

void register_benchmarks() {
  for (const char* op : kOps) {
    benchmark::RegisterBenchmark((std::string("cpu/") + op).c_str(), BM_Cpu, std::string(op))
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
#if MB_WITH_CUDA
    benchmark::RegisterBenchmark((std::string("cuda/") + op).c_str(), BM_Gpu, std::string(op))
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
#endif
  }
}

}  // namespace
}  // namespace mb

int main(int argc, char** argv) {
  mb::install_default_allocators();
  benchmark::Initialize(&argc, argv);
  mb::register_benchmarks();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
