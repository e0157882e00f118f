// The Feeder moves micro-batch inputs from the host batch to the device. On CUDA,
// micro-batch k+1's copy runs on the copy stream while micro-batch k computes (double
// buffering, ordered by events); on the CPU a micro-batch is a view of the batch.
//
// Stream rule (as PyTorch's caching allocator asks): a staging buffer is allocated on the
// copy stream, which writes it, so the pool hands it only blocks whose earlier users were
// ordered on that stream; a block freed by compute-stream work still running can never be
// overwritten by a copy. When take() hands it to the compute stream it is recorded there
// (Allocator::record_stream), so when it is freed the pool waits for the compute stream's
// work before reusing it.
#pragma once

#include <cstdint>

#include "runtime/device.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"

namespace mb {

class Feeder {
 public:
  explicit Feeder(const Device& device);
  // Explicit streams; copy_inputs: stage copies (always on CUDA; on the CPU a test can ask
  // for copies to see the stream rule above with its own stream handles).
  Feeder(const Device& device, Stream compute, Stream copy, bool copy_inputs);

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
  Stream compute_;
  Stream copy_;
  bool copy_inputs_;
  Tensor staged_[2];
  Event copied_[2];
  Event consumed_[2];
};

}  // namespace mb
