// BatchLoader: iterates a Dataset in batches, shuffled per epoch and augmented, with a
// background thread that prepares the next batches while the consumer trains on this one.
//
// Usage:
//   LoaderOptions options;
//   options.batch_size = 256;
//   BatchLoader loader(dataset, options);
//   for (int epoch = 0; epoch < epochs; ++epoch) {
//     loader.start_epoch(epoch);
//     Batch batch;
//     while (loader.next(batch)) train_step(batch);
//   }
//
// The order of an epoch depends only on (seed, epoch), and augmentation only on (seed,
// epoch, sample index), so a run is reproducible whatever the batch or micro-batch split,
// and whatever the number of worker threads.
//
// Streamed data sets (Dataset::source, image folders) are made sample by sample by `workers`
// threads (the loader's own thread among them) into 8-bit batches. A sample that cannot be
// made (a corrupt image) is skipped and counted, or stops the epoch with its file's name
// (BadImagePolicy); a skipped sample leaves its batch one smaller, never a copy of another.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "data/dataset.h"
#include "data/transforms.h"

namespace mb {

enum class BadImagePolicy { Skip, Error };

struct LoaderOptions {
  std::int64_t batch_size = 32;
  bool shuffle = true;
  bool drop_last = false;  // false: the last batch of an epoch may be smaller
  std::uint64_t seed = 0;
  AugmentOptions augment;
  // Applied to each batch after augmentation, so crop padding is black as in torchvision
  // (empty: none; normalize the Dataset up front instead and padding takes the mean).
  Normalization normalize;
  int prefetch = 2;  // batches prepared ahead of the consumer, 1..8
  // Data-parallel sharding: every rank draws the same epoch order and takes its contiguous
  // part of every global batch of n samples, rows [floor(n * shard / shards),
  // floor(n * (shard + 1) / shards)), so shard sizes differ by at most one. Every batch must
  // give every shard a sample.
  int shard = 0;
  int shards = 1;
  // Where batch buffers come from (tag Data); nullptr: host_batch_allocator().
  std::shared_ptr<Allocator> allocator;
  // Streamed data sets: threads that make samples (>= 1, the loader's thread included).
  int workers = 1;
  BadImagePolicy on_bad_image = BadImagePolicy::Skip;
};

// What the loader did this epoch (since start_epoch).
struct LoaderStats {
  std::int64_t samples = 0;                // made into batches
  std::int64_t skipped = 0;                // bad samples left out (BadImagePolicy::Skip)
  std::vector<std::string> first_skipped;  // the first few, "file: reason"
  double work_seconds = 0.0;               // thread time spent making samples, summed over workers
  double wait_seconds = 0.0;               // time next() waited for a batch (the consumer starved)
  int workers = 1;
  // Samples per second the workers make when busy (samples * workers / work_seconds).
  double capacity_per_second() const {
    return work_seconds > 0 ? static_cast<double>(samples) * workers / work_seconds : 0.0;
  }
};

struct Batch {
  Tensor images;                 // CPU float32 (streamed: uint8) [n, C, H, W], n <= batch_size
  Tensor labels;                 // CPU int32 [n] or [n, H, W]
  std::int64_t first_index = 0;  // position of the first sample in the epoch order
  int epoch = 0;
  std::vector<std::int64_t> sample_indices;  // dataset index of each row
  // Sharded: the samples of the global batch, and this shard's first row's index in it.
  std::int64_t global_size = 0;
  std::int64_t shard_offset = 0;
  std::int64_t skipped = 0;  // bad samples left out of this batch
  std::int64_t size() const { return images.defined() ? images.dim(0) : 0; }
};

// The default allocator for host batch buffers: a pool over page-locked host memory when a
// CUDA device exists (so host-to-device copies of batches can run asynchronously), over
// pageable memory otherwise; a pass-through allocator when MB_ALLOC_NO_CACHE=1. Created on
// first use and never destroyed: batches may outlive their loader.
std::shared_ptr<Allocator> host_batch_allocator();

// The order in which an epoch visits the samples: a permutation of [0, n) determined by
// (seed, epoch), or the identity when !shuffle.
std::vector<std::int64_t> epoch_order(std::int64_t n, std::uint64_t seed, int epoch, bool shuffle);

class BatchLoader {
 public:
  // Keeps a handle to the dataset's tensors (their storage stays alive). Throws
  // mb::InvalidArgument for an invalid dataset or options.
  BatchLoader(const Dataset& dataset, LoaderOptions options);
  // Stops the worker thread and joins it; batches already handed out stay valid.
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  std::int64_t batches_per_epoch() const;
  const LoaderOptions& options() const { return options_; }
  // This epoch's counts so far (a copy; safe while the workers run).
  LoaderStats stats() const;

  // Abandons the current epoch, if any, and starts preparing `epoch`'s batches from batch
  // `first_batch` on (a resumed run skips the batches it already trained on; the order of
  // the epoch is the same). Throws mb::InvalidArgument when first_batch is outside
  // [0, batches_per_epoch()].
  void start_epoch(int epoch, std::int64_t first_batch = 0);
  // The next batch of the current epoch into `out`; false when the epoch is done.
  // An exception thrown while preparing a batch is rethrown here (after the batches
  // prepared before it), and again on every call until the next start_epoch. A streamed
  // batch may hold no sample (all of them bad, with BadImagePolicy::Skip).
  bool next(Batch& out);

 private:
  class WorkerPool;
  void stop_worker();
  void run_worker(int epoch, std::vector<std::int64_t> order, std::int64_t first_batch);
  Batch make_batch(int epoch, const std::vector<std::int64_t>& order, std::int64_t batch);
  void make_streamed_samples(Batch& out, int epoch);

  Dataset dataset_;
  LoaderOptions options_;
  std::unique_ptr<WorkerPool> pool_;
  std::thread worker_;
  mutable std::mutex mutex_;
  std::condition_variable not_empty_;
  std::condition_variable not_full_;
  std::deque<Batch> queue_;
  bool started_ = false;
  bool stop_ = false;
  bool finished_ = false;
  std::exception_ptr error_;
  LoaderStats stats_;
};

}  // namespace mb
