// Session: arena -> model -> trainer, created and destroyed in that order.
#include "engine/session.h"

#include "allocator/default_allocator.h"
#include "runtime/error.h"

namespace mb {

Session::Session(const SessionOptions& options, const ModelBuilder& build_model)
    : device_(options.device) {
  install_default_allocators();
  require_device(device_);
  allocator_ = options.allocator != nullptr ? options.allocator
                                            : make_default_allocator(device_, options.memory_limit);
  installed_ = std::make_unique<ScopedAllocator>(device_, allocator_);
  MB_CHECK(build_model != nullptr, "Session needs a model builder");
  try {
    model_ = build_model();
    MB_CHECK(model_ != nullptr, "Session: the model builder returned no model");
    model_->to_device(device_);
  } catch (const OutOfMemory& error) {
    // No micro-batch exists yet: only a larger cap or a smaller model helps.
    throw OutOfMemory(error.requested_bytes(), error.report(),
                      "building the model: its parameters alone do not fit under the cap;",
                      __FILE__, __LINE__,
                      "Fix: raise --memory-limit well above the parameters' size (training "
                      "also holds gradients, optimizer state and activations), or use a "
                      "smaller model");
  }
}

Session::~Session() {
  // The trainer and the model first, while their allocator is still the installed one.
  trainer_.reset();
  model_.reset();
  installed_.reset();
}

Trainer& Session::make_trainer(TrainerOptions options) {
  MB_CHECK(trainer_ == nullptr, "Session: the trainer exists already");
  options.device = device_;
  trainer_ = std::make_unique<Trainer>(model_, options);
  return *trainer_;
}

Trainer& Session::trainer() {
  MB_CHECK(trainer_ != nullptr, "Session: no trainer yet. Fix: call make_trainer() first");
  return *trainer_;
}

EvalResult Session::evaluate(const Tensor& images, const Tensor& labels, std::int64_t chunk,
                             const LossOptions& loss, const ChannelNormalization& normalization) {
  return mb::evaluate(*model_, device_, images, labels, chunk, loss, normalization);
}

}  // namespace mb
