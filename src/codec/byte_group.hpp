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
// Width 1 is a plain copy in either mode: a bijection on lone bytes cannot
// change what an entropy coder sees.
//
// Errors: a width outside {1, 2, 4, 8}, an unknown mode, mismatched sizes or
// overlapping buffers throw mithril::Error(Errc::invalid_argument).
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
// Elements [first, first + n) of a buffer of m whole elements into the
// planes of `grouped` (plane k at grouped + k * m, as group_bytes lays them
// out): `in` holds those n elements. Calls whose pieces tile [0, m) write
// what group_bytes() writes, tail bytes aside. REQUIRES: width in {1, 2, 4,
// 8}; in.size() == n * width; first + n <= m; grouped.size() >= m * width;
// no overlap (else Error(invalid_argument)).
void group_elements(util::ByteSpan in, util::MutableByteSpan grouped, std::size_t first, std::size_t m,
                    unsigned width, GroupMode mode);
// Exact inverse of group_bytes. Same requirements.
void ungroup_bytes(util::ByteSpan in, util::MutableByteSpan out, unsigned width, GroupMode mode);
// ungroup_bytes of the concatenation of `planes` without making it: planes[k]
// is plane k wherever it lies (decoded planes in a scratch buffer, stored
// ones in the payload), m = out.size() / width bytes each, the last one
// followed by the out.size() % width tail bytes. REQUIRES: planes.size() ==
// width, those sizes, no plane overlapping out (else Error(invalid_argument)).
void ungroup_planes(std::span<const util::ByteSpan> planes, util::MutableByteSpan out, unsigned width,
                    GroupMode mode);

// Byte histograms of each plane of group_bytes(in, width, mode) without
// materializing it: hists[k] counts plane k (k < width). The tail is not
// counted. REQUIRES: hists.size() >= width; in.size() < 2^32 per plane.
void plane_histograms(util::ByteSpan in, unsigned width, GroupMode mode, std::span<Histogram> hists);
// The same over several pieces (each counted as if grouped on its own: its
// whole elements), summed.
void plane_histograms(std::span<const util::ByteSpan> pieces, unsigned width, GroupMode mode,
                      std::span<Histogram> hists);

// Histogram of a byte buffer (overwrites hist). REQUIRES: in.size() < 2^32.
// Large buffers whose few most common bytes cover nearly all of it (a float
// plane's exponents) are counted with vector compares, judged on a prefix.
void histogram(util::ByteSpan in, Histogram& hist);
// The same, judged on `like`, the histogram of similar bytes (the previous
// block of the same plane) instead of a prefix. The result does not depend
// on `like`: it is always the exact histogram of `in`.
void histogram_like(util::ByteSpan in, const Histogram& like, Histogram& hist);

// For choosing and building a coding model: a histogram that sums to
// in.size() and whose nonzero values are exactly the bytes that occur in
// `in`, but whose counts may be estimated. When `like` (the previous block
// of the same plane) puts 99% of its bytes among 16 consecutive values, as
// for the exponents of a float plane, a quarter of `in` is counted and the
// rest only checked for which of those values occur (and counted where a
// byte falls outside them); the window's counts are the counted ones scaled
// up. Bytes of a wider spread (an fp16 plane's high bytes) likewise: a
// quarter counted, and in the rest only the values the counted part has not
// shown. Inputs under 16 KiB: exactly histogram_like(). The same result
// whatever the kernels (the containers do not depend on the ISA).
void histogram_estimate(util::ByteSpan in, const Histogram& like, Histogram& hist);

// Shannon order-0 entropy of a histogram, in bits for the whole buffer.
// Deterministic across CPUs (log2_count, no libm): the coders' choices that
// depend on it must not depend on the machine.
double order0_bits(const Histogram& hist);

// log2(v) for v >= 1 from IEEE +, *, / only (libm's log2 may differ in the
// last bit between CPUs, FMA variants, which could flip a choice and so the
// bytes written); values up to 2^16 + 1 are remembered after their first use.
double log2_count(std::uint64_t v);

// Name of the kernel in use: "avx512", "avx2", "sse2" or "scalar".
std::string_view byte_group_isa();

// ---- residuals against a base (delta checkpoints) -------------------------
// All three are elementwise: out may be the very same buffer as target,
// residual or base (in place), but must not partially overlap either input.
// Sizes must be equal, else Error(Errc::invalid_argument).

// out = target ^ base, byte by byte. Its own inverse:
// xor_residual(xor_residual(t, b), b) == t.
void xor_residual(util::ByteSpan target, util::ByteSpan base, util::MutableByteSpan out);

// Arithmetic residual: the buffers are read as little-endian unsigned
// integers of `width` bytes (1, 2, 4 or 8); each output element is
// zigzag(target - base) computed with wrapping arithmetic, where
// zigzag(d) = (d << 1) ^ (d >> (8*width - 1) arithmetic), so that small
// differences of either sign become small unsigned values (0, -1, 1, -2 ->
// 0, 1, 2, 3). The n % width tail bytes are XORed instead.
void sub_residual(util::ByteSpan target, util::ByteSpan base, util::MutableByteSpan out, unsigned width);

// Exact inverse of sub_residual: out = base + unzigzag(residual) per element
// (wrapping), tail bytes XORed. Same requirements.
void add_residual(util::ByteSpan residual, util::ByteSpan base, util::MutableByteSpan out, unsigned width);

}  // namespace mithril::codec
