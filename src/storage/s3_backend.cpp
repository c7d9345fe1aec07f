#include "storage/s3_backend.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "mithril/error.hpp"
#include "storage/http.hpp"
#include "storage/remote_libs.hpp"
#include "storage/sigv4.hpp"
#include "storage/upload_token.hpp"
#include "util/blake3.hpp"
#include "util/interrupt.hpp"
#include "util/posix.hpp"


namespace mithril::storage {
namespace {

std::string decode_entities(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '&') {
      out += s[i];
      continue;
    }
    const auto semi = s.find(';', i);
    if (semi == std::string_view::npos) {
      out += s[i];
      continue;
    }
    const auto ent = s.substr(i + 1, semi - i - 1);
    if (ent == "amp") out += '&';
    else if (ent == "lt") out += '<';
    else if (ent == "gt") out += '>';
    else if (ent == "quot") out += '"';
    else if (ent == "apos") out += '\'';
    else if (!ent.empty() && ent[0] == '#') {
      unsigned long cp = 0;
      try {
        cp = ent.size() > 1 && (ent[1] == 'x' || ent[1] == 'X') ? std::stoul(std::string(ent.substr(2)), nullptr, 16)
                                                                 : std::stoul(std::string(ent.substr(1)));
      } catch (const std::exception&) {
        out += s.substr(i, semi - i + 1);
        i = semi;
        continue;
      }
      // UTF-8 encode.
      if (cp < 0x80) out += static_cast<char>(cp);
      else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      }
    } else {
      out += s.substr(i, semi - i + 1);
    }
    i = semi;
  }
  return out;
}

std::string xml_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string complete_xml(const std::vector<std::string>& etags) {
  std::string xml = "<CompleteMultipartUpload>";
  for (std::size_t i = 0; i < etags.size(); ++i)
    xml += fmt::format("<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>", i + 1, xml_escape(etags[i]));
  xml += "</CompleteMultipartUpload>";
  return xml;
}

std::string unquoted(std::string s) {
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') s = s.substr(1, s.size() - 2);
  return s;
}

// The ETag S3 gives the object a multipart upload makes: the MD5 of the
// parts' MD5s, "-" their count; empty when a part's ETag is not an MD5
// (some encryption modes).
std::string multipart_etag(const std::vector<std::string>& etags) {
  std::vector<std::uint8_t> digests(16 * etags.size());
  for (std::size_t i = 0; i < etags.size(); ++i)
    if (!util::parse_hex(unquoted(etags[i]), std::span(digests).subspan(16 * i, 16))) return {};
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  const libs::Crypto& c = libs::crypto();
  if (c.digest(digests.data(), digests.size(), md, &len, c.md5(), nullptr) != 1) return {};
  return util::to_hex(std::span<const std::uint8_t>(md, len)) + "-" + std::to_string(etags.size());
}

constexpr const char* k_empty_sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

struct Endpoint {
  std::string scheme;     // "http" / "https"
  std::string authority;  // host[:port], also the signed Host header
  std::string base_path;  // "" or "/some/base"
};

Endpoint parse_endpoint(const std::string& text) {
  const auto sep = text.find("://");
  if (sep == std::string::npos) throw Error(Errc::invalid_argument, "S3 endpoint '" + text + "' is not a URL (e.g. http://127.0.0.1:9000)");
  Endpoint e;
  e.scheme = text.substr(0, sep);
  if (e.scheme != "http" && e.scheme != "https")
    throw Error(Errc::invalid_argument, "S3 endpoint '" + text + "': scheme must be http or https");
  std::string rest = text.substr(sep + 3);
  const auto slash = rest.find('/');
  e.authority = rest.substr(0, slash);
  if (slash != std::string::npos) e.base_path = rest.substr(slash);
  while (!e.base_path.empty() && e.base_path.back() == '/') e.base_path.pop_back();
  if (e.authority.empty()) throw Error(Errc::invalid_argument, "S3 endpoint '" + text + "': no host");
  return e;
}

struct S3Error {
  std::string code, message;
};

