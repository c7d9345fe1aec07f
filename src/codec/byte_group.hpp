// codec/byte_group.hpp — byte grouping ("shuffle") of fixed-width elements.
//
// Floating-point bytes are not alike: the byte holding the exponent is highly
// skewed, the low mantissa bytes are close to random. Grouping byte k of every
// element into plane k lets an entropy coder see each distribution alone.
//
// Layout of a grouped buffer of n bytes, width w, m = n / w elements:
//   plane 0 (byte 0 of each element, least significant) | plane 1 | ...
//   | plane w-1 (most significant) | tail (the n % w trailing bytes, as is)
// so grouped and ungrouped buffers have the same size.
//
// GroupMode::rotl1 first rotates every w-byte element left by one bit, which
// moves the sign bit to the bottom and the whole IEEE exponent of
// bf16/fp32/fp64 (and fp16's 5 exponent bits) into the top plane.
//
// Kernels: scalar, SSE2, AVX2 and AVX-512BW, selected once at run time; all
// give identical output. Thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>

#include "util/bytes.hpp"

namespace mithril::codec {

enum class GroupMode : std::uint8_t { plain = 0, rotl1 = 1 };

using Histogram = std::array<std::uint32_t, 256>;

// REQUIRES: out.size() == in.size(); width in {1, 2, 4, 8}; no overlap.
void group_bytes(util::ByteSpan in, util::MutableByteSpan out, unsigned width, GroupMode mode);
// Exact inverse of group_bytes. Same requirements.
void ungroup_bytes(util::ByteSpan in, util::MutableByteSpan out, unsigned width, GroupMode mode);

// Byte histograms of each plane of group_bytes(in, width, mode) without
// materializing it: hists[k] counts plane k (k < width). The tail is not
// counted. REQUIRES: hists.size() >= width; in.size() < 2^32 per plane.
void plane_histograms(util::ByteSpan in, unsigned width, GroupMode mode, std::span<Histogram> hists);

// Histogram of a byte buffer.
void histogram(util::ByteSpan in, Histogram& hist);

// Shannon order-0 entropy of a histogram, in bits for the whole buffer.
double order0_bits(const Histogram& hist);

// Name of the kernel in use: "avx512", "avx2", "sse2" or "scalar".
std::string_view byte_group_isa();

}  // namespace mithril::codec

namespace mithril::codec {

// Residuals for delta chunks (against the same bytes of a base checkpoint).
// out = target ^ base; its own inverse. REQUIRES: equal sizes.
void xor_residual(util::ByteSpan target, util::ByteSpan base, util::MutableByteSpan out);
// Per width-byte little-endian unsigned element: zigzag(target - base), with
// wrapping arithmetic; the n % width tail bytes as XOR.
void sub_residual(util::ByteSpan target, util::ByteSpan base, util::MutableByteSpan out, unsigned width);
// Exact inverse of sub_residual: out = base + unzigzag(residual).
void add_residual(util::ByteSpan residual, util::ByteSpan base, util::MutableByteSpan out, unsigned width);

}  // namespace mithril::codec
