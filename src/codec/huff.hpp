// codec/huff.hpp — static order-0 Huffman coder for byte planes, decoded
// several symbols per table lookup (plane codec 4, docs/format.md).
//
// Why beside rANS: an exponent plane of trained weights holds ~2.6 bits per
// byte, so an 11-bit window of a Huffman stream holds ~4 whole codes. One
// table lookup gives all of them (up to 6) and the bits they took, and six
// independent streams keep the CPU busy: on an AMD EPYC (Zen 3, AVX2) this
// decodes bf16 exponent planes at ~2.5 GB/s per core where the rANS decoder,
// one symbol per lookup, reaches ~1.5 (AVX2 gathers are slow there). The cost
// is ratio: whole-bit code lengths put a Huffman code ~1.5% above the order-0
// bound on those planes (rANS: ~0.2%), and far more on skewed planes (99%
// zeros cost 1 bit a byte). So the chunk encoder uses it only where asked for
// speed (levels 1 and 2) and only where it is within a few percent of rANS.
//
// Pure C++ (no intrinsics): the same code is fast on every x86-64 and elsewhere.
//
// Thread-safety: all functions are reentrant (no shared state).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

#include "codec/byte_group.hpp"
#include "util/bytes.hpp"

namespace mithril::codec::huff {

// Longest code; the decoder's tables have 2^k_max_len entries.
inline constexpr unsigned k_max_len = 11;
// Streams, and the bytes of a round, cut into one slice per stream (see
// huff.cpp's format): 16 KiB, a bf16 plane's piece in the chunk decoder.
inline constexpr unsigned k_streams = 6;
inline constexpr std::size_t k_round = 16384;

// Code lengths for a histogram (0 for absent symbols), at most k_max_len;
// deterministic. With one present symbol its length is 0 too.
std::array<std::uint8_t, 256> code_lengths(const Histogram& hist);

// The size encode() produces with these lengths, or up to k_streams bytes
// more (each stream's last byte may be partly used).
std::size_t coded_size(const Histogram& hist, const std::array<std::uint8_t, 256>& lengths);

// Encodes `in` (hist must be its exact histogram) into `out`, with the code
// lengths code_lengths(hist) (pass them when already computed). Returns the
// number of bytes written, or nullopt when the block might not fit in
// out.size() (the caller then stores the bytes raw or codes them otherwise).
// Never writes past out.
std::optional<std::size_t> encode(util::ByteSpan in, const Histogram& hist, util::MutableByteSpan out,
                                  const std::array<std::uint8_t, 256>* lengths = nullptr);

// Decodes a block written by encode() into out, whose size must be the
// original size. Throws Error(corrupt) on a malformed or truncated block;
// never reads or writes out of bounds, whatever the input.
void decode(util::ByteSpan block, util::MutableByteSpan out);

// Decodes a block a piece at a time, in order (like rans::PieceDecoder): the
// same checks as decode(), which is start(), next() over all of out, finish().
// Reusable for one block after another.
class PieceDecoder {
 public:
  PieceDecoder();
  ~PieceDecoder();
  PieceDecoder(PieceDecoder&&) noexcept;
  PieceDecoder& operator=(PieceDecoder&&) noexcept;

  // Reads the block's header and builds its tables for an original size of
  // n bytes. Throws Error(corrupt) on a malformed one.
  void start(util::ByteSpan block, std::size_t n);
  // Decodes the next out.size() bytes (Error(internal) past the n of start()).
  void next(util::MutableByteSpan out);
  // After all n bytes: throws Error(corrupt) unless every stream ended
  // exactly at its last byte.
  void finish();
  std::size_t position() const noexcept;

 private:
  struct State;
  std::unique_ptr<State> m_state;
};

}  // namespace mithril::codec::huff
