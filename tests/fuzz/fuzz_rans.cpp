// fuzz_rans — libFuzzer target for the rANS block decoder (and a round trip).
// Built and run by scripts/fuzz (CMake option MITHRIL_FUZZ); replayed by ctest.
//
// Input: u16 output size (little-endian), then a block. The block is decoded
// into a buffer of exactly that size with every kernel this CPU has; each must
// either succeed or throw mithril::Error, and all must agree. Then the input
// itself is encoded and decoded back, which must give it exactly.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "codec/rans.hpp"
#include "mithril/error.hpp"

namespace {

using namespace mithril;
namespace rans = mithril::codec::rans;

struct Result {
  bool ok = false;
  std::vector<std::byte> out;
};

Result try_decode(util::ByteSpan block, std::size_t n, rans::detail::Kernel k) {
  Result r;
  r.out.assign(n, std::byte{0});
  try {
    rans::detail::decode_with(block, r.out, k);
    r.ok = true;
  } catch (const Error& e) {
    if (e.code() != Errc::corrupt) std::abort();
  }
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::size_t n = data[0] | (std::size_t{data[1]} << 8);
  const util::ByteSpan block(reinterpret_cast<const std::byte*>(data + 2), size - 2);

  const Result scalar = try_decode(block, n, rans::detail::Kernel::scalar);
  if (rans::detail::kernel_available(rans::detail::Kernel::avx2)) {
    const Result avx2 = try_decode(block, n, rans::detail::Kernel::avx2);
    if (avx2.ok != scalar.ok || (scalar.ok && avx2.out != scalar.out)) std::abort();
  }

  const util::ByteSpan input(reinterpret_cast<const std::byte*>(data), size);
  codec::Histogram hist{};
  for (std::byte b : input) ++hist[static_cast<std::uint8_t>(b)];
  std::vector<std::byte> enc(size + 1024);
  const auto written = rans::encode(input, hist, enc);
  if (!written) std::abort();  // a generous buffer always fits
  std::vector<std::byte> back(size);
  rans::decode(util::ByteSpan(enc.data(), *written), back);
  if (std::memcmp(back.data(), data, size) != 0) std::abort();
  return 0;
}
