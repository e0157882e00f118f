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

// What one training micro-batch costs, measured by probing (two probe sizes separate the
// per-sample part from the fixed part: workspaces, the loss, rounding).
struct MemoryProfile {
  std::size_t fixed_bytes = 0;
  std::size_t bytes_per_sample = 0;
  std::size_t analytic_bytes_per_sample = 0;  // from layer shapes, for the cross-check
  std::int64_t probe_small = 0, probe_large = 0;
  std::size_t peak_small = 0, peak_large = 0;  // peak allocated above the baseline
};

// Splits `batch` into micro-batches of `micro_batch` and a remainder. With
// `refuse_single_sample` (models with BatchNorm, whose statistics need 2 samples), a last
// micro-batch of 1 sample is avoided: [.., m, 1] becomes [.., m - 1, 2] when m > 2 and is
// merged into the previous micro-batch otherwise.
std::vector<std::int64_t> split_batch(std::int64_t batch, std::int64_t micro_batch,
                                      bool refuse_single_sample);

// A decision of the planner: a value, replaced as a whole when the planner decides again.
struct Plan {
  std::int64_t batch_size = 0;
  std::int64_t micro_batch = 0;      // m, the largest micro-batch
  std::int64_t min_micro_batch = 1;  // 2 for models that need batch statistics
  bool automatic = false;
  std::size_t available_bytes = 0;  // report.available() when planned
  std::size_t margin_bytes = 0;
  MemoryProfile profile;
  std::string explanation;

  // The micro-batch sizes for a batch of `batch` samples under this plan.
  std::vector<std::int64_t> split(std::int64_t batch) const {
    return split_batch(batch, micro_batch, min_micro_batch > 1);
  }
  std::vector<std::int64_t> sizes() const { return split(batch_size); }
  std::int64_t count() const { return static_cast<std::int64_t>(sizes().size()); }
};

// Parses --micro-batch: "auto" gives 0 (plan from the allocator's report), else a positive
// integer; anything else throws mb::InvalidArgument naming the value and the fix.
std::int64_t parse_micro_batch(const std::string& text);

struct PlannerOptions {
  double margin_fraction = 0.05;  // of the available bytes
  std::size_t margin_min_bytes = 1 << 20;
  // The smallest micro-batch that may run: 2 for models with layers that need batch
  // statistics (Module::uses_batch_statistics), else 1.
  std::int64_t min_micro_batch = 1;
};

// The arithmetic of an automatic plan: m = floor((available - margin - fixed) /
// bytes_per_sample), at most batch_size. Throws mb::OutOfMemory (with `report`) when not
// even min_micro_batch samples fit.
Plan plan_from_report(std::int64_t batch_size, const FreeArenaReport& report,
                      const MemoryProfile& profile, const PlannerOptions& options);

class Planner {
 public:
  // Runs one training micro-batch of `samples` samples and returns its peak allocated
  // bytes above the baseline; an OutOfMemory propagates.
  using Measure = std::function<std::size_t(std::int64_t samples)>;
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
