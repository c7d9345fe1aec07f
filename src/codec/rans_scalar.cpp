// codec/rans_scalar.cpp — the rANS coding tables, the portable (scalar)
// kernels, and the per-ISA kernel lookup. Arithmetic and bitstream: rans.cpp.
#include <cstring>

#include "codec/rans_kernels.hpp"
#include "util/bytes.hpp"

namespace mithril::codec::rans::detail {
namespace {

using u8 = std::uint8_t;
using u16 = std::uint16_t;
using u32 = std::uint32_t;
using u64 = std::uint64_t;
__extension__ typedef unsigned __int128 u128;

// floor(x / f) for x < 2^32, f <= 2^16, with one multiply: with
// r = floor((2^64 - 1) / f) = 2^64 / f - e, 0 < e <= 1, (x + 1) * r / 2^64 is
// (x + 1) / f minus less than 2^-32, so its floor is floor(x / f) exactly
// (x + 1 = qf + (x mod f) + 1 leaves a fraction of at least 1/f to eat into).
inline u32 div_f(u32 x, u64 rcp) { return static_cast<u32>((static_cast<u128>(u64{x} + 1) * rcp) >> 64); }

inline u32 enc_put(u32 x, const EncSym& e) {
  return x + e.bias + div_f(x, e.rcp) * e.cmpl;  // = q * M + x mod f + cum, < 2^32
}

template <unsigned Lanes>
void encode_rounds_scalar(const u8* in, const EncTables& t, EncodeCursor& c) {
  u32 x[Lanes];
  std::memcpy(x, c.x, sizeof x);
  u8* p = c.p;
  std::size_t r = c.round;
  for (; r > 0 && p - c.floor >= static_cast<std::ptrdiff_t>(2 * Lanes); --r) {
    const u8* src = in + (r - 1) * Lanes;
    for (unsigned k = Lanes; k-- > 0;) {
      // Branch-free on purpose: whether a lane emits is a coin flip.
      const EncSym& e = t.sym[src[k]];
      const u32 xs = x[k];
      const bool emit = xs >= e.x_max;
      util::store_le<u16>(reinterpret_cast<std::byte*>(p - 2), static_cast<u16>(xs));  // kept only if emit
      p -= 2 * static_cast<std::size_t>(emit);
      x[k] = enc_put(emit ? xs >> 16 : xs, e);
    }
  }
  std::memcpy(c.x, x, sizeof x);
  c.p = p;
  c.round = r;
}

template <unsigned Lanes, bool Packed>
void decode_rounds_scalar(const DecTables& t, DecodeCursor& c) {
  u32 x[Lanes];
  std::memcpy(x, c.x, sizeof x);
  const u8* p = c.p;
  std::size_t r = c.round;
  for (; r < c.rounds && c.end - p >= static_cast<std::ptrdiff_t>(2 * Lanes); ++r) {
    u8* o = c.out + r * Lanes;
    for (unsigned k = 0; k < Lanes; ++k) {
      u32 y = dec_step<Packed>(t, x[k], o[k]);
      // Branch-free on purpose: whether a lane reads is a coin flip.
      const u32 w = util::load_le<u16>(reinterpret_cast<const std::byte*>(p));
      const u32 renorm = y < k_state_low;
      x[k] = (y << (16 * renorm)) | (w & (0u - renorm));
      p += 2 * renorm;
    }
  }
  std::memcpy(c.x, x, sizeof x);
  c.p = p;
  c.round = r;
}

}  // namespace

void build_encoder(const Freqs& freq, unsigned scale, EncTables& t) {
  const u32 m = u32{1} << scale;
  t.scale = scale;
  u32 cum = 0;
  for (unsigned s = 0; s < 256; ++s) {
    const u32 f = freq[s];
    if (f == 0) {
      // Unused with a correct histogram; still memory-safe.
      t.sym[s] = EncSym{0, 0, 0, 0};
      t.cum_f[s] = 0;
      t.rcp32[s] = 0;
      t.cf_rcp[s] = 0;
      continue;
    }
    t.sym[s] = EncSym{~u64{0} / f, f << (32 - scale), static_cast<u16>(cum), static_cast<u16>(m - f)};
    t.cum_f[s] = cum | (f << 16);  // f < M <= 2^16: two symbols at least
    t.rcp32[s] = ~u32{0} / f;
    t.cf_rcp[s] = t.cum_f[s] | u64{t.rcp32[s]} << 32;
    cum += f;
  }
}

void build_decoder(const Freqs& freq, unsigned scale, DecTables& t) {
  const u32 m = u32{1} << scale;
  t.scale = scale;
  // (Packed entries are written eight at a time, the last symbol's past m.)
  if (t.slots_capacity < m + 8) {
    t.slots = std::make_unique_for_overwrite<u32[]>(m + 8);
    t.slots_capacity = m + 8;
  }
  const bool packed = scale <= k_packed_max_scale;
  if (!packed) {
    if (t.sym_capacity < m + 8) {
      t.sym = std::make_unique_for_overwrite<u8[]>(m + 8);
      t.sym_capacity = m + 8;
    }
    std::memset(t.sym.get() + m, 0, 8);
  }
  u32* slots = t.slots.get();
  u32 cum = 0;
  for (u32 s = 0; s < 256; ++s) {
    const u32 f = freq[s];
    if (f == 0) continue;
    if (packed) {
      // Eight entries a store, the symbol's run rounded up to eight: the
      // next symbol's entries overwrite the excess (a table of 4096 entries
      // and ~200 symbols, a small block's, in a third of the time of one
      // entry at a time; a LoRA adapter's 96 planes spent 10% of their
      // decoding here).
      // (Two 16-byte vectors, stored through an unaligned vector type: a
      // 32-byte one, or a memcpy, kept them on the stack.)
      using V4 = u32 __attribute__((vector_size(16)));
      using V4u [[gnu::aligned(4), gnu::may_alias]] = V4;
      const u32 base = s | (f << 20);
      V4 lo = V4{0, 1, 2, 3} << 8 | base, hi = V4{4, 5, 6, 7} << 8 | base;
      for (u32 b = 0; b < f; b += 8) {
        *reinterpret_cast<V4u*>(slots + cum + b) = lo;
        *reinterpret_cast<V4u*>(slots + cum + b + 4) = hi;
        lo += 8u << 8;
        hi += 8u << 8;
      }
    } else {
      for (u32 b = 0; b < f; ++b) slots[cum + b] = f | (b << 16);
      std::memset(t.sym.get() + cum, static_cast<int>(s), f);
    }
    cum += f;
  }
}

EncodeRoundsFn encode_rounds(Kernel k, unsigned lanes_log2) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (k == Kernel::avx512x) k = Kernel::avx512;  // the same encoder
  if (k == Kernel::avx512)
    if (auto fn = encode_rounds_avx512(lanes_log2)) return fn;
  if (k == Kernel::avx2x)
    if (auto fn = encode_rounds_avx2x(lanes_log2)) return fn;
  if (k == Kernel::avx512 || k == Kernel::avx2)
    if (auto fn = encode_rounds_avx2(lanes_log2)) return fn;
#else
  (void)k;
#endif
  constexpr EncodeRoundsFn scalar[] = {encode_rounds_scalar<1>,  encode_rounds_scalar<2>,  encode_rounds_scalar<4>,
                                       encode_rounds_scalar<8>,  encode_rounds_scalar<16>, encode_rounds_scalar<32>,
                                       encode_rounds_scalar<64>};
  return scalar[lanes_log2];
}

