// fuzz_rans — libFuzzer target for the rANS block decoder, the multi-block
// plane decoder (plane codec 3), the Huffman block decoder (plane codec 4),
// the pair decoder (plane codec 5), the split decoder (plane codec 6), and
// round trips.
// Built and run by scripts/fuzz (CMake option MITHRIL_FUZZ); replayed by ctest.
//
// Input: u16 output size (little-endian), then a block. The block is decoded
// into a buffer of exactly that size with every kernel this CPU has; each must
// either succeed or throw mithril::Error, and all must agree, also decoding
// piece by piece (rans::PieceDecoder, pieces of a size taken from the input);
// the same bytes read as codec 3 plane data must decode or throw, whole and
// piece by piece alike, and so must the same bytes read as a Huffman block
// and as a pair block (with both pair kernels, which must agree) and as a
// split block (with every merge kernel, which must agree).
// Then the input itself is encoded with every kernel (identical blocks) and
// decoded back exactly, and coded with Huffman and decoded back exactly; and
// the input repeated to 64 KiB or more (so that the pair coder may take it)
// is coded in pairs with both kernels (identical blocks) and decoded back,
// and split with every kernel (identical blocks, where low_bits_for finds a
// split) and decoded back; and repeated to 129 KiB, with pairs outside the
// pair encoder's counted sample altered, coded in pairs and decoded back.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <array>
#include <vector>

#include "codec/huff.hpp"
#include "codec/rans.hpp"
#include "codec/rans_blocks.hpp"
#include "codec/rans_pairs.hpp"
#include "codec/rans_split.hpp"
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

// Decoded by `d` (rans::PieceDecoder or rans_blocks::PieceDecoder) a piece
// at a time, `piece` bytes each (the last one shorter).
template <class Decoder>
Result try_pieces(Decoder&& d, util::ByteSpan block, std::size_t n, std::size_t piece) {
  Result r;
  r.out.assign(n, std::byte{0});
  try {
    d.start(block, n);
    for (std::size_t at = 0; at < n; at += piece)
      d.next(util::MutableByteSpan(r.out.data() + at, std::min(piece, n - at)));
    d.finish();
    r.ok = true;
  } catch (const Error& e) {
    if (e.code() != Errc::corrupt) std::abort();
  }
  return r;
}

