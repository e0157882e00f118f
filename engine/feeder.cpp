// Double-buffered host-to-device staging of micro-batch inputs.
#include "engine/feeder.h"

namespace mb {

Feeder::Feeder(const Device& device)
    : device_(device),
      copied_{Event(device), Event(device)},
      consumed_{Event(device), Event(device)} {}

void Feeder::stage(const Tensor& images, std::int64_t offset, std::int64_t count, int index) {
  Tensor slice = images.slice(offset, offset + count);
  const int slot = index & 1;
  if (device_.is_cpu()) {
    staged_[slot] = slice;
    return;
  }
  const Stream copy = Stream::copy(device_);
  TensorOptions options;
  options.device = device_;
  options.tag = MemoryTag::Data;
  options.stream = Stream::compute(device_).handle();
  staged_[slot] = Tensor();
  staged_[slot] = Tensor::empty(slice.shape(), options);
  // The buffer's previous user (micro-batch index - 2) must be done before overwriting.
  copy.wait(consumed_[slot]);
  staged_[slot].copy_from(slice, copy.handle());
  copied_[slot].record(copy);
}

Tensor Feeder::take(int index) {
  const int slot = index & 1;
  Stream::compute(device_).wait(copied_[slot]);
  return staged_[slot];
}

void Feeder::release(int index) {
  const int slot = index & 1;
  consumed_[slot].record(Stream::compute(device_));
  staged_[slot] = Tensor();
}

void Feeder::reset() {
  staged_[0] = Tensor();
  staged_[1] = Tensor();
}

}  // namespace mb
