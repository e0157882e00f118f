// Gradient accumulation and norms: dispatch to the CPU or CUDA twin.
#include "kernels/accumulate_grads.h"

#include "kernels/cpu/accumulate_grads.h"
#include "kernels/cuda/accumulate_grads.h"
#include "kernels/dispatch.h"
#include "runtime/error.h"

namespace mb {

void accumulate_grads(const Stream& stream, const GradSlot* slots, int count, float factor,
                      GradientMode mode) {
  MB_DISPATCH(stream, accumulate_grads, slots, count, factor, mode);
}

double sum_of_squares(const Stream& stream, const ConstBufferSlot* slots, int count) {
  return MB_DISPATCH(stream, sum_of_squares, slots, count);
}

void sum_of_squares_into(const Stream& stream, const ConstBufferSlot* slots, int count,
                         double* total) {
  MB_CHECK(total != nullptr, "sum_of_squares_into: null total");
  MB_DISPATCH(stream, sum_of_squares_into, slots, count, total);
}

}  // namespace mb
