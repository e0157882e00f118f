// The micro-batch planner: all planning policy. From the allocator's FreeArenaReport and
// the bytes per sample measured by a probe, it chooses the micro-batch size m of a batch B
// (plan [m, m, ..., r]), runs m once to verify it, and re-plans smaller after an
// OutOfMemory. It measures through a callback, so it needs no Trainer.
//
// Every decision is logged with its numbers (available, margin, fixed bytes, bytes per
// sample, m, k), and a Plan carries its own explanation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/allocator.h"
#include "runtime/error.h"
#include "runtime/memory_report.h"

namespace mb {

// What one measured training micro-batch cost above the baseline (the bytes allocated
// before it ran).
struct RunPeak {
  std::size_t allocated = 0;  // peak bytes in live blocks
  // Peak bytes the arena held (segments), from an emptied cache. Logged, not planned on:
  // under a cap the pool reserves greedily up to the cap, so this says what was held, not
  // what was needed.
  std::size_t reserved = 0;
};

// What one training micro-batch costs, measured by probing (two probe sizes separate the
// per-sample part from the fixed part: workspaces, the loss, rounding).
struct MemoryProfile {
  std::size_t fixed_bytes = 0;
  std::size_t bytes_per_sample = 0;
  std::size_t analytic_bytes_per_sample = 0;  // from layer shapes, for the cross-check
  std::int64_t probe_small = 0, probe_large = 0;
  std::size_t peak_small = 0, peak_large = 0;  // peak allocated above the baseline
  // The largest size a plan check ran (0: none yet). Its allocated peak holds the pool's
  // rounding at that size, and whether a size runs tests the arena's fragmentation, so
  // once one ran the margin is a safety share only (PlannerOptions).
  std::int64_t checked_samples = 0;
};

// The fewest values per channel a BatchNorm layer may normalize over in one micro-batch.
//
// Note: with n values per channel BN's input gradient is projected onto n - 1 directions,
// and at n = 2 the normalized values are +-1 whatever the input: the gradient is zero in
// exact arithmetic and rounding noise times a huge 1/sigma in float32. Measured with
// PyTorch 1.13 on ResNet-18 at 32x32 (layer4 is 1x1, so n = micro-batch), gradient norms
// over 4 micro-batches each: n = 2: 3.9e3-1.7e5; 3: 740-1800; 4: 260-380; 6: 131-148;
// 8: 98-116; 12: 76-81; 16: 65-67; 32: 43-45. From 8 on the norm follows the 1/sqrt(n)
// of sampling noise (within 1.3x of 32's scaled); below it the noise of BN itself wins.
inline constexpr std::int64_t kMinValuesPerChannel = 8;

// The smallest micro-batch that gives a layer seeing `values_per_sample` values per channel
// and sample (H x W at the deepest BatchNorm; 0: no batch statistics) kMinValuesPerChannel
// values: ceil(8 / values_per_sample), at least 2 when there are batch statistics, else 1.
std::int64_t min_micro_batch_for_statistics(std::int64_t values_per_sample);

// Splits `batch` into micro-batches of `micro_batch` and a remainder. A remainder below
// `min_size` (the planner's minimum: batch statistics) borrows from the micro-batch before
// it: [.., m, r] becomes [.., m - (min_size - r), min_size], or, when that would leave the
// one before below min_size, merges into it ([.., m + r], larger than m: only when m is
// within min_size of the minimum). No micro-batch is ever below min_size unless the whole
// batch is.
std::vector<std::int64_t> split_batch(std::int64_t batch, std::int64_t micro_batch,
                                      std::int64_t min_size = 1);
// How many micro-batches split_batch gives, without building them (batches of 2^62).
std::int64_t split_count(std::int64_t batch, std::int64_t micro_batch, std::int64_t min_size = 1);
// "[m, m, m, ... (k more), last]" without building the split.
std::string describe_split(std::int64_t batch, std::int64_t micro_batch, std::int64_t min_size);
// The sizes after the split's run of full micro-batches (none, one remainder, or the two a
// small remainder borrowing from the last full one makes), without building the split.
std::vector<std::int64_t> split_tail(std::int64_t batch, std::int64_t micro_batch,
                                     std::int64_t min_size);

// A decision of the planner: a value, replaced as a whole when the planner decides again.
struct Plan {
  std::int64_t batch_size = 0;
  std::int64_t micro_batch = 0;  // m, the largest micro-batch
  // The smallest micro-batch that may run: batch statistics (min_micro_batch_for_statistics)
  // or the caller's floor.
  std::int64_t min_micro_batch = 1;
  std::int64_t max_micro_batch = 0;  // PlannerOptions::max_micro_batch (0: none)
  bool automatic = false;
  std::size_t available_bytes = 0;  // report.available() when planned
  std::size_t margin_bytes = 0;
  MemoryProfile profile;
  std::string explanation;

