// storage/url.hpp — the URLs that name object stores and objects in them.
//
//   file://PATH                      a local directory or file; PATH absolute
//                                    (file:///srv/x) or relative to the
//                                    working directory (file://x)
//   redis://[:PASSWORD@]HOST[:PORT][/DB[/KEY...]]
//                                    a Redis database (DB a number, default 0)
//                                    and an optional key or key prefix
//   s3://BUCKET[/KEY...][?endpoint=URL&region=R]
//                                    an S3-compatible bucket and a key or key
//                                    prefix; endpoint and region override
//                                    AWS_ENDPOINT_URL and AWS_REGION
//
// A URL names a store (scheme + authority) and a key inside it; the key of a
// cache remote is a prefix under which the cache lays out its objects.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace mithril::storage {

struct Url {
  std::string scheme;     // "file", "redis", "s3"
  std::string host;       // redis host, s3 bucket; empty for file
  std::uint16_t port = 0; // redis; 0 = default
  std::string password;   // redis AUTH
  int db = 0;             // redis database number
  std::string key;        // object key or prefix, no leading '/' (file: the path)
  std::map<std::string, std::string> query;  // percent-decoded

  // The URL without its password, for messages.
  std::string redacted() const;
};

// The text of a URL with any password (user information before '@' in the
// authority) replaced by ":***"; for messages about URLs that may not parse.
std::string redact_url(std::string_view text);

// True when text starts with a scheme this library serves ("file://",
// "redis://", "s3://"); anything else is a local path.
bool is_url(std::string_view text) noexcept;

// Parses a URL of a known scheme. Throws Error(invalid_argument) naming the
// URL and what is wrong (unknown scheme, bad port, bad database number,
// empty bucket, unknown query parameter).
Url parse_url(std::string_view text);

// RFC 3986 percent-decoding ("%2F" -> "/"); malformed escapes are kept as is.
std::string percent_decode(std::string_view text);

}  // namespace mithril::storage
