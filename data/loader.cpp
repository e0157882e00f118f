// BatchLoader: a producer thread fills a bounded queue of host batches.
#include "data/loader.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>

#include "allocator/passthrough_allocator.h"
#include "allocator/pool_allocator.h"
#include "runtime/error.h"

namespace mb {
namespace {

std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double seconds_between(std::chrono::steady_clock::time_point a,
                       std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

constexpr std::size_t kSkippedNamesKept = 5;

}  // namespace

// Threads that run task(i) for every i of a batch; the calling thread works too, so a pool of
// one thread is the caller alone. Work is handed out one index at a time (samples differ in
// cost by their image's size), and which thread makes a sample never changes the sample.
class BatchLoader::WorkerPool {
 public:
  explicit WorkerPool(int threads) {
    for (int i = 1; i < threads; ++i) helpers_.emplace_back([this] { serve(); });
  }
  ~WorkerPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    start_.notify_all();
    for (std::thread& helper : helpers_) helper.join();
  }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Returns when every task has run; `task` must not throw.
  void run(std::int64_t count, const std::function<void(std::int64_t)>& task) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = &task;
      count_ = count;
      next_.store(0);
      busy_ = static_cast<int>(helpers_.size());
      ++generation_;
    }
    start_.notify_all();
    work();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return busy_ == 0; });
    task_ = nullptr;
  }

 private:
  void work() {
    for (std::int64_t i = next_.fetch_add(1); i < count_; i = next_.fetch_add(1)) (*task_)(i);
  }
  void serve() {
    std::uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      start_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      lock.unlock();
      work();
      lock.lock();
      if (--busy_ == 0) done_.notify_all();
    }
  }

  std::vector<std::thread> helpers_;
  std::mutex mutex_;
  std::condition_variable start_, done_;
  const std::function<void(std::int64_t)>* task_ = nullptr;
  std::int64_t count_ = 0;
  std::atomic<std::int64_t> next_{0};
  int busy_ = 0;
  std::uint64_t generation_ = 0;
  bool stop_ = false;
};

std::shared_ptr<Allocator> host_batch_allocator() {
  // Note: the registry's copy is never destroyed, so pinned memory is not released during
  // static destruction, after the CUDA runtime may have shut down.
  static auto* instance = new std::shared_ptr<Allocator>([]() -> std::shared_ptr<Allocator> {
    const char* no_cache = std::getenv("MB_ALLOC_NO_CACHE");
    if (no_cache != nullptr && std::string(no_cache) == "1") {
      return std::make_shared<PassThroughAllocator>(make_pinned_host_memory_resource());
    }
    PoolOptions options;
    options.trace_events = 0;  // batch buffers are not part of the step's memory trace
    return std::make_shared<PoolAllocator>(make_pinned_host_memory_resource(), options);
  }());
  return *instance;
}

std::vector<std::int64_t> epoch_order(std::int64_t n, std::uint64_t seed, int epoch, bool shuffle) {
  MB_CHECK(n >= 0, "epoch_order: n must be >= 0, got ", n);
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
  if (!shuffle) return order;
  // Note: our own Fisher-Yates over splitmix64 rather than std::shuffle, whose algorithm
  // differs between standard libraries; the order must be the same everywhere.
  std::uint64_t state = seed ^ (0xD1B54A32D192ED03ull * (static_cast<std::uint64_t>(epoch) + 1));
  for (std::int64_t i = n - 1; i > 0; --i) {
    // Multiply-shift maps 64 random bits onto [0, i]; the bias is below 2^-32 for any n
    // a data set can have.
    const auto j = static_cast<std::int64_t>(
        (static_cast<unsigned __int128>(splitmix64(state)) * static_cast<std::uint64_t>(i + 1)) >>
        64);
    std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(j)]);
  }
  return order;
}

