// Training checkpoints as safetensors files.
//
// PATH holds the model's parameters and buffers under torchvision's names, so
// `torchvision.models.resnet18().load_state_dict(safetensors.torch.load_file(PATH))` works;
// PATH.optimizer.safetensors holds the optimizer state ("<param>.momentum_buffer", ...).
// Both carry the step in their metadata. Each file is written to a temporary name and
// renamed, so a crash never leaves a half-written checkpoint.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "data/safetensors.h"
#include "engine/trainer.h"

namespace mb {

// Where training stands: `epoch` epochs are complete and `step_in_epoch` batches of the
// next one have been trained on (0 at an epoch boundary). With the sampler's settings
// (seed, shuffle, batch size, number of samples: stored beside it, see fit.h) it says
// exactly which samples come next.
struct TrainingPosition {
  int epoch = 0;
  std::int64_t step_in_epoch = 0;
};

struct CheckpointInfo {
  std::string model;
  std::int64_t step = 0;  // optimizer steps taken
  TrainingPosition position;
  std::map<std::string, std::string> metadata;
};

std::string optimizer_checkpoint_path(const std::string& path);

// `metadata` is stored as well; "model", "step", "epoch", "step_in_epoch" and "optimizer"
// are set from the arguments.
void save_checkpoint(const std::string& path, Trainer& trainer, const std::string& model_name,
                     const TrainingPosition& position,
                     std::map<std::string, std::string> metadata = {});

// Loads parameters, buffers, optimizer state and the step into `trainer`, to continue
// training. Throws mb::InvalidArgument naming the first mismatched key and shapes (a file
// for another model) or, when the file names another optimizer than the trainer's, the
// flag to pass (--optimizer sgd); mb::IoError for unreadable or inconsistent files.
CheckpointInfo load_checkpoint(const std::string& path, Trainer& trainer,
                               const std::string& model_name);

// Loads only the parameters and buffers of `file` (read from `path`) into `model`:
// evaluation needs no optimizer, and reads the metadata (normalization, BatchNorm
// settings) before it builds the model.
CheckpointInfo load_model_checkpoint(const SafetensorsFile& file, const std::string& path,
                                     Module& model, const std::string& model_name);

}  // namespace mb
