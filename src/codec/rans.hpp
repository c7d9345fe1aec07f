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
#include <optional>
#include <string_view>

#include "codec/byte_group.hpp"
#include "util/bytes.hpp"

namespace mithril::codec::rans {

// Encodes `in` (hist must be its exact histogram) into `out`. Returns the
// number of bytes written, or nullopt when the block would not fit in
// out.size() (the caller then stores the bytes raw). Never writes past out.
std::optional<std::size_t> encode(util::ByteSpan in, const Histogram& hist, util::MutableByteSpan out);

// Decodes a block written by encode() into out, whose size must be the
// original size. Throws Error(corrupt) on a malformed or truncated block; never
// reads or writes out of bounds, whatever the input.
void decode(util::ByteSpan block, util::MutableByteSpan out);

// Name of the decode kernel in use: "avx2" or "scalar". Every kernel accepts
// and produces exactly the same bytes; the encoder is CPU-independent.
std::string_view decode_isa();

namespace detail {
enum class Kernel : std::uint8_t { scalar, avx2 };
// For tests and benchmarks: whether `k` can run here, and decode() forced to
// use it (falls back to scalar when it cannot).
bool kernel_available(Kernel k);
void decode_with(util::ByteSpan block, util::MutableByteSpan out, Kernel k);
}  // namespace detail

}  // namespace mithril::codec::rans
