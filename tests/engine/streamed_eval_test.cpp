// The evaluation batch of a streamed test set split over ranks (engine/fit.h): at least the
// chunk and the ranks, and a size whose last partial batch still gives every rank a sample,
// which is what the BatchLoader demands of a sharded epoch (checked by constructing one).
#include <gtest/gtest.h>

#include "data/loader.h"
#include "engine/fit.h"

namespace mb {
namespace {

Dataset samples(std::int64_t n) {
  Dataset data;
  data.name = "n";
  data.num_classes = 2;
  data.images = Tensor::zeros(Shape{n, 1, 1, 1});
  TensorOptions ints;
  ints.dtype = DType::Int32;
  data.labels = Tensor::zeros(Shape{n}, ints);
  return data;
}

TEST(StreamedEval, BatchGivesEveryRankASampleOfTheLastBatch) {
  EXPECT_EQ(streamed_eval_batch(1000, 256, 4), 256);  // remainder 232
  EXPECT_EQ(streamed_eval_batch(513, 256, 2), 257);   // 513 = 256 * 2 + 1: grow to 257 (0 left)
  EXPECT_EQ(streamed_eval_batch(257, 256, 2), 257);   // one batch of all
  EXPECT_EQ(streamed_eval_batch(10, 3, 8), 10);       // at least the ranks
  for (std::int64_t n = 8; n <= 300; n += 7) {
    for (const int ranks : {1, 2, 3, 8}) {
      for (const std::int64_t chunk : {1, 5, 64}) {
        const std::int64_t batch = streamed_eval_batch(n, chunk, ranks);
        ASSERT_GE(batch, std::max<std::int64_t>(chunk, ranks));
        const std::int64_t last = n % batch == 0 ? std::min(batch, n) : n % batch;
        ASSERT_GE(last, ranks) << n << " " << chunk << " " << ranks << " -> " << batch;
        LoaderOptions options;
        options.batch_size = batch;
        options.shuffle = false;
        options.shard = ranks - 1;
        options.shards = ranks;
        EXPECT_NO_THROW(BatchLoader(samples(n), options)) << n << " " << batch << " " << ranks;
      }
    }
  }
}

}  // namespace
}  // namespace mb
