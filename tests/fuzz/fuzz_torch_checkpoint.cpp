// libFuzzer target for the zip reader and the torch.save reader built on it
// (formats/zip_reader.hpp, formats/torch_checkpoint.hpp). Not built by
// default: it needs clang's -fsanitize=fuzzer, e.g.
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -Isrc -Iinclude
//     tests/fuzz/fuzz_torch_checkpoint.cpp src/formats/{zip_reader,pickle,pickle_repr,pickle_text,
//     torch_dtype,torch_checkpoint,dtype}.cpp src/util/error.cpp -lfmt -lz -o fuzz_torch
//     && ./fuzz_torch tests/golden/torch/
// (one command line). Built with -DMITHRIL_FUZZ_STANDALONE it is a plain
// program replaying the files named on its command line (g++ regression runs).
//
// Contract checked: ZipReader either throws mithril::Error or returns entries
// that lie inside the file before the central directory, do not overlap, and
// extract (bounded) or throw Error; read_torch_checkpoint either throws Error
// or returns storages inside the file, in file order, and tensors whose views
// stay inside their storage.
#include <cstddef>
#include <cstdint>

#include "formats/torch_checkpoint.hpp"
#include "formats/zip_reader.hpp"
#include "mithril/error.hpp"

namespace {

using namespace mithril;
using namespace mithril::formats;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

void fuzz_zip(util::ByteSpan file) {
  try {
    const ZipReader z(file, "fuzz.zip");
    for (const auto& e : z.entries()) {
      check(e.data_offset <= z.central_directory_offset());
      check(e.compressed_size <= z.central_directory_offset() - e.data_offset);
      check(z.find(e.name) == &e);
      try {
        (void)z.extract(e, 1 << 20);
      } catch (const Error&) {
      }
    }
  } catch (const Error&) {
  }
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
  fuzz_zip(file);
  fuzz_torch(file);
  return 0;
}

#ifdef MITHRIL_FUZZ_STANDALONE
#include <fstream>
#include <iostream>
#include <iterator>
#include <vector>

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::ifstream in(argv[i], std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  }
  std::cout << "replayed " << (argc - 1) << " inputs\n";
  return 0;
}
#endif
