// codec/rans_split.hpp — a byte plane coded as its high bits in pairs (two
// values a rANS symbol, codec/rans_pairs.hpp) and its low bits as they are
// (plane codec 6, docs/format.md).
//
// Why: an fp16 tensor's high-byte plane (after rotl1: five exponent bits and
// the top three mantissa bits) holds ~100 values, too many for pairs (48% of
// its bytes lie outside the 15 most frequent values), so it was coded one
// rANS symbol a byte, ~2.6 GB/s to decode on AMD Zen 4 and half of fp16's
// decompression. Its five exponent bits alone take ~14 values (all of them
// within the 15 a pair code holds), and its three mantissa bits are nearly
// uniform (2.94 of 3 bits given the exponent, on a trained GPT's weights cast
// to fp16). So the plane's bytes are split: the high 8 - L bits (L = 3 here)
// are a pair-coded plane, n / 2 rANS symbols instead of n, and the low L bits
// are stored as L bit planes per 64 bytes, merged back with a few vector
// instructions. On that GPT's fp16 weights the order-0 bound of the byte is
// 5.791 bits and the split's 2.805 (pairs) + 3 = 5.805: 0.24% larger on this
// plane, ~0.1% on the file.
//
// The chunk codec takes the split where the pair coding refused the plane as
// it is, for float tensors, at levels 1-2 when it comes within
// k_split_slack (chunk_codec.hpp) of the plane's order-0 bound; levels 10
// and up only where it is smaller than one symbol a byte.
//
// Thread-safety: Encoder and PieceDecoder objects are not shared; the free
// functions are reentrant.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>

#include "codec/byte_group.hpp"
#include "codec/rans_pairs.hpp"
#include "util/bytes.hpp"

namespace mithril::codec::rans_split {

// Low bits a block may split off (a reader takes 1 to this many).
inline constexpr unsigned k_max_low_bits = 4;

// The fewest low bits (1 .. k_max_low_bits) that leave a high plane
// rans_pairs::worth_trying() takes, for a plane of n bytes with this
// histogram; 0 when none does.
unsigned low_bits_for(const Histogram& hist, std::size_t n);

namespace detail {
// The bit planes' packing and merging: AVX-512 (BW), AVX2 (when the CPU has
// them and MITHRIL_ISA allows) or portable C++. The same bytes either way.
enum class Kernel : std::uint8_t { scalar, avx2, avx512 };
bool kernel_available(Kernel k);
}  // namespace detail

class Encoder {
 public:
  // With the widest kernel available; or (tests) with `k`, scalar where it
  // is not available.
  Encoder();
  explicit Encoder(detail::Kernel k);

  // Codes `in` (hist must be its exact histogram) into `out`. Returns the
  // bytes written, or nullopt when low_bits_for() finds no split, when the
  // pair coder gives up (its plane's estimate, or its block, over what
  // give_up_above leaves after the low bits), or when the block would not
  // fit in out. Never writes past out. Deterministic: the same bytes on
  // every CPU.
  std::optional<std::size_t> encode(util::ByteSpan in, const Histogram& hist, util::MutableByteSpan out,
                                    double give_up_above = std::numeric_limits<double>::infinity());

 private:
  rans_pairs::Encoder m_pairs;
  util::ByteVector m_high;
  detail::Kernel m_kernel;
};

// Decodes a block written by Encoder::encode() into out, whose size is the
// original size. Throws Error(corrupt) on a malformed or truncated block;
// never reads or writes out of bounds, whatever the input.
void decode(util::ByteSpan block, util::MutableByteSpan out);

// The same a piece at a time, in order (like rans_pairs::PieceDecoder);
// decode() is start(), next() over all of out, finish().
class PieceDecoder {
 public:
  PieceDecoder();
  explicit PieceDecoder(detail::Kernel k);  // tests: scalar where `k` is not available
  ~PieceDecoder();
  PieceDecoder(PieceDecoder&&) noexcept;
  PieceDecoder& operator=(PieceDecoder&&) noexcept;

  // Reads the block's header and starts its high plane, for an original
  // size of n bytes. Throws Error(corrupt).
  void start(util::ByteSpan block, std::size_t n);
  // Decodes the next out.size() bytes (Error(internal) past the n of start()).
  void next(util::MutableByteSpan out);
  // After all n bytes: throws Error(corrupt) unless the high plane ended exactly.
  void finish();
  std::size_t position() const noexcept;

 private:
  struct State;
  std::unique_ptr<State> m_state;
};

// The merging kernel in use: "avx512", "avx2" or "scalar" (MITHRIL_ISA caps it).
const char* merge_kernel_name();

}  // namespace mithril::codec::rans_split
