// The micro-batch planner: from the allocator's FreeArenaReport and the measured bytes per
// sample, the micro-batch size m and the plan [m, m, ..., r] for a batch B.
//
// Every decision carries its numbers (available, margin, fixed bytes, bytes per sample,
// m, k) in `explanation`, and the engine logs it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

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

struct Plan {
  std::int64_t batch_size = 0;
  std::int64_t micro_batch = 0;     // m
  std::vector<std::int64_t> sizes;  // [m, ..., r], sums to batch_size
  bool automatic = false;
  std::size_t available_bytes = 0;  // report.available() when planned
  std::size_t margin_bytes = 0;
  MemoryProfile profile;
  std::string explanation;

  std::int64_t count() const { return static_cast<std::int64_t>(sizes.size()); }
};

// Parses --micro-batch: "auto" gives 0 (plan from the allocator's report), else a positive
// integer; anything else throws mb::InvalidArgument naming the value and the fix.
std::int64_t parse_micro_batch(const std::string& text);

// Splits `batch` into micro-batches of `micro_batch` and a remainder. With
// `refuse_single_sample` (models with BatchNorm, whose statistics need 2 samples), a last
// micro-batch of 1 sample is avoided: [.., m, 1] becomes [.., m - 1, 2] when m > 2 and is
// merged into the previous micro-batch otherwise.
std::vector<std::int64_t> split_batch(std::int64_t batch, std::int64_t micro_batch,
                                      bool refuse_single_sample);

struct PlannerOptions {
  double margin_fraction = 0.05;  // of the available bytes
  std::size_t margin_min_bytes = 1 << 20;
  bool refuse_single_sample = false;
};

// Chooses m = floor((available - margin - fixed) / bytes_per_sample), at most batch_size.
// Throws mb::OutOfMemory (with `report`) when not even one sample fits.
Plan plan_automatic(std::int64_t batch_size, const FreeArenaReport& report,
                    const MemoryProfile& profile, const PlannerOptions& options);
// One line with the numbers behind an automatic plan.
std::string explain_plan(const Plan& plan, const FreeArenaReport& report);
// A fixed micro-batch size chosen by the user (still explained).
Plan plan_fixed(std::int64_t batch_size, std::int64_t micro_batch, const PlannerOptions& options);

}  // namespace mb
