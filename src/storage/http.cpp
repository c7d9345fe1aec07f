#include "storage/http.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>

#include "mithril/error.hpp"
#include "storage/remote_libs.hpp"
#include "storage/retry.hpp"
#include "util/interrupt.hpp"

namespace mithril::storage {
namespace {

// Only made after libs::curl() loaded the library (HttpClient's constructor).
struct EasyDeleter {
  void operator()(CURL* c) const noexcept { libs::curl().easy_cleanup(c); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const noexcept { libs::curl().slist_free_all(l); }
};

struct Transfer {
  util::ByteSpan body;
  std::size_t sent = 0;
  HttpResponse* response = nullptr;
  Interruptible interruptible = Interruptible::yes;
  std::uint64_t max_body = UINT64_MAX;
  bool too_large = false;
  long status = 0;  // of the response being received
  // The cap applies to the object; an error answer (small XML) only gets a
  // generous bound of its own.
  std::uint64_t cap() const noexcept {
    if (max_body == UINT64_MAX || (status >= 200 && status < 300)) return max_body;
    return std::max<std::uint64_t>(max_body, 1 << 20);
  }
};

extern "C" std::size_t on_read(char* buffer, std::size_t size, std::size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const std::size_t n = std::min(size * count, t->body.size() - t->sent);
  if (n) std::memcpy(buffer, t->body.data() + t->sent, n);
  t->sent += n;
  return n;
}

extern "C" std::size_t on_write(char* data, std::size_t size, std::size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const std::size_t n = size * count;
  if (t->response->body.size() > t->cap() || n > t->cap() - t->response->body.size()) {
    t->too_large = true;
    return 0;  // aborts the transfer (CURLE_WRITE_ERROR)
  }
  const auto* p = reinterpret_cast<const std::byte*>(data);
  t->response->body.insert(t->response->body.end(), p, p + n);
  return n;
}

extern "C" std::size_t on_header(char* data, std::size_t size, std::size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const std::size_t n = size * count;
  std::string_view line(data, n);
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.remove_suffix(1);
  if (line.substr(0, 5) == "HTTP/") {
    t->response->headers.clear();  // a new response (after 100 Continue or a redirect)
    const auto sp = line.find(' ');
    long code = 0;
    if (sp != std::string_view::npos) std::from_chars(line.data() + sp + 1, line.data() + line.size(), code);
    t->status = code;
    return n;
  }
  const auto colon = line.find(':');
  if (colon == std::string_view::npos) return n;
  std::string name(line.substr(0, colon));
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  auto value = line.substr(colon + 1);
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (name == "content-length") {
    // One allocation for the body instead of doubling growth (and its
    // transient 2x peak) on multi-MiB ranges.
    std::uint64_t length = 0;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), length);
    // Never more than the caller accepts: the server's word is not a bound.
    if (ec == std::errc() && end == value.data() + value.size() && length <= (std::uint64_t{1} << 32))
      t->response->body.reserve(static_cast<std::size_t>(std::min(length, t->cap())));
  }
  t->response->headers.emplace_back(std::move(name), std::string(value));
  return n;
}

extern "C" int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(user);
  return t->interruptible == Interruptible::yes && util::interrupt_requested() ? 1 : 0;
}

}  // namespace

std::string HttpResponse::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (k == name) return v;
  return {};
}

struct HttpClient::Handle {
  std::unique_ptr<CURL, EasyDeleter> easy;
  char error[CURL_ERROR_SIZE] = {};
};

HttpClient::HttpClient(std::chrono::milliseconds connect_timeout, std::chrono::milliseconds io_timeout)
    : m_handle(std::make_unique<Handle>()), m_connect_timeout(connect_timeout), m_io_timeout(io_timeout) {
  m_handle->easy.reset(libs::curl().easy_init());  // loads libcurl on first use
  if (!m_handle->easy) throw Error(Errc::internal, "libcurl: cannot create a handle");
}

HttpClient::~HttpClient() = default;

HttpResponse HttpClient::perform(std::string_view method, const std::string& url, const HeaderList& headers,
                                 util::ByteSpan body, Interruptible interruptible, std::uint64_t max_body) {
  if (interruptible == Interruptible::yes) util::throw_if_interrupted();
  const libs::Curl& api = libs::curl();
  CURL* c = m_handle->easy.get();
  api.easy_reset(c);  // keeps the connection cache
  HttpResponse response;
  Transfer t{body, 0, &response, interruptible, max_body};

  std::unique_ptr<curl_slist, SlistDeleter> list;
  auto append = [&](const std::string& line) {
    curl_slist* l = api.slist_append(list.get(), line.c_str());
    if (!l) throw Error(Errc::internal, "libcurl: out of memory");
    (void)list.release();
    list.reset(l);
  };
  for (const auto& [k, v] : headers) append(k + ": " + v);
  append("Expect:");  // no 100-continue round trip
  append("Accept:");

  const long timeout_s = std::max<long>(1, static_cast<long>((m_io_timeout.count() + 999) / 1000));
  api.easy_setopt(c, CURLOPT_URL, url.c_str());
  // The path is sent exactly as signed: S3 keys may hold "." and ".." segments.
  api.easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
  api.easy_setopt(c, CURLOPT_HTTPHEADER, list.get());
  api.easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  api.easy_setopt(c, CURLOPT_ERRORBUFFER, m_handle->error);
  api.easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(m_connect_timeout.count()));
  api.easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);  // less than 1 byte/s for timeout_s = stalled
  api.easy_setopt(c, CURLOPT_LOW_SPEED_TIME, timeout_s);
  api.easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
  api.easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
  api.easy_setopt(c, CURLOPT_WRITEDATA, &t);
  api.easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  api.easy_setopt(c, CURLOPT_HEADERDATA, &t);
  api.easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  api.easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
  api.easy_setopt(c, CURLOPT_XFERINFODATA, &t);
  if (method == "GET") {
    api.easy_setopt(c, CURLOPT_HTTPGET, 1L);
  } else if (method == "HEAD") {
    api.easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (method == "PUT" || method == "POST") {
    api.easy_setopt(c, CURLOPT_UPLOAD, 1L);
    api.easy_setopt(c, CURLOPT_READFUNCTION, on_read);
    api.easy_setopt(c, CURLOPT_READDATA, &t);
    api.easy_setopt(c, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(body.size()));
    if (method == "POST") api.easy_setopt(c, CURLOPT_CUSTOMREQUEST, "POST");
  } else {
    api.easy_setopt(c, CURLOPT_CUSTOMREQUEST, std::string(method).c_str());
  }
  m_handle->error[0] = 0;
  const CURLcode rc = api.easy_perform(c);
  if (rc == CURLE_ABORTED_BY_CALLBACK) util::throw_if_interrupted();
  if (t.too_large)
    throw Error(Errc::corrupt, "response body larger than the " + std::to_string(max_body) + " bytes expected");
  if (rc != CURLE_OK) {
    std::string why = m_handle->error[0] ? m_handle->error : api.easy_strerror(rc);
    throw TransientError(why);
  }
  api.easy_getinfo(c, CURLINFO_RESPONSE_CODE, &response.status);
  return response;
}

}  // namespace mithril::storage
