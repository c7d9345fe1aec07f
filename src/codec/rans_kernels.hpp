// codec/rans_kernels.hpp — private to the rANS coder: the tables and cursors
// shared by its scalar, AVX2 and AVX-512 kernels, and the kernel entry points.
//
// Kernel contract (see rans.cpp for the arithmetic and the bitstream):
//  * an encode kernel runs whole rounds (one symbol per lane) backwards from
//    round c.round - 1, for as long as a round's words surely fit above
//    c.floor (2 * lanes bytes), and leaves the rest to the checked scalar loop;
//  * a decode kernel runs whole rounds forwards while 2 * lanes input bytes
//    remain, and leaves the rest to the checked scalar loop.
// Every kernel reads and writes exactly the bytes the scalar one does, so the
// stream is the same whatever kernel wrote it or reads it.
//
// Each ISA lives in its own translation units (rans_<isa>.cpp; AVX2's
// kernels as templates in rans_avx2_encode.hpp / rans_avx2_decode.hpp,
// instantiated by rans_avx2.cpp, rans_avx2x.cpp, rans_avx2_decode.cpp and
// rans_avx2x_decode.cpp, each with its own tuning; AVX-512's, avx512 and
// avx512x, all in rans_avx512.cpp) built with function target attributes,
// never -march, and is called only when the CPU has it (kernel_available).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "codec/rans.hpp"
#include "codec/rans_table.hpp"

namespace mithril::codec::rans::detail {

constexpr unsigned k_max_lanes_log2 = 6;
constexpr unsigned k_max_lanes = 1u << k_max_lanes_log2;
constexpr std::uint32_t k_state_low = std::uint32_t{1} << 16;  // L: states live in [L, 2^32)
// Scales up to this one use the packed decode table (see DecTables).
constexpr unsigned k_packed_max_scale = 12;

// ---- encoder -------------------------------------------------------------------
struct EncSym {
  std::uint64_t rcp;    // floor((2^64 - 1) / f)
  std::uint32_t x_max;  // emit a word first when the state is >= this
  std::uint16_t bias;   // cum (< 2^16)
  std::uint16_t cmpl;   // M - f (< 2^16)
};

struct EncTables {
  unsigned scale = 0;
  std::array<EncSym, 256> sym;                // scalar kernel
  alignas(64) std::uint32_t cum_f[256];       // vector kernels: cum | f << 16
  alignas(64) std::uint32_t rcp32[256];       // floor((2^32 - 1) / f), 0 when f = 0
  alignas(64) std::uint64_t cf_rcp[256];      // both in one load: cum_f | rcp32 << 32
};

void build_encoder(const Freqs& freq, unsigned scale, EncTables& t);

// The byte values a block codes, those with a frequency (the histogram is the
// block's own, so no other byte occurs in it): [first, last], first > last
// when there are none. The AVX-512 encoder keeps the tables of a narrow span
// in registers instead of gathering from them.
struct SymbolSpan {
  unsigned first = 256;
  unsigned last = 0;
  bool within(unsigned n) const noexcept { return first <= last && last - first < n; }
};
inline SymbolSpan coded_span(const EncTables& t) noexcept {
  SymbolSpan s;
  for (unsigned b = 0; b < 256; ++b)
    if (t.cum_f[b] >> 16) {
      if (s.first > b) s.first = b;
      s.last = b;
    }
  return s;
}
// cum_f and rcp32 of byte values first .. first + n - 1 (0 past 255).
inline void window_tables(const EncTables& t, unsigned first, unsigned n, std::uint32_t* cf, std::uint32_t* rc) {
  for (unsigned i = 0; i < n; ++i) {
    cf[i] = first + i < 256 ? t.cum_f[first + i] : 0;
    rc[i] = first + i < 256 ? t.rcp32[first + i] : 0;
  }
}

struct EncodeCursor {
  std::uint32_t x[k_max_lanes];
  std::uint8_t* p;           // words are written downwards from here
  const std::uint8_t* floor; // never below this
  std::size_t round;         // rounds [0, round) are still to be coded
};

// in: the block's first byte; lanes = 2^lanes_log2 of the kernel's template.
using EncodeRoundsFn = void (*)(const std::uint8_t* in, const EncTables& t, EncodeCursor& c);

// ---- decoder -------------------------------------------------------------------
// Two table layouts, one 32-bit load per symbol on the state's critical path:
//   packed (scale <= 12): slot -> sym | bias << 8 | f << 20, one load in all;
//   wide (scale 13..16):  slot -> f | bias << 16, plus slot -> sym bytes;
// where bias = slot - cum. Then x = f * (x >> scale) + bias.
struct DecTables {
  unsigned scale = 0;
  std::unique_ptr<std::uint32_t[]> slots;  // 2^scale entries
  std::unique_ptr<std::uint8_t[]> sym;     // wide only: 2^scale entries + padding for 4-byte gathers
  std::size_t slots_capacity = 0;          // entries allocated (kept for the next block)
  std::size_t sym_capacity = 0;
};

void build_decoder(const Freqs& freq, unsigned scale, DecTables& t);

struct DecodeCursor {
  std::uint32_t x[k_max_lanes];
  const std::uint8_t* p;
  const std::uint8_t* end;
  std::uint8_t* out;
  std::size_t round = 0;  // rounds done
  std::size_t rounds;     // whole rounds in the block
};

// One decoding step before renormalisation. Invariant, whatever the input:
// x in [2^16, 2^32) before each step, so f * (x >> scale) + bias <
// f * 2^(32 - scale) < 2^32 never wraps, and renormalisation restores x >= 2^16.
template <bool Packed>
inline std::uint32_t dec_step(const DecTables& t, std::uint32_t x, std::uint8_t& sym) {
  const std::uint32_t slot = x & ((std::uint32_t{1} << t.scale) - 1);
  const std::uint32_t e = t.slots[slot];
  if constexpr (Packed) {
    sym = static_cast<std::uint8_t>(e);
    return (e >> 20) * (x >> t.scale) + ((e >> 8) & 0xfff);
  } else {
    sym = t.sym[slot];
    return (e & 0xffff) * (x >> t.scale) + (e >> 16);
  }
}

using DecodeRoundsFn = void (*)(const DecTables& t, DecodeCursor& c);

// The kernels encode() and decode() use, each chosen once, at its first use
// (rans_dispatch.cpp): a process that only decodes never times an encoder.
Kernel active_encode_kernel();
Kernel active_decode_kernel();

// The kernels of one ISA for a lane count and table layout, or nullptr when
// the ISA has none for it (too few lanes for its registers).
EncodeRoundsFn encode_rounds(Kernel k, unsigned lanes_log2);
DecodeRoundsFn decode_rounds(Kernel k, unsigned lanes_log2, bool packed);

#if defined(__x86_64__) && defined(__GNUC__)
EncodeRoundsFn encode_rounds_avx2(unsigned lanes_log2);
EncodeRoundsFn encode_rounds_avx2x(unsigned lanes_log2);
DecodeRoundsFn decode_rounds_avx2(unsigned lanes_log2, bool packed);
DecodeRoundsFn decode_rounds_avx2x(unsigned lanes_log2, bool packed);
EncodeRoundsFn encode_rounds_avx512(unsigned lanes_log2);
DecodeRoundsFn decode_rounds_avx512(unsigned lanes_log2, bool packed);
DecodeRoundsFn decode_rounds_avx512x(unsigned lanes_log2, bool packed);
#endif

}  // namespace mithril::codec::rans::detail
