// Evaluation: loss and accuracy of a model in inference mode over host tensors, in chunks.
#pragma once

#include <cstdint>

#include "data/transforms.h"
#include "kernels/image_input.h"
#include "layers/module.h"
#include "layers/softmax_cross_entropy.h"
#include "runtime/device.h"
#include "runtime/tensor.h"

namespace mb {

struct EvalResult {
  double loss = 0.0;  // mean over valid elements (label smoothing off)
  std::int64_t correct = 0;
  std::int64_t valid = 0;
  // Samples per chunk at the end: the chunk asked for, or less after an OutOfMemory
  // (`halvings` times halved).
  std::int64_t chunk = 0;
  int halvings = 0;
  double accuracy() const { return valid > 0 ? static_cast<double>(correct) / valid : 0.0; }
};

// A model's float32 input from images already on the device: float32 as they are; 8-bit
// (image folders) converted and normalized on `stream` (kernels/image_input.h) with
// `normalization` (channels 0: pixels / 255 only).
Tensor model_input(const Tensor& images, const ChannelNormalization& normalization,
                   const Stream& stream);

// A data set's per-channel constants (data/transforms.h) as the device kernel takes them.
// Throws mb::InvalidArgument for more than kMaxImageChannels channels.
ChannelNormalization channel_normalization(const Normalization& normalization);

// images [N, C, H, W] (float32, or uint8 normalized with `normalization`) and labels [N] or
// [N, H, W] (int32) in host memory; `model` on `device`. Runs `chunk` samples at a time (> 0) and
// drops each chunk's activations. A chunk that runs out of memory (the arena holds more after
// training than when the micro-batch was planned: optimizer state, fragmentation) is run again in
// halves, down to one sample, whose OutOfMemory is rethrown.
EvalResult evaluate(Module& model, const Device& device, const Tensor& images, const Tensor& labels,
                    std::int64_t chunk, const LossOptions& loss,
                    const ChannelNormalization& normalization = {});

}  // namespace mb