// Decoded whole by `decode` (codec::huff::decode or rans_blocks::decode).
Result try_whole(void (*decode)(util::ByteSpan, util::MutableByteSpan), util::ByteSpan data, std::size_t n) {
  Result r;
  r.out.assign(n, std::byte{0});
  try {
    decode(data, r.out);
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
  // 1..256 bytes: pieces that split rounds of lanes anywhere.
  const std::size_t piece = size > 2 ? 1 + data[2] : 64;
  for (auto k : rans::detail::k_all_kernels) {
    if (!rans::detail::kernel_available(k)) continue;
    if (k != rans::detail::Kernel::scalar) {
      const Result other = try_decode(block, n, k);
      if (other.ok != scalar.ok || (scalar.ok && other.out != scalar.out)) std::abort();
    }
    const Result pieces = try_pieces(rans::PieceDecoder(k), block, n, piece);
    if (pieces.ok != scalar.ok || (scalar.ok && pieces.out != scalar.out)) std::abort();
  }
  const Result blocks = try_whole(codec::rans_blocks::decode, block, n);
  const Result blocks_pieces = try_pieces(codec::rans_blocks::PieceDecoder(), block, n, piece);
  if (blocks.ok != blocks_pieces.ok || (blocks.ok && blocks.out != blocks_pieces.out)) std::abort();
  const Result huff = try_whole(codec::huff::decode, block, n);
  const Result huff_pieces = try_pieces(codec::huff::PieceDecoder(), block, n, piece);
  if (huff.ok != huff_pieces.ok || (huff.ok && huff.out != huff_pieces.out)) std::abort();
  namespace pairs = codec::rans_pairs;
  const Result pair = try_whole(pairs::decode, block, n);
  for (auto k : {pairs::detail::Kernel::scalar, pairs::detail::Kernel::avx2}) {
    const Result pair_pieces = try_pieces(pairs::PieceDecoder(k), block, n, piece);
    if (pair.ok != pair_pieces.ok || (pair.ok && pair.out != pair_pieces.out)) std::abort();
  }
  namespace split = codec::rans_split;
  constexpr std::array<split::detail::Kernel, 3> split_kernels{split::detail::Kernel::scalar, split::detail::Kernel::avx2,
                                                               split::detail::Kernel::avx512};
  const Result whole_split = try_whole(split::decode, block, n);
  for (auto k : split_kernels) {
    const Result split_pieces = try_pieces(split::PieceDecoder(k), block, n, piece);
    if (whole_split.ok != split_pieces.ok || (whole_split.ok && whole_split.out != split_pieces.out)) std::abort();
  }

  const util::ByteSpan input(reinterpret_cast<const std::byte*>(data), size);
  codec::Histogram hist{};
  for (std::byte b : input) ++hist[static_cast<std::uint8_t>(b)];
  std::vector<std::byte> enc(size + 1024);
  const auto written = rans::encode(input, hist, enc);
  if (!written) std::abort();  // a generous buffer always fits
  for (auto k : rans::detail::k_all_kernels) {
    if (!rans::detail::kernel_available(k)) continue;
    std::vector<std::byte> again(size + 1024);
    const auto w = rans::detail::encode_with(input, hist, again, k);
    if (!w || *w != *written || std::memcmp(again.data(), enc.data(), *w) != 0) std::abort();
  }
  std::vector<std::byte> back(size);
  rans::decode(util::ByteSpan(enc.data(), *written), back);
  if (std::memcmp(back.data(), data, size) != 0) std::abort();

  std::vector<std::byte> coded(size + size / 2 + 1024);
  const auto h = codec::huff::encode(input, hist, coded);
  if (!h) std::abort();  // a generous buffer always fits
  std::fill(back.begin(), back.end(), std::byte{0});
  codec::huff::decode(util::ByteSpan(coded.data(), *h), back);
  if (std::memcmp(back.data(), data, size) != 0) std::abort();

  std::vector<std::byte> tiled;
  while (tiled.size() < pairs::k_min_plane) tiled.insert(tiled.end(), input.begin(), input.end());
  codec::Histogram th{};
  for (std::byte b : tiled) ++th[static_cast<std::uint8_t>(b)];
  // Coded by Encoder(k) for every kernel k: a block exactly where `takes`
  // (a generous buffer always fits), the same bytes from every kernel, and
  // `decode` gives the tiled input back.
  auto every_kernel = [&](const std::vector<std::byte>& plane, const codec::Histogram& ph, const auto& kernels,
                          auto make_encoder, bool takes, void (*decode)(util::ByteSpan, util::MutableByteSpan)) {
    std::vector<std::byte> first;
    for (auto k : kernels) {
      std::vector<std::byte> out(plane.size() + 1024);
      const auto w = make_encoder(k).encode(plane, ph, out);
      if (w.has_value() != takes) std::abort();
      if (!w) return;
      out.resize(*w);
      if (first.empty())
        first = out;
      else if (out != first)
        std::abort();
      std::vector<std::byte> again(plane.size());
      decode(out, again);
      if (again != plane) std::abort();
    }
  };
  constexpr std::array<pairs::detail::Kernel, 2> pair_kernels{pairs::detail::Kernel::scalar,
                                                              pairs::detail::Kernel::avx2};
  const auto pair_encoder = [](auto k) { return pairs::Encoder(k); };
  every_kernel(tiled, th, pair_kernels, pair_encoder, pairs::worth_trying(th, tiled.size()), pairs::decode);
  every_kernel(tiled, th, split_kernels, [](auto k) { return split::Encoder(k); },
               split::low_bits_for(th, tiled.size()) != 0, split::decode);

  // A plane large enough that the pair encoder counts only a sample of its
  // pairs (detail::pair_in_sample), whose pairs outside the sample differ
  // from the tiled input's (a byte of the input added to every third one's
  // second byte): pairs the counts never saw must come back intact.
  std::vector<std::byte> far;
  while (far.size() < (std::size_t{129} << 10) + 3) far.insert(far.end(), input.begin(), input.end());
  const std::size_t half = far.size() / 2;
  const auto bump = static_cast<std::uint8_t>(data[size - 1] | 1);
  bool unseen = false;
  for (std::size_t j = 0; j < half; j += 3)
    if (!pairs::detail::pair_in_sample(j, half)) {
      far[2 * j + 1] = static_cast<std::byte>(static_cast<std::uint8_t>(far[2 * j + 1]) + bump);
      unseen = true;
    }
  if (!unseen) std::abort();  // the sample grew: this check no longer reaches the unsampled pairs
  codec::Histogram fh{};
  for (std::byte b : far) ++fh[static_cast<std::uint8_t>(b)];
  every_kernel(far, fh, pair_kernels, pair_encoder, pairs::worth_trying(fh, far.size()), pairs::decode);
  return 0;
}
