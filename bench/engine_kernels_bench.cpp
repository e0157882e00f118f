// Engine kernel microbenchmarks: gradient accumulation, sum of squares and the
// SGD / AdamW / LARS updates, over a table of kSlots tensors totalling 1 MiB .. 256 MiB of
// fp32 per buffer (the argument, in MiB). These kernels are memory-bound, so the figure of
// merit is bytes moved (reads + writes, counted per op below) per second.
//
// CPU: wall time, SetBytesProcessed. GPU: CUDA events around each launch (manual time),
// L2 flushed before every iteration (memset of a 2x L2-size buffer: cold runs), reported as
// GB/s (decimal) and as % of a device-to-device cudaMemcpy measured in the same process
// (BM_CudaMemcpyDeviceToDevice, registered first); above 100% the run fails, and each GPU
// benchmark checks its output against the CPU twin after timing. GPU benchmarks skip
// without a device.
//
// Run: build-<you>/bench/engine_kernels_bench --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bench/bench_main.h"
#include "kernels/cpu/accumulate_grads.h"
#include "kernels/cpu/optimizers.h"
#include "runtime/device.h"
#include "runtime/gradient_mode.h"
#include "runtime/stream.h"

#if MB_WITH_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda/accumulate_grads.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/optimizers.h"
#include "runtime/allocator_registry.h"
#include "runtime/cuda_check.h"
#endif