S3Error parse_error(const HttpResponse& r) {
  const auto body = util::as_chars(r.body);
  return {xml_value(body, "Code"), xml_value(body, "Message")};
}

class S3Backend;

class S3Upload final : public Upload {
 public:
  S3Upload(S3Backend& backend, std::string key);
  ~S3Upload() override { abort(); }
  void write(util::ByteSpan data) override;
  void complete() override;
  std::string detach() override;
  void abort() noexcept override;
  std::uint64_t size() const noexcept override { return m_size; }

 private:
  void send_everything();
  struct Part {
    int number = 0;
    util::ByteVector data;
  };
  std::size_t part_size_for(int number) const;
  void start();
  void enqueue(util::ByteVector data);
  void worker();
  void stop_workers() noexcept;
  void rethrow_failure();

  S3Backend& m_backend;
  std::string m_key;
  std::string m_upload_id;
  util::ByteVector m_buffer;
  std::uint64_t m_size = 0;
  int m_next_part = 1;
  bool m_done = false;

  std::mutex m_mutex;
  std::condition_variable m_work_cv, m_space_cv;
  std::deque<Part> m_queue;
  std::size_t m_busy = 0;  // parts queued or being sent
  bool m_closing = false;
  std::exception_ptr m_failure;
  std::vector<std::string> m_etags;  // by part number - 1
  std::vector<std::thread> m_workers;
};

class S3Backend final : public Backend {
 public:
  S3Backend(const Url& url, const Options& options)
      : m_options(options), m_bucket(url.host),
        m_client(options.connect_timeout, options.io_timeout) {
    m_region = url.query.count("region") ? url.query.at("region") : options.region;
    if (m_region.empty()) m_region = "us-east-1";
    std::string endpoint = url.query.count("endpoint") ? url.query.at("endpoint") : options.endpoint;
    if (endpoint.empty()) {
      // AWS itself: virtual-hosted style unless the bucket name has dots
      // (which would break the TLS certificate's wildcard).
      m_path_style = m_bucket.find('.') != std::string::npos;
      endpoint = m_path_style ? "https://s3." + m_region + ".amazonaws.com"
                              : "https://" + m_bucket + ".s3." + m_region + ".amazonaws.com";
    } else {
      m_path_style = true;
    }
    m_endpoint = parse_endpoint(endpoint);
    m_name = m_endpoint.scheme + "://" + m_endpoint.authority + m_endpoint.base_path + (m_path_style ? "/" + m_bucket : "");
    m_credentials.access_key = util::env("AWS_ACCESS_KEY_ID");
    m_credentials.secret_key = util::env("AWS_SECRET_ACCESS_KEY");
    m_credentials.session_token = util::env("AWS_SESSION_TOKEN");
  }

  const std::string& endpoint() const noexcept override { return m_name; }
  const Options& options() const noexcept { return m_options; }

  std::optional<util::ByteVector> get(std::string_view key) override {
    return retry("GET " + std::string(key), [&]() -> std::optional<util::ByteVector> {
      auto r = request(m_client, "GET", key, {}, {}, {});
      if (r.status == 404) return miss_or_fail(r);
      expect_ok(r, "GET " + std::string(key));
      return std::move(r.body);
    });
  }

  std::optional<util::ByteVector> get_at_most(std::string_view key, std::uint64_t max_bytes) override {
    return retry("GET " + std::string(key), [&]() -> std::optional<util::ByteVector> {
      auto r = request(m_client, "GET", key, {}, {}, {}, {}, Interruptible::yes, max_bytes);
      if (r.status == 404) return miss_or_fail(r);
      expect_ok(r, "GET " + std::string(key));
      return std::move(r.body);
    });
  }

  std::optional<util::ByteVector> get_range(std::string_view key, std::uint64_t offset, std::uint64_t length) override {
    return get_range_if(key, offset, length, {});
  }

