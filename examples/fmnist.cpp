#include "fmnist.hpp"

#include <array>
#include <vector>

#include <ATen/ops/empty.h>
#include <zlib.h>

#include "losslens/error.hpp"

namespace losslens::examples {
namespace {

/// A gzip file read in full-size chunks; every short read is an error naming the file.
class gz_file {
 public:
  explicit gz_file(const std::string& path) : path_(path), f_(gzopen(path.c_str(), "rb")) {
    if (!f_)
      throw error(path +
                  ": cannot open (install the Debian package dataset-fashion-mnist, or "
                  "pass --data DIR)");
  }
  ~gz_file() {
    if (f_) gzclose(f_);
  }
  gz_file(const gz_file&) = delete;
  gz_file& operator=(const gz_file&) = delete;

  void read(void* dst, std::size_t n) {
    auto* p = static_cast<unsigned char*>(dst);
    while (n > 0) {
      const unsigned chunk = static_cast<unsigned>(std::min<std::size_t>(n, 1u << 30));
      const int got = gzread(f_, p, chunk);
      if (got <= 0) throw error(path_ + ": truncated or corrupt gzip IDX file");
      p += got;
      n -= static_cast<std::size_t>(got);
    }
  }
  std::uint32_t big_endian_u32() {
    std::array<unsigned char, 4> b{};
    read(b.data(), 4);
    return (std::uint32_t(b[0]) << 24) | (std::uint32_t(b[1]) << 16) | (std::uint32_t(b[2]) << 8) |
           b[3];
  }

 private:
  std::string path_;
  gzFile f_;
};

}  // namespace

fmnist_split load_fmnist(const std::string& dir, const std::string& split, std::int64_t limit) {
  if (split != "train" && split != "t10k")
    throw error("fashion-mnist split must be 'train' or 't10k', got '" + split + "'");
  gz_file images(dir + "/" + split + "-images-idx3-ubyte.gz");
  gz_file labels(dir + "/" + split + "-labels-idx1-ubyte.gz");
  if (images.big_endian_u32() != 0x803) throw error(dir + ": bad magic in " + split + " images");
  if (labels.big_endian_u32() != 0x801) throw error(dir + ": bad magic in " + split + " labels");
  std::int64_t n = images.big_endian_u32();
  const auto rows = images.big_endian_u32(), cols = images.big_endian_u32();
  if (rows != 28 || cols != 28) throw error(dir + ": " + split + " images are not 28x28");
  if (std::int64_t(labels.big_endian_u32()) != n)
    throw error(dir + ": " + split + " image and label counts differ");
  if (limit > 0 && limit < n) n = limit;

  std::vector<unsigned char> pix(static_cast<std::size_t>(n) * 784);
  std::vector<unsigned char> lab(static_cast<std::size_t>(n));
  images.read(pix.data(), pix.size());
  labels.read(lab.data(), lab.size());
  fmnist_split out{at::empty({n, 784}, at::kFloat), at::empty({n}, at::kLong)};
  float* x = out.images.data_ptr<float>();
  for (std::size_t i = 0; i < pix.size(); ++i) x[i] = float(pix[i]) / 255.0f;
  std::int64_t* y = out.labels.data_ptr<std::int64_t>();
  for (std::int64_t i = 0; i < n; ++i) {
    if (lab[std::size_t(i)] > 9) throw error(dir + ": " + split + " label out of range");
    y[i] = lab[std::size_t(i)];
  }
  return out;
}

const char* fmnist_class_name(int label) {
  static const char* names[] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return label >= 0 && label < 10 ? names[label] : "?";
}

}  // namespace losslens::examples
