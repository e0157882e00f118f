// Double-buffered host-to-device staging of micro-batch inputs.
#include "engine/feeder.h"

namespace mb {

Feeder::Feeder(const Device& device)
    : Feeder(device, Stream::compute(device), Stream::copy(device), device.is_cuda()) {}

Feeder::Feeder(const Device& device, Stream compute, Stream copy, bool copy_inputs)
    : device_(device),
      compute_(compute),
      copy_(copy),
      copy_inputs_(copy_inputs || device.is_cuda()),
      copied_{Event(device), Event(device)},
      consumed_{Event(device), Event(device)} {}

void Feeder::stage(const Tensor& images, std::int64_t offset, std::int64_t count, int index) {
  Tensor slice = images.slice(offset, offset + count);
  const int slot = index & 1;
  if (!copy_inputs_) {
    staged_[slot] = slice;
    return;
  }
  TensorOptions options;
  options.device = device_;
  options.tag = MemoryTag::Data;
  options.stream = copy_.handle();  // the stream that writes it (see feeder.h)
  staged_[slot] = Tensor();
  staged_[slot] = Tensor::empty(slice.shape(), options);
  // Micro-batch index - 2's input was this slot: its readers are done before the copy
  // starts (the pool orders reuse of its block too; this also orders the copy engine).
  copy_.wait(consumed_[slot]);
  staged_[slot].copy_from(slice, copy_.handle());
  copied_[slot].record(copy_);
}

Tensor Feeder::take(int index) {
  const int slot = index & 1;
  compute_.wait(copied_[slot]);
  if (copy_inputs_ && staged_[slot].defined()) {
    const auto& storage = staged_[slot].storage();
    storage->allocator->record_stream(storage->data, compute_.handle());
  }
  return staged_[slot];
}

void Feeder::release(int index) {
  const int slot = index & 1;
  consumed_[slot].record(compute_);
  staged_[slot] = Tensor();
}

void Feeder::reset() {
  staged_[0] = Tensor();
  staged_[1] = Tensor();
}

}  // namespace mb
