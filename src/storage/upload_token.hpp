// storage/upload_token.hpp — the token of a detached upload (Upload::detach,
// Backend::complete_detached): a small JSON object
//
//   {"mithril_upload": 1, "store": "s3"|"redis"|"file", "key": KEY, "size": N, ...}
//
// plus what the store needs to publish the object: S3's "upload_id" and
// "etags" (by part number - 1), the "temp" name of a Redis key or a local
// temporary file.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "mithril/error.hpp"
#include "util/json_number.hpp"

namespace mithril::storage {

inline nlohmann::json new_upload_token(std::string_view store, std::string_view key, std::uint64_t size) {
  return {{"mithril_upload", 1}, {"store", store}, {"key", key}, {"size", size}};
}

// The token, checked to be one of `store`'s for `key`; Error(invalid_argument) otherwise.
inline nlohmann::json parse_upload_token(std::string_view token, std::string_view store, std::string_view key,
                                         const std::string& endpoint) {
  const auto where = endpoint + ": " + std::string(key);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(token);
  } catch (const nlohmann::json::exception&) {
    throw Error(Errc::invalid_argument, where + ": not an upload token");
  }
  if (!j.is_object() || !util::json_has_u64(j, "mithril_upload", 1) || !j.contains("key") || !j["key"].is_string() ||
      !j.contains("store") || !j["store"].is_string() || !j.contains("size") || !j["size"].is_number_unsigned())
    throw Error(Errc::invalid_argument, where + ": not an upload token");
  if (j["store"].get<std::string>() != store)
    throw Error(Errc::invalid_argument, where + ": the upload token is of a " + j["store"].get<std::string>() +
                                            " upload, not of this " + std::string(store) + " store");
  if (j["key"].get<std::string>() != key)
    throw Error(Errc::invalid_argument, where + ": the upload token is for another object (" +
                                            j["key"].get<std::string>() + ")");
  return j;
}

// A string member of a parsed token; Error(invalid_argument) when absent.
inline std::string token_string(const nlohmann::json& j, const char* name, const std::string& where) {
  if (!j.contains(name) || !j[name].is_string())
    throw Error(Errc::invalid_argument, where + ": the upload token has no " + name);
  return j[name].get<std::string>();
}

}  // namespace mithril::storage
