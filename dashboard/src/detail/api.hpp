#pragma once
// The HTTP side without Beast: request targets, tokens, the JSON API and the embedded files.

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "losslens/storage/run_reader.hpp"

namespace losslens::dashboard::detail {

/// Readers handed out one per request (a run_reader is one-thread-at-a-time). Thread-safe.
class reader_pool {
 public:
  explicit reader_pool(std::string path) : path_(std::move(path)) {}
  /// A reader back in the pool when the lease ends.
  class lease {
   public:
    lease(reader_pool& pool, std::unique_ptr<storage::run_reader> r)
        : pool_(&pool), reader_(std::move(r)) {}
    lease(lease&&) = default;
    ~lease() {
      if (reader_) pool_->put(std::move(reader_));
    }
    storage::run_reader& operator*() const { return *reader_; }

   private:
    reader_pool* pool_;
    std::unique_ptr<storage::run_reader> reader_;
  };
  /// Takes a free reader or opens one; throws losslens::error when the database cannot open.
  lease acquire();

 private:
  void put(std::unique_ptr<storage::run_reader> r) noexcept;
  std::string path_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<storage::run_reader>> free_;
};

/// A request target split into a decoded path and decoded query parameters.
struct target {
  std::string path;
  std::map<std::string, std::string, std::less<>> params;
};
/// Splits and percent-decodes; nullopt on malformed encoding (a 400).
std::optional<target> parse_target(std::string_view raw);

/// Equality in time independent of where the strings differ.
bool constant_time_equal(std::string_view a, std::string_view b) noexcept;
/// True when no token is configured, or the request carries it (Authorization: Bearer or
/// ?token=).
bool token_ok(std::string_view expected, std::string_view authorization_header,
              const target& t) noexcept;

/// An HTTP answer body with its status and content type.
struct reply {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
  bool cache = false;  ///< immutable asset
};

/// Answers /api/... (GET). Never throws: errors are 4xx/5xx JSON {"error": ...}.
reply handle_api(reader_pool& readers, const target& t);
/// Answers a page file from the embedded assets ("/" is index.html); 404 JSON otherwise.
reply handle_static(const target& t);
/// A JSON error reply.
reply error_reply(unsigned status, const std::string& message);

}  // namespace losslens::dashboard::detail
