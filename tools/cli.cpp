// `microbatch train | eval | plan | models`: argument parsing (CLI11), output (text with a
// progress bar on a terminal, or one JSON object per line with --json), checkpoints.
#include "tools/cli.h"
#include "tools/memprofile.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "allocator/byte_size.h"
#include "allocator/default_allocator.h"
#include "data/atomic_file.h"
#include "data/dataset.h"
#include "data/image_dataset.h"
#include "data/safetensors.h"
#include "data/transforms.h"
#include "engine/checkpoint.h"
#include "engine/communicator.h"
#include "engine/fit.h"
#include "engine/session.h"
#include "engine/trainer.h"
#include "kernels/threads.h"
#include "models/zoo.h"
#include "runtime/context.h"
#include "runtime/error.h"
#include "runtime/version.h"
#include "tools/flags.h"
#include "tools/format.h"

namespace mb {
namespace {

using Json = nlohmann::json;

// Ctrl-C and SIGTERM during `train`: the first stops after the current step (with a
// checkpoint where one is configured); the second stops at once, removing any temporary
// file being written, so no partial file is left either way.
std::atomic<bool> stop_requested{false};
std::atomic<int> signals_received{0};

extern "C" void on_stop_signal(int) {
  if (signals_received.fetch_add(1) == 0) {
    stop_requested.store(true);
    const char message[] = "\nstopping after this step (signal again to stop now)\n";
    [[maybe_unused]] ssize_t written = ::write(STDERR_FILENO, message, sizeof message - 1);
    return;
  }
  remove_open_temporaries();
  ::_exit(130);
}

// Installs on_stop_signal for SIGINT and SIGTERM while it lives.
class StopSignals {
 public:
  StopSignals() {
    stop_requested.store(false);
    signals_received.store(0);
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGINT, &action, &previous_int_);
    ::sigaction(SIGTERM, &action, &previous_term_);
  }
  ~StopSignals() {
    ::sigaction(SIGINT, &previous_int_, nullptr);
    ::sigaction(SIGTERM, &previous_term_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  struct sigaction previous_int_ {};
  struct sigaction previous_term_ {};
};

// Counts from flags (batch size, sample limits, steps) stay below 2^62, so products and
// sums of a few of them cannot overflow int64.
constexpr std::int64_t kMaxCount = std::int64_t{1} << 62;

struct CommonArgs {
  std::string model = "lenet5";
  std::string dataset = "fashion-mnist";
  std::string data_dir;
  std::int64_t batch_size = 256;
  std::string micro_batch = "auto";
  std::string memory_limit;
  std::string device = "auto";
  int epochs = 1;
  double lr = 0.01;
  std::string optimizer = "adamw";
  double momentum = 0.9;
  double weight_decay = 0.0;
  std::uint64_t seed = 0;
  bool json = false;
  std::string checkpoint;
  std::string resume;
  std::string accumulation = "inplace";
  double clip_norm = 0.0;
  std::int64_t train_limit = 0;
  std::int64_t test_limit = 0;
  std::int64_t image_size = 0;
  double warmup_epochs = 0.0;
  std::string schedule = "cosine";
  std::int64_t max_steps = kNoStepLimit;
  bool augment = false;
  bool no_progress = false;
  std::string save_initial;
  int keep = 1;
  bool no_shuffle = false;
  bool log_indices = false;
  bool nesterov = false;
  double beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8;
  double trust_coefficient = 0.001;
  double bn_momentum = 0.1, bn_eps = 1e-5;
  bool no_fuse = false;
  bool recompute_segments = false;
  int threads = 0;   // 0: the default (OMP_NUM_THREADS, else the available cores)
  int workers = 0;   // image folders' decoding threads; 0: the cores the trainer leaves
  int prefetch = 2;  // batches the loader prepares ahead
  std::string on_bad_image = "skip";
  std::string tf32 = "on";
  bool deterministic = false;
};

// "rank 1 of 2: " when launched as ranks (mpirun), so a failing rank names itself.
std::string rank_prefix() {
  if (!launched_as_ranks()) return "";
  return "rank " + std::to_string(launched_rank()) + " of " +
         std::to_string(launched_rank_count()) + ": ";
}

// What a user reads: the message and its fix. The source location and the failed
// expression (what()) are for bug reports: MB_DEBUG=1 prints them too.
std::string user_error(const Error& e) {
  std::string text = rank_prefix() + "error: " + e.message() + "\n";
  const char* debug = std::getenv("MB_DEBUG");
  if (debug != nullptr && *debug != '\0' && std::string(debug) != "0") {
    text += "debug: " + std::string(e.what()) + "\n";
  }
  return text;
}

void add_common_flags(CLI::App& cmd, CommonArgs& a) {
  cmd.add_option("--model", a.model, "zoo model (see `microbatch models`)");
  cmd.add_option("--dataset", a.dataset,
                 "fashion-mnist | cifar10 | cifar100 | imagefolder | synthetic")
      ->check(CLI::IsMember({"fashion-mnist", "cifar10", "cifar100", "imagefolder", "synthetic"}));
  cmd.add_option("--data-dir", a.data_dir,
                 "data set folder (default: /usr/share/datasets/fashion-mnist for fashion-mnist; "
                 "imagefolder: DIR/train/<class>/* and DIR/val/<class>/*, JPEG or PNG)");
  cmd.add_option("--workers", a.workers,
                 "imagefolder: threads that decode and transform images (default: the cores "
                 "the trainer leaves free, at least 1)")
      ->check(whole_in(1, 256));
  cmd.add_option("--prefetch", a.prefetch,
                 "batches the loader prepares ahead of training (default 2; image folders: "
                 "more evens out slow images at the cost of host memory)")
      ->check(whole_in(1, 8));
  cmd.add_option("--on-bad-image", a.on_bad_image,
                 "imagefolder: skip (default: leave a corrupt or unreadable image out of its "
                 "batch, count it and name the first few) | error (stop at the first)")
      ->check(CLI::IsMember({"skip", "error"}));
  cmd.add_option("--batch-size", a.batch_size, "samples per optimizer step (the full batch)")
      ->check(whole_in(1, kMaxCount));
  cmd.add_option("--micro-batch", a.micro_batch, "auto (planned from free memory) or N");
  cmd.add_option("--memory-limit", a.memory_limit,
                 "cap on the device arena, e.g. 6GiB, 512MiB, 1.5G (default: device free memory)");
  cmd.add_option("--device", a.device, "auto | cpu | cuda | cuda:N");
  cmd.add_option("--seed", a.seed, "seed for initialization, shuffling and dropout (>= 0)")
      ->check(unsigned_integer());
  cmd.add_option("--image-size", a.image_size,
                 "input size for synthetic data and image folders' crops (default: model's)")
      ->check(whole_in(0, 4096));
  cmd.add_option("--train-limit", a.train_limit, "use only the first N training samples")
      ->check(whole_in(0, kMaxCount));
  cmd.add_option("--test-limit", a.test_limit, "use only the first N test samples")
      ->check(whole_in(0, kMaxCount));
  cmd.add_option("--bn-momentum", a.bn_momentum,
                 "BatchNorm running-statistics momentum, PyTorch's convention (default 0.1)")
      ->check(finite_in(0.0, 1.0));
  cmd.add_option("--bn-eps", a.bn_eps, "BatchNorm epsilon (default 1e-5)")
      ->check(finite_in(1e-30, 1.0));
  cmd.add_flag("--no-fuse", a.no_fuse,
               "keep BatchNorm, ReLU and the residual add as separate layers that each keep "
               "their tensors (default: fused, the same numbers with less memory per sample)");
  cmd.add_flag("--recompute-segments", a.recompute_segments,
               "ResNets: recompute each residual stage in backward instead of keeping its "
               "activations (less memory per sample, one more forward of the stages)");
  cmd.add_option("--threads", a.threads,
                 "CPU threads for the CPU kernels (default: OMP_NUM_THREADS, else the cores "
                 "this process may use)")
      ->check(whole_in(1, 1024));
  cmd.add_option("--tf32", a.tf32,
                 "TF32 tensor-core math for convolutions and GEMMs on CUDA: on (default, as "
                 "in PyTorch) | off (full fp32)")
      ->check(CLI::IsMember({"on", "off"}));
  cmd.add_flag("--deterministic", a.deterministic,
               "CUDA: the same bits run to run (TF32 off, only deterministic cuDNN algorithms, "
               "one per layer whatever the micro-batch size); a little slower. The CPU is "
               "deterministic always");
  cmd.add_flag("--json", a.json, "one JSON object per line instead of text");
}

Device resolve_device(const std::string& text) {
  Device device = Device::parse(text);
  require_device(device);
  return device;
}

// The session's device and arena cap (--device, --memory-limit).
SessionOptions session_options(const CommonArgs& a, const Communicator& group) {
  SessionOptions options;
  // One device per rank on a machine: a plain "cuda" means the local rank's GPU.
  options.device = resolve_device(group.distributed() && a.device == "cuda"
                                      ? "cuda:" + std::to_string(group.local_rank())
                                      : a.device);
  if (a.threads > 0) {
    set_cpu_threads(a.threads);
  } else if (group.local_size() > 1 && std::getenv("OMP_NUM_THREADS") == nullptr) {
    // Ranks on one machine share its cores instead of each taking all of them.
    set_cpu_threads(std::max(1, available_cpu_cores() / group.local_size()));
  }
  // The device's cuBLAS math mode and cuDNN's choice of math follow this (no effect on the
  // CPU, whose kernels are full fp32).
  Context::get(options.device).set_allow_tf32(a.tf32 == "on" && !a.deterministic);
  Context::get(options.device).set_deterministic(a.deterministic);
  options.memory_limit = memory_limit_bytes(a.memory_limit);
  return options;
}

std::string default_data_dir(const std::string& dataset) {
  if (dataset == "fashion-mnist") return "/usr/share/datasets/fashion-mnist";
  if (dataset == "cifar10") return "datasets/cifar10";
  if (dataset == "cifar100") return "datasets/cifar100";
  return "";
}

struct Data {
  Dataset train;
  Dataset test;
  Normalization normalization;
};

// Normalization in checkpoint metadata: "0.2860,0.3530" style lists, exact float32 values.
std::string format_floats(const std::vector<float>& values) {
  std::string text;
  char buffer[32];
  for (std::size_t i = 0; i < values.size(); ++i) {
    std::snprintf(buffer, sizeof buffer, "%.9g", static_cast<double>(values[i]));
    text += (i ? "," : "") + std::string(buffer);
  }
  return text;
}

std::vector<float> parse_floats(const std::string& text, const std::string& what) {
  std::vector<float> values;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    try {
      std::size_t used = 0;
      values.push_back(std::stof(item, &used));
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      MB_THROW(IoError, "checkpoint metadata ", what, " '", text, "' is not a list of numbers");
    }
  }
  return values;
}

// The labels' shape of one sample: [] for classification, [H, W] for segmentation.
Shape label_shape(const Dataset& data) {
  if (data.streamed()) return Shape{};
  return Shape(std::vector<std::int64_t>(data.labels.shape().dims().begin() + 1,
                                         data.labels.shape().dims().end()));
}

// Image folders: DIR/train and DIR/val, streamed; the device normalizes (ImageNet's constants
// unless the checkpoint has others).
Data load_image_folders(const CommonArgs& a, const ModelInfo& info, const std::string& dir,
                        const Normalization& saved) {
  if (dir.empty()) {
    MB_THROW(InvalidArgument,
             "--dataset imagefolder needs --data-dir DIR, where DIR/train/<class>/ and "
             "DIR/val/<class>/ hold the images (torchvision's ImageFolder layout)");
  }
  if (info.segmentation) {
    MB_THROW(InvalidArgument, "model ", info.name,
             " is a segmentation model; image folders hold classes. Fix: pick a classifier");
  }
  ImageFolderOptions options;
  options.image_size = a.image_size > 0 ? a.image_size : info.image_size;
  Data data;
  data.train = load_image_folder(dir, true, a.train_limit, options);
  data.test = load_image_folder(dir, false, a.test_limit, options);
  if (data.train.class_names != data.test.class_names) {
    MB_THROW(InvalidArgument, "image folder ", dir, ": train/ has ", data.train.class_names.size(),
             " classes and val/ has ", data.test.class_names.size(),
             " (or other names), so their labels would not mean the same. Fix: give val/ the "
             "same class folders as train/");
  }
  if (info.in_channels != 3) {
    MB_THROW(InvalidArgument, "model ", info.name, " takes ", info.in_channels,
             " channel(s); image folders give RGB (3). Fix: pick a model for colour images");
  }
  data.normalization = !saved.empty() ? saved : published_normalization("imagefolder");
  return data;
}

// The data set's published constants; for synthetic data, computed from the training set.
// `saved` (from a checkpoint) wins: evaluation normalizes as training did.
Data load_data(const CommonArgs& a, const ModelInfo& info, const Normalization& saved = {}) {
  SyntheticOptions synthetic;
  synthetic.channels = info.in_channels;
  synthetic.height = synthetic.width = a.image_size > 0 ? a.image_size : info.image_size;
  synthetic.num_classes = std::min<std::int64_t>(info.num_classes, 10);
  synthetic.segmentation = info.segmentation;
  synthetic.seed = a.seed;
  const std::string dir = a.data_dir.empty() ? default_data_dir(a.dataset) : a.data_dir;
  Data data;
  if (a.dataset == "imagefolder") return load_image_folders(a, info, dir, saved);
  synthetic.samples = a.train_limit > 0 ? a.train_limit : 2048;
  data.train = load_dataset(a.dataset, dir, true, a.train_limit, synthetic);
  synthetic.samples = a.test_limit > 0 ? a.test_limit : 512;
  synthetic.first_sample = 1 << 24;
  data.test = load_dataset(a.dataset, dir, false, a.test_limit, synthetic);
  if (data.train.size() == 0) {
    MB_THROW(InvalidArgument, "data set ", a.dataset, " in ", dir.empty() ? "(synthetic)" : dir,
             " has no training samples. Fix: check the training files of --data-dir");
  }
  if (data.test.size() == 0) {
    MB_THROW(InvalidArgument, "data set ", a.dataset, " in ", dir.empty() ? "(synthetic)" : dir,
             " has no test samples, so no accuracy can be reported. Fix: check the test files "
             "of --data-dir");
  }
  if (data.train.sample_shape() != data.test.sample_shape() ||
      label_shape(data.train) != label_shape(data.test)) {
    MB_THROW(InvalidArgument, "the training samples of ", dir, " are ",
             data.train.sample_shape().to_string(), " but its test samples are ",
             data.test.sample_shape().to_string(),
             ": the two sets do not belong together. Fix: put matching train and test files in "
             "--data-dir");
  }
  MB_CHECK(data.train.is_segmentation() == info.segmentation, "model ", info.name, " is ",
           info.segmentation ? "a segmentation" : "a classification", " model but data set ",
           a.dataset, " is not. Fix: use --dataset synthetic for ", info.name);
  if (!saved.empty() &&
      static_cast<std::int64_t>(saved.mean.size()) != data.train.sample_shape()[0]) {
    MB_THROW(InvalidArgument, "the checkpoint normalizes ", saved.mean.size(),
             " channel(s), data set ", a.dataset, " has ", data.train.sample_shape()[0],
             ": it was trained on other data. Fix: pass the --dataset it was trained on");
  }
  data.normalization = !saved.empty() ? saved : published_normalization(a.dataset);
  if (data.normalization.empty()) data.normalization = compute_normalization(data.train);
  normalize_inplace(data.train.images, data.normalization);
  normalize_inplace(data.test.images, data.normalization);
  return data;
}

ModelConfig model_config(const Dataset& data, const CommonArgs& a) {
  ModelConfig config;
  config.bn_eps = a.bn_eps;
  config.bn_momentum = a.bn_momentum;
  config.fuse = !a.no_fuse;
  config.recompute_segments = a.recompute_segments;
  const Shape sample = data.sample_shape();
  config.in_channels = sample[0];
  config.image_size = sample[1];
  config.num_classes = data.num_classes;
  config.seed = a.seed;
  return config;
}

TrainerOptions trainer_options(const CommonArgs& a, std::function<void(const std::string&)> log) {
  TrainerOptions options;
  options.micro_batch = parse_micro_batch(a.micro_batch);
  options.accumulation = parse_accumulation(a.accumulation);
  options.optimizer.kind = parse_optimizer(a.optimizer);
  options.optimizer.momentum = static_cast<float>(a.momentum);
  options.optimizer.nesterov = a.nesterov;
  options.optimizer.weight_decay = static_cast<float>(a.weight_decay);
  options.optimizer.beta1 = static_cast<float>(a.beta1);
  options.optimizer.beta2 = static_cast<float>(a.beta2);
  options.optimizer.eps = static_cast<float>(a.adam_eps);
  options.optimizer.trust_coefficient = static_cast<float>(a.trust_coefficient);
  options.clip_norm = a.clip_norm;
  options.seed = a.seed;
  options.log = std::move(log);
  return options;
}

// This rank's share of a global batch of `samples` (the loader's contiguous shards).
std::int64_t shard_size(std::int64_t samples, const Communicator& group) {
  return samples * (group.rank() + 1) / group.size() - samples * group.rank() / group.size();
}

class Output {
 public:
  Output(std::ostream& out, bool json)
      : out_(out), json_(json), tty_(isatty(fileno(stderr)) != 0) {}
  bool json() const { return json_; }
  void line(const std::string& text) {
    clear_progress();
    if (!json_) out_ << text << "\n" << std::flush;
  }
  void event(const Json& object) {
    if (json_) out_ << object.dump() << "\n" << std::flush;
  }
  void progress(const std::string& text) {
    if (json_ || !tty_) return;
    std::fprintf(stderr, "\r%s\033[K", text.c_str());
    std::fflush(stderr);
    progress_shown_ = true;
  }
  void clear_progress() {
    if (progress_shown_) {
      std::fprintf(stderr, "\r\033[K");
      progress_shown_ = false;
    }
  }

