// CIFAR-100 binary reader on files written here: the fine label (byte 1) is the class, as
// torchvision's CIFAR100 uses it, the coarse one (byte 0) is checked and dropped, pixels
// follow at byte 2; train.bin / test.bin in the folder or in cifar-100-binary/; the errors
// for labels outside their range and for partial records; the published normalization.
#include <gtest/gtest.h>

#include <filesystem>

#include "data/cifar10.h"
#include "data/dataset.h"
#include "data/transforms.h"
#include "runtime/error.h"
#include "tests/data/temp_dir.h"

namespace mb {
namespace {

using testing::TempDir;
using testing::write_bytes;

// Record r: coarse label r % 20, fine label (7 * r + salt) % 100, pixel p = (r * 11 + p) % 256.
std::vector<std::uint8_t> cifar100_file(int records, int salt) {
  std::vector<std::uint8_t> out;
  for (int r = 0; r < records; ++r) {
    out.push_back(static_cast<std::uint8_t>(r % 20));
    out.push_back(static_cast<std::uint8_t>((7 * r + salt) % 100));
    for (int p = 0; p < kCifar10ImageBytes; ++p) {
      out.push_back(static_cast<std::uint8_t>((r * 11 + p) % 256));
    }
  }
  return out;
}

std::string io_error(const std::function<void()>& body) {
  try {
    body();
  } catch (const IoError& e) {
    return e.message();
  }
  ADD_FAILURE() << "expected mb::IoError";
  return "";
}

TEST(Cifar100, FineLabelIsTheClassAndPixelsFollowBothLabelBytes) {
  TempDir dir;
  const std::filesystem::path folder = dir.path() / "cifar-100-binary";
  std::filesystem::create_directories(folder);
  write_bytes((folder / "train.bin").string(), cifar100_file(30, 3));
  write_bytes((folder / "test.bin").string(), cifar100_file(5, 50));
  const Dataset train = load_dataset("cifar100", dir.path().string(), true, 0, SyntheticOptions{});
  EXPECT_EQ(train.name, "cifar100");
  EXPECT_EQ(train.num_classes, 100);
  EXPECT_EQ(train.images.shape(), (Shape{30, 3, 32, 32}));
  const std::vector<std::int32_t> labels = train.labels.to_vector_int();
  for (int r = 0; r < 30; ++r) EXPECT_EQ(labels[static_cast<std::size_t>(r)], (7 * r + 3) % 100);
  const float* pixels = train.images.data<float>();
  for (int r : {0, 17, 29}) {
    for (int p : {0, 1, 1023, 1024, 3071}) {
      EXPECT_FLOAT_EQ(pixels[r * kCifar10ImageBytes + p],
                      static_cast<float>((r * 11 + p) % 256) / 255.0f)
          << "record " << r << " pixel " << p;
    }
  }
  const Dataset test = load_cifar100(folder.string(), false, 2);
  EXPECT_EQ(test.size(), 2);
  EXPECT_EQ(test.labels.to_vector_int(), (std::vector<std::int32_t>{50, 57}));
}

TEST(Cifar100, LabelsOutOfRangeAndPartialRecordsAreErrors) {
  TempDir dir;
  const std::string path = dir.file("train.bin");
  std::vector<std::uint8_t> bytes = cifar100_file(3, 0);
  bytes[static_cast<std::size_t>(kCifar100RecordBytes) + 1] = 100;  // fine label of record 1
  write_bytes(path, bytes);
  std::string message = io_error([&] { read_cifar_file(path, kCifar100Format); });
  EXPECT_NE(message.find("label 100 at byte offset 3075 (record 1) is outside [0, 100)"),
            std::string::npos)
      << message;

  bytes = cifar100_file(3, 0);
  bytes[static_cast<std::size_t>(2 * kCifar100RecordBytes)] = 20;  // coarse label of record 2
  write_bytes(path, bytes);
  message = io_error([&] { read_cifar_file(path, kCifar100Format); });
  EXPECT_NE(message.find("coarse label 20 at byte offset 6148"), std::string::npos) << message;

  bytes = cifar100_file(2, 0);
  bytes.pop_back();
  write_bytes(path, bytes);
  message = io_error([&] { read_cifar_file(path, kCifar100Format); });
  EXPECT_NE(message.find("truncated record at byte offset 3074: expected 3074 bytes per "
                         "CIFAR-100 record (2 label + 3072 pixels)"),
            std::string::npos)
      << message;

  // A folder without the files names the archive to download.
  message = io_error([&] { load_cifar100(dir.path().string() + "/none", true); });
  EXPECT_NE(message.find("cifar-100-binary.tar.gz"), std::string::npos) << message;
}

// The constants every CIFAR-100 recipe uses (the training split's per-channel mean and
// population standard deviation of pixels in [0, 1]).
TEST(Cifar100, PublishedNormalization) {
  const Normalization n = published_normalization("cifar100");
  EXPECT_EQ(n.mean, (std::vector<float>{0.5071f, 0.4865f, 0.4409f}));
  EXPECT_EQ(n.std, (std::vector<float>{0.2673f, 0.2564f, 0.2762f}));
}

}  // namespace
}  // namespace mb
