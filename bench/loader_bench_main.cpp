// loader_bench: images per second of the image-folder loader (decode + RandomResizedCrop +
// flip into 8-bit batches, then ToTensor + Normalize by the CPU twin of the device kernel in
// the consuming thread, as the CPU trainer would run it), on an ImageNet-like folder.
//
//   loader_bench --make-folder DIR [--images 3000] [--classes 10]
//       writes DIR/train/<class>/*.jpg (and a small DIR/val): smooth synthetic photos at
//       ImageNet's typical sizes (500x375, 375x500, 500x333, 500x500, 333x500 and in-between),
//       JPEG quality 90 with 4:2:0 chroma, so they decode like the real files.
//   loader_bench --data DIR [--workers N] [--batch-size 64] [--seconds 20] [--no-dct-scaling]
//                [--eval]  (DIR/val through Resize + CenterCrop)
//       prints one JSON line: images_per_s, per worker, the loader's own rate (busy time) and
//       its wait-free share. After 2 warm-up batches it counts images until --seconds pass,
//       starting new epochs as needed (bench/compare_loader.py runs torchvision beside it).
#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "data/image_codec.h"
#include "data/image_dataset.h"
#include "data/loader.h"
#include "data/transforms.h"
#include "engine/evaluate.h"
#include "kernels/cpu/image_input.h"
#include "kernels/threads.h"
#include "runtime/error.h"

namespace mb {
namespace {

// A smooth photo-like image: a few low-frequency waves per channel over a gradient, an
// object-like blob and mild pixel noise (photos have texture; without it JPEG files come out
// several times smaller than ImageNet's).
std::vector<std::uint8_t> synthetic_photo(std::int64_t height, std::int64_t width,
                                          std::mt19937& rng) {
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::normal_distribution<float> noise(0.0f, 20.0f);
  float fx[3][3], fy[3][3], phase[3][3], base[3];
  for (int c = 0; c < 3; ++c) {
    base[c] = 60 + 120 * u(rng);
    for (int k = 0; k < 3; ++k) {
      fx[c][k] = 0.002f + 0.03f * u(rng);
      fy[c][k] = 0.002f + 0.03f * u(rng);
      phase[c][k] = 6.28f * u(rng);
    }
  }
  const float cy = height * u(rng), cx = width * u(rng), radius = 40 + 120 * u(rng);
  std::vector<std::uint8_t> rgb(static_cast<std::size_t>(height * width * 3));
  for (std::int64_t y = 0; y < height; ++y) {
    for (std::int64_t x = 0; x < width; ++x) {
      const float d = std::hypot(y - cy, x - cx);
      for (int c = 0; c < 3; ++c) {
        float v = base[c] + 30.0f * (static_cast<float>(y) / height - 0.5f);
        for (int k = 0; k < 3; ++k)
          v += 25.0f * std::sin(fx[c][k] * x + fy[c][k] * y + phase[c][k]);
        if (d < radius) v += (c == 0 ? 50.0f : -30.0f) * (1.0f - d / radius);
        v += noise(rng);
        rgb[static_cast<std::size_t>((y * width + x) * 3 + c)] =
            static_cast<std::uint8_t>(std::min(255.0f, std::max(0.0f, v)));
      }
    }
  }
  return rgb;
}

void make_folder(const std::string& dir, int images, int classes, std::uint32_t seed) {
  static const std::int64_t kSizes[][2] = {{375, 500}, {500, 375}, {333, 500}, {500, 500},
                                           {500, 333}, {375, 500}, {375, 500}, {400, 300}};
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> jitter(-40, 0);
  std::uint64_t bytes = 0;
  for (const auto& [split, count] : std::vector<std::pair<std::string, int>>{
           {"train", images}, {"val", images / 10 + classes}}) {
    for (int i = 0; i < count; ++i) {
      const int c = i % classes;
      const std::filesystem::path folder =
          std::filesystem::path(dir) / split / ("n" + std::to_string(1000000 + c));
      std::filesystem::create_directories(folder);
      const auto* size = kSizes[rng() % 8];
      const std::int64_t h = size[0] + (size[0] < 500 ? jitter(rng) : 0);
      const std::int64_t w = size[1] + (size[1] < 500 ? jitter(rng) : 0);
      const std::vector<std::uint8_t> jpeg =
          encode_jpeg(synthetic_photo(h, w, rng).data(), h, w, 90);
      bytes += jpeg.size();
      // Written to a temporary and renamed: an interrupted run leaves no half image.
      const std::filesystem::path path = folder / ("img_" + std::to_string(i) + ".JPEG");
      const std::filesystem::path temporary = path.string() + ".part";
      {
        std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char*>(jpeg.data()),
                  static_cast<std::streamsize>(jpeg.size()));
        if (!out) MB_THROW(IoError, "cannot write ", temporary.string());
      }
      std::filesystem::rename(temporary, path);
    }
  }
  std::cout << nlohmann::json{{"folder", dir},
                              {"train_images", images},
                              {"classes", classes},
                              {"mean_jpeg_bytes", bytes / (images + images / 10 + classes)}}
                   .dump()
            << std::endl;
}

nlohmann::json measure(const std::string& dir, int workers, std::int64_t batch_size, double seconds,
                       bool dct_scaling, std::int64_t image_size, bool eval) {
  ImageFolderOptions options;
  options.image_size = image_size;
  options.dct_scaling = dct_scaling;
  const Dataset data = load_image_folder(dir, !eval, 0, options);
  LoaderOptions loader_options;
  loader_options.batch_size = batch_size;
  loader_options.workers = workers;
  loader_options.drop_last = true;
  BatchLoader loader(data, loader_options);
  const ChannelNormalization norm = channel_normalization(published_normalization("imagefolder"));
  std::vector<float> normalized(static_cast<std::size_t>(batch_size * 3 * image_size * image_size));
  int epoch = 0, warmup = 2;
  std::int64_t images = 0, batches = 0;
  double work = 0, wait = 0, normalize_seconds = 0;
  std::int64_t skipped = 0;
  auto started = std::chrono::steady_clock::now();
  double elapsed = 0;
  while (elapsed < seconds) {
    loader.start_epoch(epoch++);
    Batch batch;
    while (elapsed < seconds && loader.next(batch)) {
      const auto t0 = std::chrono::steady_clock::now();
      cpu::images_to_float(Stream(), batch.images.data<std::uint8_t>(), normalized.data(),
                           batch.size(), 3, image_size * image_size, norm);
      const auto t1 = std::chrono::steady_clock::now();
      if (warmup > 0) {
        if (--warmup == 0) started = std::chrono::steady_clock::now();
        continue;
      }
      normalize_seconds += std::chrono::duration<double>(t1 - t0).count();
      images += batch.size();
      ++batches;
      elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    }
    const LoaderStats stats = loader.stats();
    work += stats.work_seconds;
    wait += stats.wait_seconds;
    skipped += stats.skipped;
  }
  const double rate = static_cast<double>(images) / elapsed;
  return nlohmann::json{
      {"images_per_s", rate},
      {"images_per_s_per_worker", rate / workers},
      {"workers", workers},
      {"batch_size", batch_size},
      {"image_size", image_size},
      {"dct_scaling", dct_scaling},
      {"transform", eval ? "val: Resize + CenterCrop" : "train: RandomResizedCrop + flip"},
      {"seconds", elapsed},
      {"images", images},
      {"batches", batches},
      {"skipped", skipped},
      {"worker_seconds_per_image", images > 0 ? work / images : 0.0},
      {"normalize_seconds_per_image", images > 0 ? normalize_seconds / images : 0.0},
      {"consumer_wait_seconds", wait},
      {"dataset_images", data.size()},
      {"cores", available_cpu_cores()}};
}

}  // namespace
}  // namespace mb

