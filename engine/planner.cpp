// The micro-batch planner: arithmetic, probing, verification and re-planning.
#include "engine/planner.h"

#include <algorithm>
#include <sstream>

namespace mb {
namespace {

// Where the margin came from, for the explanation.
std::string margin_origin(const MemoryProfile& profile) {
  if (profile.checked_samples == 0) return " (prior: before a plan check)";
  return " (safety: after a plan check at " + std::to_string(profile.checked_samples) + " samples)";
}

// One line with the numbers behind an automatic plan.
std::string explain(const Plan& plan, const FreeArenaReport& report) {
  const MemoryProfile& profile = plan.profile;
  const std::size_t overhead = plan.margin_bytes + profile.fixed_bytes;
  const std::size_t per_sample = planning_bytes_per_sample(profile);
  const std::size_t fits = plan.available_bytes > overhead && per_sample > 0
                               ? (plan.available_bytes - overhead) / per_sample
                               : 0;
  std::ostringstream out;
  out << "plan: batch " << plan.batch_size << " -> micro-batch " << plan.micro_batch << " x "
      << plan.count() << " "
      << describe_split(plan.batch_size, plan.micro_batch, plan.min_micro_batch) << " (available "
      << format_bytes(plan.available_bytes) << " = free in arena "
      << format_bytes(report.free_in_arena) << " + headroom " << format_bytes(report.headroom)
      << "; margin " << format_bytes(plan.margin_bytes) << margin_origin(profile) << "; fixed "
      << format_bytes(profile.fixed_bytes) << "; bytes/sample "
      << format_bytes(profile.bytes_per_sample) << " measured, "
      << format_bytes(profile.analytic_bytes_per_sample) << " analytic; fits " << fits
      << " samples";
  if (plan.max_micro_batch > 0 && plan.micro_batch == plan.max_micro_batch &&
      plan.micro_batch < plan.batch_size) {
    out << "; capped at " << plan.max_micro_batch << " so that no tensor exceeds 2^31 - 1 elements";
  }
  out << ")";
  return out.str();
}

Plan with_micro_batch(Plan plan, std::int64_t micro_batch) {
  plan.micro_batch = micro_batch;
  return plan;
}

}  // namespace

std::int64_t parse_micro_batch(const std::string& text) {
  if (text == "auto") return 0;
  try {
    std::size_t used = 0;
    const long long value = std::stoll(text, &used);
    if (used == text.size() && value > 0) return value;
  } catch (const std::exception&) {
  }
  MB_THROW(InvalidArgument, "--micro-batch '", text,
           "' is not valid. Fix: use auto or a positive integer");
}

namespace {

// A split is `full` micro-batches of m, then at most two tail sizes.
struct SplitForm {
  std::int64_t micro_batch = 0;
  std::int64_t full = 0;
  std::vector<std::int64_t> tail;
  std::int64_t count() const { return full + static_cast<std::int64_t>(tail.size()); }
};

SplitForm split_form(std::int64_t batch, std::int64_t micro_batch, std::int64_t min_size) {
  MB_CHECK(batch > 0, "split_batch: batch size must be positive, got ", batch);
  MB_CHECK(micro_batch > 0, "split_batch: micro-batch size must be positive, got ", micro_batch);
  MB_CHECK(min_size > 0, "split_batch: minimum size must be positive, got ", min_size);
  MB_CHECK(micro_batch >= min_size || micro_batch >= batch, "split_batch: micro-batch ",
           micro_batch, " is below the minimum of ", min_size);
  SplitForm form;
  form.micro_batch = std::min(micro_batch, batch);
  const std::int64_t m = form.micro_batch, remainder = batch % m;
  form.full = batch / m;
  if (remainder == 0) return form;
  if (remainder >= min_size) {
    form.tail = {remainder};
    return form;
  }
  --form.full;  // the last full micro-batch lends to the remainder, or takes it
  const std::int64_t borrow = min_size - remainder;
  if (m - borrow >= min_size) {
    form.tail = {m - borrow, min_size};
  } else {
    form.tail = {m + remainder};
  }
  return form;
}

}  // namespace

std::int64_t min_micro_batch_for_statistics(std::int64_t values_per_sample) {
  MB_CHECK(values_per_sample >= 0, "values per sample must be >= 0, got ", values_per_sample);
  if (values_per_sample == 0) return 1;
  return std::max<std::int64_t>(2,
                                (kMinValuesPerChannel + values_per_sample - 1) / values_per_sample);
}

std::vector<std::int64_t> split_batch(std::int64_t batch, std::int64_t micro_batch,
                                      std::int64_t min_size) {
  const SplitForm form = split_form(batch, micro_batch, min_size);
  std::vector<std::int64_t> sizes(static_cast<std::size_t>(form.full), form.micro_batch);
  sizes.insert(sizes.end(), form.tail.begin(), form.tail.end());
  return sizes;
}

std::vector<std::int64_t> split_tail(std::int64_t batch, std::int64_t micro_batch,
                                     std::int64_t min_size) {
  return split_form(batch, micro_batch, min_size).tail;
}

std::int64_t split_count(std::int64_t batch, std::int64_t micro_batch, std::int64_t min_size) {
  return split_form(batch, micro_batch, min_size).count();
}

std::string describe_split(std::int64_t batch, std::int64_t micro_batch, std::int64_t min_size) {
  const SplitForm form = split_form(batch, micro_batch, min_size);
  const auto size_at = [&](std::int64_t i) {
    return i < form.full ? form.micro_batch : form.tail[static_cast<std::size_t>(i - form.full)];
  };
  const std::int64_t count = form.count();
  std::ostringstream out;
  out << "[";
  for (std::int64_t i = 0; i < count; ++i) {
    if (i == 6 && count > 8) {
      out << ", ... (" << count - 7 << " more), " << size_at(count - 1);
      break;
    }
    out << (i ? ", " : "") << size_at(i);
  }
  out << "]";
  return out.str();
}

std::size_t plan_margin(std::size_t available, const MemoryProfile& profile,
                        const PlannerOptions& options) {
  const double bytes = static_cast<double>(available);
  if (profile.checked_samples == 0) {
    return std::max<std::size_t>(options.margin_min_bytes,
                                 static_cast<std::size_t>(options.margin_fraction * bytes));
  }
  return std::max<std::size_t>(options.safety_min_bytes,
                               static_cast<std::size_t>(options.safety_fraction * bytes));
}

std::size_t planning_bytes_per_sample(const MemoryProfile& profile) {
  if (profile.checked_samples > 0) return profile.bytes_per_sample;
  return std::max(profile.bytes_per_sample, profile.analytic_bytes_per_sample);
}

Plan plan_from_report(std::int64_t batch_size, const FreeArenaReport& report,
                      const MemoryProfile& profile, const PlannerOptions& options) {
  MB_CHECK(batch_size > 0, "plan: batch size must be positive, got ", batch_size);
  MB_CHECK(profile.bytes_per_sample > 0, "plan: bytes per sample not measured");
  Plan plan;
  plan.batch_size = batch_size;
  plan.min_micro_batch = options.min_micro_batch;
  plan.automatic = true;
  plan.profile = profile;
  plan.available_bytes = report.available();
  plan.margin_bytes = plan_margin(plan.available_bytes, profile, options);
  const std::size_t overhead = plan.margin_bytes + profile.fixed_bytes;
  const std::size_t per_sample = planning_bytes_per_sample(profile);
  std::int64_t m = 0;
  if (plan.available_bytes > overhead) {
    m = static_cast<std::int64_t>((plan.available_bytes - overhead) / per_sample);
  }
  const std::int64_t required = std::min(options.min_micro_batch, batch_size);
  if (m < required) {
    throw OutOfMemory(overhead + static_cast<std::size_t>(required) * per_sample, report,
                      "planner: not even " + std::to_string(required) +
                          " sample(s) fit (bytes/sample " + format_bytes(per_sample) + ", fixed " +
                          format_bytes(profile.fixed_bytes) + ", margin " +
                          format_bytes(plan.margin_bytes) + ");",
                      __FILE__, __LINE__,
                      "Fix: raise --memory-limit to at least " +
                          format_bytes(report.allocated + overhead +
                                       static_cast<std::size_t>(required) * per_sample) +
                          " (the micro-batch cannot be smaller than " + std::to_string(required) +
                          " sample(s)), or use a smaller model or input");
  }
  plan.micro_batch = std::min(m, batch_size);
  plan.max_micro_batch = options.max_micro_batch;
  if (options.max_micro_batch > 0) {
    plan.micro_batch = std::min(plan.micro_batch, options.max_micro_batch);
  }
  plan.explanation = explain(plan, report);
  return plan;
}

Planner::Planner(std::shared_ptr<Allocator> allocator, PlannerOptions options, Log log)
    : allocator_(std::move(allocator)), options_(options), log_(std::move(log)) {
  MB_CHECK(allocator_ != nullptr, "Planner needs the allocator it plans for");
  MB_CHECK(options_.min_micro_batch >= 1, "Planner: min_micro_batch must be >= 1, got ",
           options_.min_micro_batch);
}

void Planner::log(const std::string& message) const {
  if (log_) log_(message);
}

MemoryProfile Planner::probe(const Measure& measure, std::size_t analytic_bytes_per_sample) const {
  const std::int64_t small = options_.min_micro_batch;
  const std::int64_t large = small + 2;
  MemoryProfile profile;
  profile.probe_small = small;
  profile.probe_large = large;
  profile.analytic_bytes_per_sample = analytic_bytes_per_sample;
  allocator_->mark("probe");
  // The first run also creates lazily allocated state (algorithm choices, workspaces).
  try {
    measure(small);
    profile.peak_small = measure(small).allocated;
  } catch (const OutOfMemory& error) {
    // The smallest micro-batch the planner may use does not run: no plan can help.
    const FreeArenaReport& report = error.report();
    throw OutOfMemory(error.requested_bytes(), report,
                      "planner: the smallest micro-batch (" + std::to_string(small) +
                          " sample(s)) does not fit beside the fixed state (parameters " +
                          format_bytes(report.tag_bytes(MemoryTag::Param)) + ", gradients " +
                          format_bytes(report.tag_bytes(MemoryTag::Grad)) + ", optimizer state " +
                          format_bytes(report.tag_bytes(MemoryTag::Optimizer)) + ");",
                      __FILE__, __LINE__,
                      "Fix: raise --memory-limit (this run needed more than " +
                          format_bytes(report.capacity) +
                          "), or use a smaller model or input, or an optimizer with less state");
  }
  try {
    profile.peak_large = measure(large).allocated;
    profile.bytes_per_sample =
        (profile.peak_large > profile.peak_small)
            ? (profile.peak_large - profile.peak_small) / static_cast<std::size_t>(large - small)
            : profile.peak_small / static_cast<std::size_t>(small);
  } catch (const OutOfMemory&) {
    // Only the small probe fits: attribute all of it to the samples (conservative).
    profile.peak_large = 0;
    profile.bytes_per_sample = profile.peak_small / static_cast<std::size_t>(small);
  }
  profile.bytes_per_sample = std::max<std::size_t>(profile.bytes_per_sample, 1);
  const std::size_t per_sample_part = profile.bytes_per_sample * static_cast<std::size_t>(small);
  profile.fixed_bytes =
      profile.peak_small > per_sample_part ? profile.peak_small - per_sample_part : 0;
  std::ostringstream out;
  out << "probe: peak above baseline " << format_bytes(profile.peak_small) << " at " << small
      << " sample(s), " << format_bytes(profile.peak_large) << " at " << large
      << " -> bytes/sample " << format_bytes(profile.bytes_per_sample) << " (analytic "
      << format_bytes(profile.analytic_bytes_per_sample) << "), fixed "
      << format_bytes(profile.fixed_bytes);
  log(out.str());
  return profile;
}

Plan Planner::fixed(std::int64_t batch_size, std::int64_t micro_batch) const {
  MB_CHECK(batch_size > 0, "plan: batch size must be positive, got ", batch_size);
  MB_CHECK(micro_batch > 0, "plan: --micro-batch must be positive or auto, got ", micro_batch);
  Plan plan;
  plan.batch_size = batch_size;
  plan.min_micro_batch = options_.min_micro_batch;
  plan.micro_batch = std::min(micro_batch, batch_size);
  plan.max_micro_batch = options_.max_micro_batch;
  if (options_.max_micro_batch > 0 && plan.micro_batch > options_.max_micro_batch) {
    MB_THROW(InvalidArgument, "--micro-batch ", micro_batch,
             " would make a tensor of more than 2^31 - 1 elements, which cuDNN refuses; at most ",
             options_.max_micro_batch, " samples fit in one. Fix: pass --micro-batch ",
             options_.max_micro_batch, " or less, or --micro-batch auto");
  }
  if (plan.micro_batch < std::min(options_.min_micro_batch, batch_size)) {
    MB_THROW(InvalidArgument, "--micro-batch ", micro_batch, " is below the minimum of ",
             options_.min_micro_batch, " samples: BatchNorm needs at least ", kMinValuesPerChannel,
             " values per channel in every micro-batch (engine/planner.h). Fix: pass "
             "--micro-batch ",
             options_.min_micro_batch, " or more, or --micro-batch auto");
  }
  plan.explanation = "plan: batch " + std::to_string(batch_size) + " -> micro-batch " +
                     std::to_string(plan.micro_batch) + " x " + std::to_string(plan.count()) + " " +
                     describe_split(plan.batch_size, plan.micro_batch, plan.min_micro_batch) +
                     " (fixed by --micro-batch)";
  return plan;
}

Plan Planner::plan(std::int64_t batch_size, std::int64_t micro_batch, const Measure& measure,
                   std::size_t analytic_bytes_per_sample) const {
  Plan plan;
  if (micro_batch > 0) {
    plan = fixed(batch_size, micro_batch);
  } else {
    const MemoryProfile profile = probe(measure, analytic_bytes_per_sample);
    const FreeArenaReport report = allocator_->report();
    plan = verify(plan_from_report(batch_size, report, profile, options_), report, measure);
    plan.explanation = explain(plan, report);
    if (plan.micro_batch > plan.profile.probe_large) {
      plan.explanation +=
          "; micro-batch " + std::to_string(plan.micro_batch) + " verified by a run";
    }
  }
  log(plan.explanation);
  return plan;
}

// Note: bytes per sample measured at 1-4 samples miss what only large tensors cost (the
// pool's coarser size classes and segments, workspaces that grow with the batch), so the
// planned size is run once for real. A run that fits measures bytes per sample from its
// peak (the pool's rounding at that size included) and re-plans with the safety margin
// (growing or shrinking); an OutOfMemory shrinks by the share of the request that was
// available, or, once a size has run, bisects between it and the size that failed (the
// arena's fragmentation shows only in whether a size runs). It stops when the next size
// would gain less than min_growth: so the plan ends within that share of the largest size
// that fits (when fitting is monotone in the size). A few rounds at most once a size has
// run, each logged; until then the loop goes on, since every OutOfMemory shrinks by at
// least 10% and the probes' sizes ran, so the plan returned is always a size that ran.
Plan Planner::verify(Plan plan, const FreeArenaReport& report, const Measure& measure) const {
  const std::int64_t min_samples = options_.min_micro_batch;
  std::int64_t verified = 0;                  // largest size that ran
  std::int64_t failed = plan.batch_size + 1;  // smallest size that did not
  Plan verified_plan;
  const auto growth_step = [&](std::int64_t m) {
    return std::max<std::int64_t>(
        1, static_cast<std::int64_t>(options_.min_growth * static_cast<double>(m)));
  };
  for (int round = 0; (round < 8 || verified == 0) && plan.micro_batch > plan.profile.probe_large;
       ++round) {
    const std::int64_t m = plan.micro_batch;
    try {
      const RunPeak peak = measure(m);
      verified = m;
      MemoryProfile refined = plan.profile;
      const std::size_t above_small = peak.allocated > refined.peak_small
                                          ? peak.allocated - refined.peak_small
                                          : refined.bytes_per_sample;
      refined.bytes_per_sample =
          std::max<std::size_t>(1, above_small / static_cast<std::size_t>(m - refined.probe_small));
      refined.checked_samples = m;
      const Plan refined_plan = plan_from_report(plan.batch_size, report, refined, options_);
      verified_plan = with_micro_batch(refined_plan, m);
      log("plan check: micro-batch " + std::to_string(m) + " ran, peak " +
          format_bytes(peak.allocated) + " allocated, " + format_bytes(peak.reserved) +
          " reserved -> bytes/sample " + format_bytes(refined.bytes_per_sample) + ", margin " +
          format_bytes(refined_plan.margin_bytes) + ", fits " +
          std::to_string(refined_plan.micro_batch));
      std::int64_t next = refined_plan.micro_batch;
      if (next >= failed) next = m + (failed - m) / 2;
      if (next - m < growth_step(m)) return verified_plan;
      plan = with_micro_batch(refined_plan, next);  // room to grow: verify it next round
    } catch (const OutOfMemory& error) {
      failed = std::min(failed, m);
      const FreeArenaReport at_failure = error.report();
      const double fit = static_cast<double>(at_failure.available()) /
                         static_cast<double>(at_failure.available() + error.requested_bytes());
      std::int64_t smaller = std::max<std::int64_t>(
          min_samples, static_cast<std::int64_t>(static_cast<double>(m) * std::min(0.9, fit)));
      // A size already ran: bisect between it and the one that failed (an OutOfMemory
      // from fragmentation says little about how much smaller is needed).
      if (verified > 0) smaller = verified + (m - verified) / 2;
      log("plan check: micro-batch " + std::to_string(m) + " ran out of memory (requested " +
          format_bytes(error.requested_bytes()) + ", available " +
          format_bytes(at_failure.available()) + ", largest free block " +
          format_bytes(at_failure.largest_free_block) + ") -> micro-batch " +
          std::to_string(smaller));
      if (smaller >= m) throw;
      if (verified > 0 && smaller - verified < growth_step(verified)) return verified_plan;
      plan = with_micro_batch(plan, smaller);
    }
  }
  // Out of rounds: keep the largest size that ran (the probes' own sizes always ran).
  if (verified > 0 && plan.micro_batch != verified) {
    log("plan check: keeping micro-batch " + std::to_string(verified) + ", the largest that ran");
    return verified_plan;
  }
  return plan;
}

Plan Planner::after_out_of_memory(const Plan& plan, const OutOfMemory& error,
                                  std::int64_t failed_size, int index) const {
  const std::int64_t min_samples = options_.min_micro_batch;
  if (failed_size <= min_samples) {
    throw OutOfMemory(error.requested_bytes(), error.report(),
                      "re-planning cannot go below " + std::to_string(min_samples) +
                          " sample(s) per micro-batch;",
                      __FILE__, __LINE__);
  }
  const std::int64_t smaller = std::max(min_samples, failed_size / 2);
  std::ostringstream out;
  out << "re-plan: OutOfMemory in micro-batch " << index << " of " << failed_size
      << " samples (requested " << format_bytes(error.requested_bytes()) << ", free in arena "
      << format_bytes(error.report().free_in_arena) << ", largest free block "
      << format_bytes(error.report().largest_free_block) << ", headroom "
      << format_bytes(error.report().headroom) << ") -> micro-batch " << smaller;
  log(out.str());
  allocator_->mark("re-plan");
  Plan smaller_plan = with_micro_batch(plan, smaller);
  smaller_plan.explanation = out.str();
  return smaller_plan;
}

}  // namespace mb
