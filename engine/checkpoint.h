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

#include "engine/trainer.h"

namespace mb {

struct CheckpointInfo {
  std::string model;
  std::int64_t step = 0;
  int epoch = 0;
  std::map<std::string, std::string> metadata;
};

std::string optimizer_checkpoint_path(const std::string& path);

// `metadata` is stored as well; "model", "step" and "epoch" are set from the arguments.
void save_checkpoint(const std::string& path, Trainer& trainer, const std::string& model_name,
                     int epoch, std::map<std::string, std::string> metadata = {});

// Loads parameters, buffers, optimizer state and the step into `trainer`. Throws
// mb::InvalidArgument naming the first mismatched key and shapes (a file for another model),
// mb::IoError for unreadable or inconsistent files.
CheckpointInfo load_checkpoint(const std::string& path, Trainer& trainer,
                               const std::string& model_name);

}  // namespace mb