int main(int argc, char** argv) {
  CLI::App app{"loader_bench: image-folder loader images/s (see the file header)"};
  std::string make, data;
  int images = 3000, classes = 10, workers = 1;
  std::int64_t batch_size = 64, image_size = 224;
  double seconds = 20;
  bool no_dct = false, eval = false;
  app.add_option("--make-folder", make, "write an ImageNet-like folder here and exit");
  app.add_option("--images", images, "training images to write")->check(CLI::Range(1, 1000000));
  app.add_option("--classes", classes, "class folders")->check(CLI::Range(1, 10000));
  app.add_option("--data", data, "folder with train/<class>/*.jpg to measure");
  app.add_option("--workers", workers, "loader threads")->check(CLI::Range(1, 256));
  app.add_option("--batch-size", batch_size, "images per batch")->check(CLI::Range(1, 100000));
  app.add_option("--seconds", seconds, "measured time")->check(CLI::Range(0.1, 3600.0));
  app.add_option("--image-size", image_size, "crop size")->check(CLI::Range(8, 1024));
  app.add_flag("--no-dct-scaling", no_dct, "decode every JPEG at full size");
  app.add_flag("--eval", eval, "DIR/val with the evaluation transform instead of DIR/train");
  CLI11_PARSE(app, argc, argv);
  try {
    if (!make.empty()) {
      mb::make_folder(make, images, classes, 20261206);
      return 0;
    }
    if (data.empty()) {
      std::cerr << "loader_bench: pass --make-folder DIR or --data DIR\n";
      return 2;
    }
    std::cout << mb::measure(data, workers, batch_size, seconds, !no_dct, image_size, eval).dump()
              << std::endl;
  } catch (const mb::Error& error) {
    std::cerr << "loader_bench: " << error.message() << "\n";
    return 1;
  }
  return 0;
}