BatchLoader::BatchLoader(const Dataset& dataset, LoaderOptions options)
    : dataset_(dataset), options_(std::move(options)) {
  if (dataset_.streamed()) {
    const Shape sample = dataset_.source->sample_shape();
    MB_CHECK(sample.ndim() == 3 && (dataset_.source->image_dtype() == DType::UInt8 ||
                                    dataset_.source->image_dtype() == DType::Float32),
             "BatchLoader: data set '", dataset_.name, "' makes samples of shape ",
             sample.to_string(), "; it needs [C, H, W] of uint8 or float32");
    MB_CHECK(!options_.augment.enabled() && options_.normalize.empty(), "BatchLoader: data set '",
             dataset_.name,
             "' transforms its own samples (and the device normalizes them); loader augmentation "
             "and normalization do not apply");
  } else {
    MB_CHECK(dataset_.images.defined() && dataset_.images.device().is_cpu() &&
                 dataset_.images.dtype() == DType::Float32 && dataset_.images.ndim() == 4,
             "BatchLoader: data set '", dataset_.name, "' needs CPU float32 images [N, C, H, W]");
    MB_CHECK(
        dataset_.labels.defined() && dataset_.labels.device().is_cpu() &&
            dataset_.labels.dtype() == DType::Int32 &&
            dataset_.labels.dim(0) == dataset_.images.dim(0) &&
            (dataset_.labels.ndim() == 1 ||
             (dataset_.labels.ndim() == 3 && dataset_.labels.dim(1) == dataset_.images.dim(2) &&
              dataset_.labels.dim(2) == dataset_.images.dim(3))),
        "BatchLoader: data set '", dataset_.name,
        "' needs CPU int32 labels [N] or [N, H, W] matching its images");
  }
  MB_CHECK(options_.batch_size > 0, "BatchLoader: batch_size must be > 0, got ",
           options_.batch_size);
  MB_CHECK(options_.shards >= 1 && options_.shard >= 0 && options_.shard < options_.shards,
           "BatchLoader: shard ", options_.shard, " of ", options_.shards);
  if (options_.shards > 1 && dataset_.size() > 0) {
    const std::int64_t n = dataset_.size(), b = options_.batch_size;
    const std::int64_t smallest = n < b ? n : (options_.drop_last || n % b == 0 ? b : n % b);
    if (smallest < options_.shards) {
      MB_THROW(InvalidArgument, "a batch of ", smallest, " sample(s) cannot give each of ",
               options_.shards, " ranks one. Fix: use a --batch-size of at least ", options_.shards,
               " (and a training set that large), or fewer ranks");
    }
  }
  MB_CHECK(options_.prefetch >= 1 && options_.prefetch <= 8,
           "BatchLoader: prefetch must be in [1, 8], got ", options_.prefetch);
  MB_CHECK(options_.augment.crop_padding >= 0, "BatchLoader: crop_padding must be >= 0, got ",
           options_.augment.crop_padding);
  MB_CHECK(options_.workers >= 1 && options_.workers <= 256,
           "BatchLoader: workers must be in [1, 256], got ", options_.workers);
  if (dataset_.streamed()) pool_ = std::make_unique<WorkerPool>(options_.workers);
}

BatchLoader::~BatchLoader() {
  stop_worker();
}

std::int64_t BatchLoader::batches_per_epoch() const {
  const std::int64_t n = dataset_.size(), b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

void BatchLoader::stop_worker() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  not_full_.notify_all();
  if (worker_.joinable()) worker_.join();
  std::lock_guard<std::mutex> lock(mutex_);
  queue_.clear();
  stop_ = false;
  finished_ = false;
  error_ = nullptr;
  stats_ = LoaderStats();
  stats_.workers = dataset_.streamed() ? options_.workers : 1;
}

LoaderStats BatchLoader::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void BatchLoader::start_epoch(int epoch, std::int64_t first_batch) {
  MB_CHECK(first_batch >= 0 && first_batch <= batches_per_epoch(), "BatchLoader: epoch ", epoch,
           " has ", batches_per_epoch(), " batches; cannot start at batch ", first_batch);
  stop_worker();
  std::vector<std::int64_t> order =
      epoch_order(dataset_.size(), options_.seed, epoch, options_.shuffle);
  started_ = true;
  worker_ = std::thread(&BatchLoader::run_worker, this, epoch, std::move(order), first_batch);
}

