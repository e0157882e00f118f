// The micro-batch engine: one training step over a host batch of B samples, run as
// micro-batches whose gradients are combined exactly, then one optimizer update.
//
// Data flow and contracts: ../shared/ARCHITECTURE.md, "Data flow of one training step".
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

#include "engine/optimizer.h"
#include "engine/planner.h"
#include "layers/module.h"
#include "layers/softmax_cross_entropy.h"
#include "runtime/error.h"
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
  std::uint64_t seed = 0;  // dropout keys
  PlannerOptions planner;
  // Receives every planner and re-planning decision, with its numbers.
  std::function<void(const std::string&)> log;
};

struct StepResult {
  double loss = 0.0;  // the exact full-batch loss (mean or sum per options.loss)
  std::int64_t correct = 0;
  std::int64_t samples = 0;
  std::vector<std::int64_t> micro_batches;  // sizes that ran (after any re-planning)
  int replans = 0;
  double grad_norm = 0.0;  // L2 norm of the normalized gradient, before clipping
  double seconds = 0.0;
};

struct EvalResult {
  double loss = 0.0;
  std::int64_t correct = 0;
  std::int64_t valid = 0;
  double accuracy() const { return valid > 0 ? static_cast<double>(correct) / valid : 0.0; }
};

class Trainer {
 public:
  // Moves `model` to options.device and allocates gradients and optimizer state there,
  // through allocator_for(options.device).
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

  // One step over host tensors images [B, C, H, W] (float32) and labels [B] or [B, H, W]
  // (int32). Plans on first use. On OutOfMemory it re-plans smaller and redoes the work
  // (never skipping a sample); it throws only when one sample no longer fits.
  StepResult step(const Tensor& images, const Tensor& labels, float lr);
  // Loss and accuracy in evaluation mode, in chunks of the planned micro-batch size.
  EvalResult evaluate(const Tensor& images, const Tensor& labels, std::int64_t chunk = 0);

  Module& model() { return *model_; }
  Optimizer& optimizer() { return *optimizer_; }
  std::int64_t steps() const { return steps_; }
  void set_steps(std::int64_t steps);
  const TrainerOptions& options() const { return options_; }
  bool model_has_batch_norm() const { return has_batch_norm_; }

 private:
  struct MicroBatchTotals {
    double loss_sum = 0.0;
    std::int64_t correct = 0;
  };
  // Forward, loss, backward and (Buffers mode) accumulation of one micro-batch.
  MicroBatchTotals run_micro_batch(const Tensor& labels, std::int64_t offset, std::int64_t count,
                                   int index, std::int64_t total_valid);
  std::vector<Tensor> gradients();
  // Peak allocated bytes above the baseline for one training micro-batch of `samples`.
  std::size_t probe_peak(const Shape& sample_shape, const Shape& label_shape, std::int64_t samples);
  void verify_plan(const Shape& sample_shape, const Shape& label_shape,
                   const FreeArenaReport& report);
  void log(const std::string& message) const;
  std::int64_t halve_micro_batch(const OutOfMemory& error, std::int64_t failed_size, int index);

  std::shared_ptr<Module> model_;
  TrainerOptions options_;
  std::vector<std::pair<std::string, Parameter*>> parameters_;
  std::vector<Tensor> accumulators_;  // Buffers mode only
  std::unique_ptr<Optimizer> optimizer_;
  SoftmaxCrossEntropy criterion_;
  Plan plan_;
  bool has_batch_norm_ = false;
  std::int64_t steps_ = 0;
  struct Feeder;
  std::unique_ptr<Feeder> feeder_;
};

}  // namespace mb