  // With a version, If-Match its ETag: 412 when the object was replaced.
  std::optional<util::ByteVector> get_range_if(std::string_view key, std::uint64_t offset, std::uint64_t length,
                                               std::string_view version) override {
    if (length == 0) {
      if (!stat(key)) return std::nullopt;
      return util::ByteVector{};
    }
    return retry("GET " + std::string(key) + " (range)", [&]() -> std::optional<util::ByteVector> {
      HeaderList extra{{"range", fmt::format("bytes={}-{}", offset, offset + length - 1)}};
      if (!version.empty()) extra.emplace_back("if-match", std::string(version));
      auto r = request(m_client, "GET", key, {}, extra, {});
      if (r.status == 404) return miss_or_fail(r);
      if (r.status == 412)
        throw Error(Errc::corrupt, fmt::format("{}: {} was replaced while it was being read (ETag {} when opened, "
                                               "{} now); read it again",
                                               m_name, key, version, r.header("etag").empty() ? "another" : r.header("etag")));
      if (r.status == 416) return util::ByteVector{};  // starts past the end
      expect_ok(r, "GET " + std::string(key));
      if (r.status == 200) {  // the server ignored the range: cut it ourselves
        if (offset >= r.body.size()) return util::ByteVector{};
        const auto end = std::min<std::uint64_t>(r.body.size(), offset + length);
        return util::ByteVector(r.body.begin() + static_cast<std::ptrdiff_t>(offset),
                                r.body.begin() + static_cast<std::ptrdiff_t>(end));
      }
      return std::move(r.body);
    });
  }

  // One GET with a suffix range: 206 and "Content-Range: bytes
  // first-last/size" (the whole object when it is shorter than asked), 200
  // where a server ignores ranges, 416 for an empty object (nothing to cut a
  // suffix from: RFC 9110 15.5.17), answered with stat().
  std::optional<ObjectTail> get_tail(std::string_view key, std::uint64_t length) override {
    if (length == 0) return Backend::get_tail(key, length);
    bool unsatisfiable = false;
    auto tail = retry("GET " + std::string(key) + " (tail)", [&]() -> std::optional<ObjectTail> {
      const HeaderList extra{{"range", fmt::format("bytes=-{}", length)}};
      auto r = request(m_client, "GET", key, {}, extra, {});
      if (r.status == 404) {
        miss_or_fail(r);
        return std::nullopt;
      }
      if (r.status == 416) {
        unsatisfiable = true;
        return std::nullopt;
      }
      expect_ok(r, "GET " + std::string(key));
      ObjectTail t;
      t.version = r.header("etag");
      if (r.status == 200) {  // the whole object
        t.size = r.body.size();
        if (t.size > length) r.body.erase(r.body.begin(), r.body.end() - static_cast<std::ptrdiff_t>(length));
        t.bytes = std::move(r.body);
        return t;
      }
      const auto range = r.header("content-range");
      std::uint64_t first = 0, last = 0, size = 0;
      if (std::sscanf(range.c_str(), "bytes %" SCNu64 "-%" SCNu64 "/%" SCNu64, &first, &last, &size) != 3 ||
          last + 1 != size || first > last || last - first + 1 != r.body.size() || r.body.size() > length)
        throw Error(Errc::remote_unavailable,
                    fmt::format("{}: GET {} (tail): an answer of {} bytes with Content-Range '{}'", m_name, key,
                                r.body.size(), range));
      t.size = size;
      t.bytes = std::move(r.body);
      return t;
    });
    if (unsatisfiable) return Backend::get_tail(key, length);
    return tail;
  }

  std::optional<ObjectInfo> stat(std::string_view key) override {
    return retry("HEAD " + std::string(key), [&]() -> std::optional<ObjectInfo> {
      auto r = request(m_client, "HEAD", key, {}, {}, {});
      if (r.status == 404) return std::nullopt;
      expect_ok(r, "HEAD " + std::string(key));
      const auto len = r.header("content-length");
      try {
        return ObjectInfo{std::stoull(len)};
      } catch (const std::exception&) {
        throw Error(Errc::remote_unavailable, m_name + ": HEAD " + std::string(key) + ": no Content-Length in the answer");
      }
    });
  }