bool BatchLoader::next(Batch& out) {
  MB_CHECK(started_, "BatchLoader::next: call start_epoch(epoch) first");
  std::unique_lock<std::mutex> lock(mutex_);
  if (queue_.empty() && !finished_) {
    const auto waiting = std::chrono::steady_clock::now();
    not_empty_.wait(lock, [this] { return !queue_.empty() || finished_; });
    stats_.wait_seconds += seconds_between(waiting, std::chrono::steady_clock::now());
  }
  if (!queue_.empty()) {
    out = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    not_full_.notify_one();
    return true;
  }
  if (error_) std::rethrow_exception(error_);
  return false;
}

void BatchLoader::run_worker(int epoch, std::vector<std::int64_t> order, std::int64_t first_batch) {
  try {
    const std::int64_t batches = batches_per_epoch();
    for (std::int64_t b = first_batch; b < batches; ++b) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (stop_) break;
      }
      Batch batch = make_batch(epoch, order, b);
      std::unique_lock<std::mutex> lock(mutex_);
      not_full_.wait(
          lock, [this] { return stop_ || static_cast<int>(queue_.size()) < options_.prefetch; });
      if (stop_) break;
      queue_.push_back(std::move(batch));
      lock.unlock();
      not_empty_.notify_one();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    error_ = std::current_exception();
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    finished_ = true;
  }
  not_empty_.notify_all();
}

Batch BatchLoader::make_batch(int epoch, const std::vector<std::int64_t>& order,
                              std::int64_t batch) {
  const std::int64_t global_first = batch * options_.batch_size;
  const std::int64_t global_n = std::min(options_.batch_size, dataset_.size() - global_first);
  const std::int64_t shard_begin = global_n * options_.shard / options_.shards;
  const std::int64_t shard_end = global_n * (options_.shard + 1) / options_.shards;
  const std::int64_t first = global_first + shard_begin;
  const std::int64_t n = shard_end - shard_begin;

  TensorOptions tensor_options;
  tensor_options.tag = MemoryTag::Data;
  tensor_options.allocator =
      options_.allocator != nullptr ? options_.allocator : host_batch_allocator();
  Batch out;
  out.first_index = first;
  out.epoch = epoch;
  out.global_size = global_n;
  out.shard_offset = shard_begin;
  out.sample_indices.assign(order.begin() + first, order.begin() + first + n);
  if (dataset_.streamed()) {
    const Shape sample = dataset_.source->sample_shape();
    tensor_options.dtype = dataset_.source->image_dtype();
    out.images = Tensor::empty(Shape{n, sample[0], sample[1], sample[2]}, tensor_options);
    tensor_options.dtype = DType::Int32;
    out.labels = Tensor::empty(Shape{n}, tensor_options);
    make_streamed_samples(out, epoch);
    return out;
  }
  const std::int64_t channels = dataset_.images.dim(1), height = dataset_.images.dim(2),
                     width = dataset_.images.dim(3);
  const std::int64_t image = channels * height * width;
  const bool masks = dataset_.labels.ndim() == 3;
  const std::int64_t label_elements = masks ? height * width : 1;
  out.images = Tensor::empty(Shape{n, channels, height, width}, tensor_options);
  tensor_options.dtype = DType::Int32;
  out.labels = Tensor::empty(masks ? Shape{n, height, width} : Shape{n}, tensor_options);

  const float* src_images = dataset_.images.data<float>();
  const std::int32_t* src_labels = dataset_.labels.data<std::int32_t>();
  float* dst_images = out.images.data<float>();
  std::int32_t* dst_labels = out.labels.data<std::int32_t>();
  const bool augment = options_.augment.enabled();
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t index = out.sample_indices[static_cast<std::size_t>(i)];
    const float* image_in = src_images + index * image;
    const std::int32_t* label_in = src_labels + index * label_elements;
    float* image_out = dst_images + i * image;
    std::int32_t* label_out = dst_labels + i * label_elements;
    if (augment) {
      const AugmentDraw draw = draw_augmentation(options_.augment, options_.seed, epoch, index);
      augment_sample(image_in, image_out, channels, height, width, options_.augment.crop_padding,
                     draw);
      if (masks) {
        augment_mask(label_in, label_out, height, width, options_.augment.crop_padding, draw);
      } else {
        *label_out = *label_in;
      }
    } else {
      std::memcpy(image_out, image_in, static_cast<std::size_t>(image) * sizeof(float));
      std::memcpy(label_out, label_in,
                  static_cast<std::size_t>(label_elements) * sizeof(std::int32_t));
    }
  }
  if (!options_.normalize.empty()) normalize_inplace(out.images, options_.normalize);
  return out;
}