DecodeRoundsFn decode_rounds(Kernel k, unsigned lanes_log2, bool packed) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (k == Kernel::avx512)
    if (auto fn = decode_rounds_avx512(lanes_log2, packed)) return fn;
  if (k == Kernel::avx512x) {
    if (auto fn = decode_rounds_avx512x(lanes_log2, packed)) return fn;
    k = Kernel::avx2x;  // 8 lanes: AVX2's registers, the same loads
  }
  if (k == Kernel::avx2x)
    if (auto fn = decode_rounds_avx2x(lanes_log2, packed)) return fn;
  if (k == Kernel::avx512 || k == Kernel::avx2)
    if (auto fn = decode_rounds_avx2(lanes_log2, packed)) return fn;
#else
  (void)k;
#endif
  constexpr DecodeRoundsFn scalar[2][7] = {
      {decode_rounds_scalar<1, false>, decode_rounds_scalar<2, false>, decode_rounds_scalar<4, false>,
       decode_rounds_scalar<8, false>, decode_rounds_scalar<16, false>, decode_rounds_scalar<32, false>,
       decode_rounds_scalar<64, false>},
      {decode_rounds_scalar<1, true>, decode_rounds_scalar<2, true>, decode_rounds_scalar<4, true>,
       decode_rounds_scalar<8, true>, decode_rounds_scalar<16, true>, decode_rounds_scalar<32, true>,
       decode_rounds_scalar<64, true>}};
  return scalar[packed][lanes_log2];
}

}  // namespace mithril::codec::rans::detail
