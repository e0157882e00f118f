// LayerTimer (layers/layer_timer.h): each module's time goes to its type, exclusive of its
// children's. Truth: modules that sleep known durations (lower bounds only: a loaded
// machine sleeps longer, never shorter).
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <thread>

#include "layers/layer_timer.h"
#include "layers/module.h"

namespace mb {
namespace {

// A leaf that sleeps `forward_ms` in forward and `backward_ms` in backward.
class Sleeper : public Module {
 public:
  Sleeper(int forward_ms, int backward_ms)
      : Module("Sleeper"), forward_ms_(forward_ms), backward_ms_(backward_ms) {}
  Shape output_shape(const Shape& input) const override { return input; }
  std::int64_t forward_flops(const Shape&) const override { return 0; }
  MemoryTrace::Id trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const override {
    return trace.view(input, trace.shape(input));
  }

 protected:
  Tensor forward_impl(const Tensor& input, const RunState&) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(forward_ms_));
    return input;
  }
  Tensor backward_impl(const Tensor& grad, const BackwardState&) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(backward_ms_));
    return grad;
  }

 private:
  int forward_ms_, backward_ms_;
};

// A composite that does its own work (a sleep) around a Sleeper child.
class Busy : public Module {
 public:
  Busy() : Module("Busy"), child_(register_module("child", std::make_shared<Sleeper>(40, 60))) {}
  Shape output_shape(const Shape& input) const override { return input; }
  std::int64_t forward_flops(const Shape&) const override { return 0; }
  MemoryTrace::Id trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const override {
    return child_->trace_forward(trace, input);
  }

 protected:
  Tensor forward_impl(const Tensor& input, const RunState& state) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return child_->forward(input, state);
  }
  Tensor backward_impl(const Tensor& grad, const BackwardState& state) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return child_->backward(grad, state);
  }

 private:
  std::shared_ptr<Sleeper> child_;
};

TEST(LayerTimer, EachTypeGetsItsOwnTimeExclusiveOfItsChildren) {
  Sequential net;
  net.add(std::make_shared<Busy>());
  net.add(std::make_shared<Sleeper>(20, 30));
  LayerTimer timer;
  RunState state;
  state.timer = &timer;
  BackwardState backward;
  backward.timer = &timer;
  const Tensor x = Tensor::full(Shape{2, 3}, 1.0f);
  net.backward(net.forward(x, state), backward);

  const auto& entries = timer.entries();
  ASSERT_EQ(entries.count("Sleeper"), 1u);
  ASSERT_EQ(entries.count("Busy"), 1u);
  ASSERT_EQ(entries.count("Sequential"), 1u);
  const LayerTimer::Entry& sleeper = entries.at("Sleeper");
  const LayerTimer::Entry& busy = entries.at("Busy");
  // Two Sleepers (one inside Busy): 40 + 20 ms forward, 60 + 30 ms backward.
  EXPECT_EQ(sleeper.calls, 2);
  EXPECT_GE(sleeper.forward_seconds, 0.060);
  EXPECT_GE(sleeper.backward_seconds, 0.090);
  // Busy's own 10 ms each way, not its child's 40 and 60.
  EXPECT_GE(busy.forward_seconds, 0.010);
  EXPECT_LT(busy.forward_seconds, 0.040);
  EXPECT_GE(busy.backward_seconds, 0.010);
  EXPECT_LT(busy.backward_seconds, 0.060);
  // The Sequential does nothing itself.
  EXPECT_LT(entries.at("Sequential").forward_seconds, 0.010);
  EXPECT_NEAR(timer.total_seconds(),
              sleeper.forward_seconds + sleeper.backward_seconds + busy.forward_seconds +
                  busy.backward_seconds + entries.at("Sequential").forward_seconds +
                  entries.at("Sequential").backward_seconds,
              1e-12);
}

}  // namespace
}  // namespace mb
