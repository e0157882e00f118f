// Checkpoint save/load over safetensors.
#include "engine/checkpoint.h"

#include <filesystem>

#include "data/safetensors.h"
#include "runtime/error.h"

namespace mb {
namespace {

std::vector<NamedTensor> model_state(Module& model) {
  std::vector<NamedTensor> state;
  for (auto& [name, p] : model.named_parameters()) state.push_back({name, p->value});
  for (auto& [name, b] : model.named_buffers()) state.push_back({name, *b});
  return state;
}

std::vector<NamedTensor> optimizer_state(Optimizer& optimizer) {
  std::vector<NamedTensor> state;
  for (auto& [name, t] : optimizer.named_state()) state.push_back({name, *t});
  return state;
}

// The model file: its metadata checked against `model_name`, its tensors into `model`.
CheckpointInfo read_model_file(const SafetensorsFile& model_file, const std::string& path,
                               Module& model, const std::string& model_name) {
  CheckpointInfo info;
  info.metadata = model_file.metadata;
  auto it = model_file.metadata.find("model");
  info.model = it != model_file.metadata.end() ? it->second : "";
  if (!info.model.empty() && info.model != model_name) {
    MB_THROW(InvalidArgument, "checkpoint ", path, " is for model '", info.model, "', not '",
             model_name, "'. Fix: pass --model ", info.model);
  }
  load_into(model_file, model_state(model));
  try {
    if (info.metadata.count("step")) info.step = std::stoll(info.metadata["step"]);
    if (info.metadata.count("epoch")) info.position.epoch = std::stoi(info.metadata["epoch"]);
    if (info.metadata.count("step_in_epoch")) {
      info.position.step_in_epoch = std::stoll(info.metadata["step_in_epoch"]);
    }
  } catch (const std::exception&) {
    MB_THROW(IoError, "checkpoint ", path, ": step/epoch metadata is not a number");
  }
  if (info.step < 0 || info.position.epoch < 0 || info.position.step_in_epoch < 0) {
    MB_THROW(IoError, "checkpoint ", path, ": negative step or epoch in its metadata");
  }
  return info;
}

}  // namespace

std::string optimizer_checkpoint_path(const std::string& path) {
  return path + ".optimizer.safetensors";
}

void save_checkpoint(const std::string& path, Trainer& trainer, const std::string& model_name,
                     const TrainingPosition& position,
                     std::map<std::string, std::string> metadata) {
  metadata["format"] = "microbatch";
  metadata["model"] = model_name;
  metadata["step"] = std::to_string(trainer.steps());
  metadata["epoch"] = std::to_string(position.epoch);
  metadata["step_in_epoch"] = std::to_string(position.step_in_epoch);
  metadata["optimizer"] = optimizer_name(trainer.optimizer().options().kind);
  // The optimizer file first: a crash between the two leaves files naming different steps,
  // which load_checkpoint refuses.
  save_safetensors(optimizer_checkpoint_path(path), optimizer_state(trainer.optimizer()), metadata);
  save_safetensors(path, model_state(trainer.model()), metadata);
}

CheckpointInfo load_model_checkpoint(const SafetensorsFile& file, const std::string& path,
                                     Module& model, const std::string& model_name) {
  return read_model_file(file, path, model, model_name);
}

CheckpointInfo load_checkpoint(const std::string& path, Trainer& trainer,
                               const std::string& model_name) {
  CheckpointInfo info = read_model_file(load_safetensors(path), path, trainer.model(), model_name);
  auto saved = info.metadata.find("optimizer");
  const char* ours = optimizer_name(trainer.optimizer().options().kind);
  if (saved != info.metadata.end() && saved->second != ours) {
    MB_THROW(InvalidArgument, "checkpoint ", path, " was trained with optimizer '", saved->second,
             "', this run uses '", ours, "'. Fix: pass --optimizer ", saved->second,
             " to resume it");
  }
  const std::string opt_path = optimizer_checkpoint_path(path);
  if (std::filesystem::exists(opt_path)) {
    SafetensorsFile opt_file = load_safetensors(opt_path);
    auto step = opt_file.metadata.find("step");
    if (step != opt_file.metadata.end() && step->second != std::to_string(info.step)) {
      MB_THROW(IoError, "checkpoint ", path, " is at step ", info.step, " but ", opt_path,
               " is at step ", step->second, ". Fix: resume from a consistent pair of files");
    }
    load_into(opt_file, optimizer_state(trainer.optimizer()));
  }
  trainer.set_steps(info.step);
  return info;
}

}  // namespace mb
