// BatchLoader: every sample exactly once per epoch, orders reproducible per (seed, epoch),
// batch contents equal the dataset rows they name, augmentation equals augment_images,
// worker exceptions reach next(), and teardown mid-epoch is clean.
#include "data/loader.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>

#include "allocator/passthrough_allocator.h"
#include "runtime/allocator_registry.h"
#include "runtime/error.h"

namespace mb {
namespace {

// Sample i is an image filled with the value i and label i % 10, so a batch row reveals
// which sample it holds.
Dataset indexed_dataset(std::int64_t n, std::int64_t c = 2, std::int64_t h = 3,
                        std::int64_t w = 4) {
  Dataset data;
  data.name = "indexed";
  data.num_classes = 10;
  data.images = Tensor::empty(Shape{n, c, h, w});
  TensorOptions int_options;
  int_options.dtype = DType::Int32;
  data.labels = Tensor::empty(Shape{n}, int_options);
  float* x = data.images.data<float>();
  std::int32_t* y = data.labels.data<std::int32_t>();
  for (std::int64_t i = 0; i < n; ++i) {
    std::fill(x + i * c * h * w, x + (i + 1) * c * h * w, static_cast<float>(i));
    y[i] = static_cast<std::int32_t>(i % 10);
  }
  return data;
}

LoaderOptions options_with(std::int64_t batch_size, bool shuffle, bool drop_last,
                           std::uint64_t seed) {
  LoaderOptions o;
  o.batch_size = batch_size;
  o.shuffle = shuffle;
  o.drop_last = drop_last;
  o.seed = seed;
  return o;
}

// The dataset indices an epoch yields, checking each batch's rows against its indices.
std::vector<std::int64_t> run_epoch(BatchLoader& loader, int epoch,
                                    std::vector<std::int64_t>* sizes = nullptr) {
  loader.start_epoch(epoch);
  std::vector<std::int64_t> seen;
  Batch batch;
  while (loader.next(batch)) {
    EXPECT_EQ(batch.epoch, epoch);
    EXPECT_EQ(batch.first_index, static_cast<std::int64_t>(seen.size()));
    EXPECT_EQ(batch.images.tag(), MemoryTag::Data);
    const std::int64_t n = batch.size();
    EXPECT_EQ(static_cast<std::int64_t>(batch.sample_indices.size()), n);
    const std::int64_t image = batch.images.numel() / std::max<std::int64_t>(n, 1);
    const float* x = batch.images.data<float>();
    const std::int32_t* y = batch.labels.data<std::int32_t>();
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t index = batch.sample_indices[static_cast<std::size_t>(i)];
      EXPECT_EQ(x[i * image], static_cast<float>(index));
      EXPECT_EQ(x[(i + 1) * image - 1], static_cast<float>(index));
      EXPECT_EQ(y[i], index % 10);
      seen.push_back(index);
    }
    if (sizes != nullptr) sizes->push_back(n);
  }
  return seen;
}

TEST(BatchLoader, EveryIndexExactlyOncePerEpochWithShuffle) {
  const Dataset data = indexed_dataset(103);
  BatchLoader loader(data, options_with(10, true, false, 5));
  EXPECT_EQ(loader.batches_per_epoch(), 11);
  std::vector<std::int64_t> sizes;
  std::vector<std::int64_t> seen = run_epoch(loader, 0, &sizes);
  EXPECT_EQ(sizes.size(), 11u);
  EXPECT_EQ(sizes.back(), 3);
  std::vector<std::int64_t> identity(103);
  for (std::int64_t i = 0; i < 103; ++i) identity[i] = i;
  EXPECT_NE(seen, identity);  // shuffled
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, identity);
}

TEST(BatchLoader, DropLastGivesOnlyFullBatchesOfDistinctSamples) {
  const Dataset data = indexed_dataset(103);
  BatchLoader loader(data, options_with(10, true, true, 5));
  EXPECT_EQ(loader.batches_per_epoch(), 10);
  std::vector<std::int64_t> sizes;
  std::vector<std::int64_t> seen = run_epoch(loader, 0, &sizes);
  EXPECT_EQ(sizes, std::vector<std::int64_t>(10, 10));
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(std::unique(seen.begin(), seen.end()), seen.end());
}

