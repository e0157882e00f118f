// A Session owns what one run needs, in the order it must exist: the device's arena
// (allocator), installed for the session's lifetime, then the model (built inside it, so its
// parameters count against the arena's cap), then the Trainer. Every entry point (the CLI's
// train / eval / plan / models / memprofile, the bench programs) builds one, instead of each
// repeating that ritual.
//
// Data sets are loaded before the Session exists, so on the CPU they do not count against
// the cap (on a GPU they live in host memory anyway); the engine's micro-batch inputs do.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

#include "engine/evaluate.h"
#include "engine/trainer.h"
#include "layers/module.h"
#include "runtime/allocator.h"
#include "runtime/allocator_registry.h"
#include "runtime/device.h"

namespace mb {

struct SessionOptions {
  Device device = Device::cpu();
  // Cap on the arena's reserved bytes (--memory-limit); 0: the device's free memory minus a
  // margin (no cap on the host).
  std::size_t memory_limit = 0;
  // An arena made by the caller (a traced pool, a failure injector) instead of the default
  // one; memory_limit is then ignored.
  std::shared_ptr<Allocator> allocator;
};

class Session {
 public:
  using ModelBuilder = std::function<std::shared_ptr<Module>()>;

  // Installs the default allocators if nothing did, makes and installs the arena, builds
  // the model and moves it to the device. Throws mb::CudaError for an unusable device.
  Session(const SessionOptions& options, const ModelBuilder& build_model);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const Device& device() const { return device_; }
  Allocator& allocator() { return *allocator_; }
  Module& model() { return *model_; }
  const std::shared_ptr<Module>& shared_model() const { return model_; }

  // Creates the Trainer (once; options.device is the session's). Throws mb::InvalidArgument
  // when one exists already.
  Trainer& make_trainer(TrainerOptions options);
  bool has_trainer() const { return trainer_ != nullptr; }
  // The trainer made by make_trainer; throws mb::InvalidArgument before.
  Trainer& trainer();

  // The model in inference mode over host data, `chunk` samples at a time.
  // 8-bit images are normalized with `normalization` (engine/evaluate.h).
  EvalResult evaluate(const Tensor& images, const Tensor& labels, std::int64_t chunk,
                      const LossOptions& loss = {}, const ChannelNormalization& normalization = {});

 private:
  Device device_;
  std::shared_ptr<Allocator> allocator_;
  std::unique_ptr<ScopedAllocator> installed_;  // allocator_ for device_, while the session lives
  std::shared_ptr<Module> model_;
  std::unique_ptr<Trainer> trainer_;
};

}  // namespace mb
