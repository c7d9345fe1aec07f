// libFuzzer target for the zip reader (formats/zip_reader.hpp) on its own:
// arbitrary bytes as an archive. Built and run by scripts/fuzz (CMake option
// MITHRIL_FUZZ); replayed by ctest (standalone_main.cpp).
//
// Contract checked: ZipReader either throws Error(corrupt/unsupported) or
// returns entries that lie inside the file before the central directory and
// can be found by name; extract() (bounded to 1 MiB) returns exactly the
// entry's size or throws Error.
#include <cstddef>
#include <cstdint>

#include "formats/zip_reader.hpp"
#include "fuzz_common.hpp"
#include "mithril/error.hpp"

using namespace mithril;
using mithril::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto file = fuzz::as_span(data, size);
  try {
    const formats::ZipReader z(file, "fuzz.zip");
    for (const auto& e : z.entries()) {
      check(e.data_offset <= z.central_directory_offset());
      check(e.compressed_size <= z.central_directory_offset() - e.data_offset);
      check(z.find(e.name) == &e);
      try {
        const auto bytes = z.extract(e, 1 << 20);
        check(bytes.size() == e.size);
      } catch (const Error& x) {
        check(x.code() == Errc::corrupt || x.code() == Errc::unsupported);
      }
    }
  } catch (const Error& x) {
    check(x.code() == Errc::corrupt || x.code() == Errc::unsupported);
  }
  return 0;
}