  void put(std::string_view key, util::ByteSpan data) override {
    const auto hash = sigv4::sha256_hex(data);
    retry("PUT " + std::string(key), [&] {
      auto r = request(m_client, "PUT", key, {}, {}, data, hash);
      expect_ok(r, "PUT " + std::string(key));
    });
  }

  std::unique_ptr<Upload> begin_upload(std::string_view key) override {
    return std::make_unique<S3Upload>(*this, std::string(key));
  }

  // CompleteMultipartUpload; false when the upload does not exist
  // (NoSuchUpload: aborted, expired, or completed by an earlier call).
  bool complete_multipart(const std::string& key, const std::string& upload_id, const std::vector<std::string>& etags) {
    const std::string xml = complete_xml(etags);
    const sigv4::Pairs q{{"uploadId", upload_id}};
    return retry("CompleteMultipartUpload " + key, [&] {
      auto r = request(m_client, "POST", key, q, {{"content-type", "application/xml"}}, util::as_bytes(xml));
      if (r.status == 404 && parse_error(r).code == "NoSuchUpload") return false;
      expect_ok(r, "CompleteMultipartUpload " + key);
      // S3 may answer 200 and still report an error in the body.
      const auto body = util::as_chars(r.body);
      if (body.find("<Error>") != std::string_view::npos) {
        const auto code = xml_value(body, "Code");
        const std::string msg = "CompleteMultipartUpload " + key + ": " + code + ": " + xml_value(body, "Message");
        if (code == "InternalError" || code == "SlowDown") throw TransientError(msg);
        if (code == "NoSuchUpload") return false;
        throw Error(Errc::remote_unavailable, m_name + ": " + msg);
      }
      return true;
    });
  }

  // After NoSuchUpload: true when the object is what these parts make (its
  // ETag is theirs), i.e. the upload was completed already (an earlier call,
  // a retry whose first reply was lost).
  bool completed_before(const std::string& key, const std::vector<std::string>& etags) {
    const auto expected = multipart_etag(etags);
    if (expected.empty()) return false;
    const auto current = retry("HEAD " + key, [&]() -> std::string {
      auto r = request(m_client, "HEAD", key, {}, {}, {});
      if (r.status == 404) return {};
      expect_ok(r, "HEAD " + key);
      return unquoted(r.header("etag"));
    });
    return current == expected;
  }

  void complete_detached(std::string_view key_view, std::string_view token) override {
    const std::string key(key_view);
    const auto where = m_name + ": " + key;
    const auto j = parse_upload_token(token, "s3", key, m_name);
    const auto upload_id = token_string(j, "upload_id", where);
    if (!j.contains("etags") || !j["etags"].is_array() || j["etags"].empty())
      throw Error(Errc::invalid_argument, where + ": the upload token has no parts");
    std::vector<std::string> etags;
    for (const auto& e : j["etags"]) {
      if (!e.is_string() || e.get<std::string>().empty()) throw Error(Errc::invalid_argument, where + ": the upload token has a part without an ETag");
      etags.push_back(e.get<std::string>());
    }
    // ListParts first: an upload that is gone is then a clear answer (some
    // servers, moto among them, answer a CompleteMultipartUpload of an
    // aborted upload with HTTP 500 instead of NoSuchUpload).
    const bool open = retry("ListParts " + key, [&] {
      auto r = request(m_client, "GET", key, {{"max-parts", "1"}, {"uploadId", upload_id}}, {}, {});
      if (r.status == 404) return false;
      expect_ok(r, "ListParts " + key);
      return true;
    });
    if ((open && complete_multipart(key, upload_id, etags)) || completed_before(key, etags)) return;
    throw Error(Errc::not_found, where + ": the detached multipart upload " + upload_id +
                                     " no longer exists (aborted, e.g. by mithril.dcp.clean or the next save, or "
                                     "expired); nothing was published");
  }

  void remove(std::string_view key) override {
    retry("DELETE " + std::string(key), [&] {
      auto r = request(m_client, "DELETE", key, {}, {}, {});
      if (r.status == 404) return;
      expect_ok(r, "DELETE " + std::string(key));
    });
  }

