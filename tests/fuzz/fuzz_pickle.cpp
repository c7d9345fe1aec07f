// libFuzzer target for the restricted unpickler (formats/pickle.hpp). Built and run by scripts/fuzz
// (CMake option MITHRIL_FUZZ); replayed by ctest (standalone_main.cpp).
//
// Contract checked: unpickle either throws mithril::Error (corrupt or
// unsupported, never anything else) or returns a tree whose every reference
// (items, state, root, storage and tensor indices) is in range and whose
// tensors have shapes and strides of equal rank; pickle_repr renders every
// node without throwing. Small limits keep each run fast.
#include <cstddef>
#include <cstdint>

#include "formats/pickle.hpp"
#include "mithril/error.hpp"

namespace {

using namespace mithril;
using namespace mithril::formats;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const util::ByteSpan bytes(reinterpret_cast<const std::byte*>(data), size);
  UnpickleLimits limits;
  limits.max_nodes = 100'000;
  limits.max_items = 400'000;
  limits.max_memo = 100'000;
  limits.max_stack = 100'000;
  PickleTree t;
  try {
    t = unpickle(bytes, "fuzz", limits);
  } catch (const Error& e) {
    check(e.code() == Errc::corrupt || e.code() == Errc::unsupported);
    return 0;
  }
  const auto n = t.node_count();
  check(t.root() < n);
  for (PickleId id = 0; id < n; ++id) {
    const auto& node = t.node(id);
    for (PickleId c : node.items) check(c < n);
    check(node.state == k_no_pickle_node || node.state < n);
    if (node.kind == PickleKind::storage) check(node.index < t.storages().size());
    if (node.kind == PickleKind::tensor) check(node.index < t.tensors().size());
    (void)pickle_repr(t, id);
  }
  for (const auto& x : t.tensors()) {
    check(x.storage < t.storages().size());
    check(x.shape.size() == x.stride.size());
  }
  return 0;
}
