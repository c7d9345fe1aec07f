// libFuzzer target for the cache entry manifest (cache/manifest.hpp), the
// JSON every bundle member, remote entry and index row is trusted through.
// Built and run by scripts/fuzz; replayed by ctest.
//
// Contract checked: Manifest::parse either throws Error(corrupt, or
// unsupported for another manifest version) or returns
// a manifest whose layout matches its kind, whose paths are unique, and whose
// canonical bytes parse back to the same manifest (and serialize to the same
// bytes).
#include <cstddef>
#include <cstdint>
#include <set>

#include "cache/manifest.hpp"
#include "fuzz_common.hpp"
#include "mithril/error.hpp"

using namespace mithril;
using mithril::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  cache::Manifest m;
  try {
    m = cache::Manifest::parse(fuzz::as_span(data, size), "fuzz manifest");
  } catch (const Error& e) {
    // corrupt, or unsupported for a well-formed manifest of another version
    // (regressions/redis_blob/crash-6496eb85...: "version":0).
    check(e.code() == Errc::corrupt || e.code() == Errc::unsupported);
    return 0;
  }
  check(cache::layout_matches_kind(m.kind, m.root, m.id));
  std::set<std::string> paths;
  for (const auto& f : m.files) {
    check(!f.path.empty() && f.path.front() != '/');
    check(paths.insert(f.path).second);
  }
  const auto bytes = m.serialize();
  const auto again = cache::Manifest::parse(bytes, "round trip");  // must not throw
  check(again.kind == m.kind && again.id == m.id && again.root == m.root && again.key == m.key);
  check(again.files.size() == m.files.size());
  check(again.serialize() == bytes);
  return 0;
}
