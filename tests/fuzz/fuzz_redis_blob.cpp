// libFuzzer target for what a Redis (or S3, or directory) remote hands back
// for a cache entry (cache/remote_tier.cpp): the raw reply, parsed by hiredis
// exactly as off the socket, then its string payload decoded as a blob image
// (cache/content_store.hpp decode_blob: "MTHB" header, raw or zstd) and as
// an entry manifest. Built and run by scripts/fuzz; replayed by ctest.
//
// Input: a RESP reply (e.g. "$5\r\nhello\r\n"); when it does not parse as
// one, the whole input is used as the value.
//
// Contract checked: decode_blob returns a value only when it hashes to the
// expected digest (never a wrong one); a blob image made by encode_blob of
// the value decodes back to it; Manifest::parse throws Error(corrupt or
// unsupported) or
// succeeds; nothing else escapes.
#include <hiredis/hiredis.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>

#include "cache/content_store.hpp"
#include "cache/manifest.hpp"
#include "fuzz_common.hpp"
#include "mithril/error.hpp"
#include "util/blake3.hpp"

using namespace mithril;
using mithril::fuzz::check;

namespace {

struct ReaderDeleter {
  void operator()(redisReader* r) const noexcept { redisReaderFree(r); }
};
struct ReplyDeleter {
  void operator()(void* r) const noexcept { freeReplyObject(r); }
};

// The bytes of the first string reply in `input`, or nullopt.
std::optional<util::ByteVector> reply_value(const std::uint8_t* data, std::size_t size) {
  std::unique_ptr<redisReader, ReaderDeleter> reader(redisReaderCreate());
  if (!reader) return std::nullopt;
  if (redisReaderFeed(reader.get(), reinterpret_cast<const char*>(data), size) != REDIS_OK) return std::nullopt;
  void* raw = nullptr;
  if (redisReaderGetReply(reader.get(), &raw) != REDIS_OK || !raw) return std::nullopt;
  std::unique_ptr<void, ReplyDeleter> reply(raw);
  const auto* r = static_cast<const redisReply*>(raw);
  if (r->type != REDIS_REPLY_STRING) return std::nullopt;
  const auto* p = reinterpret_cast<const std::byte*>(r->str);
  return util::ByteVector(p, p + r->len);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  util::ByteVector value;
  if (auto v = reply_value(data, size)) {
    value = std::move(*v);
  } else {
    value.assign(reinterpret_cast<const std::byte*>(data), reinterpret_cast<const std::byte*>(data) + size);
  }

  // As a blob image: never a value with the wrong digest.
  util::Digest expected{};
  if (value.size() >= 32) std::memcpy(expected.data(), value.data() + value.size() - 32, 32);
  if (const auto raw = cache::decode_blob(value, expected)) check(util::blake3(*raw) == expected);

  // As the raw bytes of a file: its blob image decodes back to it.
  const auto digest = util::blake3(value);
  for (auto c : {cache::Compression::automatic, cache::Compression::none}) {
    const auto image = cache::encode_blob(value, c);
    const auto back = cache::decode_blob(image, digest);
    check(back && *back == value);
  }

  // As an entry's manifest.
  try {
    (void)cache::Manifest::parse(value, "fuzz remote entry");
  } catch (const Error& e) {
    // corrupt, or unsupported for a well-formed manifest of another version
    // (regressions/redis_blob/crash-6496eb85...: "version":0).
    check(e.code() == Errc::corrupt || e.code() == Errc::unsupported);
  }
  return 0;
}
