// libFuzzer target for the safetensors reader (and, through a round trip, the
// writer). Built and run by scripts/fuzz
// (CMake option MITHRIL_FUZZ); replayed by ctest (standalone_main.cpp).
//
// Contract checked: parse_safetensors either throws mithril::Error or returns
// a header whose tensors tile the data region exactly; anything it accepts
// passes looks_like_safetensors, and re-serializing what it returned parses
// back to the same tensors and metadata. A crash, a sanitizer report or a
// trap is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "formats/safetensors.hpp"
#include "mithril/error.hpp"

namespace {

using namespace mithril;
using namespace mithril::formats;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

void round_trip(util::ByteSpan file, const SafetensorsHeader& h) {
  std::vector<TensorView> views;
  for (const auto& t : h.tensors) views.push_back({t.name, t.dtype, t.shape, file.subspan(h.data_offset + t.begin, t.size())});
  std::vector<std::size_t> order;
  util::ByteVector again;
  try {
    again = build_safetensors_header(views, h.metadata, &order);
  } catch (const Error&) {
    return;  // e.g. the array form of an entry grew past the header limit
  }
  for (auto i : order) util::append_bytes(again, views[i].data);
  const auto h2 = parse_safetensors(again, "round trip");  // must not throw
  check(h2.metadata == h.metadata);
  check(h2.tensors.size() == h.tensors.size());
  for (const auto& t : h.tensors) {
    bool found = false;
    for (const auto& u : h2.tensors) {
      if (u.name != t.name) continue;
      found = true;
      check(u.dtype == t.dtype && u.shape == t.shape && u.size() == t.size());
    }
    check(found);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const util::ByteSpan file(reinterpret_cast<const std::byte*>(data), size);
  const bool sniff = looks_like_safetensors(file);
  SafetensorsHeader h;
  try {
    h = parse_safetensors(file, "fuzz");
  } catch (const Error& e) {
    check(e.code() == Errc::corrupt);
    return 0;
  }
  check(sniff);
  check(h.data_offset == 8 + h.header_size);
  std::uint64_t next = 0;
  for (const auto& t : h.tensors) {
    check(t.begin == next && t.end >= t.begin);
    next = t.end;
  }
  check(h.data_offset + next == size);
  round_trip(file, h);
  return 0;
}
