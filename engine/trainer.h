// The Trainer: one training step over a host batch of B samples, run as micro-batches whose
// gradients are combined exactly, then one optimizer update. The Planner (engine/planner.h)
// decides the micro-batch sizes; the Feeder (engine/feeder.h) stages their inputs.
//
// Data flow and contracts: docs/architecture.md, "One training step".
// Two accumulation modes, both exact for any split:
//  - InPlace (default): backward adds every micro-batch's gradient straight into the
//    parameter gradient buffers (cuDNN/cuBLAS beta = 1, per-sample loss seed = 1, i.e. a
//    summed loss); the factor 1/B is applied once, inside the fused optimizer kernel.
//    No extra buffers: the largest micro-batch is larger.
//  - Buffers: backward overwrites the micro-batch gradient (mean over the micro-batch),
//    then one fused multi-tensor kernel adds factor n_k/B times it into separate fp32
//    accumulation buffers.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/communicator.h"
#include "engine/feeder.h"
#include "engine/gradient_reducer.h"
#include "engine/optimizer.h"
#include "engine/planner.h"
#include "kernels/image_input.h"
#include "layers/module.h"
#include "layers/softmax_cross_entropy.h"
#include "runtime/allocator.h"
#include "runtime/tensor.h"

namespace mb {

enum class AccumulationMode { InPlace, Buffers };
const char* accumulation_name(AccumulationMode mode);
// "inplace" or "buffers"; throws mb::InvalidArgument otherwise.
AccumulationMode parse_accumulation(const std::string& name);

struct TrainerOptions {
  Device device = Device::cpu();
  std::int64_t micro_batch = 0;  // 0: automatic, from the allocator's report
  AccumulationMode accumulation = AccumulationMode::InPlace;
  OptimizerOptions optimizer;
  double clip_norm = 0.0;  // global-norm clipping of the normalized gradient; 0: off
  LossOptions loss;
  // 8-bit batches (image folders) become the model's float32 input on the device:
  // (pixel / 255 - mean[c]) / std[c] (channels 0: pixel / 255 only).
  ChannelNormalization input_normalization;
  std::uint64_t seed = 0;  // dropout keys
  // Margins and a floor for the micro-batch; plan() raises min_micro_batch so that every
  // BatchNorm layer sees kMinValuesPerChannel values per channel (engine/planner.h).
  PlannerOptions planner;
  // The most elements a tensor may hold; the planner keeps every activation under it.
  // 0: the device's (kMaxTensorElements on CUDA, none on the CPU).
  std::int64_t tensor_element_limit = 0;
  // Receives every planner and re-planning decision, with its numbers.
  std::function<void(const std::string&)> log;
  // Borrowed: times every module of every micro-batch by type (layers/layer_timer.h, a
  // profiling mode that synchronizes after each module on CUDA); null: not timed.
  LayerTimer* layer_timer = nullptr;
  // The data-parallel group (null or size 1: this process alone). step() then takes this
  // rank's shard of the global batch; the valid count is global (the factor of every
  // micro-batch on every rank is n_k / B_global), and the gradients, BatchNorm sums, loss
  // and correct count are summed over the ranks once per batch, before the update.
  std::shared_ptr<Communicator> communicator;
  // Gradient bytes per all-reduce bucket.
  std::size_t bucket_bytes = std::size_t{4} << 20;
  // Start a bucket as soon as backward has finished its gradients in the last micro-batch
  // (in-place accumulation; with buffers the sums start after the accumulation kernel).
  bool overlap_reduce = true;
};

struct StepResult {
  double loss = 0.0;               // the exact full-batch loss (mean or sum per options.loss)
  std::int64_t correct = 0;        // over the global batch
  std::int64_t samples = 0;        // the global batch
  std::int64_t local_samples = 0;  // this rank's shard of it
  std::vector<std::int64_t> micro_batches;  // sizes that ran (after any re-planning)
  int replans = 0;
  double grad_norm = 0.0;  // L2 norm of the normalized gradient, before clipping
  double seconds = 0.0;
  ReduceReport reduce;  // data-parallel only
};

class Trainer {
 public:
  // Moves `model` to options.device and allocates gradients and optimizer state there,
  // through the allocator installed for options.device (runtime/allocator_registry.h).
  Trainer(std::shared_ptr<Module> model, const TrainerOptions& options);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Measures the memory of a training micro-batch by probing (forward + loss + backward at
  // two sizes). sample_shape: one image [C, H, W]; label_shape: [] or [H, W].
  MemoryProfile measure(const Shape& sample_shape, const Shape& label_shape);
  // Plans batch_size (probing first when the micro-batch is automatic) and logs it.
  const Plan& plan(std::int64_t batch_size, const Shape& sample_shape, const Shape& label_shape);
  const Plan& current_plan() const { return plan_; }

  // One step over host tensors images [B, C, H, W] (float32, or uint8 normalized on the device
  // with options.input_normalization) and labels [B] or [B, H, W]
  // (int32). Plans on first use. On OutOfMemory it re-plans smaller and redoes the work
  // (never skipping a sample); it throws only when one micro-batch of the minimum size no
  // longer fits. Data-parallel: images and labels are this rank's shard (at least one
  // sample), and first_sample is the global batch index of its first row (dropout keys).
  // Every rank calls step() once per batch. It waits for the device once, before the
  // optimizer update, and returns while the update may still run on the device (anything that
  // reads the weights is ordered after it); result.seconds is the host's time in the call, in
  // steady state the time per step.
  StepResult step(const Tensor& images, const Tensor& labels, float lr,
                  std::int64_t first_sample = 0);

  // Data-parallel consistency: throws mb::Error naming `where` when the parameters and
  // buffers (running statistics) differ between ranks, compared by a 64-bit checksum of
  // their bytes (a collective: every rank calls it at the same point).
  void check_ranks_agree(const std::string& where);
  // FNV-1a over the bytes of every parameter and buffer, in registration order.
  std::uint64_t state_checksum();
  Communicator& communicator() { return *communicator_; }

  Module& model() { return *model_; }
  Optimizer& optimizer() { return *optimizer_; }
  // Optimizer steps taken (one per batch); the optimizer counts them.
  std::int64_t steps() const { return optimizer_->steps(); }
  void set_steps(std::int64_t steps) { optimizer_->set_steps(steps); }
  const TrainerOptions& options() const { return options_; }

 private:
  [[noreturn]] void throw_fixed_state_out_of_memory(const OutOfMemory& error) const;
  // Every micro-batch of the batch, re-planning after an OutOfMemory; the loss totals of the
  // micro-batches that completed are in step_sums_, on the device.
  void run_micro_batches(const Tensor& images, const Tensor& labels, std::int64_t total_valid,
                         StepResult& result);
  // Forward, loss, backward and (Buffers mode) accumulation of one micro-batch; its loss
  // totals are added into the step's when it completes.
  void run_micro_batch(const Tensor& labels, std::int64_t offset, std::int64_t count, int index,
                       std::int64_t total_valid, BackwardObserver* observer = nullptr);
  // The step's sums (loss totals, squared gradient norm), copied to the host: the one wait
  // of a step for the device.
  struct StepSums;
  StepSums* device_sums() const;
  StepSums read_step_sums() const;
  // The planner's measurement: peak allocated and reserved bytes above the baseline for a
  // training micro-batch of `samples` zeros, then one of each size in `then`, in the same
  // arena (a step's last, smaller micro-batches reuse and split the blocks the full ones
  // left: where fragmentation shows).
  RunPeak probe_peak(const Shape& sample_shape, const Shape& label_shape, std::int64_t samples,
                     const std::vector<std::int64_t>& then = {});
  // The planner for inputs of `sample_shape`: its minimum micro-batch gives every
  // BatchNorm layer kMinValuesPerChannel values per channel (engine/planner.h).
  void configure_planner(const Shape& sample_shape);
  // Drops what a failed micro-batch left behind.
  void abandon_micro_batch();
  std::vector<Tensor> gradients();
  void log(const std::string& message) const;

  std::shared_ptr<Module> model_;
  TrainerOptions options_;
  std::shared_ptr<Allocator> allocator_;
  Stream stream_;
  DType input_dtype_ = DType::Float32;  // of the batches planned for (probes use it too)
  std::vector<std::pair<std::string, Parameter*>> parameters_;
  std::vector<Tensor> accumulators_;  // Buffers mode only
  // Every gradient (and accumulator) is a view into one flat fp32 tensor, parameters in
  // reverse registration order at aligned offsets, so an all-reduce bucket is a range.
  Tensor flat_grads_;
  Tensor flat_accumulators_;
  // A StepSums where the step runs (trainer.cpp): the micro-batches add their loss totals on
  // the device, the step reads them once.
  Tensor step_sums_;
  std::int64_t loss_classes_ = 0;  // of the last logits, for a bad label's message
  std::shared_ptr<Communicator> communicator_;
  std::unique_ptr<GradientReducer> reducer_;  // data-parallel only
  std::int64_t first_sample_ = 0;             // of the current step's shard
  std::unique_ptr<Optimizer> optimizer_;
  Planner planner_;
  Plan plan_;
  Feeder feeder_;
};

}  // namespace mb