 private:
  std::ostream& out_;
  bool json_;
  bool tty_;
  bool progress_shown_ = false;
};

Json plan_json(const Plan& plan) {
  // Every size when there are few; a batch of 2^62 is described by its count alone.
  const std::int64_t count = plan.count();
  return Json{{"event", "plan"},
              {"batch_size", plan.batch_size},
              {"micro_batch", plan.micro_batch},
              {"micro_batches", count},
              {"sizes", count <= 4096 ? Json(plan.sizes()) : Json(nullptr)},
              {"automatic", plan.automatic},
              {"available_bytes", plan.available_bytes},
              {"margin_bytes", plan.margin_bytes},
              {"fixed_bytes", plan.profile.fixed_bytes},
              {"bytes_per_sample", plan.profile.bytes_per_sample},
              {"analytic_bytes_per_sample", plan.profile.analytic_bytes_per_sample},
              {"explanation", plan.explanation}};
}

// The shortest decimal that reads back as `value` (0.9f prints as 0.9, not 0.899999976).
double shortest(float value) {
  char buffer[32];
  for (int digits = 6; digits < 9; ++digits) {
    std::snprintf(buffer, sizeof buffer, "%.*g", digits, static_cast<double>(value));
    if (std::strtof(buffer, nullptr) == value) break;
  }
  return std::strtod(buffer, nullptr);
}

// Every setting that decides the result of training, as the engine received it: printed
// before training and stored in checkpoints, so a run can be reproduced from its log.
Json settings_json(const TrainerOptions& t, const CommonArgs& a) {
  const OptimizerOptions& o = t.optimizer;
  Json optimizer{{"kind", optimizer_name(o.kind)}, {"weight_decay", shortest(o.weight_decay)}};
  if (o.kind == OptimizerKind::AdamW) {
    optimizer["beta1"] = shortest(o.beta1);
    optimizer["beta2"] = shortest(o.beta2);
    optimizer["eps"] = shortest(o.eps);
  } else {
    optimizer["momentum"] = shortest(o.momentum);
  }
  if (o.kind == OptimizerKind::Sgd) optimizer["nesterov"] = o.nesterov;
  if (o.kind == OptimizerKind::Lars) optimizer["trust_coefficient"] = shortest(o.trust_coefficient);
  return Json{{"optimizer", optimizer},
              {"lr", a.lr},
              {"schedule", a.schedule},
              {"warmup_epochs", a.warmup_epochs},
              {"clip_norm", t.clip_norm},
              {"batch_size", a.batch_size},
              {"accumulation", accumulation_name(t.accumulation)},
              {"seed", a.seed},
              {"shuffle", !a.no_shuffle},
              {"augment", a.augment},
              {"bn_eps", a.bn_eps},
              {"bn_momentum", a.bn_momentum},
              {"fused", !a.no_fuse},
              {"recompute_segments", a.recompute_segments},
              {"tf32", a.tf32 == "on" && !a.deterministic},
              {"deterministic", a.deterministic}};
}

// The epoch line's loader part (image folders): how long training waited for data, whether
// the loader was the bottleneck, the loader's rate and the bad images it left out.
std::string loader_summary(const LoaderStats& loader, double epoch_seconds, bool streamed) {
  if (!streamed) return "";
  std::string text = ", data wait " + fixed(loader.wait_seconds, 1) + " s";
  if (epoch_seconds > 0 && loader.wait_seconds > 0.1 * epoch_seconds) {
    text += " (" + fixed(100.0 * loader.wait_seconds / epoch_seconds, 0) +
            "%: the loader is the bottleneck; more --workers would help)";
  }
  text += ", loader " + fixed(loader.capacity_per_second(), 0) + " img/s with " +
          std::to_string(loader.workers) + " worker(s)";
  if (loader.skipped > 0) text += ", " + std::to_string(loader.skipped) + " bad image(s) skipped";
  return text;
}

// Image folders' decoding threads: --workers, else the cores the trainer leaves (a CUDA
// trainer keeps one busy; a CPU trainer its --threads), at least 1.
int loader_workers(const CommonArgs& a, const Device& device) {
  if (a.workers > 0) return a.workers;
  const int cores = available_cpu_cores();
  const int trainer = device.is_cpu() ? cpu_threads() : 1;
  return std::max(1, cores - trainer);
}

// The loader settings of the flags (--seed, --workers, --prefetch, --on-bad-image).
LoaderOptions loader_options(const CommonArgs& a, const Device& device) {
  LoaderOptions options;
  options.seed = a.seed;
  options.workers = loader_workers(a, device);
  options.prefetch = a.prefetch;
  options.on_bad_image = a.on_bad_image == "error" ? BadImagePolicy::Error : BadImagePolicy::Skip;
  return options;
}

int command_train(const CommonArgs& a, std::ostream& out) {
  // Data-parallel (launched by mpirun or srun): rank 0 prints the run; the other ranks print
  // only their own planner decisions (each plans its shard from its own memory), prefixed.
  const std::shared_ptr<Communicator> group = launched_communicator();
  std::ostream silent(nullptr);
  Output output(group->rank() == 0 ? out : silent, a.json);
  const SessionOptions options = session_options(a, *group);
  const ModelInfo& info = find_model(a.model);
  const Data data = load_data(a, info);
  Session session(options, [&] { return build_model(a.model, model_config(data.train, a)); });
  output.line("microbatch train: " + a.model + " (" +
              std::to_string(session.model().parameter_count()) + " parameters) on " + a.dataset +
              " (" + std::to_string(data.train.size()) + " train, " +
              std::to_string(data.test.size()) + " test), " + options.device.str() +
              (options.device.is_cpu() ? " (" + std::to_string(cpu_threads()) + " threads)" : "") +
              ", batch " + std::to_string(a.batch_size) + ", memory limit " +
              format_bytes(session.allocator().report().capacity) +
              (group->distributed()
                   ? ", " + std::to_string(group->size()) + " ranks (" + group->backend() + ")"
                   : std::string()));
  const std::string rank_text = group->distributed() ? rank_prefix() : "";
  TrainerOptions trainer_settings = trainer_options(a, [&](const std::string& message) {
    if (group->rank() != 0 && !a.json) out << rank_text << message << "\n" << std::flush;
    output.line(message);
    output.event(Json{{"event", "log"}, {"message", message}});
  });
  trainer_settings.communicator = group;
  if (data.train.streamed()) {
    trainer_settings.input_normalization = channel_normalization(data.normalization);
  }
  Trainer& trainer = session.make_trainer(trainer_settings);
  Json settings = settings_json(trainer.options(), a);
  if (group->distributed()) settings["ranks"] = group->size();
  output.line("settings: " + settings.dump());
  output.event(Json{{"event", "settings"}, {"settings", settings}});
  FitOptions fit_options;
  fit_options.batch_size = a.batch_size;
  fit_options.epochs = a.epochs;
  fit_options.max_steps = a.max_steps;
  fit_options.lr = a.lr;
  fit_options.warmup_epochs = a.warmup_epochs;
  fit_options.cosine = a.schedule == "cosine";
  fit_options.seed = a.seed;
  fit_options.shuffle = !a.no_shuffle;
  fit_options.augment = a.augment;
  const LoaderOptions loading = loader_options(a, options.device);
  fit_options.workers = loading.workers;
  fit_options.prefetch = loading.prefetch;
  fit_options.on_bad_image = loading.on_bad_image;
  if (data.train.streamed()) {
    output.line("image folder " + a.data_dir + ": " + std::to_string(data.train.num_classes) +
                " classes, " + std::to_string(fit_options.workers) + " decoding worker(s), " +
                std::to_string(data.train.sample_shape()[1]) + "x" +
                std::to_string(data.train.sample_shape()[2]) +
                " crops (RandomResizedCrop + flip; val: Resize + CenterCrop)");
    const auto* source = dynamic_cast<const ImageFolderSource*>(data.train.source.get());
    if (source != nullptr && !source->index().ignored.empty()) {
      output.line("note: ignored " + std::to_string(source->index().ignored.size()) +
                  " file(s) in train/ without an image extension, e.g. " +
                  source->index().ignored.front());
    }
  }
  fit_options.checkpoint = a.checkpoint;
  fit_options.initial_checkpoint = a.save_initial;
  fit_options.keep_checkpoints = a.keep;
  fit_options.model_name = a.model;
  fit_options.checkpoint_metadata = {{"version", version()},
                                     {"dataset", a.dataset},
                                     {"normalization_mean", format_floats(data.normalization.mean)},
                                     {"normalization_std", format_floats(data.normalization.std)},
                                     {"bn_eps", fixed(a.bn_eps, 12)},
                                     {"bn_momentum", fixed(a.bn_momentum, 12)},
                                     {"settings", settings.dump()}};
  if (!data.train.class_names.empty()) {
    fit_options.checkpoint_metadata["classes"] = Json(data.train.class_names).dump();
  }
  for (const std::string& path : {a.checkpoint, a.save_initial}) {
    const std::filesystem::path parent = std::filesystem::path(path).parent_path();
    if (!path.empty() && !parent.empty() && !std::filesystem::is_directory(parent)) {
      MB_THROW(InvalidArgument, "checkpoint folder ", parent.string(),
               " does not exist. Fix: create it (mkdir -p ", parent.string(),
               ") or pass another path");
    }
  }
  if (!a.resume.empty()) {
    const CheckpointInfo resumed = load_checkpoint(a.resume, trainer, a.model);
    for (const std::string& warning : resumed.warnings) {
      output.line("WARNING: " + warning);
      output.event(Json{{"event", "warning"}, {"message", warning}});
    }
    check_resume(resumed, fit_options, data.train.size());
    fit_options.start = resumed.position;
    output.line("resumed from " + a.resume + " at step " + std::to_string(trainer.steps()) +
                ": epoch " + std::to_string(resumed.position.epoch + 1) + ", after batch " +
                std::to_string(resumed.position.step_in_epoch) + " of it");
  }
  // A batch larger than the training set is the whole set (one step per epoch): no
  // micro-batch is planned beyond the samples that exist.
  const std::int64_t step_samples = std::min<std::int64_t>(a.batch_size, data.train.size());
  if (step_samples < a.batch_size) {
    const std::string message = "batch " + std::to_string(a.batch_size) + " is more than the " +
                                std::to_string(data.train.size()) +
                                " training samples: each step uses all of them";
    output.line(message);
    output.event(Json{{"event", "log"}, {"message", message}});
  }
  if (step_samples < group->size()) {
    MB_THROW(InvalidArgument, "a batch of ", step_samples, " sample(s) cannot give each of ",
             group->size(), " ranks one. Fix: use a --batch-size of at least ", group->size(),
             " (and a training set that large), or fewer ranks");
  }
  trainer.plan(shard_size(step_samples, *group), data.train.sample_shape(),
               label_shape(data.train));
  output.event(plan_json(trainer.current_plan()));

  FitCallbacks callbacks;
  callbacks.on_step = [&](const StepReport& r) {
    const double rate = static_cast<double>(r.step.samples) / std::max(r.step.seconds, 1e-9);
    output.event(Json{{"event", "step"},
                      {"epoch", r.epoch},
                      {"step", trainer.steps()},
                      {"loss", r.step.loss},
                      {"lr", r.lr},
                      {"samples_per_s", rate},
                      {"micro_batches", r.step.micro_batches},
                      {"replans", r.step.replans},
                      {"grad_norm", r.step.grad_norm},
                      {"allocated_bytes", r.memory.allocated},
                      {"reserved_bytes", r.memory.reserved},
                      {"capacity_bytes", r.memory.capacity}});
    if (a.log_indices) {
      output.event(Json{{"event", "step_samples"},
                        {"epoch", r.epoch},
                        {"step", trainer.steps()},
                        {"step_in_epoch", r.step_in_epoch},
                        {"indices", r.sample_indices}});
    }
    const int width = 24;
    const int filled =
        static_cast<int>(width * r.step_in_epoch / std::max<std::int64_t>(r.steps_per_epoch, 1));
    output.progress("epoch " + std::to_string(r.epoch + 1) + "/" + std::to_string(a.epochs) + " [" +
                    std::string(filled, '=') + std::string(width - filled, ' ') + "] " +
                    std::to_string(r.step_in_epoch) + "/" + std::to_string(r.steps_per_epoch) +
                    "  " + fixed(rate, 0) + " samples/s  loss " + fixed(r.step.loss, 4) + "  mem " +
                    format_bytes(r.memory.reserved) + " / " + format_bytes(r.memory.capacity) +
                    (data.train.streamed()
                         ? "  loader " + fixed(r.loader.capacity_per_second(), 0) + " img/s"
                         : std::string()));
  };
  callbacks.on_epoch = [&](const EpochReport& r) {
    const std::string partial =
        r.complete ? ""
                   : " (stopped by --max-steps after step " + std::to_string(r.step_in_epoch) + ")";
    output.line("epoch " + std::to_string(r.epoch) + "/" + std::to_string(a.epochs) + partial +
                ": train loss " + fixed(r.train_loss, 4) + ", train acc " +
                fixed(100.0 * r.train_accuracy, 2) + "%, test loss " + fixed(r.test.loss, 4) +
                ", test acc " + fixed(100.0 * r.test.accuracy(), 2) + "%, " + fixed(r.seconds, 1) +
                " s (" + fixed(static_cast<double>(r.samples) / std::max(r.seconds, 1e-9), 0) +
                " samples/s), peak reserved " + format_bytes(r.memory.reserved) +
                (r.test.halvings > 0 ? ", evaluated in chunks of " + std::to_string(r.test.chunk) +
                                           " after an out-of-memory"
                                     : std::string()) +
                loader_summary(r.loader, r.seconds, data.train.streamed()));
    for (const std::string& bad : r.loader.first_skipped) output.line("  skipped " + bad);
    output.event(Json{{"event", "epoch"},
                      {"epoch", r.epoch},
                      {"train_loss", r.train_loss},
                      {"train_accuracy", r.train_accuracy},
                      {"test_loss", r.test.loss},
                      {"test_accuracy", r.test.accuracy()},
                      {"eval_chunk", r.test.chunk},
                      {"seconds", r.seconds},
                      {"complete", r.complete},
                      {"step_in_epoch", r.step_in_epoch},
                      {"data_wait_seconds", r.loader.wait_seconds},
                      {"loader_images_per_s", r.loader.capacity_per_second()},
                      {"bad_images_skipped", r.loader.skipped},
                      {"steps", r.steps}});
  };
  callbacks.on_checkpoint = [&](const std::string& path) {
    output.line("saved checkpoint " + path);
  };
  StopSignals signals;
  fit_options.stop_requested = &stop_requested;
  const FitResult result = fit(session, data.train, data.test, fit_options, callbacks);
  if (result.interrupted) {
    const std::string where = "epoch " + std::to_string(result.position.epoch + 1) +
                              ", after step " + std::to_string(result.position.step_in_epoch) +
                              " of it (step " + std::to_string(result.steps) + ")";
    output.line("interrupted at " + where +
                (a.checkpoint.empty() ? "; no --checkpoint, nothing saved"
                                      : "; saved checkpoint " + a.checkpoint +
                                            " (continue with --resume " + a.checkpoint + ")"));
    output.event(Json{{"event", "interrupted"},
                      {"steps", result.steps},
                      {"epoch", result.position.epoch},
                      {"step_in_epoch", result.position.step_in_epoch},
                      {"checkpoint", a.checkpoint}});
    return 130;
  }
  output.line("done in " + fixed(result.seconds, 1) + " s");
  output.event(Json{{"event", "done"}, {"seconds", result.seconds}, {"steps", result.steps}});
  return 0;
}

int command_eval(const CommonArgs& a, std::ostream& out) {
  MB_CHECK(!a.checkpoint.empty(), "eval needs --checkpoint PATH (a file written by train)");
  Output output(out, a.json);
  const SessionOptions options = session_options(a, *single_process_communicator());
  const ModelInfo& info = find_model(a.model);
  const SafetensorsFile file = load_safetensors(a.checkpoint);
  const auto meta = [&](const std::string& key) {
    auto it = file.metadata.find(key);
    return it == file.metadata.end() ? std::string() : it->second;
  };
  if (!meta("model").empty() && meta("model") != a.model) {
    MB_THROW(InvalidArgument, "checkpoint ", a.checkpoint, " is for model '", meta("model"),
             "', not '", a.model, "'. Fix: pass --model ", meta("model"));
  }
  Normalization saved;
  if (!meta("normalization_mean").empty()) {
    saved.mean = parse_floats(meta("normalization_mean"), "normalization_mean");
    saved.std = parse_floats(meta("normalization_std"), "normalization_std");
  }
  CommonArgs args = a;
  if (!meta("bn_eps").empty()) args.bn_eps = parse_floats(meta("bn_eps"), "bn_eps").at(0);
  const Data data = load_data(args, info, saved);
  if (!meta("classes").empty() && data.test.streamed()) {
    const auto trained = Json::parse(meta("classes")).get<std::vector<std::string>>();
    if (trained != data.test.class_names) {
      MB_THROW(InvalidArgument, "checkpoint ", a.checkpoint, " was trained on ", trained.size(),
               " classes (", trained.empty() ? "" : trained.front(), " ...), but ", a.data_dir,
               "/val has ", data.test.class_names.size(), " (",
               data.test.class_names.empty() ? "" : data.test.class_names.front(),
               " ...) or other names: its labels would mean other classes. Fix: pass the "
               "--data-dir it was trained on");
    }
  }
  Session session(options, [&] { return build_model(a.model, model_config(data.train, args)); });
  load_model_checkpoint(file, a.checkpoint, session.model(), a.model);
  const std::int64_t chunk =
      parse_micro_batch(a.micro_batch) > 0 ? parse_micro_batch(a.micro_batch) : 256;
  const EvalResult eval =
      data.test.streamed()
          ? evaluate_streamed(session, data.test, chunk, LossOptions{},
                              channel_normalization(data.normalization),
                              loader_options(a, options.device), *single_process_communicator())
          : session.evaluate(data.test.images, data.test.labels, chunk, LossOptions{});
  output.line("test loss " + fixed(eval.loss, 4) + ", test accuracy " +
              fixed(100.0 * eval.accuracy(), 2) + "% (" + std::to_string(eval.correct) + "/" +
              std::to_string(eval.valid) + ")");
  output.event(Json{{"event", "eval"},
                    {"test_loss", eval.loss},
                    {"test_accuracy", eval.accuracy()},
                    {"correct", eval.correct},
                    {"valid", eval.valid}});
  return 0;
}

int command_plan(const CommonArgs& a, std::ostream& out) {
  Output output(out, a.json);
  const SessionOptions options = session_options(a, *single_process_communicator());
  const ModelInfo& info = find_model(a.model);
  ModelConfig config;
  config.image_size = a.image_size;
  config.seed = a.seed;
  config.bn_eps = a.bn_eps;
  config.bn_momentum = a.bn_momentum;
  config.fuse = !a.no_fuse;
  config.recompute_segments = a.recompute_segments;
  config = resolve_config(a.model, config);
  Session session(options, [&] { return build_model(a.model, config); });
  Trainer& trainer = session.make_trainer(trainer_options(a, [&](const std::string& message) {
    output.line(message);
    output.event(Json{{"event", "log"}, {"message", message}});
  }));
  const Shape sample{config.in_channels, config.image_size, config.image_size};
  const Shape label = info.segmentation ? Shape{config.image_size, config.image_size} : Shape{};
  const Plan& plan = trainer.plan(a.batch_size, sample, label);
  output.line(a.model + " on " + options.device.str() + ", input " + sample.to_string() +
              ", batch " + std::to_string(a.batch_size) + ", memory limit " +
              format_bytes(session.allocator().report().capacity) + ": micro-batch " +
              std::to_string(plan.micro_batch) + " x " + std::to_string(plan.count()));
  output.event(plan_json(plan));
  return 0;
}

int command_models(bool json, bool measure, std::ostream& out) {
  Output output(out, json);
  if (!json) {
    out << std::left << std::setw(14) << "model" << std::right << std::setw(14) << "parameters"
        << std::setw(12) << "input" << std::setw(14) << "GFLOPs/sample" << std::setw(16)
        << (measure ? "bytes/sample" : "bytes/sample*") << "  description\n";
  }
  for (const ModelInfo& info : model_catalog()) {
    Session session(SessionOptions{}, [&] { return build_model(info.name); });
    Module& model = session.model();
    const Shape sample{1, info.in_channels, info.image_size, info.image_size};
    const double gflops = static_cast<double>(model.forward_flops(sample)) / 1e9;
    std::size_t bytes_per_sample =
        training_bytes_per_sample(model, Shape{info.in_channels, info.image_size, info.image_size});
    if (measure) {
      const Shape label = info.segmentation ? Shape{info.image_size, info.image_size} : Shape{};
      bytes_per_sample =
          session.make_trainer(TrainerOptions{})
              .measure(Shape{info.in_channels, info.image_size, info.image_size}, label)
              .bytes_per_sample;
    }
    output.event(Json{{"model", info.name},
                      {"parameters", model.parameter_count()},
                      {"input", {info.in_channels, info.image_size, info.image_size}},
                      {"classes", info.num_classes},
                      {"forward_gflops_per_sample", gflops},
                      {"bytes_per_sample", bytes_per_sample},
                      {"measured", measure},
                      {"segmentation", info.segmentation},
                      {"description", info.description}});
    if (!json) {
      std::ostringstream input;
      input << info.in_channels << "x" << info.image_size << "x" << info.image_size;
      out << std::left << std::setw(14) << info.name << std::right << std::setw(14)
          << model.parameter_count() << std::setw(12) << input.str() << std::setw(14)
          << fixed(gflops, 3) << std::setw(16) << format_bytes(bytes_per_sample) << "  "
          << info.description << "\n";
    }
  }
  if (!json && !measure) {
    out << "* analytic (kept for backward, each buffer once, + gradients at backward's peak + "
           "input);"
           " --measure probes on the CPU\n";
  }
  return 0;
}

}  // namespace

int run_cli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  // Data sets are loaded before a Session installs its arena, through the defaults.
  install_default_allocators();
  CLI::App app{"microbatch: train CNNs with batches far beyond device memory"};
  app.require_subcommand(0, 1);
  bool show_version = false;
  app.add_flag("--version", show_version, "print version, build flags and visible devices");

