#pragma once
// Beast's HTTP request parser with a limit on the whole header.

#include <cstddef>
#include <cstdint>

#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

namespace losslens::dashboard::detail {

/// A request parser that refuses (http::error::header_limit, a 431) a header larger than
/// max_header_bytes in total. Beast's own header_limit bounds the bytes not yet parsed in one
/// read: fields that arrive in many small reads are consumed one by one and never add up, so
/// 1500 small fields (14 KB) passed an 8 KiB limit. This parser counts the request line and
/// every field as it is stored (name, value, ": " and CRLF). One per request, like Beast's.
class request_parser : public boost::beast::http::request_parser<boost::beast::http::string_body> {
 public:
  request_parser(std::size_t max_header_bytes, std::size_t max_body_bytes)
      : max_header_bytes_(max_header_bytes) {
    header_limit(static_cast<std::uint32_t>(max_header_bytes));
    body_limit(max_body_bytes);
  }

  /// Bytes of the header counted so far.
  std::size_t header_bytes() const noexcept { return header_bytes_; }

 private:
  void on_field_impl(boost::beast::http::field name, boost::beast::string_view name_string,
                     boost::beast::string_view value, boost::beast::error_code& ec) override {
    if (header_bytes_ == 0) {  // the request line: "METHOD TARGET HTTP/1.1\r\n"
      const auto& m = get();
      header_bytes_ = m.method_string().size() + m.target().size() + 11;
    }
    header_bytes_ += name_string.size() + value.size() + 4;
    if (header_bytes_ > max_header_bytes_) {
      ec = boost::beast::http::error::header_limit;
      return;
    }
    get().insert(name, name_string, value);  // what Beast's parser does with a field
  }

  std::size_t max_header_bytes_;
  std::size_t header_bytes_ = 0;
};

}  // namespace losslens::dashboard::detail
