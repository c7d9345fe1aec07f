#include "storage/url.hpp"

#include <algorithm>
#include <charconv>

#include "mithril/error.hpp"

namespace mithril::storage {
namespace {

[[noreturn]] void bad(std::string_view url, std::string_view what) {
  throw Error(Errc::invalid_argument, redact_url(url) + ": " + std::string(what));
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

template <typename T>
bool parse_number(std::string_view s, T& out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

}  // namespace

std::string percent_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size()) {
      const int hi = hex_value(text[i + 1]), lo = hex_value(text[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        continue;
      }
    }
    out += text[i];
  }
  return out;
}

std::string redact_url(std::string_view text) {
  const auto sep = text.find("://");
  if (sep == std::string_view::npos) return std::string(text);
  const auto start = sep + 3;
  const auto end = std::min(text.find_first_of("/?", start), text.size());
  const auto at = text.substr(start, end - start).rfind('@');
  if (at == std::string_view::npos) return std::string(text);
  return std::string(text.substr(0, start)) + ":***" + std::string(text.substr(start + at));
}

bool is_url(std::string_view text) noexcept {
  for (std::string_view s : {"file://", "redis://", "s3://"})
    if (text.substr(0, s.size()) == s) return true;
  return false;
}

std::string Url::redacted() const {
  if (scheme == "file") return "file://" + key;
  std::string s = scheme + "://";
  if (scheme == "redis") {
    if (!password.empty()) s += ":***@";
    s += host;
    if (port) s += ":" + std::to_string(port);
    s += "/" + std::to_string(db);
    if (!key.empty()) s += "/" + key;
    return s;
  }
  s += host;
  if (!key.empty()) s += "/" + key;
  return s;
}

Url parse_url(std::string_view text) {
  const auto sep = text.find("://");
  if (sep == std::string_view::npos || !is_url(text))
    bad(text, "not a storage URL (expected file://, redis:// or s3://)");
  Url u;
  u.scheme = std::string(text.substr(0, sep));
  std::string_view rest = text.substr(sep + 3);
  if (u.scheme == "file") {
    if (rest.empty()) bad(text, "empty path");
    u.key = percent_decode(rest);
    return u;
  }

  // Query (s3 only).
  std::string_view query;
  if (const auto q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  while (!query.empty()) {
    const auto amp = query.find('&');
    const auto item = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (item.empty()) continue;
    const auto eq = item.find('=');
    const auto name = percent_decode(item.substr(0, eq));
    const auto value = eq == std::string_view::npos ? std::string() : percent_decode(item.substr(eq + 1));
    if (u.scheme != "s3" || (name != "endpoint" && name != "region"))
      bad(text, "unknown URL parameter '" + name + "'");
    u.query[name] = value;
  }

  const auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);

  if (u.scheme == "s3") {
    if (authority.empty()) bad(text, "no bucket name");
    u.host = std::string(authority);
    u.key = percent_decode(path);
    return u;
  }

  // redis://[:password@]host[:port][/db[/key]]
  if (const auto at = authority.rfind('@'); at != std::string_view::npos) {
    auto userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    const auto colon = userinfo.find(':');
    u.password = percent_decode(colon == std::string_view::npos ? userinfo : userinfo.substr(colon + 1));
  }
  if (!authority.empty() && authority.front() == '[') {  // [IPv6]:port
    const auto close = authority.find(']');
    if (close == std::string_view::npos) bad(text, "unterminated IPv6 address");
    u.host = std::string(authority.substr(1, close - 1));
    authority = authority.substr(close + 1);
    if (!authority.empty() && authority.front() != ':') bad(text, "garbage after IPv6 address");
    if (!authority.empty()) authority = authority.substr(1);
    else authority = {};
    if (!authority.empty() && !parse_number(authority, u.port)) bad(text, "bad port");
  } else {
    const auto colon = authority.rfind(':');
    u.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos && !parse_number(authority.substr(colon + 1), u.port)) bad(text, "bad port");
  }
  if (u.host.empty()) u.host = "127.0.0.1";
  if (!path.empty()) {
    const auto s2 = path.find('/');
    const auto db = path.substr(0, s2);
    if (!db.empty() && (!parse_number(db, u.db) || u.db < 0)) bad(text, "database must be a number, not '" + std::string(db) + "'");
    if (s2 != std::string_view::npos) u.key = percent_decode(path.substr(s2 + 1));
  }
  return u;
}

}  // namespace mithril::storage
