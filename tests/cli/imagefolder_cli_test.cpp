// `train --dataset imagefolder` end to end: a folder of JPEG and PNG files with one corrupt
// file trains and evaluates, the bad file is counted and named; with --on-bad-image error the
// run stops naming it; a missing --data-dir or val/ folder is an error with its fix, and the
// same run with 1 or 2 workers prints the same losses.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "data/image_codec.h"
#include "tests/cli/cli_run.h"
#include "tests/data/images_available.h"
#include "tests/data/temp_dir.h"

namespace mb {
namespace {

using testing::contains;
using testing::run;

void write_images(const std::filesystem::path& root, const std::string& split, int per_class) {
  for (int c = 0; c < 2; ++c) {
    const auto folder = root / split / (c == 0 ? "cats" : "dogs");
    std::filesystem::create_directories(folder);
    for (int i = 0; i < per_class; ++i) {
      const std::int64_t h = 30 + 3 * i, w = 40;
      std::vector<std::uint8_t> rgb(static_cast<std::size_t>(h * w * 3));
      for (std::size_t k = 0; k < rgb.size(); ++k) {
        rgb[k] = static_cast<std::uint8_t>((k % 3 == 0 ? 200 * c : 0) + (k / 3 + i) % 50);
      }
      const bool png = i % 2 == 1;
      testing::write_bytes((folder / ("i" + std::to_string(i) + (png ? ".png" : ".jpg"))).string(),
                           png ? encode_png(rgb.data(), h, w) : encode_jpeg(rgb.data(), h, w, 90));
    }
  }
}

std::vector<std::string> train_args(const std::string& dir, const std::string& workers) {
  return {"train", "--model",      "resnet18", "--dataset",    "imagefolder", "--data-dir",
          dir,     "--image-size", "32",       "--batch-size", "4",           "--epochs",
          "1",     "--workers",    workers,    "--device",     "cpu",         "--seed",
          "5"};
}

TEST(ImageFolderCli, TrainsCountsABadImageAndIsTheSameForAnyWorkerCount) {
  MB_SKIP_WITHOUT_IMAGES();
  testing::TempDir dir;
  write_images(dir.path(), "train", 4);
  write_images(dir.path(), "val", 2);
  testing::write_bytes((dir.path() / "train" / "cats" / "broken.jpg").string(),
                       {0xFF, 0xD8, 0xFF, 0xE0, 0, 16, 'J', 'F'});
  const auto one = run(train_args(dir.path().string(), "1"));
  ASSERT_EQ(one.code, 0) << one.out << one.err;
  EXPECT_TRUE(contains(one.out, "image folder")) << one.out;
  EXPECT_TRUE(contains(one.out, "2 classes")) << one.out;
  EXPECT_TRUE(contains(one.out, "1 bad image(s) skipped")) << one.out;
  EXPECT_TRUE(contains(one.out, "broken.jpg")) << one.out;
  EXPECT_TRUE(contains(one.out, "data wait")) << one.out;
  const auto two = run(train_args(dir.path().string(), "2"));
  ASSERT_EQ(two.code, 0) << two.err;
  const auto losses = [](const std::string& out) {
    const auto at = out.find("train loss");
    return out.substr(at, out.find(", test acc", at) - at);
  };
  EXPECT_EQ(losses(one.out), losses(two.out));

  std::vector<std::string> strict = train_args(dir.path().string(), "1");
  strict.insert(strict.end(), {"--on-bad-image", "error"});
  const auto stopped = run(strict);
  EXPECT_NE(stopped.code, 0);
  EXPECT_TRUE(contains(stopped.err, "broken.jpg")) << stopped.err;
}

TEST(ImageFolderCli, EvalOfACheckpointRefusesAValFolderWithOtherClasses) {
  MB_SKIP_WITHOUT_IMAGES();
  testing::TempDir dir;
  write_images(dir.path(), "train", 2);
  write_images(dir.path(), "val", 1);
  const std::string checkpoint = (dir.path() / "run.safetensors").string();
  std::vector<std::string> train = train_args(dir.path().string(), "1");
  train.insert(train.end(), {"--checkpoint", checkpoint});
  const auto trained = run(train);
  ASSERT_EQ(trained.code, 0) << trained.err;
  const std::vector<std::string> eval = {
      "eval",        "--model",      "resnet18",          "--dataset",
      "imagefolder", "--data-dir",   dir.path().string(), "--image-size",
      "32",          "--checkpoint", checkpoint};
  const auto same = run(eval);
  EXPECT_EQ(same.code, 0) << same.err;
  EXPECT_TRUE(contains(same.out, "test accuracy")) << same.out;
  // Rename a class of both splits: the labels would now mean other classes.
  for (const std::string split : {"train", "val"}) {
    std::filesystem::rename(dir.path() / split / "dogs", dir.path() / split / "wolves");
  }
  const auto other = run(eval);
  EXPECT_NE(other.code, 0);
  EXPECT_TRUE(contains(other.err, "was trained on 2 classes")) << other.err;
  EXPECT_TRUE(contains(other.err, "--data-dir it was trained on")) << other.err;
}

TEST(ImageFolderCli, MissingFoldersAreNamedWithTheFix) {
  const auto no_dir = run({"train", "--model", "resnet18", "--dataset", "imagefolder"});
  EXPECT_NE(no_dir.code, 0);
  EXPECT_TRUE(contains(no_dir.err, "--dataset imagefolder needs --data-dir DIR")) << no_dir.err;
  testing::TempDir dir;
  std::filesystem::create_directories(dir.path() / "train" / "a");
  testing::write_bytes((dir.path() / "train" / "a" / "x.png").string(), {1, 2, 3});
  const auto no_val = run({"train", "--model", "resnet18", "--dataset", "imagefolder", "--data-dir",
                           dir.path().string()});
  EXPECT_NE(no_val.code, 0);
  EXPECT_TRUE(contains(no_val.err, "has no val/ folder")) << no_val.err;
}

}  // namespace
}  // namespace mb