  std::vector<std::string> list(std::string_view prefix) override {
    std::vector<std::string> keys;
    std::string token;
    for (;;) {
      sigv4::Pairs q{{"list-type", "2"}, {"prefix", std::string(prefix)}};
      if (!token.empty()) q.emplace_back("continuation-token", token);
      auto body = retry("LIST " + std::string(prefix), [&] {
        auto r = request(m_client, "GET", std::nullopt, q, {}, {});
        expect_ok(r, "LIST " + std::string(prefix));
        return std::string(util::as_chars(r.body));
      });
      for (auto& k : xml_values(body, "Key")) keys.push_back(std::move(k));
      if (xml_value(body, "IsTruncated") != "true") break;
      token = xml_value(body, "NextContinuationToken");
      if (token.empty()) break;
    }
    std::sort(keys.begin(), keys.end());
    return keys;
  }

  // ListMultipartUploads (paged by key and upload-id markers), then
  // AbortMultipartUpload of each.
  std::size_t abort_uploads(std::string_view prefix) override {
    std::vector<std::pair<std::string, std::string>> uploads;  // key, upload id
    std::string key_marker, id_marker;
    for (;;) {
      sigv4::Pairs q{{"prefix", std::string(prefix)}, {"uploads", ""}};
      if (!key_marker.empty()) q.emplace_back("key-marker", key_marker);
      if (!id_marker.empty()) q.emplace_back("upload-id-marker", id_marker);
      auto body = retry("ListMultipartUploads " + std::string(prefix), [&] {
        auto r = request(m_client, "GET", std::nullopt, q, {}, {});
        expect_ok(r, "ListMultipartUploads " + std::string(prefix));
        return std::string(util::as_chars(r.body));
      });
      for (const auto& upload : xml_values(body, "Upload"))
        uploads.emplace_back(xml_value(upload, "Key"), xml_value(upload, "UploadId"));
      if (xml_value(body, "IsTruncated") != "true") break;
      key_marker = xml_value(body, "NextKeyMarker");
      id_marker = xml_value(body, "NextUploadIdMarker");
      if (key_marker.empty()) break;
    }
    for (const auto& upload : uploads) {
      const std::string& key = upload.first;  // (a structured binding cannot be captured: clang 14)
      const sigv4::Pairs q{{"uploadId", upload.second}};
      retry("AbortMultipartUpload " + key, [&] {
        auto r = request(m_client, "DELETE", key, q, {}, {});
        if (r.status != 404) expect_ok(r, "AbortMultipartUpload " + key);  // 404: gone meanwhile
      });
    }
    return uploads.size();
  }

  std::unique_ptr<Backend> clone() const override {
    Url u;
    u.scheme = "s3";
    u.host = m_bucket;
    Options o = m_options;
    o.region = m_region;
    o.endpoint = m_endpoint.scheme + "://" + m_endpoint.authority + m_endpoint.base_path;
    auto b = std::make_unique<S3Backend>(u, o);
    b->m_path_style = m_path_style;
    b->m_name = m_name;
    b->m_credentials = m_credentials;
    return b;
  }

  template <typename F>
  auto retry(std::string what, F&& f) -> decltype(f()) {
    return with_retries(m_options.retry, m_name, what, std::forward<F>(f));
  }