void BatchLoader::make_streamed_samples(Batch& out, int epoch) {
  const std::int64_t n = out.size();
  const SampleSource& source = *dataset_.source;
  const std::int64_t image_bytes =
      source.sample_shape().numel() * static_cast<std::int64_t>(dtype_size(source.image_dtype()));
  auto* images = static_cast<std::uint8_t*>(out.images.raw_data());
  std::int32_t* labels = out.labels.data<std::int32_t>();
  std::vector<std::string> bad(static_cast<std::size_t>(n));
  std::vector<std::exception_ptr> failed(static_cast<std::size_t>(n));
  std::vector<double> seconds(static_cast<std::size_t>(n), 0.0);
  const std::function<void(std::int64_t)> task = [&](std::int64_t i) {
    const auto started = std::chrono::steady_clock::now();
    const auto row = static_cast<std::size_t>(i);
    try {
      source.load(out.sample_indices[row], options_.seed, epoch, images + i * image_bytes,
                  labels + i);
    } catch (const IoError& error) {
      bad[row] = error.message();
    } catch (...) {
      failed[row] = std::current_exception();
    }
    seconds[row] = seconds_between(started, std::chrono::steady_clock::now());
  };
  pool_->run(n, task);
  for (const std::exception_ptr& error : failed) {
    if (error) std::rethrow_exception(error);
  }
  std::int64_t kept = 0;
  std::vector<std::string> skipped;
  for (std::int64_t i = 0; i < n; ++i) {
    const auto row = static_cast<std::size_t>(i);
    if (!bad[row].empty()) {
      if (options_.on_bad_image == BadImagePolicy::Error) {
        MB_THROW(IoError, bad[row],
                 " (--on-bad-image error stops at the first bad image; skip leaves them out and "
                 "counts them)");
      }
      skipped.push_back(bad[row]);
      continue;
    }
    if (kept != i) {
      std::memmove(images + kept * image_bytes, images + i * image_bytes,
                   static_cast<std::size_t>(image_bytes));
      labels[kept] = labels[i];
      out.sample_indices[static_cast<std::size_t>(kept)] = out.sample_indices[row];
    }
    ++kept;
  }
  if (kept < n) {
    out.sample_indices.resize(static_cast<std::size_t>(kept));
    out.images = out.images.slice(0, kept);
    out.labels = out.labels.slice(0, kept);
    out.skipped = n - kept;
    if (kept == 0 && options_.shards > 1) {
      MB_THROW(IoError, "every image of rank ", options_.shard, "'s part of a batch is bad (",
               skipped.front(),
               "), and the other ranks cannot step without it. Fix: remove the "
               "bad images from the folder");
    }
  }
  double work = 0.0;
  for (double s : seconds) work += s;
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.samples += kept;
  stats_.skipped += n - kept;
  stats_.work_seconds += work;
  for (const std::string& name : skipped) {
    if (stats_.first_skipped.size() < kSkippedNamesKept) stats_.first_skipped.push_back(name);
  }
}

}  // namespace mb
