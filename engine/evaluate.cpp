// Evaluation in chunks.
#include "engine/evaluate.h"

#include <algorithm>

#include "runtime/error.h"

namespace mb {

ChannelNormalization channel_normalization(const Normalization& normalization) {
  MB_CHECK(normalization.mean.size() <= static_cast<std::size_t>(kMaxImageChannels) &&
               normalization.std.size() == normalization.mean.size(),
           "a normalization of ", normalization.mean.size(), " means and ",
           normalization.std.size(), " standard deviations; at most ", kMaxImageChannels,
           " channels, one of each");
  ChannelNormalization out;
  out.channels = static_cast<int>(normalization.mean.size());
  for (int c = 0; c < out.channels; ++c) {
    out.mean[c] = normalization.mean[static_cast<std::size_t>(c)];
    out.std[c] = normalization.std[static_cast<std::size_t>(c)];
  }
  return out;
}

Tensor model_input(const Tensor& images, const ChannelNormalization& normalization,
                   const Stream& stream) {
  if (images.dtype() == DType::Float32) return images;
  MB_CHECK(images.dtype() == DType::UInt8 && images.ndim() == 4,
           "model input: images must be float32 or uint8 [N, C, H, W], got ",
           dtype_name(images.dtype()), " ", images.shape().to_string());
  ChannelNormalization used = normalization;
  if (used.channels == 0) {
    used.channels = static_cast<int>(images.dim(1));
    MB_CHECK(used.channels <= kMaxImageChannels, "model input: ", used.channels,
             " channels; 8-bit images may have at most ", kMaxImageChannels);
    for (int c = 0; c < used.channels; ++c) used.std[c] = 1.0f;
  }
  TensorOptions options;
  options.device = images.device();
  options.tag = MemoryTag::Data;
  options.stream = stream.handle();
  Tensor out = Tensor::empty(images.shape(), options);
  images_to_float(stream, images.data<std::uint8_t>(), out.data<float>(), images.dim(0),
                  images.dim(1), images.dim(2) * images.dim(3), used);
  return out;
}

EvalResult evaluate(Module& model, const Device& device, const Tensor& images, const Tensor& labels,
                    std::int64_t chunk, const LossOptions& loss,
                    const ChannelNormalization& normalization) {
  MB_CHECK(images.device().is_cpu() && labels.device().is_cpu(),
           "evaluate: the data must be in host memory");
  MB_CHECK(images.dim(0) == labels.dim(0), "evaluate: ", images.dim(0), " images but ",
           labels.dim(0), " labels");
  MB_CHECK(chunk > 0, "evaluate: chunk must be positive, got ", chunk);
  LossOptions sum_options = loss;
  sum_options.reduction = Reduction::Sum;
  sum_options.label_smoothing = 0.0f;
  const SoftmaxCrossEntropy criterion(sum_options);
  RunState state;
  state.training = false;
  EvalResult result;
  double loss_sum = 0.0;
  std::int64_t begin = 0;
  while (begin < images.dim(0)) {
    const std::int64_t end = std::min(images.dim(0), begin + chunk);
    LossResult chunk_loss;
    try {
      Tensor input = images.slice(begin, end);
      if (!device.is_cpu()) input = input.to(device);
      input = model_input(input, normalization, Stream::compute(device));
      const Tensor logits = model.forward(input, state);
      model.clear_cache();
      chunk_loss = criterion.forward(logits, labels.slice(begin, end));
    } catch (const OutOfMemory&) {
      model.clear_cache();
      if (end - begin == 1) throw;
      chunk = (end - begin) / 2;
      ++result.halvings;
      continue;
    }
    loss_sum += chunk_loss.loss_sum;
    result.correct += chunk_loss.correct;
    result.valid += chunk_loss.valid_count;
    begin = end;
  }
  result.chunk = chunk;
  result.loss = result.valid > 0 ? loss_sum / static_cast<double>(result.valid) : 0.0;
  return result;
}

}  // namespace mb
