// Dataset helpers and the by-name loader the CLI uses.
#include "data/dataset.h"

#include "runtime/error.h"

namespace mb {

Shape Dataset::sample_shape() const {
  if (source != nullptr) return source->sample_shape();
  MB_CHECK(images.defined() && images.ndim() == 4, "Dataset '", name,
           "': images must be a [N, C, H, W] tensor");
  return Shape{images.dim(1), images.dim(2), images.dim(3)};
}

Dataset load_dataset(const std::string& name, const std::string& data_dir, bool train,
                     std::int64_t limit, const SyntheticOptions& synthetic) {
  if (name == "fashion-mnist") return load_fashion_mnist(data_dir, train, limit);
  if (name == "cifar10") return load_cifar10(data_dir, train, limit);
  if (name == "cifar100") return load_cifar100(data_dir, train, limit);
  if (name == "synthetic") {
    SyntheticOptions options = synthetic;
    if (limit > 0) options.samples = limit;
    // Note: the test split shares the seed (hence the class templates) and draws its
    // samples from a disjoint range of sample numbers.
    if (!train) options.first_sample += std::int64_t{1} << 31;
    return make_synthetic(options);
  }
  MB_THROW(InvalidArgument, "unknown dataset '", name,
           "'; choose one of fashion-mnist, cifar10, cifar100, imagefolder, synthetic");
}

}  // namespace mb
