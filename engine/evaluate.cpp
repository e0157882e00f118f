// Evaluation in chunks.
#include "engine/evaluate.h"

#include <algorithm>

#include "runtime/error.h"

namespace mb {

EvalResult evaluate(Module& model, const Device& device, const Tensor& images, const Tensor& labels,
                    std::int64_t chunk, const LossOptions& loss) {
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
