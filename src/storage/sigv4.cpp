#include "storage/sigv4.hpp"

#include <algorithm>
#include <ctime>

#include "mithril/error.hpp"
#include "storage/remote_libs.hpp"

namespace mithril::storage::sigv4 {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// Header values: trimmed, runs of spaces collapsed to one.
std::string trim_value(std::string_view v) {
  std::string out;
  bool space = false;
  for (char c : v) {
    if (c == ' ' || c == '\t') {
      space = true;
      continue;
    }
    if (space && !out.empty()) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

}  // namespace

Sha256 sha256(util::ByteSpan data) {
  Sha256 out{};
  unsigned int len = 0;
  const libs::Crypto& c = libs::crypto();
  if (c.digest(data.data(), data.size(), reinterpret_cast<unsigned char*>(out.data()), &len, c.sha256(), nullptr) != 1)
    throw Error(Errc::internal, "SHA-256 failed (libcrypto)");
  return out;
}

std::string hex(util::ByteSpan bytes) {
  static constexpr char k_digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (auto b : bytes) {
    out += k_digits[static_cast<unsigned>(b) >> 4];
    out += k_digits[static_cast<unsigned>(b) & 15];
  }
  return out;
}

std::string sha256_hex(util::ByteSpan data) { return hex(sha256(data)); }

Sha256 hmac_sha256(util::ByteSpan key, std::string_view message) {
  Sha256 out{};
  unsigned int len = 0;
  const libs::Crypto& c = libs::crypto();
  if (!c.hmac(c.sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(message.data()),
            message.size(), reinterpret_cast<unsigned char*>(out.data()), &len))
    throw Error(Errc::internal, "HMAC-SHA256 failed (libcrypto)");
  return out;
}

std::string uri_encode(std::string_view text, bool keep_slash) {
  static constexpr char k_digits[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    const bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
                            c == '_' || c == '.' || c == '~';
    if (unreserved || (keep_slash && c == '/')) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += k_digits[c >> 4];
      out += k_digits[c & 15];
    }
  }
  return out;
}

std::string canonical_query(const Pairs& query) {
  Pairs enc;
  enc.reserve(query.size());
  for (const auto& [k, v] : query) enc.emplace_back(uri_encode(k, false), uri_encode(v, false));
  std::sort(enc.begin(), enc.end());
  std::string out;
  for (const auto& [k, v] : enc) {
    if (!out.empty()) out += '&';
    out += k;
    out += '=';
    out += v;
  }
  return out;
}

Signature sign(const Request& request, const Credentials& credentials, std::string_view region,
               std::string_view service, std::string_view amz_date) {
  if (amz_date.size() != 16) throw Error(Errc::invalid_argument, "sigv4: bad x-amz-date '" + std::string(amz_date) + "'");
  // Canonical headers: lowercase names, sorted; repeated names joined by ','.
  Pairs headers;
  for (const auto& [k, v] : request.headers) headers.emplace_back(lower(k), trim_value(v));
  std::stable_sort(headers.begin(), headers.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::string canonical_headers, signed_headers;
  for (std::size_t i = 0; i < headers.size();) {
    std::string value = headers[i].second;
    std::size_t j = i + 1;
    for (; j < headers.size() && headers[j].first == headers[i].first; ++j) value += "," + headers[j].second;
    canonical_headers += headers[i].first + ":" + value + "\n";
    if (!signed_headers.empty()) signed_headers += ';';
    signed_headers += headers[i].first;
    i = j;
  }

  Signature s;
  s.canonical_request = request.method + "\n" + request.path + "\n" + canonical_query(request.query) + "\n" +
                        canonical_headers + "\n" + signed_headers + "\n" + request.payload_hash;
  const std::string date(amz_date.substr(0, 8));
  const std::string scope = date + "/" + std::string(region) + "/" + std::string(service) + "/aws4_request";
  s.string_to_sign = "AWS4-HMAC-SHA256\n" + std::string(amz_date) + "\n" + scope + "\n" +
                     sha256_hex(util::as_bytes(s.canonical_request));

  const std::string secret = "AWS4" + credentials.secret_key;
  auto k = hmac_sha256(util::as_bytes(secret), date);
  k = hmac_sha256(k, region);
  k = hmac_sha256(k, service);
  k = hmac_sha256(k, "aws4_request");
  s.signature = hex(hmac_sha256(k, s.string_to_sign));
  s.authorization = "AWS4-HMAC-SHA256 Credential=" + credentials.access_key + "/" + scope +
                    ", SignedHeaders=" + signed_headers + ", Signature=" + s.signature;
  return s;
}

std::string amz_date_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[17];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

}  // namespace mithril::storage::sigv4
