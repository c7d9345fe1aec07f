// codec/rans_blocks.hpp — a plane coded as several static rANS blocks, each
// with its own frequency table (plane codec 3, docs/format.md).
//
// Why: one table per 4 MiB chunk averages statistics that change along a
// tensor. Embedding tables are the clear case (rows of rare or padding tokens
// differ from the rest: in all-MiniLM-L6-v2 the first fp32 chunk's low
// mantissa planes code 13% smaller in 64 KiB blocks than in one). Where the
// statistics are uniform, extra tables only cost, so the block size is chosen
// per plane from the histograms of its 64 KiB pieces, by the order-0 estimate.
//
// Plane data (all integers little-endian):
//   blocks := log2_block:u8  block{ceil(n / 2^log2_block)}    16 <= log2_block <= 30
//   block  := head:u32  bytes{head >> 1}
// Block i covers plane bytes [i * 2^log2_block, min(n, (i + 1) * 2^log2_block)).
// head & 1 = 1: the block's bytes are stored as they are (head >> 1 equals its
// length); head & 1 = 0: they are one rANS block (rans.hpp) of head >> 1 bytes.
//
// Thread-safety: reentrant, no shared state.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <vector>

#include "codec/byte_group.hpp"
#include "codec/rans.hpp"
#include "util/bytes.hpp"

namespace mithril::codec::rans_blocks {

constexpr unsigned k_min_log2_block = 16;
constexpr unsigned k_max_log2_block = 30;

// Per-64 KiB histograms of a plane, and what they say.
struct Split {
  Histogram whole{};           // histogram of the whole plane
  unsigned log2_block = 0;     // 0: one block is best (code the plane with rans::encode)
  double estimate_bytes = 0;   // estimated coded size with the chosen split (or whole)
  std::vector<Histogram> blocks;  // with log2_block != 0: each block's histogram
};

// Histograms `plane` (one pass) and picks the block size whose estimated size
// (order-0 bound plus table, lane-state and head costs per block) is smallest,
// keeping one block unless splitting saves at least 0.5%.
Split choose(util::ByteSpan plane);

// Codes `plane` as blocks of 2^log2_block bytes into out. Returns the bytes
// written, or nullopt when they would not fit in out.size(). Never writes past out.
// `hists`, when given, holds each block's histogram (Split::blocks of the same
// plane and block size), so the plane is not counted a second time; it must
// have one entry per block (Error(internal) otherwise).
std::optional<std::size_t> encode(util::ByteSpan plane, unsigned log2_block, util::MutableByteSpan out,
                                  std::span<const Histogram> hists = {});

// Decodes plane data written by encode() into out (out.size() = the plane's
// size). Throws Error(corrupt) on malformed data; never reads or writes out of bounds.
// Same as start(), next() over all of out, finish() of a PieceDecoder.
void decode(util::ByteSpan data, util::MutableByteSpan out);

// Decodes plane data a piece at a time, in order (see rans::PieceDecoder):
// block heads are read, and each block's header checked, as the pieces reach
// them. Reusable for one plane after another.
class PieceDecoder {
 public:
  // Reads the first block's head for a plane of n bytes. Throws Error(corrupt).
  void start(util::ByteSpan data, std::size_t n);
  // Decodes the plane's next out.size() bytes (Error(internal) past its end).
  void next(util::MutableByteSpan out);
  // After all n bytes: throws Error(corrupt) unless the data ended there.
  void finish();

 private:
  void open_block();  // the block that starts at m_done

  util::ByteSpan m_data;
  std::size_t m_n = 0;
  std::size_t m_block = 0;      // bytes per block
  std::size_t m_pos = 0;        // data read: the next block's head
  std::size_t m_done = 0;       // plane bytes decoded
  std::size_t m_block_start = 0;  // where the open block's bytes lie in the plane
  std::size_t m_block_end = 0;
  const std::byte* m_stored = nullptr;  // the open block's bytes when stored, else null
  rans::PieceDecoder m_rans;
};

}  // namespace mithril::codec::rans_blocks