  // One signed request. key = nullopt addresses the bucket itself.
  HttpResponse request(HttpClient& client, std::string_view method, std::optional<std::string_view> key,
                       const sigv4::Pairs& query, const HeaderList& extra, util::ByteSpan body,
                       std::string payload_hash = {}, Interruptible interruptible = Interruptible::yes,
                       std::uint64_t max_body = UINT64_MAX) const {
    std::string path = m_endpoint.base_path;
    if (m_path_style) path += "/" + sigv4::uri_encode(m_bucket, false);
    if (key) path += "/" + sigv4::uri_encode(*key, true);
    else if (!m_path_style) path += "/";
    if (path.empty()) path = "/";
    if (payload_hash.empty()) payload_hash = body.empty() ? k_empty_sha256 : sigv4::sha256_hex(body);

    const auto date = sigv4::amz_date_now();
    HeaderList headers{{"host", m_endpoint.authority}, {"x-amz-date", date}, {"x-amz-content-sha256", payload_hash}};
    if (!m_credentials.session_token.empty()) headers.emplace_back("x-amz-security-token", m_credentials.session_token);
    for (const auto& h : extra) headers.push_back(h);
    if (!m_credentials.access_key.empty()) {
      sigv4::Request req{std::string(method), path, query, headers, payload_hash};
      headers.emplace_back("authorization", sigv4::sign(req, m_credentials, m_region, "s3", date).authorization);
    }
    std::string url = m_endpoint.scheme + "://" + m_endpoint.authority + path;
    if (!query.empty()) url += "?" + sigv4::canonical_query(query);
    return client.perform(method, url, headers, body, interruptible, max_body);
  }

  // A 404 on GET: a missing key is a miss, a missing bucket a failure.
  std::optional<util::ByteVector> miss_or_fail(const HttpResponse& r) const {
    const auto e = parse_error(r);
    if (e.code == "NoSuchBucket")
      throw Error(Errc::remote_unavailable, m_name + ": bucket '" + m_bucket + "' does not exist");
    return std::nullopt;
  }

  // Throws for anything but 2xx: TransientError for statuses worth another
  // try, a clear final error for refused credentials, Error otherwise.
  void expect_ok(const HttpResponse& r, std::string_view what) const {
    if (r.status >= 200 && r.status < 300) return;
    const auto e = parse_error(r);
    std::string detail = fmt::format("HTTP {}", r.status);
    if (!e.code.empty()) detail += " " + e.code;
    if (!e.message.empty()) detail += ": " + e.message;
    if (r.status >= 500 || r.status == 429 || r.status == 408 || e.code == "RequestTimeout" || e.code == "SlowDown")
      throw TransientError(detail);  // with_retries names the call
    const bool auth = r.status == 401 || r.status == 403 || e.code == "ExpiredToken" || e.code == "InvalidToken" ||
                      e.code == "AuthorizationHeaderMalformed" || e.code == "InvalidAccessKeyId" ||
                      e.code == "SignatureDoesNotMatch";
    if (auth) {
      std::string hint = m_credentials.access_key.empty()
                             ? "no credentials set (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
                             : "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and AWS_REGION";
      throw Error(Errc::remote_unavailable, m_name + ": access denied (" + detail + "); " + hint);
    }
    if (e.code == "NoSuchBucket") throw Error(Errc::remote_unavailable, m_name + ": bucket '" + m_bucket + "' does not exist");
    throw Error(Errc::remote_unavailable, m_name + ": " + std::string(what) + ": " + detail);
  }

  HttpClient& client() { return m_client; }

 private:
  Options m_options;
  std::string m_bucket, m_region, m_name;
  Endpoint m_endpoint;
  bool m_path_style = true;
  sigv4::Credentials m_credentials;
  HttpClient m_client;
};

// ------------------------------------------------------------------ upload

S3Upload::S3Upload(S3Backend& backend, std::string key) : m_backend(backend), m_key(std::move(key)) {}

std::size_t S3Upload::part_size_for(int number) const {
  // 1000 parts of part_size, then 1000 of 2x, 3x, ...: 10000 parts hold 55x
  // 1000 parts (440 GiB with 8 MiB parts).
  const auto base = std::max<std::size_t>(m_backend.options().part_size, std::size_t{5} << 20);
  return base * static_cast<std::size_t>(1 + (number - 1) / 1000);
}

void S3Upload::start() {
  auto body = m_backend.retry("CreateMultipartUpload " + m_key, [&] {
    auto r = m_backend.request(m_backend.client(), "POST", m_key, {{"uploads", ""}}, {}, {});
    m_backend.expect_ok(r, "CreateMultipartUpload " + m_key);
    return std::string(util::as_chars(r.body));
  });
  m_upload_id = xml_value(body, "UploadId");
  if (m_upload_id.empty())
    throw Error(Errc::remote_unavailable, m_backend.endpoint() + ": CreateMultipartUpload " + m_key + ": no UploadId in the answer");
  const unsigned n = std::max(1u, m_backend.options().upload_parallelism);
  for (unsigned i = 0; i < n; ++i) m_workers.emplace_back([this] { worker(); });
}

