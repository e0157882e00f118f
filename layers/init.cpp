// Philox-based uniform initialization.
#include "layers/init.h"

#include "kernels/uniform_fill.h"
#include "runtime/error.h"

namespace mb {

void fill_uniform(Tensor& t, float bound, std::uint64_t seed, std::uint32_t stream_id) {
  MB_CHECK(t.dtype() == DType::Float32, "fill_uniform: a ", dtype_name(t.dtype()),
           " tensor; parameters are float32");
  uniform_fill(Stream::compute(t.device()), t.data<float>(), t.numel(), bound, seed, stream_id);
}

}  // namespace mb
