// JPEG and PNG decoding: pixels against the pattern that was encoded (exact for PNG, within
// JPEG's error at quality 95), DCT scaling's sizes, and a clear error naming the file for
// every kind of bad input (not an image, empty, corrupt, truncated).
#include "data/image_codec.h"
#include "images_available.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "runtime/error.h"

namespace mb {
namespace {

// A smooth photo-like pattern: gradients and a slow wave per channel.
std::vector<std::uint8_t> pattern(std::int64_t height, std::int64_t width) {
  std::vector<std::uint8_t> rgb(static_cast<std::size_t>(height * width * 3));
  for (std::int64_t y = 0; y < height; ++y) {
    for (std::int64_t x = 0; x < width; ++x) {
      std::uint8_t* p = rgb.data() + (y * width + x) * 3;
      p[0] = static_cast<std::uint8_t>(255 * x / std::max<std::int64_t>(width - 1, 1));
      p[1] = static_cast<std::uint8_t>(255 * y / std::max<std::int64_t>(height - 1, 1));
      p[2] = static_cast<std::uint8_t>(128 + 100 * std::sin(0.05 * (x + 2 * y)));
    }
  }
  return rgb;
}

std::string message_of(const std::vector<std::uint8_t>& bytes, const std::string& name) {
  try {
    decode_image(bytes.data(), bytes.size(), name);
  } catch (const IoError& error) {
    return error.message();
  }
  return "(decoded)";
}

TEST(ImageCodec, PngDecodesExactlyWhatWasEncoded) {
  MB_SKIP_WITHOUT_IMAGES();
  const std::vector<std::uint8_t> rgb = pattern(37, 53);
  const std::vector<std::uint8_t> png = encode_png(rgb.data(), 37, 53);
  EXPECT_EQ(sniff_image_format(png.data(), png.size()), ImageFormat::Png);
  const ImageInfo info = read_image_info(png.data(), png.size(), "p.png");
  EXPECT_EQ(info.height, 37);
  EXPECT_EQ(info.width, 53);
  const DecodedImage decoded = decode_image(png.data(), png.size(), "p.png", 1, 1);
  EXPECT_EQ(decoded.height, 37);
  EXPECT_EQ(decoded.width, 53);
  EXPECT_EQ(decoded.scale_numerator, 1);
  EXPECT_EQ(decoded.pixels, rgb);
}

TEST(ImageCodec, JpegAtQuality95IsWithinItsErrorOfThePattern) {
  MB_SKIP_WITHOUT_IMAGES();
  const std::int64_t h = 96, w = 128;
  const std::vector<std::uint8_t> rgb = pattern(h, w);
  const std::vector<std::uint8_t> jpeg = encode_jpeg(rgb.data(), h, w, 95);
  EXPECT_EQ(sniff_image_format(jpeg.data(), jpeg.size()), ImageFormat::Jpeg);
  const DecodedImage decoded = decode_image(jpeg.data(), jpeg.size(), "p.jpg");
  ASSERT_EQ(decoded.height, h);
  ASSERT_EQ(decoded.width, w);
  double total = 0;
  int worst = 0;
  for (std::size_t i = 0; i < rgb.size(); ++i) {
    const int error = std::abs(int(decoded.pixels[i]) - int(rgb[i]));
    total += error;
    worst = std::max(worst, error);
  }
  // Smooth content at quality 95 with 4:2:0 chroma: about one level on average; the worst
  // pixels sit where the red and blue ramps meet the subsampled chroma.
  EXPECT_LT(total / static_cast<double>(rgb.size()), 2.0);
  EXPECT_LE(worst, 24);
}

TEST(ImageCodec, DctScalingTakesTheSmallestScaleThatKeepsTheRequestedSize) {
  MB_SKIP_WITHOUT_IMAGES();
  const std::int64_t h = 375, w = 500;
  const std::vector<std::uint8_t> rgb = pattern(h, w);
  const std::vector<std::uint8_t> jpeg = encode_jpeg(rgb.data(), h, w, 90);
  // 256 rows of 375 need 0.683 of the size: of the scales 1/2, 1/4, 1/8 none keeps that
  // many, so full size.
  const DecodedImage full_for_256 = decode_image(jpeg.data(), jpeg.size(), "s.jpg", 256, 0);
  EXPECT_EQ(full_for_256.height, h);
  EXPECT_EQ(full_for_256.scale_numerator, full_for_256.scale_denominator);
  // 150 rows: 1/2 (188 rows, 250 columns), not 1/4 (94 rows).
  const DecodedImage scaled = decode_image(jpeg.data(), jpeg.size(), "s.jpg", 150, 0);
  EXPECT_EQ(scaled.scale_numerator * 2, scaled.scale_denominator);
  EXPECT_EQ(scaled.height, 188);  // ceil(375 / 2)
  EXPECT_EQ(scaled.width, 250);
  const DecodedImage eighth = decode_image(jpeg.data(), jpeg.size(), "s.jpg", 10, 10);
  EXPECT_EQ(eighth.scale_numerator * 8, eighth.scale_denominator);  // 1/8
  EXPECT_EQ(eighth.height, 47);                                     // ceil(375 / 8)
  EXPECT_EQ(eighth.width, 63);                                      // ceil(500 / 8)
  // The scaled image still shows the pattern: its pixel (y, x) is the full image's around
  // (y / factor, x / factor), smooth content, so within a few levels.
  const std::int64_t y = 20, x = 30;
  const std::uint8_t* p = eighth.pixels.data() + (y * eighth.width + x) * 3;
  const std::uint8_t* q = rgb.data() + ((y * 8 + 4) * w + (x * 8 + 4)) * 3;
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(p[c], q[c], 8) << "channel " << c;
  const DecodedImage full = decode_image(jpeg.data(), jpeg.size(), "s.jpg", h, w);
  EXPECT_EQ(full.height, h);
  EXPECT_EQ(full.scale_numerator, full.scale_denominator);
}

TEST(ImageCodec, BadInputNamesTheFileAndWhatIsWrong) {
  MB_SKIP_WITHOUT_IMAGES();
  // Large enough that half the file is image data, past the headers.
  const std::vector<std::uint8_t> rgb = pattern(256, 256);
  const std::vector<std::uint8_t> jpeg = encode_jpeg(rgb.data(), 256, 256, 90);
  const std::vector<std::uint8_t> png = encode_png(rgb.data(), 256, 256);

  const std::string text = message_of({'h', 'e', 'l', 'l', 'o'}, "cls/readme.jpg");
  EXPECT_NE(text.find("cls/readme.jpg"), std::string::npos) << text;
  EXPECT_NE(text.find("not a JPEG or PNG"), std::string::npos) << text;

  const std::string empty = message_of({}, "cls/empty.png");
  EXPECT_NE(empty.find("cls/empty.png: empty file"), std::string::npos) << empty;

  std::vector<std::uint8_t> truncated_jpeg(jpeg.begin(), jpeg.begin() + jpeg.size() / 2);
  const std::string cut = message_of(truncated_jpeg, "cls/cut.jpg");
  EXPECT_NE(cut.find("cls/cut.jpg: truncated JPEG"), std::string::npos) << cut;

  std::vector<std::uint8_t> truncated_png(png.begin(), png.begin() + png.size() / 2);
  const std::string cut_png = message_of(truncated_png, "cls/cut.png");
  EXPECT_NE(cut_png.find("cls/cut.png"), std::string::npos) << cut_png;
  EXPECT_NE(cut_png.find("PNG"), std::string::npos) << cut_png;

  std::vector<std::uint8_t> header_only(jpeg.begin(), jpeg.begin() + 4);
  const std::string header = message_of(header_only, "cls/header.jpg");
  EXPECT_NE(header.find("cls/header.jpg: corrupt JPEG"), std::string::npos) << header;

  std::vector<std::uint8_t> bad_crc = png;
  bad_crc[bad_crc.size() / 2] ^= 0xFF;  // inside the image data: its CRC no longer matches
  const std::string crc = message_of(bad_crc, "cls/crc.png");
  EXPECT_NE(crc.find("cls/crc.png"), std::string::npos) << crc;

  EXPECT_THROW(read_file_bytes("/nonexistent/mb/file.jpg"), IoError);
}

}  // namespace
}  // namespace mb
