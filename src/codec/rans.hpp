// codec/rans.hpp — static order-0 range-ANS entropy coder for byte planes.
//
// Why not Huffman: exponent planes of bf16/fp32 weights have symbols with
// probabilities well above 1/4 and residual planes are mostly zeros; Huffman
// pays up to one bit per byte there, rANS codes within a fraction of a percent
// of the order-0 entropy.
//
// A block is self-describing: it carries its own frequency table and state,
// and decoding needs only the block and the original size.
//
// Thread-safety: all functions are reentrant (no shared state).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include "codec/byte_group.hpp"
#include "util/bytes.hpp"

namespace mithril::codec::rans {

// Encodes `in` (hist must be its exact histogram) into `out`. Returns the
// number of bytes written, or nullopt when the block would not fit in
// out.size() (the caller then stores the bytes raw). Never writes past out.
std::optional<std::size_t> encode(util::ByteSpan in, const Histogram& hist, util::MutableByteSpan out);

// encode() limited to the coarse scales (frequencies summing to at most
// 2^12), whose decoder needs one table load per symbol: encode() takes a
// finer scale when it saves over 0.2%, which about halves decoding speed.
// For a caller that has already made rare symbols rare no more (rans_pairs).
std::optional<std::size_t> encode_fast(util::ByteSpan in, const Histogram& hist, util::MutableByteSpan out);

// encode() with at least 2^min_lanes_log2 lanes (as many as the block has
// bytes for; at most 64). encode() gives a block about 1/256 of its payload
// in lane states (4 bytes a lane), so a small block gets few lanes, which
// decode one symbol after another through a chain of dependent multiplies;
// eight lanes share one AVX2 register. For blocks decoded beside big ones:
// rans_pairs' escapes (8 lanes), rans_blocks' 64 KiB blocks (32 lanes).
std::optional<std::size_t> encode_lanes(util::ByteSpan in, const Histogram& hist, util::MutableByteSpan out,
                                        unsigned min_lanes_log2);

// Decodes a block written by encode() into out, whose size must be the
// original size. Throws Error(corrupt) on a malformed or truncated block; never
// reads or writes out of bounds, whatever the input.
void decode(util::ByteSpan block, util::MutableByteSpan out);

// The kernels in use, e.g. {"avx512", "avx512"}: "scalar", "avx2", "avx2x",
// "avx512" or "avx512x". Every kernel reads and writes exactly the same bytes;
// they differ only in speed. Chosen once per process:
// MITHRIL_RANS_KERNEL=scalar|avx2|avx2x|avx512|avx512x forces one (falling
// back to the best available one when this CPU lacks it), otherwise a short
// measurement at first use picks the fastest available one for each direction
// (AVX2 and AVX-512 gathers are slow on AMD cores, fast on Intel).
// How a kernel was chosen: forced by MITHRIL_RANS_KERNEL, the only one this
// CPU (or cap) has, timed in this process, or timed by an earlier process
// and remembered (util/kernel_memo.hpp).
enum class KernelSource : std::uint8_t { forced, only, timed, remembered };
struct KernelNames {
  std::string_view encode;
  std::string_view decode;
  KernelSource encode_source = KernelSource::only;
  KernelSource decode_source = KernelSource::only;
};
KernelNames kernel_names();

namespace detail {
// avx2x is avx2 with the decoder's table gathers replaced by scalar loads and
// the encoder's by lookups in registers where the block's symbols span at most
// 32 byte values (AVX2 gathers are slow on AMD Zen). avx512x is avx512 with
// the decoder's gathers replaced by scalar loads (AMD Zen 4); its encoder is
// avx512's.
enum class Kernel : std::uint8_t { scalar, avx2, avx512, avx2x, avx512x };
inline constexpr Kernel k_all_kernels[] = {Kernel::scalar, Kernel::avx2, Kernel::avx2x, Kernel::avx512,
                                           Kernel::avx512x};
std::string_view kernel_name(Kernel k);
// For tests and benchmarks: whether `k` can run here, and encode()/decode()
// forced to use it (they fall back to scalar when it cannot).
bool kernel_available(Kernel k);
std::optional<std::size_t> encode_with(util::ByteSpan in, const Histogram& hist, util::MutableByteSpan out, Kernel k);
void decode_with(util::ByteSpan block, util::MutableByteSpan out, Kernel k);
}  // namespace detail

// Decodes a block written by encode() a piece at a time, in order: for a
// caller that uses each piece of symbols while it is still in L1 (the chunk
// decoder ungroups and checksums 32 KiB of output at a time) instead of
// writing the whole plane out and reading it back. The same checks, in the
// same order, as decode(), which is start(), next() over all of out, finish().
// A decoder may be reused for one block after another (its tables' memory is
// kept).
class PieceDecoder {
 public:
  PieceDecoder();
  // With a given kernel (tests, benchmarks; scalar where this CPU lacks it).
  explicit PieceDecoder(detail::Kernel kernel);
  ~PieceDecoder();
  PieceDecoder(PieceDecoder&&) noexcept;
  PieceDecoder& operator=(PieceDecoder&&) noexcept;

  // Reads the block's header and tables for an original size of n bytes.
  // Throws Error(corrupt) on a malformed one.
  void start(util::ByteSpan block, std::size_t n);
  // Decodes the next out.size() bytes (Error(internal) past the n of start()).
  // Throws Error(corrupt) when the stream runs out.
  void next(util::MutableByteSpan out);
  // After all n bytes: throws Error(corrupt) unless the stream ended exactly
  // with every state back at its initial value.
  void finish();
  // Bytes decoded since start().
  std::size_t position() const noexcept;

 private:
  struct State;
  std::unique_ptr<State> m_state;
};


}  // namespace mithril::codec::rans