TEST(BatchLoader, OrderDependsOnSeedAndEpochOnly) {
  const Dataset data = indexed_dataset(64);
  BatchLoader a(data, options_with(16, true, false, 42));
  BatchLoader b(data, options_with(7, true, false, 42));  // other batch size, same order
  BatchLoader c(data, options_with(16, true, false, 43));
  const std::vector<std::int64_t> a0 = run_epoch(a, 0), a1 = run_epoch(a, 1);
  EXPECT_NE(a0, a1);
  EXPECT_EQ(run_epoch(b, 0), a0);
  EXPECT_EQ(run_epoch(b, 1), a1);
  EXPECT_NE(run_epoch(c, 0), a0);
  EXPECT_EQ(run_epoch(a, 0), a0);
  EXPECT_EQ(epoch_order(64, 42, 1, true), a1);
}

TEST(BatchLoader, NoShuffleVisitsInOrder) {
  const Dataset data = indexed_dataset(25);
  BatchLoader loader(data, options_with(8, false, false, 1));
  const std::vector<std::int64_t> seen = run_epoch(loader, 3);
  for (std::int64_t i = 0; i < 25; ++i) EXPECT_EQ(seen[i], i);
}

TEST(BatchLoader, AugmentationAndNormalizationMatchTheTransforms) {
  SyntheticOptions s;
  s.samples = 30;
  s.channels = 3;
  s.height = 6;
  s.width = 6;
  const Dataset data = make_synthetic(s);
  LoaderOptions o = options_with(8, true, false, 77);
  o.augment.crop_padding = 2;
  o.augment.flip = true;
  o.normalize = Normalization{{0.1f, 0.2f, 0.3f}, {0.5f, 2.0f, 1.0f}};
  BatchLoader loader(data, o);
  loader.start_epoch(2);
  Batch batch;
  int batches = 0;
  while (loader.next(batch)) {
    ++batches;
    Tensor rows = Tensor::empty(batch.images.shape());
    for (std::size_t i = 0; i < batch.sample_indices.size(); ++i) {
      const std::int64_t index = batch.sample_indices[i];
      rows.slice(static_cast<std::int64_t>(i), static_cast<std::int64_t>(i) + 1)
          .copy_from(data.images.slice(index, index + 1));
    }
    Tensor expected = augment_images(rows, batch.sample_indices, o.augment, 77, 2);
    normalize_inplace(expected, o.normalize);
    EXPECT_EQ(batch.images.to_vector(), expected.to_vector());
  }
  EXPECT_EQ(batches, 4);
}

TEST(BatchLoader, SegmentationMasksAreAugmentedWithTheirImages) {
  SyntheticOptions s;
  s.samples = 12;
  s.channels = 1;
  s.height = 8;
  s.width = 8;
  s.num_classes = 4;
  s.segmentation = true;
  const Dataset data = make_synthetic(s);
  LoaderOptions o = options_with(5, true, false, 3);
  o.augment.crop_padding = 3;
  o.augment.flip = true;
  BatchLoader loader(data, o);
  loader.start_epoch(0);
  Batch batch;
  while (loader.next(batch)) {
    ASSERT_EQ(batch.labels.shape(), (Shape{batch.size(), 8, 8}));
    for (std::int64_t i = 0; i < batch.size(); ++i) {
      const std::int64_t index = batch.sample_indices[static_cast<std::size_t>(i)];
      const AugmentDraw draw = draw_augmentation(o.augment, 3, 0, index);
      std::vector<std::int32_t> expected(64);
      augment_mask(data.labels.data<std::int32_t>() + index * 64, expected.data(), 8, 8, 3, draw);
      EXPECT_TRUE(
          std::equal(expected.begin(), expected.end(), batch.labels.data<std::int32_t>() + i * 64));
    }
  }
}

