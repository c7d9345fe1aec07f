// codec/rans_pairs.hpp — a byte plane coded two bytes per rANS symbol (plane
// codec 5, docs/format.md).
//
// Why: the rANS decoder's cost is per symbol (a table lookup, the state's
// update and renormalisation: ~6.7 macro-ops a symbol with AVX2), not per
// bit. An exponent plane of trained weights holds ~2.7 bits a byte over a
// few dozen values, 15 of which cover ~99.8% of its bytes. Each byte becomes
// a 4-bit code (0..14 for the 15 most frequent values, 15 for "the next byte
// of the escape stream"), two codes make one pair symbol, and the plane's
// n / 2 pair symbols are one ordinary rANS block (scale 12, one table load a
// symbol): half the symbols for the same bytes. Pairs too rare for a 2^-12
// slot (fewer than k_rare_share of a slot's worth) are written as the pair
// (15, 15), both bytes escaped, so that no rare pair takes a slot from the
// frequent ones; the escape stream, ~0.2-0.3% of the plane's bytes, is a rANS
// block of its own. The encoder counts the pair symbols of a quarter of a
// large plane (a 4 KiB slice in every 16 KiB): those counts pick the rare
// pairs (a pair the sample did not show is escaped like a rare one) and,
// scaled, make the table; the escape pass counts the pairs it rewrites
// exactly. Compression in memory, one thread, Intel Xeon (AVX-512), 4 MiB
// chunks: bf16 (bench/data) 7-9% faster (bench_pipeline 40.0-42.1 -> 37.4-
// 38.5 ms), fp32 and AdamW state and MiniLM 1-5%, for 0.001-0.003% more
// bytes. Measured on AMD EPYC Zen 3 (AVX2, scalar-load decoder;
// bench_rans kernel:5, bf16 exponent planes of MiniLM and of N(0, 0.02), 1
// and 16 MiB blocks): decoded at 2.69-2.92 GB/s against 2.01-2.09 for one
// symbol a byte; in a prototype on a trained GPT's bf16 / fp32 exponent
// planes 0.40% smaller than one symbol a byte, on N(0, 0.02) 0.05% larger
// (the pair symbols see which exponents follow which). A plane with more
// than k_max_escape_share of its bytes outside its 15 most frequent values
// (an fp16 high byte: ~48%) is not coded this way.
//
// Thread-safety: Encoder and PieceDecoder objects are not shared; the free
// functions are reentrant.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <vector>

#include "codec/byte_group.hpp"
#include "util/bytes.hpp"

namespace mithril::codec::rans_pairs {

// The writer's limits (a reader takes any block of at least 2 bytes):
// smaller planes stay one symbol a byte (two tables and headers show), and
// so do planes with more than this share of escaped bytes.
inline constexpr std::size_t k_min_plane = 64 * 1024;
inline constexpr double k_max_escape_share = 0.01;
// A pair whose count is under this share of one slot (n / 2 / 4096 pairs)
// is escaped (both bytes).
inline constexpr double k_rare_share = 0.35;

// Whether a plane of n bytes with this histogram may be coded in pairs: at
// least k_min_plane bytes, two values or more, at most k_max_escape_share of
// them outside the 15 most frequent values.
bool worth_trying(const Histogram& hist, std::size_t n);

namespace detail {
// The encoder's passes and the decoder's expansion: AVX2 (when the CPU has
// it and MITHRIL_ISA allows) or portable C++. The same bytes either way.
enum class Kernel : std::uint8_t { scalar, avx2 };
bool kernel_available(Kernel k);
// Whether the encoder counts pair symbol j of a plane of `half` pair
// symbols before its escape pass (tests: Encoder::encode's sample).
bool pair_in_sample(std::size_t j, std::size_t half);
}  // namespace detail

class Encoder {
 public:
  // With the widest kernel available; or (tests) with `k`, scalar where it
  // is not available.
  Encoder();
  explicit Encoder(detail::Kernel k);

  // Codes `in` (hist must be its exact histogram) into `out`. Returns the
  // bytes written, or nullopt when worth_trying() says no, when the pairs'
  // order-0 estimate is over give_up_above bytes (checked before the coding
  // proper), when the pair symbols' rANS block alone would take the block
  // past give_up_above (judged on its model first: usually before coding), or
  // when the block would not fit in out. Never writes past out. (A result
  // may still exceed give_up_above by its escapes: the caller compares.)
  // Deterministic: the same bytes on every CPU.
  std::optional<std::size_t> encode(util::ByteSpan in, const Histogram& hist, util::MutableByteSpan out,
                                    double give_up_above = std::numeric_limits<double>::infinity());
  // Bytes held in its buffers (they only grow).
  std::size_t buffer_bytes() const noexcept {
    return m_pairs.capacity() + m_escapes.capacity() + m_esc_coded.capacity();
  }

 private:
  util::ByteVector m_pairs, m_escapes, m_esc_coded;
  bool m_vector;
};

// Decodes a block written by Encoder::encode() into out, whose size is the
// original size. Throws Error(corrupt) on a malformed or truncated block;
// never reads or writes out of bounds, whatever the input.
void decode(util::ByteSpan block, util::MutableByteSpan out);

// The same a piece at a time, in order (like rans::PieceDecoder); decode()
// is start(), next() over all of out, finish(). Reusable block after block.
class PieceDecoder {
 public:
  PieceDecoder();
  explicit PieceDecoder(detail::Kernel k);  // tests: scalar where `k` is not available
  ~PieceDecoder();
  PieceDecoder(PieceDecoder&&) noexcept;
  PieceDecoder& operator=(PieceDecoder&&) noexcept;

  // Reads the block's header, decodes its escape stream, and starts its pair
  // stream, for an original size of n bytes. Throws Error(corrupt).
  void start(util::ByteSpan block, std::size_t n);
  // Decodes the next out.size() bytes (Error(internal) past the n of start()).
  void next(util::MutableByteSpan out);
  // After all n bytes: throws Error(corrupt) unless the pair stream ended
  // exactly and every escaped byte was used.
  void finish();
  std::size_t position() const noexcept;

 private:
  struct State;
  std::unique_ptr<State> m_state;
};

// The expansion kernel in use: "avx2" or "scalar" (MITHRIL_ISA caps it).
const char* expand_kernel_name();

}  // namespace mithril::codec::rans_pairs
