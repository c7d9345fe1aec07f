// libFuzzer target for cache bundle import (Store::import_bundle over
// cache/tar_stream.hpp's TarReader: ustar + pax headers, member limits, the
// bundle header and trailer, entry manifests, digests, placement). Built and
// run by scripts/fuzz; replayed by ctest.
//
// Input: the *uncompressed* tar stream (so mutations hit tar structure, not
// zstd); the target wraps it in a zstd frame as `mithril cache export` does
// and imports it into a private store whose member limit is 1 MiB (the
// allocation limits themselves are tested with crafted inputs elsewhere).
//
// Contract checked: import either succeeds or throws mithril::Error; no other
// exception, crash or sanitizer report.
#include <zstd.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "fuzz_common.hpp"
#include "mithril/cache.hpp"
#include "mithril/error.hpp"

using namespace mithril;

namespace {

cache::Store& store() {
  static std::unique_ptr<cache::Store> s = [] {
    cache::CacheConfig config;
    config.root = fuzz::scratch_dir() / "store";
    config.max_import_member = std::uint64_t{1} << 20;
    return std::make_unique<cache::Store>(config);
  }();
  return *s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  util::ByteVector z(ZSTD_compressBound(size));
  const std::size_t n = ZSTD_compress(z.data(), z.size(), data, size, 1);
  fuzz::check(!ZSTD_isError(n));
  z.resize(n);
  const auto path = fuzz::scratch_dir() / "input.tar.zst";
  fuzz::write_file(path, z);
  try {
    (void)store().import_bundle(path);
  } catch (const Error&) {
  }
  return 0;
}