// Delegates to the CPU allocator and throws on the allocation numbered `fail_at` (0-based).
class FailingAllocator final : public Allocator {
 public:
  explicit FailingAllocator(int fail_at) : fail_at_(fail_at) {}
  void* allocate(std::size_t bytes, MemoryTag tag, StreamHandle stream) override {
    if (count_++ == fail_at_) MB_THROW(IoError, "injected failure at allocation ", fail_at_);
    return inner_.allocate(bytes, tag, stream);
  }
  void deallocate(void* ptr) noexcept override { inner_.deallocate(ptr); }
  FreeArenaReport report() const override { return inner_.report(); }
  MemoryKind kind() const override { return inner_.kind(); }
  int device_index() const override { return inner_.device_index(); }
  std::size_t peak_allocated() const override { return inner_.peak_allocated(); }
  void reset_peak() override { inner_.reset_peak(); }

 private:
  PassThroughAllocator inner_{make_host_memory_resource()};
  std::atomic<int> count_{0};
  int fail_at_;
};

TEST(BatchLoader, WorkerExceptionReachesNextAfterEarlierBatches) {
  const Dataset data = indexed_dataset(50);
  auto allocator = std::make_shared<FailingAllocator>(4);  // two per batch: batch 2 fails
  LoaderOptions o = options_with(10, true, false, 1);
  o.allocator = allocator;
  BatchLoader loader(data, o);
  loader.start_epoch(0);
  Batch batch;
  EXPECT_TRUE(loader.next(batch));
  EXPECT_TRUE(loader.next(batch));
  try {
    loader.next(batch);
    FAIL() << "expected the worker's mb::IoError";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("injected failure at allocation 4"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(loader.next(batch), IoError);  // sticky until the next epoch
  loader.start_epoch(1);                      // allocations past the failing one succeed
  std::int64_t samples = 0;
  while (loader.next(batch)) samples += batch.size();
  EXPECT_EQ(samples, 50);
}

TEST(BatchLoader, RestartAndDestroyMidEpochAreClean) {
  const Dataset data = indexed_dataset(200);
  LoaderOptions o = options_with(4, true, false, 9);
  o.prefetch = 3;
  {
    BatchLoader loader(data, o);
    loader.start_epoch(0);
    Batch batch;
    ASSERT_TRUE(loader.next(batch));
    loader.start_epoch(1);  // abandons epoch 0 with the queue full
    std::vector<std::int64_t> seen;
    while (loader.next(batch))
      seen.insert(seen.end(), batch.sample_indices.begin(), batch.sample_indices.end());
    EXPECT_EQ(seen, epoch_order(200, 9, 1, true));
    loader.start_epoch(2);
    ASSERT_TRUE(loader.next(batch));
  }  // destroyed with a worker blocked on a full queue
  SUCCEED();
}

TEST(BatchLoader, BatchesComeFromTheHostBatchAllocatorAndOutliveTheLoader) {
  const Dataset data = indexed_dataset(20);
  Batch batch;
  {
    BatchLoader loader(data, options_with(6, true, false, 2));
    loader.start_epoch(0);
    ASSERT_TRUE(loader.next(batch));
  }
  EXPECT_EQ(batch.images.storage()->allocator, host_batch_allocator());
  EXPECT_EQ(batch.labels.storage()->allocator, host_batch_allocator());
  EXPECT_GT(host_batch_allocator()->report().allocated_by_tag[static_cast<int>(MemoryTag::Data)],
            0u);
  const std::vector<float> values = batch.images.to_vector();
  EXPECT_EQ(values.front(), static_cast<float>(batch.sample_indices.front()));
  EXPECT_EQ(values.back(), static_cast<float>(batch.sample_indices.back()));
}

TEST(BatchLoader, RejectsBadUseAndOptions) {
  const Dataset data = indexed_dataset(10);
  BatchLoader loader(data, options_with(4, true, false, 0));
  Batch batch;
  EXPECT_THROW(loader.next(batch), InvalidArgument);
  EXPECT_THROW(BatchLoader(data, options_with(0, true, false, 0)), InvalidArgument);
  LoaderOptions o = options_with(4, true, false, 0);
  o.prefetch = 0;
  EXPECT_THROW(BatchLoader(data, o), InvalidArgument);
  Dataset broken = data;
  broken.labels = broken.labels.slice(0, 5);
  EXPECT_THROW(BatchLoader(broken, options_with(4, true, false, 0)), InvalidArgument);
}

}  // namespace
}  // namespace mb
