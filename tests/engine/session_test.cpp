// Session: the arena is installed while the session lives and the previous allocator comes
// back after it; the model's parameters live in the arena, under its cap; a tensor that
// outlives the session keeps its allocator alive (shared ownership), and the allocator goes
// away with the last tensor.
#include "engine/session.h"

#include <gtest/gtest.h>

#include <memory>

#include "allocator/pool_allocator.h"
#include "runtime/allocator_registry.h"
#include "tests/mbp/mbp_test_util.h"

namespace mb {
namespace {

TEST(Session, InstallsItsArenaForItsLifetime) {
  const std::shared_ptr<Allocator> before = allocator_for(Device::cpu());
  std::weak_ptr<Allocator> arena;
  {
    SessionOptions options;
    options.memory_limit = 8 << 20;
    Session session(options, [] { return testing::small_cnn(testing::Extra::None); });
    arena = allocator_for(Device::cpu());
    EXPECT_NE(arena.lock(), before) << "the session did not install its arena";
    EXPECT_EQ(&session.allocator(), arena.lock().get());
    EXPECT_EQ(session.allocator().report().capacity, std::size_t{8} << 20);
    EXPECT_GT(session.allocator().report().tag_bytes(MemoryTag::Param), 0u)
        << "the model was built outside the arena";
    Trainer& trainer = session.make_trainer(TrainerOptions{});
    EXPECT_EQ(&session.trainer(), &trainer);
    EXPECT_THROW(session.make_trainer(TrainerOptions{}), InvalidArgument);
  }
  EXPECT_EQ(allocator_for(Device::cpu()), before) << "the previous allocator was not restored";
  EXPECT_TRUE(arena.expired()) << "nothing holds the arena, yet it lives";
}

TEST(Session, TensorsKeepTheirAllocatorAlive) {
  std::weak_ptr<Allocator> arena;
  Tensor survivor;
  {
    Session session(SessionOptions{}, [] { return testing::small_cnn(testing::Extra::None); });
    arena = allocator_for(Device::cpu());
    survivor = session.model().named_parameters().front().second->value;
  }
  ASSERT_FALSE(arena.expired()) << "the allocator died under a live tensor";
  EXPECT_GT(arena.lock()->report().allocated, 0u);
  EXPECT_EQ(survivor.to_vector().size(), static_cast<std::size_t>(survivor.numel()));
  survivor = Tensor();
  EXPECT_TRUE(arena.expired());
}

TEST(Session, TrainerBeforeMakeTrainerIsAClearError) {
  Session session(SessionOptions{}, [] { return testing::small_cnn(testing::Extra::None); });
  EXPECT_FALSE(session.has_trainer());
  EXPECT_THROW(session.trainer(), InvalidArgument);
}

}  // namespace
}  // namespace mb
