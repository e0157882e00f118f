// Checkpoint save/load over safetensors.
#include "engine/checkpoint.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <set>

#include "data/atomic_file.h"
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

// Bounds for counts read from a checkpoint: no run reaches them (--epochs stops at 10^6),
// and they keep every sum of them inside int64.
constexpr std::int64_t kMaxStep = std::int64_t{1} << 62;
constexpr std::int64_t kMaxCheckpointEpoch = 1000000;

// A count from the metadata: digits only, at most `max`; 0 when the key is absent.
std::int64_t metadata_count(const std::map<std::string, std::string>& metadata,
                            const std::string& key, std::int64_t max, const std::string& path) {
  auto it = metadata.find(key);
  if (it == metadata.end()) return 0;
  const std::string& text = it->second;
  bool valid = !text.empty() && text.size() <= 19 &&
               text.find_first_not_of("0123456789") == std::string::npos;
  const std::int64_t value = valid ? std::stoll(text) : -1;
  if (!valid || value > max) {
    MB_THROW(IoError, "checkpoint ", path, ": its metadata ", key, " '", text,
             "' is not a count between 0 and ", max,
             "; the file was not written by microbatch or was damaged. Fix: use another "
             "checkpoint (or an older one, kept by --keep)");
  }
  return value;
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
  info.step = metadata_count(info.metadata, "step", kMaxStep, path);
  info.position.epoch =
      static_cast<int>(metadata_count(info.metadata, "epoch", kMaxCheckpointEpoch, path));
  info.position.step_in_epoch = metadata_count(info.metadata, "step_in_epoch", kMaxStep, path);
  return info;
}

}  // namespace

std::string optimizer_checkpoint_path(const std::string& path) {
  return path + ".optimizer.safetensors";
}

