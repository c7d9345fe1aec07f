// storage/sigv4.hpp — AWS Signature Version 4 for S3 requests.
//
// Written from the AWS specification ("Signature Version 4 signing process":
// canonical request -> string to sign -> signing key -> signature). Unit
// tests check it against the published examples (the AWS SigV4 test suite
// and the S3 API reference's GET/PUT examples). SHA-256 and HMAC come from
// OpenSSL's libcrypto.
//
//   CanonicalRequest = Method \n CanonicalURI \n CanonicalQuery \n
//                      CanonicalHeaders \n SignedHeaders \n PayloadHash
//   StringToSign     = "AWS4-HMAC-SHA256" \n AmzDate \n Scope \n hex(SHA256(CanonicalRequest))
//   Scope            = Date/Region/Service/"aws4_request"
//   SigningKey       = HMAC(HMAC(HMAC(HMAC("AWS4" + Secret, Date), Region), Service), "aws4_request")
//   Signature        = hex(HMAC(SigningKey, StringToSign))
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/bytes.hpp"

namespace mithril::storage::sigv4 {

using Sha256 = std::array<std::byte, 32>;

Sha256 sha256(util::ByteSpan data);
std::string sha256_hex(util::ByteSpan data);
Sha256 hmac_sha256(util::ByteSpan key, std::string_view message);
std::string hex(util::ByteSpan bytes);

// RFC 3986 percent-encoding of everything but unreserved characters
// (A-Z a-z 0-9 - _ . ~), uppercase hex; '/' kept when keep_slash (paths).
std::string uri_encode(std::string_view text, bool keep_slash);

struct Credentials {
  std::string access_key;
  std::string secret_key;
  std::string session_token;  // sent as x-amz-security-token when set
};

using Pairs = std::vector<std::pair<std::string, std::string>>;

struct Request {
  std::string method;        // "GET", "PUT", ...
  std::string path;          // canonical URI: already percent-encoded, starts with '/'
  Pairs query;               // names and values as sent, not yet encoded
  Pairs headers;             // the headers to sign (host and x-amz-date at least)
  std::string payload_hash;  // hex SHA-256 of the body, or "UNSIGNED-PAYLOAD"
};

struct Signature {
  std::string canonical_request;
  std::string string_to_sign;
  std::string signature;      // hex
  std::string authorization;  // value of the Authorization header
};

// amz_date is "YYYYMMDD'T'HHMMSS'Z'" (UTC).
Signature sign(const Request& request, const Credentials& credentials, std::string_view region,
               std::string_view service, std::string_view amz_date);

// "a=1&b=2": names and values encoded, sorted by name then value.
std::string canonical_query(const Pairs& query);

// The current time as an x-amz-date value.
std::string amz_date_now();

}  // namespace mithril::storage::sigv4
