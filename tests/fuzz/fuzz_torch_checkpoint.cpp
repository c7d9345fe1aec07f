// libFuzzer target for the torch.save reader (formats/torch_checkpoint.hpp:
// zip + pickle + storages); the zip reader alone is fuzz_zip. Built and run
// by scripts/fuzz (CMake option MITHRIL_FUZZ); replayed by ctest.
//
// Contract checked: read_torch_checkpoint either throws Error or returns
// storages inside the file, in file order, and tensors whose views stay
// inside their storage.
#include <cstddef>
#include <cstdint>

#include "formats/torch_checkpoint.hpp"
#include "mithril/error.hpp"

namespace {

using namespace mithril;
using namespace mithril::formats;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

void fuzz_torch(util::ByteSpan file) {
  TorchCheckpoint ck;
  try {
    ck = read_torch_checkpoint(file, "fuzz.pt");
  } catch (const Error&) {
    return;
  }
  std::uint64_t prev = 0;
  for (const auto& s : ck.storages) {
    check(s.data_offset >= prev);
    check(s.data_offset <= file.size() && s.data_size <= file.size() - s.data_offset);
    prev = s.data_offset;
  }
  for (const auto& t : ck.tensors) {
    check(t.storage < ck.storages.size());
    const auto [b, e] = t.byte_extent();
    check(b <= e && e <= ck.storages[t.storage].data_size);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const util::ByteSpan file(reinterpret_cast<const std::byte*>(data), size);
  fuzz_torch(file);
  return 0;
}
