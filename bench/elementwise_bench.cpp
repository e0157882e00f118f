// Memory-bound kernels of the elementwise family (ReLU, add, add_into, concat, nearest
// upsample, dropout, fused softmax cross-entropy), CPU and CUDA.
//
// Every benchmark reports bytes processed (reads + writes of one pass) and, as a counter,
// the percentage of a copy bandwidth measured in the same run (memcpy on the CPU, a
// device-to-device copy on the GPU). The working sets (16 Mi floats per operand, 64 MiB)
// exceed an H100's 50 MiB L2, so every GPU pass streams from HBM. Both backends run the
// same public op (kernels/<op>.h), on Stream() or on the GPU's compute stream; GPU variants
// time with CUDA events (manual time) and skip without a device. After timing, each output
// is checked: finite on the CPU, equal to the CPU twin on the GPU.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "allocator/default_allocator.h"
#include "kernels/activation.h"
#include "kernels/cuda/softmax_cross_entropy.h"
#include "kernels/dropout.h"
#include "kernels/elementwise.h"
#include "kernels/softmax_cross_entropy.h"
#include "kernels/upsample.h"
#include "runtime/context.h"
#include "runtime/device.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"

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

DropoutKey dropout_key() {
  DropoutKey key;
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

// Host buffers: the CPU variants' operands and the GPU variants' inputs.
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

// The operands of one pass, in the memory of the stream's device.
struct Operands {
  const float* a;
  const float* b;
  float* out;
  const std::int32_t* labels;
  void* loss_totals;  // CUDA: device totals of the asynchronous loss launch; CPU: unused
};

Operands host_operands(Buffers& m) {
  return {m.a.data(), m.b.data(), m.out.data(), m.labels.data(), nullptr};
}

constexpr std::int64_t kFloat = sizeof(float);

// The fused loss as a training step pays for it on the device: on CUDA the launch-only
// variant (the public op would add a wait and a copy of the totals to the host), on the CPU
// the op itself.
void softmax_cross_entropy_pass(const Stream& stream, const Operands& m) {
  if (stream.is_cpu()) {
    benchmark::DoNotOptimize(softmax_cross_entropy(stream, m.a, m.labels, kRows, kClasses, 1, 0.1f,
                                                   -100, 1.0f, CrossEntropyGradScale::Sum, m.out));
    return;
  }
#if MB_WITH_CUDA
  cuda::softmax_cross_entropy_launch(stream, m.a, m.labels, kRows, kClasses, 1, 0.1f, -100, 1.0f,
                                     CrossEntropyGradScale::Sum, m.out,
                                     static_cast<cuda::CrossEntropyDeviceTotals*>(m.loss_totals));
#else
  throw_cuda_not_built("softmax_cross_entropy_launch on " + stream.device().str());
#endif
}

// One pass of `op` on `stream` (the CPU twin on Stream(), the CUDA twin on a GPU stream).
void run(const std::string& op, const Stream& stream, const Operands& m) {
  if (op == "relu_forward") {
    relu_forward(stream, m.a, m.out, kCount);
  } else if (op == "relu_backward") {
    relu_backward(stream, m.a, m.b, m.out, kCount);
  } else if (op == "add") {
    add(stream, m.a, m.b, m.out, kCount);
  } else if (op == "add_into") {
    add_into(stream, m.out, m.a, kCount);
  } else if (op == "concat_channels") {
    concat_channels(stream, m.a, m.b, m.out, 64, 32, 32, kCount / (64 * 32));
  } else if (op == "upsample_forward") {
    upsample_nearest2d_forward(stream, m.a, m.out, kPlanes, kSide, kSide, 2);
  } else if (op == "upsample_backward") {
    upsample_nearest2d_backward(stream, m.a, m.out, kPlanes / 4, kSide, kSide, 2);
  } else if (op == "dropout") {
    dropout_apply(stream, m.a, m.out, 64, kCount / 64, dropout_key());
  } else if (op == "softmax_cross_entropy") {
    softmax_cross_entropy_pass(stream, m);
  }
}

std::int64_t bytes_of(const std::string& op) {
  if (op == "relu_forward" || op == "dropout") return 2 * kCount * kFloat;
  if (op == "relu_backward" || op == "add" || op == "add_into") return 3 * kCount * kFloat;
  if (op == "concat_channels") return 4 * kCount * kFloat;
  if (op == "upsample_forward") return 5 * kPlanes * kSide * kSide * kFloat;
  if (op == "upsample_backward") return 5 * (kPlanes / 4) * kSide * kSide * kFloat;
  if (op == "softmax_cross_entropy") return 2 * kRows * kClasses * kFloat;
  return 0;
}

const char* const kOps[] = {"relu_forward",      "relu_backward",   "add",
                            "add_into",          "concat_channels", "upsample_forward",
                            "upsample_backward", "dropout",         "softmax_cross_entropy"};

// The output of one pass, from the CPU twin on fresh inputs (for validation).
std::vector<float> reference_output(const std::string& op, std::int64_t count) {
  Buffers& m = buffers();
  std::fill(m.out.begin(), m.out.end(), 0.0f);
  run(op, Stream(), host_operands(m));
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
  const Operands operands = host_operands(m);
  double seconds = 0.0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    run(op, Stream(), operands);
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

// The host buffers' copies on the GPU, made on first use.
struct DeviceBuffers {
  Tensor a, b, out, labels, loss_totals;
  DeviceBuffers() {
    const Device gpu = Device::cuda(0);
    TensorOptions on_gpu;
    on_gpu.device = gpu;
    a = Tensor::from_vector(buffers().a, Shape{kCount}).to(gpu);
    b = Tensor::from_vector(buffers().b, Shape{kCount}).to(gpu);
    out = Tensor::zeros(Shape{2 * kCount}, on_gpu);
    labels = Tensor::from_vector_int(buffers().labels, Shape{kRows}).to(gpu);
    // Room for the whole struct, in floats.
    const std::int64_t totals_words =
        (static_cast<std::int64_t>(sizeof(cuda::CrossEntropyDeviceTotals)) + kFloat - 1) / kFloat;
    loss_totals = Tensor::zeros(Shape{totals_words}, on_gpu);
  }
  Operands operands() {
    return {a.data<float>(), b.data<float>(), out.data<float>(), labels.data<std::int32_t>(),
            loss_totals.raw_data()};
  }
};

// Device-to-device copy rate in bytes/s (read + write), measured once per run.
double gpu_copy_peak(DeviceBuffers& m, const Stream& stream) {
  static const double peak = [&] {
    Timer timer(stream.device(), stream.handle());
    double best = 0.0;
    for (int repeat = 0; repeat < 10; ++repeat) {
      timer.start();
      copy_bytes(m.out.data<float>(), m.a.data<float>(), kCount * kFloat, stream);
      timer.stop();
      best = std::max(best, 2.0 * kCount * kFloat / (timer.elapsed_ms() * 1e-3));
    }
    return best;
  }();
  return peak;
}

void BM_Gpu(benchmark::State& state, std::string op) {
  const CudaAvailability cuda = cuda_availability();
  if (!cuda.available) {
    state.SkipWithError(("no CUDA device: " + cuda.reason).c_str());
    return;
  }
  static DeviceBuffers m;
  const Operands operands = m.operands();
  const Stream stream = Stream::compute(Device::cuda(0));
  Timer timer(stream.device(), stream.handle());
  run(op, stream, operands);  // warm-up
  double seconds = 0.0;
  for (auto _ : state) {
    timer.start();
    run(op, stream, operands);
    timer.stop();
    const double elapsed = timer.elapsed_ms() * 1e-3;
    state.SetIterationTime(elapsed);
    seconds += elapsed;
  }
  const std::int64_t bytes = bytes_of(op);
  state.SetBytesProcessed(state.iterations() * bytes);
  state.counters["pct_of_d2d_copy"] =
      100.0 * static_cast<double>(bytes) * state.iterations() / seconds / gpu_copy_peak(m, stream);
  if (op != "add_into") {  // add_into accumulates over the passes: no single-pass reference
    run(op, stream, operands);
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

void register_benchmarks() {
  for (const char* op : kOps) {
    benchmark::RegisterBenchmark((std::string("cpu/") + op).c_str(), BM_Cpu, std::string(op))
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((std::string("cuda/") + op).c_str(), BM_Gpu, std::string(op))
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
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