  CommonArgs train_args;
  CLI::App* train = app.add_subcommand("train", "train a zoo model with micro-batching");
  add_common_flags(*train, train_args);
  train->add_option("--epochs", train_args.epochs, "passes over the training set")
      ->check(whole_in(1, 1000000));
  train->add_option("--lr", train_args.lr, "peak learning rate")->check(finite_in(0.0, 1e6));
  train->add_option("--optimizer", train_args.optimizer, "sgd | adamw | lars")
      ->check(CLI::IsMember({"sgd", "adamw", "lars"}));
  train->add_option("--momentum", train_args.momentum, "SGD/LARS momentum (default 0.9)")
      ->check(finite_in(0.0, 1.0));
  train->add_flag("--nesterov", train_args.nesterov, "Nesterov momentum (SGD)");
  train->add_option("--beta1", train_args.beta1, "AdamW beta1 (default 0.9)")
      ->check(finite_in(0.0, 0.999999));
  train->add_option("--beta2", train_args.beta2, "AdamW beta2 (default 0.999)")
      ->check(finite_in(0.0, 0.999999));
  train->add_option("--eps", train_args.adam_eps, "AdamW epsilon (default 1e-8)")
      ->check(finite_in(1e-30, 1.0));
  train
      ->add_option("--trust-coefficient", train_args.trust_coefficient,
                   "LARS trust coefficient eta (default 0.001)")
      ->check(finite_in(1e-30, 1e6));
  train->add_option("--weight-decay", train_args.weight_decay, "weight decay (not on biases/BN)")
      ->check(finite_in(0.0, 1e6));
  train
      ->add_option("--accumulation", train_args.accumulation,
                   "inplace (default: backward adds into the gradient buffers) | buffers "
                   "(separate fp32 accumulation buffers)")
      ->check(CLI::IsMember({"inplace", "buffers"}));
  train->add_option("--clip-norm", train_args.clip_norm, "global gradient-norm clipping (0: off)")
      ->check(finite_in(0.0, 1e30));
  train
      ->add_option("--warmup-epochs", train_args.warmup_epochs,
                   "linear learning-rate warmup, in epochs (at most --epochs)")
      ->check(finite_in(0.0, 1e6));
  train->add_option("--schedule", train_args.schedule, "cosine | constant")
      ->check(CLI::IsMember({"cosine", "constant"}));
  train->add_option("--checkpoint", train_args.checkpoint,
                    "write a safetensors checkpoint here after every epoch");
  train->add_option("--resume", train_args.resume, "continue from a checkpoint");
  train
      ->add_option("--keep", train_args.keep,
                   "checkpoints to keep: the newest N (older ones as <stem>.step-<step><ext>)")
      ->check(whole_in(1, 1000000));
  train
      ->add_option("--max-steps", train_args.max_steps,
                   "stop after N optimizer steps of this run (default: no limit; 0: none, e.g. "
                   "with --save-initial); a checkpoint written there resumes mid-epoch")
      ->check(whole_in(0, kMaxCount));
  train->add_option("--save-initial", train_args.save_initial,
                    "write the weights training starts from (a checkpoint at step 0) here");
  train->add_flag("--no-shuffle", train_args.no_shuffle,
                  "visit the training samples in data set order every epoch");
  train->add_flag("--log-indices", train_args.log_indices,
                  "with --json: a step_samples event per step with the data set index of "
                  "every sample of the batch, in order");
  train->add_flag("--augment", train_args.augment, "random crop with padding and horizontal flip");

