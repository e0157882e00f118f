// ReLU and ReLU6 on the CPU (reference implementations).
#include "kernels/cpu/activation.h"
#include "kernels/cpu/parallel.h"

#include <algorithm>

namespace mb::cpu {
namespace {

// y = f(x) and the mask over [0, count), 32 elements a word. The elementwise blocks are
// multiples of 32 elements (kElementBlock), so no word is written by two threads.
template <typename Forward, typename Passes>
void forward_masked(const float* input, float* output, std::uint32_t* mask, std::int64_t count,
                    Forward forward, Passes passes) {
  static_assert(kElementBlock % 32 == 0, "a mask word must not straddle two blocks");
  parallel_elements(count, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t word = begin / 32; word * 32 < end; ++word) {
      const std::int64_t first = word * 32;
      const std::int64_t last = std::min(end, first + 32);
      std::uint32_t bits = 0;
      for (std::int64_t i = first; i < last; ++i) {
        const float x = input[i];
        output[i] = forward(x);
        bits |= static_cast<std::uint32_t>(passes(x)) << (i - first);
      }
      mask[word] = bits;
    }
  });
}

}  // namespace

void relu_forward(const Stream& /*stream*/, const float* input, float* output, std::int64_t count) {
  parallel_elements(count, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) output[i] = input[i] > 0.0f ? input[i] : 0.0f;
  });
}

void relu_backward(const Stream& /*stream*/, const float* output, const float* grad_output,
                   float* grad_input, std::int64_t count) {
  // Note: the gradient is loaded unconditionally so the select vectorizes; a conditional
  // load compiles to a branch that mispredicts on every other element.
  parallel_elements(count, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      const float g = grad_output[i];
      grad_input[i] = output[i] > 0.0f ? g : 0.0f;
    }
  });
}

void relu6_forward(const Stream& /*stream*/, const float* input, float* output,
                   std::int64_t count) {
  parallel_elements(count, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      const float x = input[i];
      output[i] = x > 0.0f ? (x < 6.0f ? x : 6.0f) : 0.0f;
    }
  });
}

void relu6_backward(const Stream& /*stream*/, const float* output, const float* grad_output,
                    float* grad_input, std::int64_t count) {
  parallel_elements(count, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      const float g = grad_output[i];
      const float y = output[i];
      grad_input[i] = (y > 0.0f) & (y < 6.0f) ? g : 0.0f;
    }
  });
}

void relu_forward_masked(const Stream& /*stream*/, const float* input, float* output,
                         std::uint32_t* mask, std::int64_t count) {
  forward_masked(
      input, output, mask, count, [](float x) { return x > 0.0f ? x : 0.0f; },
      [](float x) { return x > 0.0f; });
}

void relu6_forward_masked(const Stream& /*stream*/, const float* input, float* output,
                          std::uint32_t* mask, std::int64_t count) {
  forward_masked(
      input, output, mask, count, [](float x) { return x > 0.0f ? (x < 6.0f ? x : 6.0f) : 0.0f; },
      [](float x) { return (x > 0.0f) & (x < 6.0f); });
}

void activation_backward_masked(const Stream& /*stream*/, const std::uint32_t* mask,
                                const float* grad_output, float* grad_input, std::int64_t count) {
  parallel_elements(count, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      const float g = grad_output[i];
      grad_input[i] = (mask[i / 32] >> (i % 32)) & 1u ? g : 0.0f;
    }
  });
}

}  // namespace mb::cpu
