// BatchNorm2d: validation, the ops of kernels/batch_norm.h, and the fp64 accumulator that
// turns micro-batch sums into full-batch running statistics.
#include "layers/batch_norm2d.h"

#include <algorithm>
#include <cmath>

#include "kernels/activation.h"
#include "kernels/batch_norm.h"
#include "runtime/allocator_registry.h"
#include "runtime/error.h"
#include "runtime/stream.h"

namespace mb {
namespace {

std::string layer_name(std::int64_t channels) {
  return "BatchNorm2d(" + std::to_string(channels) + ")";
}

}  // namespace

BatchNorm2d::BatchNorm2d(std::int64_t channels, double eps, double momentum)
    : Module("BatchNorm2d"), channels_(channels), eps_(eps), momentum_(momentum) {
  MB_CHECK(channels > 0, "BatchNorm2d: channels must be positive, got ", channels);
  MB_CHECK(eps > 0.0, layer_name(channels), ": eps must be positive, got ", eps);
  MB_CHECK(momentum >= 0.0 && momentum <= 1.0, layer_name(channels),
           ": momentum must be in [0, 1], got ", momentum);
  TensorOptions param_options;
  param_options.tag = MemoryTag::Param;
  weight_ = &register_parameter("weight", Tensor::full(Shape{channels}, 1.0f, param_options),
                                /*decay=*/false);
  bias_ = &register_parameter("bias", Tensor::zeros(Shape{channels}, param_options),
                              /*decay=*/false);
  running_mean_ = &register_buffer("running_mean", Tensor::zeros(Shape{channels}, param_options));
  running_var_ =
      &register_buffer("running_var", Tensor::full(Shape{channels}, 1.0f, param_options));
  TensorOptions count_options = param_options;
  count_options.dtype = DType::Int32;
  num_batches_tracked_ =
      &register_buffer("num_batches_tracked", Tensor::zeros(Shape{}, count_options));
}

void BatchNorm2d::check_input(const Shape& input) const {
  MB_CHECK(input.ndim() == 4 && input[1] == channels_, layer_name(channels_),
           ": expected input [N, ", channels_, ", H, W], got ", input.to_string());
  MB_CHECK(input[0] > 0 && input[2] > 0 && input[3] > 0, layer_name(channels_), ": empty input ",
           input.to_string());
}

Shape BatchNorm2d::output_shape(const Shape& input) const {
  check_input(input);
  return input;
}

std::int64_t BatchNorm2d::forward_flops(const Shape& input) const {
  check_input(input);
  // Statistics (x and x*x summed: 2 per element) and normalization (one multiply-add).
  return 4 * input.numel();
}

MemoryTrace::Id BatchNorm2d::trace_forward(MemoryTrace& trace, MemoryTrace::Id input) const {
  // The input (kept for backward) and the per-channel mean and invstd.
  trace.batch_statistics(input);
  return trace.layer(input, output_shape(trace.shape(input)), Keep::Input,
                     static_cast<std::size_t>(2 * channels_) * sizeof(float));
}

Tensor BatchNorm2d::forward_impl(const Tensor& input, const RunState& state) {
  return run_forward(input, Tensor(), state);
}

Tensor BatchNorm2d::forward_residual(const Tensor& input, const Tensor& residual,
                                     const RunState& state) {
  MB_CHECK(input.defined() && residual.defined(), layer_name(channels_),
           ".forward_residual: undefined input or residual");
  MB_CHECK(input.device() == device_ && residual.device() == device_, layer_name(channels_),
           ".forward_residual: input on ", input.device().str(), ", residual on ",
           residual.device().str(), " but module on ", device_.str(),
           ". Fix: call to_device() or move the tensors");
  MB_CHECK(residual.shape() == input.shape() && residual.dtype() == DType::Float32,
           layer_name(channels_), ".forward_residual: residual ", residual.shape().to_string(),
           " must be float32 with the input's shape ", input.shape().to_string());
  return run_forward(input, residual, state);
}

Tensor BatchNorm2d::run_forward(const Tensor& input, const Tensor& residual,
                                const RunState& state) {
  check_input(input.shape());
  MB_CHECK(input.dtype() == DType::Float32, layer_name(channels_), ": input must be float32, got ",
           dtype_name(input.dtype()));
  const std::int64_t n = input.dim(0);
  const std::int64_t hw = input.dim(2) * input.dim(3);
  const TensorOptions options = tensor_options(device_, MemoryTag::Activation);
  Tensor output = Tensor::empty(input.shape(), options);
  save_mean_ = Tensor::empty(Shape{channels_}, options);
  save_invstd_ = Tensor::empty(Shape{channels_}, options);
  const float eps = static_cast<float>(eps_);
  const float* residual_data = residual.defined() ? residual.data<float>() : nullptr;

  if (state.training) {
    MB_CHECK(n * hw > 1, layer_name(channels_),
             ": training needs more than one value per channel, got input ",
             input.shape().to_string(), ". Fix: use a micro-batch of at least 2 samples");
    const bool count = !state.recompute;
    if (update_per_forward_ && count) begin_batch();
    ensure_statistics();
    double* pending = count ? static_cast<double*>(statistics_.get()) : nullptr;
    batch_norm_forward_training(stream(), input.data<float>(), weight_->value.data<float>(),
                                bias_->value.data<float>(), residual_data, activation_, n,
                                channels_, hw, eps, output.data<float>(), save_mean_.data<float>(),
                                save_invstd_.data<float>(), pending);
    if (count) pending_count_ += n * hw;
    if (update_per_forward_ && count) end_batch();
  } else {
    batch_norm_forward_inference(stream(), input.data<float>(), running_mean_->data<float>(),
                                 running_var_->data<float>(), weight_->value.data<float>(),
                                 bias_->value.data<float>(), residual_data, activation_, n,
                                 channels_, hw, eps, output.data<float>(), save_mean_.data<float>(),
                                 save_invstd_.data<float>());
  }
  cached_input_ = input;
  cached_training_ = state.training;
  residual_forward_ = residual.defined();
  residual_output_ = residual.defined() && keep_residual_output_ ? output : Tensor();
  residual_grad_ = Tensor();
  last_output_ = output.data<float>();
  return output;
}

Tensor BatchNorm2d::backward_impl(const Tensor& grad_output, const BackwardState& state) {
  MB_CHECK(cached_input_.defined(), layer_name(channels_),
           ".backward: nothing cached. Fix: call forward() before each backward()");
  MB_CHECK(grad_output.shape() == cached_input_.shape() && grad_output.dtype() == DType::Float32,
           layer_name(channels_), ".backward: gradient ", grad_output.shape().to_string(),
           " does not match the forward output ", cached_input_.shape().to_string());
  const std::int64_t n = cached_input_.dim(0);
  const std::int64_t hw = cached_input_.dim(2) * cached_input_.dim(3);
  ensure_grad(*weight_);
  ensure_grad(*bias_);
  // After forward_residual the mask comes from its output (z + residual), and the masked
  // gradient is also the residual's; otherwise the kernel masks by act'(z). The output is
  // released before the input's gradient exists.
  Tensor grad_z = grad_output;
  BnActivation mask_by = activation_;
  if (residual_forward_) {
    MB_CHECK(residual_output_.defined(), layer_name(channels_),
             ".backward: forward_residual() kept no output for the mask. Fix: call "
             "provide_residual_output() before backward()");
    mask_by = BnActivation::None;
    const std::int64_t count = grad_output.numel();
    if (activation_ != BnActivation::None) {
      grad_z = Tensor::empty(grad_output.shape(), tensor_options(device_, MemoryTag::Activation));
      if (activation_ == BnActivation::ReLU) {
        relu_backward(stream(), residual_output_.data<float>(), grad_output.data<float>(),
                      grad_z.data<float>(), count);
      } else {
        relu6_backward(stream(), residual_output_.data<float>(), grad_output.data<float>(),
                       grad_z.data<float>(), count);
      }
    }
    residual_output_ = Tensor();
  }
  Tensor grad_input;
  if (state.need_input_grad)
    grad_input =
        Tensor::empty(cached_input_.shape(), tensor_options(device_, MemoryTag::Activation));
  float* grad_input_data = grad_input.defined() ? grad_input.data<float>() : nullptr;
  batch_norm_backward(stream(), grad_z.data<float>(), cached_input_.data<float>(),
                      save_mean_.data<float>(), save_invstd_.data<float>(),
                      weight_->value.data<float>(), bias_->value.data<float>(), mask_by, n,
                      channels_, hw, cached_training_, grad_input_data, weight_->grad.data<float>(),
                      bias_->grad.data<float>(), state.mode);
  const bool residual = residual_forward_;
  clear_cache();
  if (residual) residual_grad_ = grad_z;
  return grad_input;
}

Tensor BatchNorm2d::take_residual_grad() {
  MB_CHECK(residual_grad_.defined(), layer_name(channels_),
           ".take_residual_grad: no residual gradient. Fix: call forward_residual() and "
           "backward() first, and take it once");
  Tensor grad = residual_grad_;
  residual_grad_ = Tensor();
  return grad;
}

bool BatchNorm2d::can_recompute(const Tensor& tensor) const {
  return cached_input_.defined() && cached_training_ && !residual_forward_ && tensor.defined() &&
         tensor.data<float>() == last_output_ && tensor.shape() == cached_input_.shape() &&
         tensor.device() == device_;
}

Tensor BatchNorm2d::recompute_output() const {
  MB_CHECK(cached_input_.defined() && cached_training_ && !residual_forward_, layer_name(channels_),
           ".recompute_output: no training forward to recompute (its backward already ran, or "
           "it was forward_residual). Fix: recompute before this layer's backward");
  return apply_again(Tensor());
}

std::size_t BatchNorm2d::recompute_bytes(const Shape& output) const {
  return static_cast<std::size_t>(output.numel()) * sizeof(float);
}

Tensor BatchNorm2d::recompute_residual_output(const Tensor& residual) const {
  MB_CHECK(cached_input_.defined() && cached_training_ && residual_forward_, layer_name(channels_),
           ".recompute_residual_output: no training forward_residual() to recompute (its "
           "backward already ran, or it was forward()). Fix: recompute before this layer's "
           "backward");
  MB_CHECK(residual.defined() && residual.shape() == cached_input_.shape() &&
               residual.device() == device_ && residual.dtype() == DType::Float32,
           layer_name(channels_), ".recompute_residual_output: residual ",
           residual.defined() ? residual.shape().to_string() : std::string("undefined"),
           " must be float32 on ", device_.str(), " with the input's shape ",
           cached_input_.shape().to_string());
  return apply_again(residual);
}

void BatchNorm2d::provide_residual_output(const Tensor& output) {
  MB_CHECK(residual_forward_ && cached_input_.defined(), layer_name(channels_),
           ".provide_residual_output: the last forward was not forward_residual(), or its "
           "backward already ran");
  MB_CHECK(
      output.defined() && output.shape() == cached_input_.shape() && output.device() == device_,
      layer_name(channels_), ".provide_residual_output: output ",
      output.defined() ? output.shape().to_string() : std::string("undefined"),
      " does not match the input ", cached_input_.shape().to_string());
  residual_output_ = output;
}

Tensor BatchNorm2d::apply_again(const Tensor& residual) const {
  const Shape& shape = cached_input_.shape();
  Tensor output = Tensor::empty(shape, tensor_options(device_, MemoryTag::Activation));
  batch_norm_apply(stream(), cached_input_.data<float>(), save_mean_.data<float>(),
                   save_invstd_.data<float>(), weight_->value.data<float>(),
                   bias_->value.data<float>(),
                   residual.defined() ? residual.data<float>() : nullptr, activation_, shape[0],
                   channels_, shape[2] * shape[3], output.data<float>());
  return output;
}

void BatchNorm2d::begin_batch() {
  pending_count_ = 0;
  committed_count_ = 0;
  if (statistics_) clear_statistics();
}

void BatchNorm2d::commit_micro_batch() {
  if (pending_count_ == 0) return;
  ensure_statistics();
  double* base = static_cast<double*>(statistics_.get());
  batch_norm_fold_statistics(stream(), base + 2 * channels_, base, 2 * channels_);
  committed_count_ += pending_count_;
  pending_count_ = 0;
}

void BatchNorm2d::abort_micro_batch() {
  if (pending_count_ == 0) return;
  ensure_statistics();
  // The pending sums are the first 2C doubles (4C words).
  fill_words(statistics_.get(), 0, static_cast<std::size_t>(4 * channels_),
             Stream::compute(statistics_device_));
  pending_count_ = 0;
}

void BatchNorm2d::append_batch_statistics(std::vector<double>& out) {
  commit_micro_batch();
  out.push_back(static_cast<double>(committed_count_));
  if (committed_count_ == 0) {
    out.insert(out.end(), static_cast<std::size_t>(2 * channels_), 0.0);
    return;
  }
  const std::vector<double> sums = read_statistics();
  out.insert(out.end(), sums.begin() + 2 * channels_, sums.end());
}

void BatchNorm2d::assign_batch_statistics(const std::vector<double>& in, std::size_t& at) {
  const std::size_t width = 1 + 2 * static_cast<std::size_t>(channels_);
  MB_CHECK(at + width <= in.size(), layer_name(channels_), ": batch statistics end at ", in.size(),
           " values, ", width, " more needed at ", at);
  // Counts are sums of whole numbers far below 2^53, so the fp64 value is exact.
  const std::int64_t count = static_cast<std::int64_t>(in[at]);
  std::vector<double> values(static_cast<std::size_t>(4 * channels_), 0.0);
  std::copy(in.begin() + static_cast<std::ptrdiff_t>(at + 1),
            in.begin() + static_cast<std::ptrdiff_t>(at + width), values.begin() + 2 * channels_);
  at += width;
  pending_count_ = 0;
  committed_count_ = count;
  if (count == 0 && !statistics_) return;
  ensure_statistics();
  write_statistics(values);
}

void BatchNorm2d::end_batch() {
  const std::int64_t count = accumulated_count();
  if (count == 0) return;
  MB_CHECK(count > 1, layer_name(channels_), ": cannot derive an unbiased variance from ", count,
           " value per channel");
  ensure_statistics();
  // On the device, ordered on the compute stream: no host round trip per layer and step.
  batch_norm_update_running(Stream::compute(statistics_device_),
                            static_cast<const double*>(statistics_.get()), channels_, count,
                            momentum_, running_mean_->data<float>(), running_var_->data<float>(),
                            num_batches_tracked_->data<std::int32_t>());
  begin_batch();
}

void BatchNorm2d::clear_cache() {
  cached_input_ = Tensor();
  save_mean_ = Tensor();
  save_invstd_ = Tensor();
  residual_forward_ = false;
  residual_output_ = Tensor();
  residual_grad_ = Tensor();
  last_output_ = nullptr;
}

void BatchNorm2d::ensure_statistics() {
  if (statistics_ && statistics_device_ == device_) return;
  std::vector<double> values(static_cast<std::size_t>(4 * channels_), 0.0);
  if (statistics_) values = read_statistics();
  statistics_ = DeviceBuffer(allocator_for(device_), values.size() * sizeof(double),
                             MemoryTag::Other, stream().handle());
  statistics_device_ = device_;
  write_statistics(values);
}

std::vector<double> BatchNorm2d::read_statistics() const {
  std::vector<double> values(static_cast<std::size_t>(4 * channels_));
  const Stream on = Stream::compute(statistics_device_);
  copy_bytes(values.data(), statistics_.get(), values.size() * sizeof(double), on);
  on.synchronize();
  return values;
}

void BatchNorm2d::write_statistics(const std::vector<double>& values) {
  const Stream on = Stream::compute(statistics_device_);
  copy_bytes(statistics_.get(), values.data(), values.size() * sizeof(double), on);
  on.synchronize();
}

void BatchNorm2d::clear_statistics() {
  fill_words(statistics_.get(), 0, static_cast<std::size_t>(8 * channels_),
             Stream::compute(statistics_device_));
}

}  // namespace mb
