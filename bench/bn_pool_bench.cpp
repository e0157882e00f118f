// BatchNorm2d and pooling microbenchmarks at a ResNet-50 stem shape ([N, 64, 112, 112] for
// BatchNorm, its 3x3 stride-2 max pool, and [N, 2048, 7, 7] for the global average pool).
// These layers are memory-bound: the figure of merit is bytes moved (reads + writes,
// counted per op below) per second.
//
// CPU: wall time. GPU: CUDA events around each call (manual time), L2 flushed before every
// iteration (cold runs), GB/s reported and compared with a device-to-device cudaMemcpy
// measured in the same process (BM_CudaMemcpyDeviceToDevice, registered first) as
// "pct_of_copy"; each GPU benchmark checks its output against the CPU layer after timing.
// GPU benchmarks skip without a device.
//
// Run: build-<you>/bench/bn_pool_bench --benchmark_min_time=0.2s
#include <benchmark/benchmark.h>

#include <cmath>
#include <functional>
#include <memory>
#include <string>

#include "bench/bench_main.h"
#include "layers/batch_norm2d.h"
#include "layers/pooling.h"
#include "runtime/device.h"

#if MB_WITH_CUDA
#include <cuda_runtime.h>

#include "runtime/allocator_registry.h"
#include "runtime/cuda_check.h"
#include "runtime/cuda_context.h"
#endif

namespace mb {
namespace {

Tensor pattern_tensor(const Shape& shape) {
  Tensor t = Tensor::empty(shape);
  float* d = t.data<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    const std::uint32_t hash = static_cast<std::uint32_t>(i) * 2654435761u;
    d[i] = static_cast<float>(hash >> 8) / 16777216.0f - 0.5f;
  }
  return t;
}

struct LayerCase {
  std::function<std::shared_ptr<Module>()> make;
  Shape input;
  bool backward;        // time backward (a forward runs untimed before each call)
  double bytes_per_in;  // bytes moved per input element
};

// Bytes per input element: BN forward reads x twice and writes y (12); BN backward reads
// g and x twice and writes dx (20); max pool forward reads x and writes y and the one-byte
// argmax (4 + 5/4); its backward reads g and argmax per output and writes dx (4 + 5/4); global
// average reads x (4).
LayerCase layer_case(int which, std::int64_t batch) {
  switch (which) {
    case 0:
      return {[] { return std::make_shared<BatchNorm2d>(64); }, Shape{batch, 64, 112, 112}, false,
              12.0};
    case 1:
      return {[] { return std::make_shared<BatchNorm2d>(64); }, Shape{batch, 64, 112, 112}, true,
              20.0};
    case 2:
      return {[] { return std::make_shared<MaxPool2d>(3, 2, 1); }, Shape{batch, 64, 112, 112},
              false, 5.25};
    case 3:
      return {[] { return std::make_shared<MaxPool2d>(3, 2, 1); }, Shape{batch, 64, 112, 112}, true,
              5.25};
    default:
      return {[] { return std::make_shared<GlobalAvgPool2d>(); }, Shape{batch, 2048, 7, 7}, false,
              4.0};
  }
}

const char* kNames[] = {"BatchNorm2d_forward", "BatchNorm2d_backward", "MaxPool2d_forward",
                        "MaxPool2d_backward", "GlobalAvgPool2d_forward"};

RunState training_state() {
  RunState s;
  s.training = true;
  return s;
}

void BM_CpuLayer(benchmark::State& state) {
  const LayerCase lc = layer_case(static_cast<int>(state.range(0)), 2);
  state.SetLabel(kNames[state.range(0)]);
  std::shared_ptr<Module> layer = lc.make();
  Tensor x = pattern_tensor(lc.input);
  Tensor g = pattern_tensor(layer->output_shape(lc.input));
  for (auto _ : state) {
    if (lc.backward) {
      state.PauseTiming();
      layer->forward(x, training_state());
      state.ResumeTiming();
      benchmark::DoNotOptimize(layer->backward(g, BackwardState{}));
    } else {
      benchmark::DoNotOptimize(layer->forward(x, training_state()));
    }
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * lc.bytes_per_in *
                                                    static_cast<double>(lc.input.numel())));
}

#if MB_WITH_CUDA

double g_copy_gb_per_s = 0.0;  // set by BM_CudaMemcpyDeviceToDevice

bool cuda_ready(benchmark::State& state) {
  const CudaAvailability availability = cuda_availability();
  if (!availability.available)
    state.SkipWithError(("no CUDA device: " + availability.reason).c_str());
  return availability.available;
}

