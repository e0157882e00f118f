// Chain fusion: BatchNorm2d + activation, and inputs recomputed from their producer.
#include "layers/fusion.h"

#include <cstddef>

#include "layers/activation.h"
#include "layers/batch_norm2d.h"
#include "layers/module.h"

namespace mb {

void append_chain(Module& module, std::vector<Module*>& chain) {
  // Exactly Sequential: its forward feeds each child's output to the next child only.
  // A recomputed segment drops its children's caches when it returns: a chain of its own.
  auto* sequential = dynamic_cast<Sequential*>(&module);
  if (sequential != nullptr && !sequential->recomputes()) {
    for (const auto& [name, child] : module.children()) append_chain(*child, chain);
    return;
  }
  chain.push_back(&module);
}

void fuse_chain(const std::vector<Module*>& chain) {
  for (std::size_t i = 0; i + 1 < chain.size(); ++i) {
    auto* bn = dynamic_cast<BatchNorm2d*>(chain[i]);
    auto* act = dynamic_cast<PointwiseActivation*>(chain[i + 1]);
    if (bn == nullptr || act == nullptr || act->absorbed() ||
        bn->activation() != BnActivation::None) {
      continue;
    }
    bn->set_activation(act->is_relu6() ? BnActivation::ReLU6 : BnActivation::ReLU);
    act->set_absorbed(true);
  }
  for (std::size_t i = 1; i < chain.size(); ++i) {
    std::size_t producer = i - 1;
    while (producer > 0) {
      auto* act = dynamic_cast<PointwiseActivation*>(chain[producer]);
      if (act == nullptr || !act->absorbed()) break;
      --producer;
    }
    if (RecomputeSource* source = chain[producer]->recompute_source()) {
      chain[i]->recompute_input_from(source);
    }
  }
}

}  // namespace mb