  CommonArgs eval_args;
  CLI::App* eval = app.add_subcommand("eval", "evaluate a checkpoint on the test set");
  add_common_flags(*eval, eval_args);
  eval->add_option("--checkpoint", eval_args.checkpoint, "checkpoint to evaluate")->required();

  CommonArgs plan_args;
  CLI::App* plan = app.add_subcommand("plan", "print the micro-batch plan, without training");
  add_common_flags(*plan, plan_args);

  bool models_json = false, models_measure = false;
  CLI::App* models = app.add_subcommand("models", "list the zoo");
  models->add_flag("--json", models_json, "one JSON object per model");
  models->add_flag("--measure", models_measure, "measure bytes/sample by probing (slow)");

  MemprofileArgs memprofile_args;
  CLI::App* memprofile =
      app.add_subcommand("memprofile", "trace and plot the memory of a few training steps");
  add_memprofile_flags(*memprofile, memprofile_args);

  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp&) {
    out << app.help();
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    out << app.help("", CLI::AppFormatMode::All);
    return 0;
  } catch (const CLI::ParseError& e) {
    const CLI::App* failing = &app;
    for (CLI::App* sub : {train, eval, plan, models, memprofile}) {
      if (sub->parsed()) failing = sub;
    }
    err << "error: " << e.what() << "\n\n" << failing->help();
    return 2;
  }
  try {
    if (show_version) {
      out << build_info();
      return 0;
    }
    if (train->parsed()) return command_train(train_args, out);
    if (eval->parsed()) return command_eval(eval_args, out);
    if (plan->parsed()) return command_plan(plan_args, out);
    if (models->parsed()) return command_models(models_json, models_measure, out);
    if (memprofile->parsed()) return run_memprofile(memprofile_args, out);
    out << app.help();
    return 0;
  } catch (const InvalidArgument& e) {
    err << user_error(e);
    return 2;
  } catch (const Error& e) {
    err << user_error(e);
    return 1;
  } catch (const std::exception& e) {
    err << rank_prefix() << "error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace mb