void S3Upload::rethrow_failure() {
  std::exception_ptr f;
  {
    std::lock_guard lock(m_mutex);
    f = m_failure;
  }
  if (f) {
    abort();
    std::rethrow_exception(f);
  }
}

void S3Upload::enqueue(util::ByteVector data) {
  if (m_upload_id.empty()) start();
  std::unique_lock lock(m_mutex);
  const std::size_t limit = std::max(1u, m_backend.options().upload_parallelism);
  m_space_cv.wait(lock, [&] { return m_busy < limit || m_failure; });
  if (m_failure) {
    lock.unlock();
    rethrow_failure();
  }
  m_queue.push_back({m_next_part++, std::move(data)});
  ++m_busy;
  m_work_cv.notify_one();
}

void S3Upload::worker() {
  HttpClient client(m_backend.options().connect_timeout, m_backend.options().io_timeout);
  for (;;) {
    Part part;
    {
      std::unique_lock lock(m_mutex);
      m_work_cv.wait(lock, [&] { return m_closing || !m_queue.empty(); });
      if (m_queue.empty()) return;
      part = std::move(m_queue.front());
      m_queue.pop_front();
    }
    try {
      const auto hash = sigv4::sha256_hex(part.data);
      const sigv4::Pairs q{{"partNumber", std::to_string(part.number)}, {"uploadId", m_upload_id}};
      auto etag = m_backend.retry(fmt::format("UploadPart {} of {}", part.number, m_key), [&] {
        auto r = m_backend.request(client, "PUT", m_key, q, {}, part.data, hash);
        m_backend.expect_ok(r, "UploadPart " + m_key);
        auto e = r.header("etag");
        if (e.empty()) throw Error(Errc::remote_unavailable, m_backend.endpoint() + ": UploadPart " + m_key + ": no ETag in the answer");
        return e;
      });
      std::lock_guard lock(m_mutex);
      if (m_etags.size() < static_cast<std::size_t>(part.number)) m_etags.resize(static_cast<std::size_t>(part.number));
      m_etags[static_cast<std::size_t>(part.number) - 1] = std::move(etag);
      --m_busy;
      m_space_cv.notify_all();
    } catch (...) {
      std::lock_guard lock(m_mutex);
      if (!m_failure) m_failure = std::current_exception();
      m_busy -= 1 + m_queue.size();  // this part and the ones that will not be sent
      m_queue.clear();
      m_closing = true;
      m_space_cv.notify_all();
      m_work_cv.notify_all();
      return;
    }
  }
}

void S3Upload::stop_workers() noexcept {
  {
    std::lock_guard lock(m_mutex);
    m_closing = true;
  }
  m_work_cv.notify_all();
  for (auto& t : m_workers)
    if (t.joinable()) t.join();
  m_workers.clear();
}

void S3Upload::write(util::ByteSpan data) {
  if (m_done) throw Error(Errc::internal, m_backend.endpoint() + ": write after the upload ended");
  util::throw_if_interrupted();
  rethrow_failure();
  m_buffer.insert(m_buffer.end(), data.begin(), data.end());
  m_size += data.size();
  for (;;) {
    const std::size_t want = part_size_for(m_next_part);
    if (m_buffer.size() < want) break;
    util::ByteVector part(m_buffer.begin(), m_buffer.begin() + static_cast<std::ptrdiff_t>(want));
    m_buffer.erase(m_buffer.begin(), m_buffer.begin() + static_cast<std::ptrdiff_t>(want));
    try {
      enqueue(std::move(part));
    } catch (...) {
      abort();
      throw;
    }
  }
}

