// 8-bit images to float32 input: checks, then dispatch to the CPU or CUDA twin.
#include "kernels/image_input.h"

#include <cmath>

#include "kernels/cpu/image_input.h"
#include "kernels/cuda/image_input.h"
#include "kernels/dispatch.h"
#include "runtime/error.h"

namespace mb {

void images_to_float(const Stream& stream, const std::uint8_t* src, float* dst, std::int64_t images,
                     std::int64_t channels, std::int64_t plane,
                     const ChannelNormalization& normalization) {
  MB_CHECK(images >= 0 && plane >= 0, "images_to_float: negative size");
  MB_CHECK(channels == normalization.channels && channels > 0 && channels <= kMaxImageChannels,
           "images_to_float: images of ", channels, " channel(s) but a normalization of ",
           normalization.channels);
  for (int c = 0; c < normalization.channels; ++c) {
    MB_CHECK(std::isfinite(normalization.mean[c]) && normalization.std[c] > 0 &&
                 std::isfinite(normalization.std[c]),
             "images_to_float: channel ", c, " has mean ", normalization.mean[c], " and std ",
             normalization.std[c], "; std must be > 0");
  }
  if (images * plane == 0) return;
  MB_CHECK(src != nullptr && dst != nullptr, "images_to_float: null pointer");
  MB_DISPATCH(stream, images_to_float, src, dst, images, channels, plane, normalization);
}

}  // namespace mb
