// torchvision ImageFolder's indexing rules over std::filesystem.
#include "data/image_folder.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <set>
#include <system_error>
#include <utility>

#include "runtime/error.h"

namespace mb {
namespace fs = std::filesystem;
namespace {

// torchvision.datasets.folder.IMG_EXTENSIONS.
constexpr const char* kImageExtensions[] = {".jpg", ".jpeg", ".png",  ".ppm", ".bmp",
                                            ".pgm", ".tif",  ".tiff", ".webp"};

bool is_folder(const fs::path& path) {
  std::error_code error;
  return fs::is_directory(path, error);  // follows symbolic links, as Python's is_dir()
}

struct WalkedFolder {
  std::string path;
  std::vector<std::string> files;
};

// os.walk(top, followlinks=True): every folder under top with its non-folder entries. A
// folder reached twice through links is walked once (os.walk would loop forever).
void walk(const std::string& top, std::set<fs::path>& seen, std::vector<WalkedFolder>& out) {
  std::error_code error;
  const fs::path canonical = fs::canonical(top, error);
  if (error || !seen.insert(canonical).second) return;
  WalkedFolder folder{top, {}};
  std::vector<std::string> subfolders;
  for (fs::directory_iterator it(top, error), end; !error && it != end; it.increment(error)) {
    const std::string name = it->path().filename().string();
    if (is_folder(it->path())) {
      subfolders.push_back(top + "/" + name);
    } else {
      folder.files.push_back(name);
    }
  }
  if (error) {
    MB_THROW(IoError, "cannot list folder ", top, ": ", error.message(),
             ". Fix: check its permissions");
  }
  out.push_back(std::move(folder));
  for (const std::string& sub : subfolders) walk(sub, seen, out);
}

}  // namespace

bool has_image_extension(const std::string& file_name) {
  std::string lower = file_name;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const char* extension : kImageExtensions) {
    const std::string ext(extension);
    if (lower.size() >= ext.size() &&
        lower.compare(lower.size() - ext.size(), ext.size(), ext) == 0) {
      return true;
    }
  }
  return false;
}

ImageFolderIndex scan_image_folder(const std::string& root) {
  std::error_code error;
  if (!fs::exists(root, error)) {
    MB_THROW(IoError, "image folder ", root,
             " does not exist. Fix: pass --data-dir DIR where DIR/train/<class>/ and "
             "DIR/val/<class>/ hold the images");
  }
  if (!is_folder(root)) {
    MB_THROW(IoError, root,
             " is not a folder. Fix: pass the folder that holds one folder per class");
  }
  ImageFolderIndex index;
  index.root = root;
  for (fs::directory_iterator it(root, error), end; !error && it != end; it.increment(error)) {
    if (is_folder(it->path())) index.classes.push_back(it->path().filename().string());
  }
  if (error) MB_THROW(IoError, "cannot list folder ", root, ": ", error.message());
  // Note: std::string orders by unsigned bytes, which for UTF-8 is code-point order, as
  // Python's sorted() of str.
  std::sort(index.classes.begin(), index.classes.end());
  if (index.classes.empty()) {
    MB_THROW(IoError, "image folder ", root,
             " has no class folders. Fix: put each class's images in a folder of their own, "
             "ROOT/<class>/<image>, as torchvision's ImageFolder expects");
  }
  std::vector<std::string> empty;
  for (std::size_t c = 0; c < index.classes.size(); ++c) {
    std::set<fs::path> seen;
    std::vector<WalkedFolder> folders;
    walk(root + "/" + index.classes[c], seen, folders);
    std::sort(folders.begin(), folders.end(),
              [](const WalkedFolder& a, const WalkedFolder& b) { return a.path < b.path; });
    const std::int64_t before = index.size();
    for (WalkedFolder& folder : folders) {
      std::sort(folder.files.begin(), folder.files.end());
      for (const std::string& file : folder.files) {
        const std::string path = folder.path + "/" + file;
        if (has_image_extension(file)) {
          index.paths.push_back(path);
          index.labels.push_back(static_cast<std::int32_t>(c));
        } else {
          index.ignored.push_back(path);
        }
      }
    }
    if (index.size() == before) empty.push_back(index.classes[c]);
  }
  if (!empty.empty()) {
    std::string names;
    for (std::size_t i = 0; i < empty.size() && i < 5; ++i) names += (i ? ", " : "") + empty[i];
    if (empty.size() > 5) names += " and " + std::to_string(empty.size() - 5) + " more";
    MB_THROW(IoError, "image folder ", root, ": class folder(s) ", names,
             " hold no image file (extensions .jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp, "
             "any case). torchvision refuses such a folder too. Fix: add images or remove "
             "the folder");
  }
  return index;
}

}  // namespace mb
