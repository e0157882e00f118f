// Training checkpoints as safetensors files.
//
// PATH holds the model's parameters and buffers under torchvision's names, so
// `torchvision.models.resnet18().load_state_dict(safetensors.torch.load_file(PATH))` works;
// the optimizer state ("<param>.momentum_buffer", ...) lives in a file beside it that PATH's
// metadata names (older checkpoints: PATH.optimizer.safetensors). Both carry the step.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

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
  // Things the caller must show the user (a missing optimizer state file).
  std::vector<std::string> warnings;
};

std::string optimizer_checkpoint_path(const std::string& path);

// Writes the checkpoint as one atomic unit: the model file at `path` names the optimizer
// file beside it ("<name>.optimizer-<step>-<pid>-<token>.safetensors"), written first; the
// rename of the model file commits both, so a kill at any moment leaves the previous or
// the new checkpoint, complete. `keep` > 1 keeps that many: the previous ones as
// "<stem>.step-<step><ext>" beside it, each loadable. Stale temporaries are removed.
// `metadata` is stored as well; "model", "step", "epoch", "step_in_epoch", "optimizer" and
// "optimizer_file" are set here.
void save_checkpoint(const std::string& path, Trainer& trainer, const std::string& model_name,
                     const TrainingPosition& position,
                     std::map<std::string, std::string> metadata = {}, int keep = 1);

// Loads parameters, buffers, optimizer state and the step into `trainer`, to continue
// training. A missing optimizer state file is not an error, but a warning in the result. Throws
// mb::InvalidArgument naming the first mismatched key and shapes (a file for another model) or,
// when the file names another optimizer than the trainer's, the flag to pass (--optimizer sgd);
// mb::IoError for unreadable or inconsistent files.
CheckpointInfo load_checkpoint(const std::string& path, Trainer& trainer,
                               const std::string& model_name);

// Loads only the parameters and buffers of `file` (read from `path`) into `model`:
// evaluation needs no optimizer, and reads the metadata (normalization, BatchNorm
// settings) before it builds the model.
CheckpointInfo load_model_checkpoint(const SafetensorsFile& file, const std::string& path,
                                     Module& model, const std::string& model_name);

}  // namespace mb