  // The micro-batch sizes for a batch of `batch` samples under this plan.
  std::vector<std::int64_t> split(std::int64_t batch) const {
    return split_batch(batch, micro_batch, min_micro_batch);
  }
  // Every micro-batch of the whole batch: count() entries (build it only when that is small).
  std::vector<std::int64_t> sizes() const { return split(batch_size); }
  std::int64_t count() const { return split_count(batch_size, micro_batch, min_micro_batch); }
};

// Parses --micro-batch: "auto" gives 0 (plan from the allocator's report), else a positive
// integer; anything else throws mb::InvalidArgument naming the value and the fix.
std::int64_t parse_micro_batch(const std::string& text);

struct PlannerOptions {
  // The margin before a plan check has run (a prior): this share of the available bytes,
  // at least margin_min_bytes. It covers what the 1-4 sample probes cannot see.
  double margin_fraction = 0.05;
  std::size_t margin_min_bytes = 1 << 20;
  // After a plan check ran a size, its measured peak replaces the prior: the margin is this
  // share of the available bytes (at least safety_min_bytes), for what a training step adds
  // beside the measured micro-batch.
  double safety_fraction = 0.005;
  std::size_t safety_min_bytes = 64 << 10;
  // A plan check grows the micro-batch only when the gain is at least this share (or one
  // sample), so the plan ends within it of the largest size that fits.
  double min_growth = 0.02;
  // The smallest micro-batch that may run (1: any). The Trainer raises it to
  // min_micro_batch_for_statistics() of its model at the input's shape.
  std::int64_t min_micro_batch = 1;
  // The largest micro-batch that may run (0: no bound). On CUDA the Trainer sets it so that
  // no tensor exceeds kMaxTensorElements (TrainerOptions::tensor_element_limit).
  std::int64_t max_micro_batch = 0;
};

// Legacy cuDNN tensor descriptors take int dimensions and strides: a tensor of more than
// 2^31 - 1 elements is refused with CUDNN_STATUS_BAD_PARAM, not an out-of-memory.
inline constexpr std::int64_t kMaxTensorElements = 2147483647;

// The margin an automatic plan holds back from `available` bytes: the prior share before a
// plan check ran (profile.checked_samples == 0), else the safety share.
std::size_t plan_margin(std::size_t available, const MemoryProfile& profile,
                        const PlannerOptions& options);

// The bytes per sample an automatic plan divides by. Before a plan check ran, the larger of
// the probe's and the analytic estimate: probes of 1-4 samples can see half of what a
// sample costs (LeNet-5: 19 KiB where 40 KiB is measured at hundreds of samples, the small
// pool's blocks absorbing the growth), and a first plan check twice too large wastes its
// rounds shrinking; the analytic estimate is within 10% at real sizes (tested for the zoo).
// After a plan check, what it measured.
std::size_t planning_bytes_per_sample(const MemoryProfile& profile);

// The arithmetic of an automatic plan: m = floor((available - margin - fixed) /
// planning_bytes_per_sample), at most batch_size. Throws mb::OutOfMemory (with `report`) when not
// even min(min_micro_batch, batch_size) samples fit.
Plan plan_from_report(std::int64_t batch_size, const FreeArenaReport& report,
                      const MemoryProfile& profile, const PlannerOptions& options);

class Planner {
 public:
  // Runs a training micro-batch of `samples` samples (the Trainer: followed, in the same
  // arena, by the smaller sizes its split of the batch ends with, as a step runs them) and
  // returns the peaks above the baseline; an OutOfMemory propagates.
  using Measure = std::function<RunPeak(std::int64_t samples)>;
  using Log = std::function<void(const std::string&)>;

  Planner(std::shared_ptr<Allocator> allocator, PlannerOptions options, Log log);

  const PlannerOptions& options() const { return options_; }

  // Probes at two small sizes (after a warm-up run) for bytes per sample and fixed bytes.
  MemoryProfile probe(const Measure& measure, std::size_t analytic_bytes_per_sample) const;

  // The plan for `batch_size`: fixed when micro_batch > 0 (the user's --micro-batch), else
  // probed, planned from the allocator's report and verified by running the planned size.
  Plan plan(std::int64_t batch_size, std::int64_t micro_batch, const Measure& measure,
            std::size_t analytic_bytes_per_sample) const;

  // After micro-batch `index` of `failed_size` samples ran out of memory: the plan with half
  // the micro-batch. Throws mb::OutOfMemory (with the allocator's report) when failed_size
  // is already the minimum.
  Plan after_out_of_memory(const Plan& plan, const OutOfMemory& error, std::int64_t failed_size,
                           int index) const;

 private:
  Plan fixed(std::int64_t batch_size, std::int64_t micro_batch) const;
  Plan verify(Plan plan, const FreeArenaReport& report, const Measure& measure) const;
  void log(const std::string& message) const;

  std::shared_ptr<Allocator> allocator_;
  PlannerOptions options_;
  Log log_;
};

}  // namespace mb
