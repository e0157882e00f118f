// LayerTimer: exclusive time per module type.
#include "layers/layer_timer.h"

#include <chrono>

namespace mb {
namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

double LayerTimer::total_seconds() const {
  double total = 0.0;
  for (const auto& [type, entry] : entries_)
    total += entry.forward_seconds + entry.backward_seconds;
  return total;
}

LayerTimer::Scope::Scope(LayerTimer& timer, const std::string& type, bool backward,
                         const Stream& stream)
    : timer_(timer), stream_(stream) {
  stream_.synchronize();
  timer_.open_.push_back(Frame{&type, backward, now_seconds()});
}

LayerTimer::Scope::~Scope() {
  // Note: a destructor must not throw; a failing synchronize (a CUDA error) surfaces at the
  // next call that checks the stream anyway.
  try {
    stream_.synchronize();
  } catch (...) {
  }
  const Frame frame = timer_.open_.back();
  timer_.open_.pop_back();
  const double elapsed = now_seconds() - frame.start;
  Entry& entry = timer_.entries_[*frame.type];
  const double own = elapsed - frame.children;
  if (frame.backward) {
    entry.backward_seconds += own;
  } else {
    entry.forward_seconds += own;
    ++entry.calls;
  }
  if (!timer_.open_.empty()) timer_.open_.back().children += elapsed;
}

}  // namespace mb
