// GradientReducer: sums the step's gradients over the data-parallel ranks, in buckets of a
// few MiB, so all parameters go in a few collectives and each rank then applies the same
// update.
//
// The gradients live in one fp32 tensor (`flat`, laid out by the Trainer: parameters in
// reverse registration order, each at an aligned offset), so a bucket is a contiguous range
// of it and is all-reduced in place, with no packing copy. Reverse order is roughly the
// order in which backward finishes parameters: with overlap on, the Trainer hands the
// reducer to backward as its BackwardObserver during the last micro-batch, and a bucket is
// started as soon as the backward of every module owning one of its parameters has
// returned. Buckets start in index order on every rank (collectives must match across
// ranks), whatever order they complete in.
//
// An OutOfMemory after some buckets started cannot take them back: the other ranks have
// summed them already. keep_started() waits for them and copies their sums aside (host
// memory outside the arena); finish() puts those sums back after the redone micro-batches,
// so the rank re-plans on its own and the result is the same.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "engine/communicator.h"
#include "layers/module.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"

namespace mb {

struct ReduceReport {
  int buckets = 0;
  std::size_t bytes = 0;             // gradient bytes summed over the ranks
  std::size_t overlapped_bytes = 0;  // of those, started before the last backward returned
  double wait_seconds = 0.0;         // host time from the end of backward to the sums in place
};

class GradientReducer final : public BackwardObserver {
 public:
  // parameters[i]'s gradient is flat[offsets[i], offsets[i] + numel); buckets hold about
  // bucket_bytes each (at least one parameter).
  GradientReducer(std::shared_ptr<Communicator> communicator, std::vector<Parameter*> parameters,
                  std::vector<std::int64_t> offsets, Tensor flat, std::size_t bucket_bytes,
                  Stream stream);
  ~GradientReducer() override;

  int bucket_count() const { return static_cast<int>(buckets_.size()); }

  // Before the first micro-batch of a step.
  void begin_step();
  // Before each attempt at the last micro-batch: buckets not started yet wait for their
  // modules' backward again.
  void arm();
  void backward_done(Module& module) override;
  // After an OutOfMemory: the started buckets are waited for and their sums kept.
  void keep_started();
  // Starts every bucket not started yet, waits for all, restores kept sums.
  ReduceReport finish();

 private:
  struct Bucket {
    std::int64_t begin = 0;  // range of flat
    std::int64_t end = 0;
    int parameters = 0;
    int remaining = 0;  // parameters whose backward has not returned in this attempt
    std::unique_ptr<PendingReduce> pending;
    Tensor kept;  // host copy of its sum after keep_started()
  };
  void start_ready_buckets();
  void start(Bucket& bucket);

  std::shared_ptr<Communicator> communicator_;
  Tensor flat_;
  Stream stream_;
  std::vector<Bucket> buckets_;
  std::unordered_map<const Parameter*, int> bucket_of_;
  int next_ = 0;  // buckets [0, next_) have started this step
  bool armed_ = false;
  std::size_t overlapped_bytes_ = 0;
};

}  // namespace mb
