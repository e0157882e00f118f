// Accumulation-mode microbenchmarks: one full training step (batch B as micro-batches of a
// fixed m, then the optimizer update) with in-place accumulation (backward adds into the
// parameter gradients, 1/B applied in the optimizer) against separate fp32 accumulation
// buffers (one fused multi-tensor add of n_k/B times each micro-batch gradient).
//
// Counters: seconds per sample (time_per_sample, lower is better), samples/s
// (items_per_second), forward+backward FLOPs/s from the model's own FLOP count (3x forward),
// and the arena's peak allocated bytes over the timed steps (peak_allocated_bytes: the
// buffers mode holds one more fp32 copy of every parameter). Trainer::step waits for the
// device once per step (before the update, which the next step's wait covers), so over the
// iterations wall time is the step time on GPU too. GPU variants skip without a device.
//
// Run: build-<you>/bench/mbp_bench --benchmark_min_time=1
#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "allocator/default_allocator.h"
#include "bench/bench_main.h"
#include "bench/bench_util.h"
#include "data/dataset.h"
#include "engine/session.h"
#include "engine/trainer.h"
#include "models/zoo.h"
#include "runtime/allocator_registry.h"
#include "runtime/device.h"

namespace mb {
namespace {

struct Workload {
  const char* model;
  std::int64_t batch;
  std::int64_t micro_batch;
};

// Fixed micro-batches, 4 per step: the accumulation work is done 4 times per update.
constexpr Workload kWorkloads[] = {{"lenet5", 256, 64}, {"resnet20", 64, 16}};

void BM_TrainStep(benchmark::State& state, Device device, Workload work, AccumulationMode mode) {
  if (device.is_cuda() && !cuda_availability().available) {
    state.SkipWithError("no CUDA device (GPU variant skipped)");
    return;
  }
  const ModelConfig config = resolve_config(work.model, ModelConfig{});
  SyntheticOptions synthetic;
  synthetic.samples = work.batch;
  synthetic.channels = config.in_channels;
  synthetic.height = synthetic.width = config.image_size;
  synthetic.num_classes = config.num_classes;
  Dataset data = make_synthetic(synthetic);
  data.images = bench::in_batch_pool(data.images);  // pinned, as training's batches
  data.labels = bench::in_batch_pool(data.labels);

  SessionOptions session_options;
  session_options.device = device;
  Session session(session_options, [&] { return build_model(work.model, config); });
  Allocator* allocator = &session.allocator();
  Module* model = &session.model();
  TrainerOptions options;
  options.micro_batch = work.micro_batch;
  options.accumulation = mode;
  Trainer& trainer = session.make_trainer(options);
  const Shape sample = data.sample_shape();
  trainer.plan(work.batch, sample, Shape{});
  trainer.step(data.images, data.labels, 0.01f);  // warm-up: caches, workspaces, the pool

  allocator->reset_peak();
  std::int64_t micro_batches = 0;
  for (auto _ : state) {
    const StepResult step = trainer.step(data.images, data.labels, 0.01f);
    micro_batches = static_cast<std::int64_t>(step.micro_batches.size());
    benchmark::DoNotOptimize(step.loss);
  }
  const double flops_per_sample =
      3.0 * static_cast<double>(model->forward_flops(
                Shape{1, config.in_channels, config.image_size, config.image_size}));
  state.SetItemsProcessed(state.iterations() * work.batch);
  state.counters["time_per_sample"] = benchmark::Counter(
      static_cast<double>(work.batch),
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["flops"] = benchmark::Counter(flops_per_sample * static_cast<double>(work.batch),
                                               benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_allocated_bytes"] =
      benchmark::Counter(static_cast<double>(allocator->peak_allocated()));
  state.counters["micro_batches"] = benchmark::Counter(static_cast<double>(micro_batches));
  state.counters["batch"] = benchmark::Counter(static_cast<double>(work.batch));
  state.counters["micro_batch"] = benchmark::Counter(static_cast<double>(work.micro_batch));
  model->clear_cache();
}

int register_all() {
  for (const Device& device : {Device::cpu(), Device::cuda(0)}) {
    for (const Workload& work : kWorkloads) {
      for (AccumulationMode mode : {AccumulationMode::InPlace, AccumulationMode::Buffers}) {
        const std::string name = std::string("BM_TrainStep/") + (device.is_cpu() ? "cpu" : "cuda") +
                                 "/" + work.model + "/" + accumulation_name(mode);
        benchmark::RegisterBenchmark(name.c_str(), BM_TrainStep, device, work, mode)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
      }
    }
  }
  return 0;
}

const int kRegistered = register_all();

}  // namespace
}  // namespace mb

MB_BENCHMARK_MAIN()
