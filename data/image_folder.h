// Image folders in torchvision's layout: ROOT/<class>/**/<file>, one folder per class.
//
// The rules are torchvision.datasets.ImageFolder's, so that a sample's index and label here
// are the ones a PyTorch user sees for the same folder:
// - the classes are the names of ROOT's sub-folders (symbolic links to folders included,
//   hidden ones too), sorted by code point; class i is the i-th name;
// - a class's files are found by walking its folder (following links) and sorting the walk by
//   folder path, then each folder's files by name; a file counts when its name ends, in any
//   case, in one of torchvision's image extensions (.jpg .jpeg .png .ppm .bmp .pgm .tif
//   .tiff .webp); other files are ignored (and counted, so the user hears of them);
// - samples are grouped by class, in class order.
// A class folder with no image file is an error, as in torchvision.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mb {

struct ImageFolderIndex {
  std::string root;
  std::vector<std::string> classes;
  std::vector<std::string> paths;    // every sample's file, root included
  std::vector<std::int32_t> labels;  // its class index
  // Files skipped for their extension (paths, in walk order).
  std::vector<std::string> ignored;
  std::int64_t size() const { return static_cast<std::int64_t>(paths.size()); }
};

// True when torchvision would take a file of this name as an image (by extension).
bool has_image_extension(const std::string& file_name);

// Scans `root`. Throws mb::IoError naming the folder and the fix when root is missing or not
// a folder, has no class folders, or a class folder has no image file.
ImageFolderIndex scan_image_folder(const std::string& root);

}  // namespace mb
