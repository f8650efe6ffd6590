#pragma once
// Fashion-MNIST from Debian's dataset-fashion-mnist package (gzip IDX files), read with zlib.

#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>

namespace losslens::examples {

/// Where dataset-fashion-mnist installs the files.
inline constexpr const char* default_fmnist_dir = "/usr/share/datasets/fashion-mnist";

/// One split: images as float [N, 784] scaled to [0, 1], labels as int64 [N].
struct fmnist_split {
  at::Tensor images;
  at::Tensor labels;
};

/// Reads `train` or `t10k` from dir (at most `limit` examples; 0 = all). Throws losslens::error
/// naming the file when it is missing, truncated or not an IDX file.
fmnist_split load_fmnist(const std::string& dir, const std::string& split, std::int64_t limit = 0);

/// The ten class names, by label.
const char* fmnist_class_name(int label);

}  // namespace losslens::examples