void S3Upload::complete() {
  if (m_done) throw Error(Errc::internal, m_backend.endpoint() + ": complete after the upload ended");
  try {
    util::throw_if_interrupted();
    if (m_upload_id.empty()) {  // everything fits in one part: a plain PUT
      m_backend.put(m_key, m_buffer);
      m_buffer.clear();
      m_done = true;
      return;
    }
    send_everything();
    if (!m_backend.complete_multipart(m_key, m_upload_id, m_etags) && !m_backend.completed_before(m_key, m_etags))
      throw Error(Errc::remote_unavailable, m_backend.endpoint() + ": CompleteMultipartUpload " + m_key +
                                                ": the upload vanished (aborted by another process?)");
    m_done = true;
  } catch (...) {
    abort();
    throw;
  }
}

// Every part stored (the buffer's rest as the last part); throws what a part failed with.
void S3Upload::send_everything() {
  if (!m_buffer.empty()) enqueue(std::move(m_buffer));
  m_buffer = {};
  {
    std::unique_lock lock(m_mutex);
    m_space_cv.wait(lock, [&] { return m_busy == 0 || m_failure; });
  }
  stop_workers();
  rethrow_failure();
}

// A multipart upload even when everything fits in one part (a plain PUT
// would publish it); no CompleteMultipartUpload: the token carries what it
// needs (the upload id and the parts' ETags), which any process may send.
std::string S3Upload::detach() {
  if (m_done) throw Error(Errc::internal, m_backend.endpoint() + ": detach after the upload ended");
  try {
    util::throw_if_interrupted();
    if (m_upload_id.empty()) {
      start();
      enqueue(std::move(m_buffer));  // the one part, possibly short
      m_buffer = {};
    }
    send_everything();
  } catch (...) {
    abort();
    throw;
  }
  m_done = true;  // left for complete_detached(), or for abort_uploads()
  auto token = new_upload_token("s3", m_key, m_size);
  token["upload_id"] = m_upload_id;
  token["etags"] = m_etags;
  return token.dump();
}

void S3Upload::abort() noexcept {
  if (m_done) return;
  m_done = true;
  stop_workers();
  m_buffer = {};
  if (m_upload_id.empty()) return;
  try {
    const sigv4::Pairs q{{"uploadId", m_upload_id}};
    RetryPolicy quick = m_backend.options().retry;
    quick.attempts = std::min(quick.attempts, 3);
    with_retries(
        quick, m_backend.endpoint(), "AbortMultipartUpload " + m_key,
        [&] {
          auto r = m_backend.request(m_backend.client(), "DELETE", m_key, q, {}, {}, {}, Interruptible::no);
          if (r.status != 404) m_backend.expect_ok(r, "AbortMultipartUpload " + m_key);
        },
        [](std::chrono::milliseconds d) { std::this_thread::sleep_for(d); });
  } catch (...) {
    // Best effort: parts of an upload that is never completed are not an
    // object; a bucket lifecycle rule removes them.
  }
}

}  // namespace

std::string xml_value(std::string_view xml, std::string_view tag) {
  const std::string open = "<" + std::string(tag) + ">", close = "</" + std::string(tag) + ">";
  const auto a = xml.find(open);
  if (a == std::string_view::npos) return {};
  const auto b = xml.find(close, a + open.size());
  if (b == std::string_view::npos) return {};
  return decode_entities(xml.substr(a + open.size(), b - a - open.size()));
}

std::vector<std::string> xml_values(std::string_view xml, std::string_view tag) {
  const std::string open = "<" + std::string(tag) + ">", close = "</" + std::string(tag) + ">";
  std::vector<std::string> out;
  std::size_t pos = 0;
  for (;;) {
    const auto a = xml.find(open, pos);
    if (a == std::string_view::npos) break;
    const auto b = xml.find(close, a + open.size());
    if (b == std::string_view::npos) break;
    out.push_back(decode_entities(xml.substr(a + open.size(), b - a - open.size())));
    pos = b + close.size();
  }
  return out;
}

std::unique_ptr<Backend> make_s3_backend(const Url& url, const Options& options) {
  return std::make_unique<S3Backend>(url, options);
}

}  // namespace mithril::storage