namespace mb {
namespace {

constexpr std::int64_t kMiB = 1024 * 1024;
constexpr int kSlots = 32;  // tensors per table: the multi-tensor launch covers all of them

// Bytes read + written per element.
constexpr double kAccumulateBytes = 12;   // read grad, read accum, write accum
constexpr double kSumOfSquaresBytes = 4;  // read
constexpr double kSgdBytes = 20;          // read param, grad, buf; write param, buf
constexpr double kAdamWBytes = 28;        // read param, grad, m, v; write param, m, v
constexpr double kLarsBytes = 28;         // norm pass reads param, grad; then as SGD

void size_args(benchmark::internal::Benchmark* bench) {
  for (std::int64_t mib : {1, 4, 16, 64, 256}) bench->Arg(mib);
}

std::int64_t elements_for(const benchmark::State& state) {
  return state.range(0) * kMiB / 4;
}

// Cheap deterministic values in [-0.5, 0.5) (a generator would dominate setup at 256 MiB).
void fill_pattern(float* data, std::int64_t count, std::uint32_t salt) {
  for (std::int64_t i = 0; i < count; ++i) {
    const std::uint32_t hash = (static_cast<std::uint32_t>(i) + salt) * 2654435761u;
    data[i] = static_cast<float>(hash >> 8) / 16777216.0f - 0.5f;
  }
}

// Splits `total` elements into kSlots slots of whole float4 groups (last slot takes the rest).
std::vector<std::pair<std::int64_t, std::int64_t>> split_slots(std::int64_t total) {
  std::vector<std::pair<std::int64_t, std::int64_t>> ranges;
  const std::int64_t per_slot = total / kSlots / 4 * 4;
  for (int s = 0; s < kSlots; ++s) {
    const std::int64_t begin = s * per_slot;
    ranges.push_back({begin, s + 1 == kSlots ? total - begin : per_slot});
  }
  return ranges;
}

// Host (or device) storage for one benchmark: `buffers` flat arrays of `elements` floats.
struct Tables {
  std::vector<GradSlot> grad;
  std::vector<ConstBufferSlot> const_buffer;
  std::vector<ParamSlot> param;
};

// Builds every slot table over buffers 0 (param / accum), 1 (grad), 2 (state0), 3 (state1).
Tables make_tables(const std::vector<float*>& buffers, std::int64_t elements) {
  Tables tables;
  for (const auto& [begin, size] : split_slots(elements)) {
    const bool is_bias = tables.param.size() % 2 == 1;
    tables.grad.push_back({buffers[1] + begin, buffers[0] + begin, size});
    tables.const_buffer.push_back({buffers[1] + begin, size});
    tables.param.push_back({buffers[0] + begin, buffers[1] + begin, buffers[2] + begin,
                            buffers[3] + begin, size, is_bias ? 0.0f : 5e-4f, !is_bias});
  }
  return tables;
}

// ---------------------------------------------------------------------------------- CPU

struct HostBuffers {
  std::vector<std::vector<float>> storage;
  std::vector<float*> pointers;
  explicit HostBuffers(std::int64_t elements) {
    for (std::uint32_t b = 0; b < 4; ++b) {
      storage.emplace_back(static_cast<std::size_t>(elements));
      fill_pattern(storage.back().data(), elements, 7919u * b);
      pointers.push_back(storage.back().data());
    }
    for (float& v : storage[3]) v = std::abs(v);  // AdamW's v is non-negative
  }
};

void run_cpu(benchmark::State& state, double bytes_per_element,
             const std::function<void(Tables&)>& op) {
  const std::int64_t elements = elements_for(state);
  HostBuffers buffers(elements);
  Tables tables = make_tables(buffers.pointers, elements);
  for (auto _ : state) {
    op(tables);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes_per_element *
                                                    static_cast<double>(elements)));
}

void BM_CpuAccumulateGrads(benchmark::State& state) {
  run_cpu(state, kAccumulateBytes, [](Tables& t) {
    cpu::accumulate_grads(Stream(), t.grad.data(), kSlots, 1e-3f, GradientMode::Accumulate);
  });
}
void BM_CpuSumOfSquares(benchmark::State& state) {
  run_cpu(state, kSumOfSquaresBytes, [](Tables& t) {
    benchmark::DoNotOptimize(cpu::sum_of_squares(Stream(), t.const_buffer.data(), kSlots));
  });
}
void BM_CpuSgdUpdate(benchmark::State& state) {
  SgdOptions options{1e-3f};
  options.momentum = 0.9f;
  run_cpu(state, kSgdBytes,
          [&](Tables& t) { cpu::sgd_update(Stream(), t.param.data(), kSlots, options); });
}
void BM_CpuAdamWUpdate(benchmark::State& state) {
  AdamWOptions options{1e-4f};
  options.step = 10;
  run_cpu(state, kAdamWBytes,
          [&](Tables& t) { cpu::adamw_update(Stream(), t.param.data(), kSlots, options); });
}
void BM_CpuLarsUpdate(benchmark::State& state) {
  LarsOptions options{1e-2f};
  run_cpu(state, kLarsBytes,
          [&](Tables& t) { cpu::lars_update(Stream(), t.param.data(), kSlots, options); });
}

// ---------------------------------------------------------------------------------- GPU

#if MB_WITH_CUDA

bool skip_without_cuda(benchmark::State& state) {
  CudaAvailability cuda = cuda_availability();
  if (!cuda.available) {
    state.SkipWithError(("no CUDA device: " + cuda.reason).c_str());
    return true;
  }
  return false;
}

double g_copy_gb_per_s = 0.0;  // device-to-device cudaMemcpy, measured in this process

Stream gpu_stream() {
  return Stream::compute(Device::cuda(0));
}

// Times `op` on the compute stream with L2 flushed before each iteration; returns the
// total measured seconds.
double time_gpu(benchmark::State& state, const std::function<void(const Stream&)>& op) {
  const Stream gpu = gpu_stream();
  cudaStream_t stream = cuda::cuda_stream(gpu);
  cudaDeviceProp properties{};
  MB_CUDA_CHECK(cudaGetDeviceProperties(&properties, 0));
  const std::size_t flush_bytes = 2 * static_cast<std::size_t>(properties.l2CacheSize);
  DeviceBuffer flush(allocator_for(gpu.device()), flush_bytes, MemoryTag::Workspace, gpu.handle());
  cudaEvent_t start, stop;
  MB_CUDA_CHECK(cudaEventCreate(&start));
  MB_CUDA_CHECK(cudaEventCreate(&stop));
  op(gpu);  // warm-up: first-touch costs and allocator growth stay out of the timing
  double total_seconds = 0.0;
  for (auto _ : state) {
    MB_CUDA_CHECK(cudaMemsetAsync(flush.get(), 0, flush_bytes, stream));
    MB_CUDA_CHECK(cudaEventRecord(start, stream));
    op(gpu);
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

double measure_copy_gb_per_s(benchmark::State& state, std::int64_t bytes) {
  std::shared_ptr<Allocator> allocator = allocator_for(Device::cuda(0));
  const Stream gpu = gpu_stream();
  DeviceBuffer source(allocator, bytes, MemoryTag::Other, gpu.handle());
  DeviceBuffer destination(allocator, bytes, MemoryTag::Other, gpu.handle());
  MB_CUDA_CHECK(cudaMemsetAsync(source.get(), 1, bytes, cuda::cuda_stream(gpu)));
  const double seconds = time_gpu(state, [&](const Stream& stream) {
    MB_CUDA_CHECK(cudaMemcpyAsync(destination.get(), source.get(), bytes, cudaMemcpyDeviceToDevice,
                                  cuda::cuda_stream(stream)));
  });
  return 2.0 * bytes * state.iterations() / seconds / 1e9;  // read + write
}

void BM_CudaMemcpyDeviceToDevice(benchmark::State& state) {
  if (skip_without_cuda(state)) return;
  g_copy_gb_per_s = measure_copy_gb_per_s(state, state.range(0) * kMiB);
  state.counters["GB/s"] = g_copy_gb_per_s;
  state.SetBytesProcessed(static_cast<std::int64_t>(2 * state.range(0) * kMiB) *
                          state.iterations());
}

struct GpuBuffers {
  std::vector<DeviceBuffer> storage;
  std::vector<float*> pointers;
  std::vector<std::vector<float>> initial;  // host copies of the starting values
  explicit GpuBuffers(std::int64_t elements) {
    const HostBuffers host(elements);
    for (int b = 0; b < 4; ++b) {
      storage.emplace_back(allocator_for(Device::cuda(0)), elements * sizeof(float),
                           b == 1 ? MemoryTag::Grad : MemoryTag::Param, gpu_stream().handle());
      pointers.push_back(static_cast<float*>(storage.back().get()));
      initial.push_back(host.storage[b]);
    }
    reset();
  }
  void reset() {
    const Stream stream = gpu_stream();
    for (int b = 0; b < 4; ++b) {
      copy_bytes(pointers[b], initial[b].data(), initial[b].size() * sizeof(float), stream);
    }
    stream.synchronize();
  }
  std::vector<float> download(int b) const {
    std::vector<float> out(initial[b].size());
    const Stream stream = gpu_stream();
    copy_bytes(out.data(), pointers[b], out.size() * sizeof(float), stream);
    stream.synchronize();
    return out;
  }
};

// Times the CUDA op, reports GB/s and % of copy bandwidth, then runs it once more from the
// initial values and compares buffers 0 and 2 with the CPU op applied to host copies.
void run_gpu(benchmark::State& state, double bytes_per_element,
             const std::function<void(Tables&, const Stream&)>& gpu_op,
             const std::function<void(Tables&)>& cpu_op) {
  if (skip_without_cuda(state)) return;
  const std::int64_t elements = elements_for(state);
  if (g_copy_gb_per_s == 0.0) {
    state.SkipWithError("run BM_CudaMemcpyDeviceToDevice first (it is the 100% reference)");
    return;
  }
  GpuBuffers buffers(elements);
  Tables tables = make_tables(buffers.pointers, elements);
  const double seconds = time_gpu(state, [&](const Stream& stream) { gpu_op(tables, stream); });
  const double gb_per_s = bytes_per_element * elements * state.iterations() / seconds / 1e9;
  state.counters["GB/s"] = gb_per_s;
  state.counters["pct_of_copy"] = 100.0 * gb_per_s / g_copy_gb_per_s;
  state.SetBytesProcessed(
      static_cast<std::int64_t>(bytes_per_element * elements * state.iterations()));
  if (gb_per_s > g_copy_gb_per_s) {
    state.SkipWithError("faster than a device-to-device copy: the byte count or timing is wrong");
    return;
  }
  // Validation against the CPU twin.
  buffers.reset();
  gpu_op(tables, gpu_stream());
  HostBuffers host(elements);
  Tables host_tables = make_tables(host.pointers, elements);
  cpu_op(host_tables);
  for (int b : {0, 2}) {
    const std::vector<float> actual = buffers.download(b);
    for (std::int64_t i = 0; i < elements; i += 997) {
      const float expected = host.storage[b][i];
      if (!(std::abs(actual[i] - expected) <= 1e-5f * (1.0f + std::abs(expected)))) {
        state.SkipWithError(("output differs from the CPU twin at buffer " + std::to_string(b) +
                             " element " + std::to_string(i))
                                .c_str());
        return;
      }
    }
  }
}

void BM_CudaAccumulateGrads(benchmark::State& state) {
  run_gpu(
      state, kAccumulateBytes,
      [](Tables& t, const Stream& s) {
        cuda::accumulate_grads(s, t.grad.data(), kSlots, 1e-3f, GradientMode::Accumulate);
      },
      [](Tables& t) {
        cpu::accumulate_grads(Stream(), t.grad.data(), kSlots, 1e-3f, GradientMode::Accumulate);
      });
}
void BM_CudaSumOfSquares(benchmark::State& state) {
  // Includes the host round trip (the engine needs the value on the host to clip).
  run_gpu(
      state, kSumOfSquaresBytes,
      [](Tables& t, const Stream& s) {
        benchmark::DoNotOptimize(cuda::sum_of_squares(s, t.const_buffer.data(), kSlots));
      },
      [](Tables&) {});
}
void BM_CudaSgdUpdate(benchmark::State& state) {
  SgdOptions options{1e-3f};
  options.momentum = 0.9f;
  run_gpu(
      state, kSgdBytes,
      [&](Tables& t, const Stream& s) { cuda::sgd_update(s, t.param.data(), kSlots, options); },
      [&](Tables& t) { cpu::sgd_update(Stream(), t.param.data(), kSlots, options); });
}
void BM_CudaAdamWUpdate(benchmark::State& state) {
  AdamWOptions options{1e-4f};
  options.step = 10;
  run_gpu(
      state, kAdamWBytes,
      [&](Tables& t, const Stream& s) { cuda::adamw_update(s, t.param.data(), kSlots, options); },
      [&](Tables& t) { cpu::adamw_update(Stream(), t.param.data(), kSlots, options); });
}
void BM_CudaLarsUpdate(benchmark::State& state) {
  LarsOptions options{1e-2f};
  run_gpu(
      state, kLarsBytes,
      [&](Tables& t, const Stream& s) { cuda::lars_update(s, t.param.data(), kSlots, options); },
      [&](Tables& t) { cpu::lars_update(Stream(), t.param.data(), kSlots, options); });
}

#else

void BM_CudaMemcpyDeviceToDevice(benchmark::State& state) {
  state.SkipWithError("built without the CUDA backend");
}

#endif  // MB_WITH_CUDA

// The copy reference first, so every GPU benchmark below can compare against it.
BENCHMARK(BM_CudaMemcpyDeviceToDevice)->Arg(256)->UseManualTime()->Unit(benchmark::kMicrosecond);
#if MB_WITH_CUDA
BENCHMARK(BM_CudaAccumulateGrads)->Apply(size_args)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_CudaSumOfSquares)->Apply(size_args)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_CudaSgdUpdate)->Apply(size_args)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_CudaAdamWUpdate)->Apply(size_args)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_CudaLarsUpdate)->Apply(size_args)->UseManualTime()->Unit(benchmark::kMicrosecond);
#endif
BENCHMARK(BM_CpuAccumulateGrads)->Apply(size_args)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CpuSumOfSquares)->Apply(size_args)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CpuSgdUpdate)->Apply(size_args)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CpuAdamWUpdate)->Apply(size_args)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CpuLarsUpdate)->Apply(size_args)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace mb

MB_BENCHMARK_MAIN()
