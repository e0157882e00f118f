// Skips an image test, with the reason, in a build without JPEG/PNG decoding (MB_WITH_IMAGES).
#pragma once

#include <gtest/gtest.h>

#include "data/image_codec.h"

#define MB_SKIP_WITHOUT_IMAGES()                                             \
  do {                                                                       \
    if (!::mb::images_supported())                                           \
      GTEST_SKIP() << "built without libturbojpeg/libspng (MB_WITH_IMAGES)"; \
  } while (false)
