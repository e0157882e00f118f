// Micro-batch planning arithmetic.
#include "engine/planner.h"

#include <algorithm>
#include <sstream>

#include "runtime/error.h"

namespace mb {

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

std::vector<std::int64_t> split_batch(std::int64_t batch, std::int64_t micro_batch,
                                      bool refuse_single_sample) {
  MB_CHECK(batch > 0, "split_batch: batch size must be positive, got ", batch);
  MB_CHECK(micro_batch > 0, "split_batch: micro-batch size must be positive, got ", micro_batch);
  const std::int64_t m = std::min(micro_batch, batch);
  std::vector<std::int64_t> sizes(static_cast<std::size_t>(batch / m), m);
  if (batch % m != 0) sizes.push_back(batch % m);
  if (refuse_single_sample && sizes.size() > 1 && sizes.back() == 1) {
    if (m > 2) {
      sizes[sizes.size() - 2] -= 1;
      sizes.back() = 2;
    } else {
      sizes.pop_back();
      sizes.back() += 1;
    }
  }
  return sizes;
}

namespace {

std::string describe_sizes(const std::vector<std::int64_t>& sizes) {
  std::ostringstream out;
  out << "[";
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    if (i == 6 && sizes.size() > 8) {
      out << ", ... (" << sizes.size() - 7 << " more), " << sizes.back();
      break;
    }
    out << (i ? ", " : "") << sizes[i];
  }
  out << "]";
  return out.str();
}

}  // namespace

Plan plan_automatic(std::int64_t batch_size, const FreeArenaReport& report,
                    const MemoryProfile& profile, const PlannerOptions& options) {
  MB_CHECK(batch_size > 0, "plan: batch size must be positive, got ", batch_size);
  MB_CHECK(profile.bytes_per_sample > 0, "plan: bytes per sample not measured");
  Plan plan;
  plan.batch_size = batch_size;
  plan.automatic = true;
  plan.profile = profile;
  plan.available_bytes = report.available();
  plan.margin_bytes =
      std::max<std::size_t>(options.margin_min_bytes,
                            static_cast<std::size_t>(options.margin_fraction *
                                                     static_cast<double>(plan.available_bytes)));
  const std::size_t overhead = plan.margin_bytes + profile.fixed_bytes;
  std::int64_t m = 0;
  if (plan.available_bytes > overhead) {
    m = static_cast<std::int64_t>((plan.available_bytes - overhead) / profile.bytes_per_sample);
  }
  const std::int64_t min_samples = options.refuse_single_sample ? 2 : 1;
  if (m < min_samples) {
    throw OutOfMemory(overhead + min_samples * profile.bytes_per_sample, report,
                      "planner: not even " + std::to_string(min_samples) +
                          " sample(s) fit (bytes/sample " + format_bytes(profile.bytes_per_sample) +
                          ", fixed " + format_bytes(profile.fixed_bytes) + ", margin " +
                          format_bytes(plan.margin_bytes) + ");",
                      __FILE__, __LINE__);
  }
  plan.micro_batch = std::min(m, batch_size);
  plan.sizes = split_batch(batch_size, plan.micro_batch, options.refuse_single_sample);
  plan.explanation = explain_plan(plan, report);
  return plan;
}

std::string explain_plan(const Plan& plan, const FreeArenaReport& report) {
  const MemoryProfile& profile = plan.profile;
  const std::size_t overhead = plan.margin_bytes + profile.fixed_bytes;
  const std::size_t fits = plan.available_bytes > overhead && profile.bytes_per_sample > 0
                               ? (plan.available_bytes - overhead) / profile.bytes_per_sample
                               : 0;
  std::ostringstream out;
  out << "plan: batch " << plan.batch_size << " -> micro-batch " << plan.micro_batch << " x "
      << plan.count() << " " << describe_sizes(plan.sizes) << " (available "
      << format_bytes(plan.available_bytes) << " = free in arena "
      << format_bytes(report.free_in_arena) << " + headroom " << format_bytes(report.headroom)
      << "; margin " << format_bytes(plan.margin_bytes) << "; fixed "
      << format_bytes(profile.fixed_bytes) << "; bytes/sample "
      << format_bytes(profile.bytes_per_sample) << " measured, "
      << format_bytes(profile.analytic_bytes_per_sample) << " analytic; fits " << fits
      << " samples)";
  return out.str();
}

Plan plan_fixed(std::int64_t batch_size, std::int64_t micro_batch, const PlannerOptions& options) {
  MB_CHECK(batch_size > 0, "plan: batch size must be positive, got ", batch_size);
  MB_CHECK(micro_batch > 0, "plan: --micro-batch must be positive or auto, got ", micro_batch);
  Plan plan;
  plan.batch_size = batch_size;
  plan.micro_batch = std::min(micro_batch, batch_size);
  plan.sizes = split_batch(batch_size, plan.micro_batch, options.refuse_single_sample);
  plan.explanation = "plan: batch " + std::to_string(batch_size) + " -> micro-batch " +
                     std::to_string(plan.micro_batch) + " x " + std::to_string(plan.count()) + " " +
                     describe_sizes(plan.sizes) + " (fixed by --micro-batch)";
  return plan;
}

}  // namespace mb