// Times `op` with CUDA events on the compute stream; `prepare` runs untimed before each
// call; L2 is flushed before each timed call. Returns the measured seconds.
double time_gpu(benchmark::State& state, const std::function<void()>& prepare,
                const std::function<void()>& op) {
  const Device gpu = Device::cuda(0);
  cudaStream_t stream = compute_stream(gpu);
  cudaDeviceProp properties{};
  MB_CUDA_CHECK(cudaGetDeviceProperties(&properties, 0));
  const std::size_t flush_bytes = 2 * static_cast<std::size_t>(properties.l2CacheSize);
  DeviceBuffer flush(allocator_for(gpu), flush_bytes, MemoryTag::Workspace, stream);
  cudaEvent_t start, stop;
  MB_CUDA_CHECK(cudaEventCreate(&start));
  MB_CUDA_CHECK(cudaEventCreate(&stop));
  prepare();
  op();  // warm-up: allocator growth stays out of the timing
  double total_seconds = 0.0;
  for (auto _ : state) {
    prepare();
    MB_CUDA_CHECK(cudaMemsetAsync(flush.get(), 0, flush_bytes, stream));
    MB_CUDA_CHECK(cudaEventRecord(start, stream));
    op();
    MB_CUDA_CHECK(cudaEventRecord(stop, stream));
    MB_CUDA_CHECK(cudaEventSynchronize(stop));
    float milliseconds = 0.0f;
    MB_CUDA_CHECK(cudaEventElapsedTime(&milliseconds, start, stop));
    state.SetIterationTime(milliseconds / 1e3);
    total_seconds += milliseconds / 1e3;
  }
  MB_CUDA_CHECK(cudaEventDestroy(start));
  MB_CUDA_CHECK(cudaEventDestroy(stop));
  return total_seconds;
}

void BM_CudaMemcpyDeviceToDevice(benchmark::State& state) {
  if (!cuda_ready(state)) return;
  const std::size_t bytes = 256u << 20;
  const Device gpu = Device::cuda(0);
  cudaStream_t stream = compute_stream(gpu);
  DeviceBuffer source(allocator_for(gpu), bytes, MemoryTag::Other, stream);
  DeviceBuffer destination(allocator_for(gpu), bytes, MemoryTag::Other, stream);
  MB_CUDA_CHECK(cudaMemsetAsync(source.get(), 1, bytes, stream));
  const double seconds = time_gpu(
      state, [] {},
      [&] {
        MB_CUDA_CHECK(cudaMemcpyAsync(destination.get(), source.get(), bytes,
                                      cudaMemcpyDeviceToDevice, stream));
      });
  g_copy_gb_per_s = 2.0 * bytes * state.iterations() / seconds / 1e9;
  state.counters["GB/s"] = g_copy_gb_per_s;
}

void BM_CudaLayer(benchmark::State& state) {
  if (!cuda_ready(state)) return;
  const Device gpu = Device::cuda(0);
  const LayerCase lc = layer_case(static_cast<int>(state.range(0)), 32);
  state.SetLabel(kNames[state.range(0)]);
  std::shared_ptr<Module> layer = lc.make();
  layer->to_device(gpu);
  Tensor x_host = pattern_tensor(lc.input);
  Tensor g_host = pattern_tensor(layer->output_shape(lc.input));
  Tensor x = x_host.to(gpu), g = g_host.to(gpu);
  Tensor result;
  const double seconds = time_gpu(
      state,
      [&] {
        if (lc.backward) layer->forward(x, training_state());
      },
      [&] {
        result =
            lc.backward ? layer->backward(g, BackwardState{}) : layer->forward(x, training_state());
      });
  const double gb_per_s = lc.bytes_per_in * lc.input.numel() * state.iterations() / seconds / 1e9;
  state.counters["GB/s"] = gb_per_s;
  if (g_copy_gb_per_s > 0.0) state.counters["pct_of_copy"] = 100.0 * gb_per_s / g_copy_gb_per_s;

  // Validate after timing against the CPU layer.
  std::shared_ptr<Module> reference = lc.make();
  Tensor expected = reference->forward(x_host, training_state());
  if (lc.backward) expected = reference->backward(g_host, BackwardState{});
  const std::vector<float> want = expected.to_vector(), got = result.to_vector();
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (!(std::fabs(got[i] - want[i]) <= 1e-4 + 1e-4 * std::fabs(want[i]))) {
      state.SkipWithError(("mismatch with the CPU layer at element " + std::to_string(i) + ": " +
                           std::to_string(got[i]) + " vs " + std::to_string(want[i]))
                              .c_str());
      return;
    }
  }
}

BENCHMARK(BM_CudaMemcpyDeviceToDevice)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_CudaLayer)->DenseRange(0, 4)->UseManualTime()->Unit(benchmark::kMicrosecond);

#endif  // MB_WITH_CUDA

BENCHMARK(BM_CpuLayer)->DenseRange(0, 4)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace mb

MB_BENCHMARK_MAIN()
