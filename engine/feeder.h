// The Feeder moves micro-batch inputs from the host batch to the device. On CUDA,
// micro-batch k+1's copy runs on the copy stream while micro-batch k computes (double
// buffering, ordered by events); on the CPU a micro-batch is a view of the batch.
#pragma once

#include <cstdint>

#include "runtime/device.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"

namespace mb {

class Feeder {
 public:
  explicit Feeder(const Device& device);

  // Starts moving images[offset, offset + count) for micro-batch `index`.
  void stage(const Tensor& images, std::int64_t offset, std::int64_t count, int index);
  // The device tensor of micro-batch `index`, ordered on the compute stream after its copy.
  Tensor take(int index);
  // Micro-batch `index` has issued all work reading its input.
  void release(int index);
  // Drops both staged inputs (after an OutOfMemory, before staging again).
  void reset();

 private:
  Device device_;
  Tensor staged_[2];
  Event copied_[2];
  Event consumed_[2];
};

}  // namespace mb
