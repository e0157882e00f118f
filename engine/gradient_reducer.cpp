// Bucketed, optionally overlapped all-reduce of the step's gradients.
#include "engine/gradient_reducer.h"

#include <algorithm>
#include <chrono>
#include <numeric>

#include "data/loader.h"
#include "runtime/error.h"

namespace mb {

GradientReducer::GradientReducer(std::shared_ptr<Communicator> communicator,
                                 std::vector<Parameter*> parameters,
                                 std::vector<std::int64_t> offsets, Tensor flat,
                                 std::size_t bucket_bytes, Stream stream)
    : communicator_(std::move(communicator)), flat_(std::move(flat)), stream_(stream) {
  MB_CHECK(communicator_ != nullptr, "GradientReducer needs a communicator");
  MB_CHECK(parameters.size() == offsets.size(), "GradientReducer: ", parameters.size(),
           " parameters but ", offsets.size(), " offsets");
  MB_CHECK(bucket_bytes > 0, "GradientReducer: a bucket must hold at least one byte");
  // Parameters by offset: the flat layout is the order buckets take them in.
  std::vector<std::size_t> order(parameters.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return offsets[a] < offsets[b]; });
  const std::int64_t target = static_cast<std::int64_t>(bucket_bytes / sizeof(float));
  for (std::size_t i : order) {
    const Parameter* p = parameters[i];
    const std::int64_t begin = offsets[i];
    const std::int64_t end = begin + p->value.numel();
    MB_CHECK(begin >= 0 && end <= flat_.numel(), "GradientReducer: parameter at [", begin, ", ",
             end, ") outside the gradient buffer of ", flat_.numel(), " values");
    if (buckets_.empty() || buckets_.back().end - buckets_.back().begin >= target) {
      buckets_.emplace_back();
      buckets_.back().begin = begin;
    }
    Bucket& bucket = buckets_.back();
    bucket.end = end;
    ++bucket.parameters;
    bucket_of_[p] = static_cast<int>(buckets_.size()) - 1;
  }
}

GradientReducer::~GradientReducer() = default;

void GradientReducer::begin_step() {
  for (Bucket& bucket : buckets_) {
    bucket.pending.reset();
    bucket.kept = Tensor();
  }
  next_ = 0;
  armed_ = false;
  overlapped_bytes_ = 0;
}

void GradientReducer::arm() {
  for (Bucket& bucket : buckets_) bucket.remaining = bucket.parameters;
  armed_ = true;
}

void GradientReducer::backward_done(Module& module) {
  if (!armed_) return;
  bool any = false;
  for (Parameter* p : module.own_parameters()) {
    const auto found = bucket_of_.find(p);
    if (found == bucket_of_.end()) continue;
    --buckets_[static_cast<std::size_t>(found->second)].remaining;
    any = true;
  }
  if (any) start_ready_buckets();
}

void GradientReducer::start_ready_buckets() {
  while (next_ < bucket_count() && buckets_[static_cast<std::size_t>(next_)].remaining <= 0) {
    Bucket& bucket = buckets_[static_cast<std::size_t>(next_)];
    start(bucket);
    overlapped_bytes_ += static_cast<std::size_t>(bucket.end - bucket.begin) * sizeof(float);
  }
}

void GradientReducer::start(Bucket& bucket) {
  bucket.pending = communicator_->start_all_reduce_sum(flat_.data<float>() + bucket.begin,
                                                       bucket.end - bucket.begin, stream_);
  ++next_;
}

void GradientReducer::keep_started() {
  armed_ = false;
  TensorOptions host;
  host.allocator = host_batch_allocator();
  host.tag = MemoryTag::Grad;
  for (int b = 0; b < next_; ++b) {
    Bucket& bucket = buckets_[static_cast<std::size_t>(b)];
    if (bucket.kept.defined()) continue;
    bucket.pending->wait();
    bucket.pending.reset();
    const Tensor range = flat_.slice(bucket.begin, bucket.end);
    bucket.kept = Tensor::empty(range.shape(), host);
    bucket.kept.copy_from(range, stream_.handle());
  }
  stream_.synchronize();
}

ReduceReport GradientReducer::finish() {
  const auto started = std::chrono::steady_clock::now();
  armed_ = false;
  while (next_ < bucket_count()) start(buckets_[static_cast<std::size_t>(next_)]);
  ReduceReport report;
  report.buckets = bucket_count();
  for (Bucket& bucket : buckets_) {
    if (bucket.pending) bucket.pending->wait();
    bucket.pending.reset();
    if (bucket.kept.defined()) {
      Tensor range = flat_.slice(bucket.begin, bucket.end);
      range.copy_from(bucket.kept, stream_.handle());
    }
    report.bytes += static_cast<std::size_t>(bucket.end - bucket.begin) * sizeof(float);
  }
  stream_.synchronize();
  for (Bucket& bucket : buckets_) bucket.kept = Tensor();
  report.overlapped_bytes = overlapped_bytes_;
  report.wait_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return report;
}

}  // namespace mb
