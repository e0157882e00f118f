// ReLU and ReLU6 on the CPU (reference implementations).
#include "kernels/cpu/activation.h"
#include "kernels/cpu/parallel.h"

#include <algorithm>
#include <array>
#include <cstring>

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
      const std::int64_t size = std::min<std::int64_t>(32, end - first);
      const float* x = input + first;
      float* y = output + first;
      std::uint32_t bits = 0;
      if (size == 32) {
        // Fixed trip counts, so the loops vectorize; the 0/1 bytes are packed 8 at a time
        // by a multiply that gathers each byte's low bit into the top byte, in order.
        std::uint8_t pass[32];
        for (int j = 0; j < 32; ++j) {
          y[j] = forward(x[j]);
          pass[j] = static_cast<std::uint8_t>(passes(x[j]));
        }
        for (int byte = 0; byte < 4; ++byte) {
          std::uint64_t eight;
          std::memcpy(&eight, pass + 8 * byte, sizeof(eight));
          bits |= static_cast<std::uint32_t>((eight * 0x0102040810204080ull) >> 56) << (8 * byte);
        }
      } else {
        for (std::int64_t j = 0; j < size; ++j) {
          y[j] = forward(x[j]);
          bits |= static_cast<std::uint32_t>(passes(x[j])) << j;
        }
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
  // Note: a bit test per element does not vectorize without AVX2's variable shifts; ANDing
  // the gradient's bits with a table's expansion of each mask byte (all ones where the bit
  // is set, +0.0f elsewhere) does, with SSE2.
  static const auto kByteMasks = [] {
    std::array<std::array<std::uint32_t, 8>, 256> table{};
    for (int byte = 0; byte < 256; ++byte) {
      for (int k = 0; k < 8; ++k) table[byte][k] = (byte >> k) & 1 ? ~0u : 0u;
    }
    return table;
  }();
  parallel_elements(count, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t word = begin / 32; word * 32 < end; ++word) {
      const std::int64_t first = word * 32;
      const std::int64_t size = std::min<std::int64_t>(32, end - first);
      const std::uint32_t bits = mask[word];
      const float* g = grad_output + first;
      float* dx = grad_input + first;
      if (size < 32) {
        for (std::int64_t j = 0; j < size; ++j) dx[j] = (bits >> j) & 1u ? g[j] : 0.0f;
        continue;
      }
      for (int byte = 0; byte < 4; ++byte) {
        const std::array<std::uint32_t, 8>& keep = kByteMasks[(bits >> (8 * byte)) & 0xffu];
        std::uint32_t values[8];
        std::memcpy(values, g + 8 * byte, sizeof(values));
        for (int k = 0; k < 8; ++k) values[k] &= keep[k];
        std::memcpy(dx + 8 * byte, values, sizeof(values));
      }
    }
  });
}

}  // namespace mb::cpu
