// storage/http.hpp — a small blocking HTTP client over libcurl (one easy
// handle, kept alive between requests) for the S3 backend.
//
// Thread-safety: one HttpClient per thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/bytes.hpp"

namespace mithril::storage {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct HttpResponse {
  long status = 0;
  HeaderList headers;  // names lowercased
  util::ByteVector body;
  // First value of a header (name lowercase), "" when absent.
  std::string header(std::string_view name) const;
};

// Whether a call may be cut short by a deferred signal. Cleanup calls
// (aborting an upload) must still run after one.
enum class Interruptible { yes, no };

class HttpClient {
 public:
  HttpClient(std::chrono::milliseconds connect_timeout, std::chrono::milliseconds io_timeout);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Sends one request with exactly these headers (curl adds Content-Length
  // only) and returns the response whatever its status. Throws
  // TransientError when the transfer fails (cannot connect, timeout, reset),
  // Error(io, "interrupted ...") when a deferred signal cut it short,
  // Error(corrupt) when the response body exceeds max_body bytes (the
  // transfer stops there; no more is held). The URL's path is sent as is
  // (no "."/".." folding), since it is what was signed.
  HttpResponse perform(std::string_view method, const std::string& url, const HeaderList& headers,
                       util::ByteSpan body, Interruptible interruptible = Interruptible::yes,
                       std::uint64_t max_body = UINT64_MAX);

 private:
  struct Handle;
  std::unique_ptr<Handle> m_handle;
  std::chrono::milliseconds m_connect_timeout, m_io_timeout;
};

}  // namespace mithril::storage
