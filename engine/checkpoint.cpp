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

}  // namespace

std::string optimizer_checkpoint_path(const std::string& path) {
  return path + ".optimizer.safetensors";
}

void save_checkpoint(const std::string& path, Trainer& trainer, const std::string& model_name,
                     int epoch, std::map<std::string, std::string> metadata) {
  metadata["format"] = "microbatch";
  metadata["model"] = model_name;
  metadata["step"] = std::to_string(trainer.steps());
  metadata["epoch"] = std::to_string(epoch);
  metadata["optimizer"] = optimizer_name(trainer.optimizer().options().kind);
  // The optimizer file first: a crash between the two leaves files naming different steps,
  // which load_checkpoint refuses.
  save_safetensors(optimizer_checkpoint_path(path), optimizer_state(trainer.optimizer()), metadata);
  save_safetensors(path, model_state(trainer.model()), metadata);
}

CheckpointInfo load_checkpoint(const std::string& path, Trainer& trainer,
                               const std::string& model_name) {
  SafetensorsFile model_file = load_safetensors(path);
  CheckpointInfo info;
  info.metadata = model_file.metadata;
  auto it = model_file.metadata.find("model");
  info.model = it != model_file.metadata.end() ? it->second : "";
  if (!info.model.empty() && info.model != model_name) {
    MB_THROW(InvalidArgument, "checkpoint ", path, " is for model '", info.model, "', not '",
             model_name, "'. Fix: pass --model ", info.model);
  }
  load_into(model_file, model_state(trainer.model()));
  try {
    if (model_file.metadata.count("step")) info.step = std::stoll(model_file.metadata["step"]);
    if (model_file.metadata.count("epoch")) info.epoch = std::stoi(model_file.metadata["epoch"]);
  } catch (const std::exception&) {
    MB_THROW(IoError, "checkpoint ", path, ": step/epoch metadata is not a number");
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
