// storage/backend.cpp — open(): the one place that maps URL schemes to
// backends, and the environment's say on options.
#include "storage/backend.hpp"

#include <algorithm>
#include <cstdlib>

#include <fmt/core.h>

#include "mithril/error.hpp"
#include "storage/file_backend.hpp"
#include "storage/redis_backend.hpp"
#include "storage/s3_backend.hpp"
#include "storage/url.hpp"
#include "util/posix.hpp"

namespace mithril::storage {
namespace {

// A non-negative number no larger than `max` (so the integer casts below stay
// defined: "inf", "nan" and 1e30 are refused, not cast).
double env_number(const char* name, double fallback, double max) {
  const auto v = util::env(name);
  if (v.empty()) return fallback;
  try {
    std::size_t pos = 0;
    const double d = std::stod(v, &pos);
    if (pos != v.size() || !(d >= 0 && d <= max)) throw std::invalid_argument(v);
    return d;
  } catch (const std::exception&) {
    throw Error(Errc::invalid_argument,
                std::string(name) + "='" + v + "' is not a number from 0 to " + fmt::format("{:g}", max));
  }
}

}  // namespace

std::optional<util::ByteVector> Backend::get_at_most(std::string_view key, std::uint64_t max_bytes) {
  auto v = get(key);
  if (v && v->size() > max_bytes)
    throw Error(Errc::corrupt, endpoint() + ": " + std::string(key) + ": " + std::to_string(v->size()) +
                                   " bytes, larger than the " + std::to_string(max_bytes) + " expected");
  return v;
}

std::optional<ObjectTail> Backend::get_tail(std::string_view key, std::uint64_t length) {
  const auto info = stat(key);
  if (!info) return std::nullopt;
  ObjectTail tail;
  tail.size = info->size;
  const std::uint64_t n = std::min(length, info->size);
  auto bytes = get_range(key, info->size - n, n);
  if (!bytes) return std::nullopt;  // removed in between
  if (bytes->size() != n)
    throw Error(Errc::corrupt, endpoint() + ": " + std::string(key) + ": changed size while being read");
  tail.bytes = std::move(*bytes);
  return tail;
}

Options options_from_env(Options o) {
  if (o.endpoint.empty()) o.endpoint = util::env("AWS_ENDPOINT_URL_S3");
  if (o.endpoint.empty()) o.endpoint = util::env("AWS_ENDPOINT_URL");
  if (o.region.empty()) o.region = util::env("AWS_REGION");
  if (o.region.empty()) o.region = util::env("AWS_DEFAULT_REGION");
  const double timeout = env_number("MITHRIL_REMOTE_TIMEOUT", -1, 1e9);
  if (timeout > 0) {
    o.io_timeout = std::chrono::milliseconds(static_cast<std::int64_t>(timeout * 1000));
    o.connect_timeout = std::min(o.connect_timeout, o.io_timeout);
  }
  const double retries = env_number("MITHRIL_REMOTE_RETRIES", -1, 1000);
  if (retries >= 1) o.retry.attempts = static_cast<int>(retries);
  const double part = env_number("MITHRIL_REMOTE_PART_SIZE", -1, 5.0 * 1024 * 1024 * 1024);
  if (part > 0) o.part_size = static_cast<std::size_t>(part);
  return o;
}

Location open(std::string_view url_text, const Options& options) {
  const Url url = parse_url(url_text);
  Location loc;
  loc.url = url.redacted();
  if (url.scheme == "file") {
    const bool absolute = !url.key.empty() && url.key.front() == '/';
    loc.backend = make_file_backend(absolute ? std::filesystem::path("/") : std::filesystem::current_path());
    std::string key = url.key;
    while (!key.empty() && key.front() == '/') key.erase(key.begin());
    loc.key = key;
  } else if (url.scheme == "redis") {
    loc.backend = make_redis_backend(url, options);
    loc.key = url.key;
  } else {
    loc.backend = make_s3_backend(url, options);
    loc.key = url.key;
  }
  return loc;
}

}  // namespace mithril::storage
