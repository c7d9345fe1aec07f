// util/json_number.hpp — reading integers out of untrusted JSON.
//
// nlohmann::json's get<Integer>() converts a floating-point value with a
// plain static_cast, which is undefined behaviour when the value is out of the
// integer's range (UBSan: "1.88889e+44 is outside the range of representable
// values of type 'int'", found by the manifest fuzz target), and it silently
// wraps a negative integer into an unsigned one. Every integer Mithril reads
// from a file, a remote blob or a spec goes through these helpers instead:
// they accept JSON integers only, in range, and say "no" for anything else.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>

#include <nlohmann/json.hpp>

namespace mithril::util {

// A non-negative JSON integer ("size": 12), or nothing (missing, negative,
// fractional, exponent form, string, ...).
inline std::optional<std::uint64_t> json_u64(const nlohmann::json& v) {
  if (!v.is_number_unsigned()) return std::nullopt;
  return v.get<std::uint64_t>();
}

// A JSON integer that fits int64, or nothing.
inline std::optional<std::int64_t> json_i64(const nlohmann::json& v) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return std::nullopt;
    return static_cast<std::int64_t>(u);
  }
  if (!v.is_number_integer()) return std::nullopt;
  return v.get<std::int64_t>();
}

// The member `key` of object `j` as a non-negative integer, or nothing when
// `j` is not an object, lacks the key, or holds anything else there.
inline std::optional<std::uint64_t> json_u64(const nlohmann::json& j, const char* key) {
  if (!j.is_object()) return std::nullopt;
  const auto it = j.find(key);
  if (it == j.end()) return std::nullopt;
  return json_u64(*it);
}

// True when `j` is an object whose member `key` is exactly the integer `want`
// (format-version checks: "version": 1.0, "1" or 1e300 are not version 1).
inline bool json_has_u64(const nlohmann::json& j, const char* key, std::uint64_t want) {
  return json_u64(j, key) == want;
}

}  // namespace mithril::util