namespace {

std::string file_name(const std::string& path) {
  return std::filesystem::path(path).filename().string();
}

std::filesystem::path directory(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? std::filesystem::path(".") : parent;
}

// "runs/r20.safetensors" at step 120 -> "runs/r20.step-120.safetensors".
std::string kept_path(const std::string& path, const std::string& step) {
  const std::filesystem::path p(path);
  return (directory(path) / (p.stem().string() + ".step-" + step + p.extension().string()))
      .string();
}

// The step of a kept copy's file name, or -1.
std::int64_t kept_step(const std::string& name, const std::string& path) {
  const std::filesystem::path p(path);
  const std::string prefix = p.stem().string() + ".step-", suffix = p.extension().string();
  if (name.size() <= prefix.size() + suffix.size() || name.compare(0, prefix.size(), prefix) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
    return -1;
  }
  const std::string digits =
      name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoll(digits);
}

// The pid in "<name>.optimizer-<step>-<pid>-<token>.safetensors", or -1.
long optimizer_file_pid(const std::string& name, const std::string& prefix) {
  const std::string rest = name.substr(prefix.size());
  const std::size_t first = rest.find('-'), second = rest.find('-', first + 1);
  if (first == std::string::npos || second == std::string::npos) return -1;
  try {
    return std::stol(rest.substr(first + 1, second - first - 1));
  } catch (const std::exception&) {
    return -1;
  }
}

// Keeps `path` and the newest keep - 1 copies of earlier checkpoints, and the optimizer
// files they name; removes the rest (optimizer files of other live processes excepted:
// they may be about to commit).
void prune(const std::string& path, int keep) {
  std::vector<std::pair<std::int64_t, std::filesystem::path>> copies;
  std::vector<std::filesystem::path> optimizer_files;
  const std::string optimizer_prefix = file_name(path) + ".optimizer";
  std::error_code error;
  for (std::filesystem::directory_iterator it(directory(path), error), end; !error && it != end;
       it.increment(error)) {
    const std::string name = it->path().filename().string();
    const std::int64_t step = kept_step(name, path);
    if (step >= 0) copies.emplace_back(step, it->path());
    if (name.compare(0, optimizer_prefix.size(), optimizer_prefix) == 0 &&
        name.find(".tmp.") == std::string::npos) {
      optimizer_files.push_back(it->path());
    }
  }
  std::sort(copies.begin(), copies.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  std::set<std::string> referenced;
  auto reference = [&](const std::filesystem::path& model_file) {
    try {
      const auto metadata = read_safetensors_metadata(model_file.string());
      auto it = metadata.find("optimizer_file");
      if (it != metadata.end()) referenced.insert(it->second);
    } catch (const Error&) {
    }
  };
  reference(path);
  for (std::size_t i = 0; i < copies.size(); ++i) {
    if (static_cast<int>(i) < keep - 1) {
      reference(copies[i].second);
    } else {
      std::filesystem::remove(copies[i].second, error);
    }
  }
  const std::string versioned_prefix = optimizer_prefix + "-";
  for (const std::filesystem::path& file : optimizer_files) {
    const std::string name = file.filename().string();
    if (referenced.count(name)) continue;
    if (name.compare(0, versioned_prefix.size(), versioned_prefix) == 0) {
      const long pid = optimizer_file_pid(name, versioned_prefix);
      if (pid > 0 && pid != ::getpid() && ::kill(static_cast<pid_t>(pid), 0) == 0) continue;
    }
    std::filesystem::remove(file, error);  // ours, a dead writer's, or the legacy sidecar
  }
  sync_directory_of(path);
}

}  // namespace

void save_checkpoint(const std::string& path, Trainer& trainer, const std::string& model_name,
                     const TrainingPosition& position, std::map<std::string, std::string> metadata,
                     int keep) {
  MB_CHECK(keep >= 1, "checkpoints to keep must be >= 1, got ", keep,
           ". Fix: pass --keep 1 or more");
  const std::string step = std::to_string(trainer.steps());
  metadata["format"] = "microbatch";
  metadata["model"] = model_name;
  metadata["step"] = step;
  metadata["epoch"] = std::to_string(position.epoch);
  metadata["step_in_epoch"] = std::to_string(position.step_in_epoch);
  metadata["optimizer"] = optimizer_name(trainer.optimizer().options().kind);
  // Note: one atomic unit. The optimizer state goes to a new file of its own (unique: step,
  // pid, random token), then the model file, which names it, replaces `path`: that rename
  // is the commit. Killed before it, `path` is the previous checkpoint, whose optimizer file
  // is still there; after it, the new pair is complete. Files no kept checkpoint names are
  // removed last.
  std::random_device random;
  char token[16];
  std::snprintf(token, sizeof token, "%08x", random());
  const std::string optimizer_file = file_name(path) + ".optimizer-" + step + "-" +
                                     std::to_string(::getpid()) + "-" + token + ".safetensors";
  metadata["optimizer_file"] = optimizer_file;
  save_safetensors((directory(path) / optimizer_file).string(),
                   optimizer_state(trainer.optimizer()), metadata);
  if (keep > 1 && std::filesystem::exists(path)) {
    try {
      const auto previous = read_safetensors_metadata(path);
      auto previous_step = previous.find("step");
      if (previous_step != previous.end()) {
        const std::string copy = kept_path(path, previous_step->second);
        std::error_code error;
        std::filesystem::remove(copy, error);
        std::filesystem::create_hard_link(path, copy, error);
        if (error) std::filesystem::copy_file(path, copy, error);
      }
    } catch (const Error&) {
      // An unreadable previous checkpoint is not kept; the new one replaces it.
    }
  }
  save_safetensors(path, model_state(trainer.model()), metadata);
  prune(path, keep);
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
  auto named = info.metadata.find("optimizer_file");
  const std::string opt_path = named != info.metadata.end()
                                   ? (directory(path) / named->second).string()
                                   : optimizer_checkpoint_path(path);  // before one-unit files
  if (std::filesystem::exists(opt_path)) {
    SafetensorsFile opt_file = load_safetensors(opt_path);
    auto step = opt_file.metadata.find("step");
    if (step != opt_file.metadata.end() && step->second != std::to_string(info.step)) {
      MB_THROW(IoError, "checkpoint ", path, " is at step ", info.step, " but ", opt_path,
               " is at step ", step->second, ". Fix: resume from a consistent pair of files");
    }
    load_into(opt_file, optimizer_state(trainer.optimizer()));
  } else if (!optimizer_state(trainer.optimizer()).empty()) {
    info.warnings.push_back("the optimizer state of checkpoint " + path + " (" + opt_path +
                            ") is missing: resuming with fresh " +
                            optimizer_name(trainer.optimizer().options().kind) +
                            " state (momentum / moments at zero), so training does not "
                            "continue exactly. Fix: restore that file");
  }
  trainer.set_steps(info.step);
  return info;
}

}  // namespace mb
