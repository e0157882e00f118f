// optimizers: dispatch to the CPU or CUDA twin.
#include "kernels/optimizers.h"

#include "kernels/cpu/optimizers.h"
#include "kernels/cuda/optimizers.h"
#include "kernels/dispatch.h"

namespace mb {

void sgd_update(const Stream& stream, const ParamSlot* slots, int count,
                const SgdOptions& options) {
  MB_DISPATCH(stream, sgd_update, slots, count, options);
}

void adamw_update(const Stream& stream, const ParamSlot* slots, int count,
                  const AdamWOptions& options) {
  MB_DISPATCH(stream, adamw_update, slots, count, options);
}

void lars_update(const Stream& stream, const ParamSlot* slots, int count,
                 const LarsOptions& options) {
  MB_DISPATCH(stream, lars_update, slots, count, options);
}

}  // namespace mb
