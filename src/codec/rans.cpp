// codec/rans.cpp — static order-0 rANS coder for byte planes.
//
// Block format, version 1 (multi-byte integers little-endian):
//
//   block    := tag body
//   tag      := u8 (version << 4) | kind                 version = 1
//   kind 0, empty:     body := ""                          original size is 0
//   kind 1, constant:  body := u8 symbol                   every byte is `symbol`
//   kind 2, rans:      body := params table states words
//   params   := u8 (log2_lanes << 4) | (scale - 8)        lanes 1..64, scale 8..16
//   table    := bit string, least significant bit first, zero-padded to a byte:
//                 runs   alternating absent/present runs covering symbols 0..255,
//                        absent first: EG0(len) for the first run (may be 0),
//                        EG0(len - 1) for every later run; they end exactly at 256
//                 k      4 bits
//                 freqs  EGk(freq - 1) for every present symbol but the last;
//                        the last gets M - sum(others), which must be >= 1,
//                        where M = 2^scale. At least two symbols are present.
//   states   := lanes x u32                              each in [2^16, 2^32)
//   words    := u16 ...                                  up to the end of the block
//
//   EGk(v), exp-Golomb of order k: u = (v >> k) + 1, b = bit_width(u); then
//   b - 1 zero bits, a one bit, the low b - 1 bits of u, the low k bits of v
//   (each field least significant bit first).
//
// Decoding (n = original size, given by the caller): symbol i uses lane
// i % lanes, whose state x starts as stored. slot = x mod M; the symbol s is
// the one whose range [cum_s, cum_s + f_s) holds slot, symbols in byte order;
// x = f_s * (x >> scale) + slot - cum_s; if x < 2^16 then x = x << 16 | next
// word. After the last symbol every state is 2^16 and every word has been
// read. The encoder runs the exact inverse from the last symbol to the first.
//
// Design: 32-bit states with 16-bit words (L = 2^16) need one branch-free
// renormalisation per symbol and let 8 lanes share an AVX2 register; the
// rounding loss of x / f is ~0.01% at scale 12, ~0.04% at 15 and ~0.15% at
// 16 (measured on bf16 exponents).
// The decoder is bound by the latency of its table gathers, so big blocks use
// 64 lanes (eight independent vector chains); small blocks use fewer, since
// each lane's state costs 4 bytes. Scales up to 12 pack symbol, frequency and
// bias into one 32-bit table entry, which halves the decoder's loads; the
// encoder picks a finer scale only when it saves more than 0.2%.
//
// Limits: an order-0 model with 2^16 slots gives every present symbol at
// least 2^-16, so data with many distinct very rare symbols (say 99.9% zeros
// and the rest spread over 255 values) codes ~15% above the entropy.
#include "codec/rans.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>

#include "codec/rans_table.hpp"
#include "mithril/error.hpp"

#if defined(__x86_64__) && defined(__GNUC__)
#define MITHRIL_RANS_X86 1
#include <immintrin.h>
#else
#define MITHRIL_RANS_X86 0
#endif

namespace mithril::codec::rans {
namespace {

using namespace detail;
using u8 = std::uint8_t;
using u16 = std::uint16_t;
using u32 = std::uint32_t;
using u64 = std::uint64_t;
__extension__ typedef unsigned __int128 u128;

constexpr unsigned k_version = 1;
constexpr unsigned k_kind_empty = 0;
constexpr unsigned k_kind_constant = 1;
constexpr unsigned k_kind_rans = 2;
constexpr unsigned k_max_lanes_log2 = 6;
constexpr unsigned k_max_lanes = 1u << k_max_lanes_log2;
constexpr u32 k_state_low = u32{1} << 16;  // L: states live in [L, 2^32)
// Scales up to this one use the packed decode table (see DecTables).
constexpr unsigned k_packed_max_scale = 12;

[[noreturn]] void corrupt(const char* what) { throw Error(Errc::corrupt, std::string("rans block: ") + what); }

u8 tag(unsigned kind) { return static_cast<u8>((k_version << 4) | kind); }

// ---- planning ----------------------------------------------------------------
struct Plan {
  unsigned scale = 0;
  unsigned k = 0;
  unsigned lanes_log2 = 0;
  Freqs freq{};
  u64 table_bits = 0;
  double payload_bits = 0.0;
};

Plan plan_block(const Histogram& hist, u64 n, unsigned nsym) {
  // Three tiers of scale: up to 12 the decoder needs one table load per
  // symbol and runs about twice as fast; 13..15 cost ~0.04% in rounding, 16
  // ~0.15%. A finer tier is taken only when its model saves more than 0.2%
  // over the coarser one, which happens for very skewed data with many rare
  // symbols. Big blocks try only the finest scale of each tier; small ones
  // try every scale, as their table size matters as much as precision.
  const unsigned lo = std::max<unsigned>(k_min_scale, static_cast<unsigned>(std::bit_width(nsym - 1u)));
  const bool big = n >= (u64{1} << 16);
  constexpr double k_inf = std::numeric_limits<double>::infinity();
  std::array<Plan, 3> tier;
  std::array<double, 3> tier_total{k_inf, k_inf, k_inf};
  Plan p;
  for (unsigned scale = lo; scale <= k_max_scale; ++scale) {
    const unsigned t = scale <= k_packed_max_scale ? 0 : scale < k_max_scale ? 1 : 2;
    if (big && scale != k_packed_max_scale && scale != k_max_scale - 1 && scale != k_max_scale) continue;
    p.scale = scale;
    normalize(hist, n, scale, p.freq);
    p.payload_bits = payload_bits(hist, p.freq, scale);
    const TableCost tc = table_cost(p.freq);
    p.k = tc.k;
    p.table_bits = tc.bits;
    const double total = p.payload_bits + static_cast<double>(tc.bits);
    if (total < tier_total[t]) {
      tier_total[t] = total;
      tier[t] = p;
    }
  }
  unsigned pick = 0;
  for (unsigned t = 1; t < 3; ++t)
    if (tier_total[t] < tier_total[pick] * (1.0 - 1.0 / 512) - 64) pick = t;
  Plan best = tier[pick];
  // Each lane stores a 4-byte state, ~3 bytes of it overhead. Allow that
  // ~0.4% of the payload, or 1/2048 of the raw size so that big blocks that
  // code to almost nothing (mostly zeros) still decode with all lanes.
  const double budget = std::max(best.payload_bits / 8.0 / 256.0, static_cast<double>(n) / 2048.0);
  while (best.lanes_log2 < k_max_lanes_log2 && (u64{4} << (best.lanes_log2 + 1)) <= budget &&
         (u64{1} << (best.lanes_log2 + 1)) <= n)
    ++best.lanes_log2;
  return best;
}

// ---- encoder -----------------------------------------------------------------
struct EncSym {
  u64 rcp;    // floor((2^64 - 1) / f)
  u32 x_max;  // emit a word first when the state is >= this
  u16 bias;   // cum (< 2^16)
  u16 cmpl;   // M - f (< 2^16)
};

void build_encoder(const Freqs& freq, unsigned scale, std::array<EncSym, 256>& tab) {
  const u32 m = u32{1} << scale;
  u32 cum = 0;
  for (unsigned s = 0; s < 256; ++s) {
    const u32 f = freq[s];
    if (f == 0) {
      tab[s] = EncSym{0, 0, 0, 0};  // unused with a correct histogram; still memory-safe
      continue;
    }
    tab[s] = EncSym{~u64{0} / f, f << (32 - scale), static_cast<u16>(cum), static_cast<u16>(m - f)};
    cum += f;
  }
}

// floor(x / f) for x < 2^32, f <= 2^16, with one multiply: with
// r = floor((2^64 - 1) / f) = 2^64 / f - e, 0 < e <= 1, (x + 1) * r / 2^64 is
// (x + 1) / f minus less than 2^-32, so its floor is floor(x / f) exactly
// (x + 1 = qf + (x mod f) + 1 leaves a fraction of at least 1/f to eat into).
inline u32 div_f(u32 x, u64 rcp) { return static_cast<u32>((static_cast<u128>(u64{x} + 1) * rcp) >> 64); }

inline u32 enc_put(u32 x, const EncSym& e) {
  return x + e.bias + div_f(x, e.rcp) * e.cmpl;  // = q * M + x mod f + cum, < 2^32
}

// Encodes in[0, n) backwards, writing words downwards from `front` but never
// below `floor`. Returns false when they do not fit.
template <unsigned Lanes>
bool encode_lanes(const u8* in, std::size_t n, const std::array<EncSym, 256>& tab, const u8* floor, u8*& front,
                  u32* states_out) {
  u32 x[Lanes];
  for (unsigned k = 0; k < Lanes; ++k) x[k] = k_state_low;
  u8* p = front;
  auto checked = [&](unsigned k, u8 sym) {
    const EncSym& e = tab[sym];
    if (x[k] >= e.x_max) {
      if (p - floor < 2) return false;
      p -= 2;
      util::store_le<u16>(reinterpret_cast<std::byte*>(p), static_cast<u16>(x[k]));
      x[k] >>= 16;
    }
    x[k] = enc_put(x[k], e);
    return true;
  };
  const std::size_t rounds = n / Lanes;
  const std::size_t tail = n % Lanes;
  for (std::size_t k = tail; k-- > 0;)
    if (!checked(static_cast<unsigned>(k), in[rounds * Lanes + k])) return false;
  for (std::size_t r = rounds; r-- > 0;) {
    const u8* src = in + r * Lanes;
    if (p - floor >= static_cast<std::ptrdiff_t>(2 * Lanes)) {
      for (unsigned k = Lanes; k-- > 0;) {
        // Branch-free on purpose: whether a lane emits is a coin flip.
        const EncSym& e = tab[src[k]];
        const u32 xs = x[k];
        const bool c = xs >= e.x_max;
        util::store_le<u16>(reinterpret_cast<std::byte*>(p - 2), static_cast<u16>(xs));  // kept only if c
        p -= 2 * static_cast<std::size_t>(c);
        const u32 hi = xs >> 16;
        x[k] = enc_put(c ? hi : xs, e);
      }
    } else {
      for (unsigned k = Lanes; k-- > 0;)
        if (!checked(k, src[k])) return false;
    }
  }
  front = p;
  for (unsigned k = 0; k < Lanes; ++k) states_out[k] = x[k];
  return true;
}

using EncodeFn = bool (*)(const u8*, std::size_t, const std::array<EncSym, 256>&, const u8*, u8*&, u32*);
constexpr EncodeFn k_encoders[] = {encode_lanes<1>, encode_lanes<2>, encode_lanes<4>,
                                   encode_lanes<8>, encode_lanes<16>, encode_lanes<32>, encode_lanes<64>};

// ---- decoder -----------------------------------------------------------------
// Two table layouts, one 32-bit load per symbol on the state's critical path:
//   packed (scale <= 12): slot -> sym | bias << 8 | f << 20, one load in all;
//   wide (scale 13..16):  slot -> f | bias << 16, plus slot -> sym bytes;
// where bias = slot - cum. Then x = f * (x >> scale) + bias.
struct DecTables {
  unsigned scale = 0;
  std::unique_ptr<u32[]> slots;  // 2^scale entries
  std::unique_ptr<u8[]> sym;     // wide only: 2^scale entries + padding for 4-byte gathers
};

void build_decoder(const Freqs& freq, unsigned scale, DecTables& t) {
  const u32 m = u32{1} << scale;
  t.scale = scale;
  t.slots = std::make_unique_for_overwrite<u32[]>(m);
  const bool packed = scale <= k_packed_max_scale;
  if (!packed) {
    t.sym = std::make_unique_for_overwrite<u8[]>(m + 8);
    std::memset(t.sym.get() + m, 0, 8);
  }
  u32* slots = t.slots.get();
  u32 cum = 0;
  for (u32 s = 0; s < 256; ++s) {
    const u32 f = freq[s];
    if (f == 0) continue;
    if (packed) {
      for (u32 b = 0; b < f; ++b) slots[cum + b] = s | (b << 8) | (f << 20);
    } else {
      for (u32 b = 0; b < f; ++b) slots[cum + b] = f | (b << 16);
      std::memset(t.sym.get() + cum, static_cast<int>(s), f);
    }
    cum += f;
  }
}

// Shared state of one block's decode: kernels run whole rounds (one symbol
// per lane) and leave the rest to the next kernel or the checked tail.
struct DecodeCursor {
  u32 x[k_max_lanes];
  const u8* p;
  const u8* end;
  u8* out;
  std::size_t round = 0;  // rounds done
  std::size_t rounds;     // whole rounds in the block
};

// One decoding step before renormalisation. Invariant, whatever the input:
// x in [2^16, 2^32) before each step, so f * (x >> scale) + bias <
// f * 2^(32 - scale) < 2^32 never wraps, and renormalisation restores x >= 2^16.
template <bool Packed>
inline u32 dec_step(const DecTables& t, u32 x, u8& sym) {
  const u32 slot = x & ((u32{1} << t.scale) - 1);
  const u32 e = t.slots[slot];
  if constexpr (Packed) {
    sym = static_cast<u8>(e);
    return (e >> 20) * (x >> t.scale) + ((e >> 8) & 0xfff);
  } else {
    sym = t.sym[slot];
    return (e & 0xffff) * (x >> t.scale) + (e >> 16);
  }
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

// One symbol with every read checked: for the last rounds and the tail.
template <bool Packed>
void decode_checked(const DecTables& t, DecodeCursor& c, unsigned k, u8* o) {
  u32 y = dec_step<Packed>(t, c.x[k], *o);
  if (y < k_state_low) {
    if (c.end - c.p < 2) corrupt("stream truncated");
    y = (y << 16) | util::load_le<u16>(reinterpret_cast<const std::byte*>(c.p));
    c.p += 2;
  }
  c.x[k] = y;
}

#if MITHRIL_RANS_X86
// lane k of an 8-lane group takes the (number of renormalising lanes below
// k)-th word of the group's 16-byte load.
struct ExpandLut {
  alignas(32) u32 idx[256][8];
};
constexpr ExpandLut make_expand_lut() {
  ExpandLut l{};
  for (unsigned m = 0; m < 256; ++m)
    for (unsigned k = 0, c = 0; k < 8; ++k) l.idx[m][k] = (m >> k) & 1 ? c++ : 0;
  return l;
}
constexpr ExpandLut k_expand = make_expand_lut();

// Same arithmetic as decode_rounds_scalar, eight lanes per register. Each
// group reads its words with one 16-byte load; a round starts only when
// 2 * Lanes bytes remain, which covers every group's load.
template <unsigned V, bool Packed>
__attribute__((target("avx2,popcnt"))) void decode_rounds_avx2(const DecTables& t, DecodeCursor& c) {
  constexpr unsigned Lanes = 8 * V;
  __m256i x[V];
  for (unsigned v = 0; v < V; ++v) x[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c.x + 8 * v));
  const __m256i mask = _mm256_set1_epi32(static_cast<int>((u32{1} << t.scale) - 1));
  const __m256i low16 = _mm256_set1_epi32(0xffff);
  const __m256i low12 = _mm256_set1_epi32(0xfff);
  const __m256i low8 = _mm256_set1_epi32(0xff);
  const __m256i zero = _mm256_setzero_si256();
  const __m128i shift = _mm_cvtsi32_si128(static_cast<int>(t.scale));
  // Low byte of each dword to the bottom of each 128-bit half, then halves together.
  const __m256i pack_bytes = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,  //
                                              0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  const __m256i pack_halves = _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1);
  const auto* slots = reinterpret_cast<const int*>(t.slots.get());
  const auto* sym = reinterpret_cast<const int*>(t.sym.get());
  const u8* p = c.p;
  std::size_t r = c.round;
  for (; r < c.rounds && c.end - p >= static_cast<std::ptrdiff_t>(2 * Lanes); ++r) {
    u8* o = c.out + r * Lanes;
    for (unsigned v = 0; v < V; ++v) {
      const __m256i slot = _mm256_and_si256(x[v], mask);
      const __m256i e = _mm256_i32gather_epi32(slots, slot, 4);
      __m256i s, y;
      if constexpr (Packed) {
        s = _mm256_and_si256(e, low8);
        y = _mm256_mullo_epi32(_mm256_srli_epi32(e, 20), _mm256_srl_epi32(x[v], shift));
        y = _mm256_add_epi32(y, _mm256_and_si256(_mm256_srli_epi32(e, 8), low12));
      } else {
        s = _mm256_and_si256(_mm256_i32gather_epi32(sym, slot, 1), low8);
        y = _mm256_mullo_epi32(_mm256_and_si256(e, low16), _mm256_srl_epi32(x[v], shift));
        y = _mm256_add_epi32(y, _mm256_srli_epi32(e, 16));
      }
      const __m256i renorm = _mm256_cmpeq_epi32(_mm256_srli_epi32(y, 16), zero);
      const auto bits = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(renorm)));
      __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      w = _mm256_permutevar8x32_epi32(w, _mm256_load_si256(reinterpret_cast<const __m256i*>(k_expand.idx[bits])));
      x[v] = _mm256_blendv_epi8(y, _mm256_or_si256(_mm256_slli_epi32(y, 16), w), renorm);
      p += 2 * _mm_popcnt_u32(bits);
      const __m256i b = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(s, pack_bytes), pack_halves);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(o + 8 * v), _mm256_castsi256_si128(b));
    }
  }
  for (unsigned v = 0; v < V; ++v) _mm256_storeu_si256(reinterpret_cast<__m256i*>(c.x + 8 * v), x[v]);
  c.p = p;
  c.round = r;
}

bool cpu_has_avx2() {
  static const bool has = [] {
    __builtin_cpu_init();  // in case we run before libgcc's constructor
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
  }();
  return has;
}
#else
bool cpu_has_avx2() { return false; }
#endif

using RoundsFn = void (*)(const DecTables&, DecodeCursor&);

template <bool Packed>
RoundsFn pick_rounds(unsigned lanes_log2, Kernel kernel) {
#if MITHRIL_RANS_X86
  if (kernel == Kernel::avx2 && cpu_has_avx2() && lanes_log2 >= 3) {
    constexpr RoundsFn avx2[] = {decode_rounds_avx2<1, Packed>, decode_rounds_avx2<2, Packed>,
                                 decode_rounds_avx2<4, Packed>, decode_rounds_avx2<8, Packed>};
    return avx2[lanes_log2 - 3];
  }
#else
  (void)kernel;
#endif
  constexpr RoundsFn scalar[] = {decode_rounds_scalar<1, Packed>,  decode_rounds_scalar<2, Packed>,
                                 decode_rounds_scalar<4, Packed>,  decode_rounds_scalar<8, Packed>,
                                 decode_rounds_scalar<16, Packed>, decode_rounds_scalar<32, Packed>,
                                 decode_rounds_scalar<64, Packed>};
  return scalar[lanes_log2];
}

template <bool Packed>
void decode_lanes(const DecTables& t, DecodeCursor& c, unsigned lanes_log2, std::size_t n, Kernel kernel) {
  const unsigned lanes = 1u << lanes_log2;
  pick_rounds<Packed>(lanes_log2, kernel)(t, c);
  for (; c.round < c.rounds; ++c.round)
    for (unsigned k = 0; k < lanes; ++k) decode_checked<Packed>(t, c, k, c.out + c.round * lanes + k);
  for (unsigned k = 0; k < n % lanes; ++k) decode_checked<Packed>(t, c, k, c.out + c.rounds * lanes + k);
}

Kernel best_kernel() { return cpu_has_avx2() ? Kernel::avx2 : Kernel::scalar; }

void decode_impl(util::ByteSpan block, util::MutableByteSpan out, Kernel kernel) {
  if (block.empty()) corrupt("empty");
  const u8* b = reinterpret_cast<const u8*>(block.data());
  const std::size_t size = block.size();
  if ((b[0] >> 4) != k_version)
    throw Error(Errc::corrupt, "rans block: unknown version " + std::to_string(b[0] >> 4));
  u8* o = reinterpret_cast<u8*>(out.data());
  const std::size_t n = out.size();
  switch (b[0] & 15) {
    case k_kind_empty:
      if (size != 1) corrupt("bad empty block");
      if (n != 0) corrupt("empty block for a non-empty output");
      return;
    case k_kind_constant:
      if (size != 2) corrupt("bad constant block");
      if (n == 0) corrupt("constant block for an empty output");
      std::memset(o, b[1], n);
      return;
    case k_kind_rans:
      break;
    default:
      corrupt("unknown block kind");
  }
  if (size < 2) corrupt("truncated header");
  const unsigned lanes_log2 = b[1] >> 4;
  const unsigned scale = (b[1] & 15) + k_min_scale;
  if (lanes_log2 > k_max_lanes_log2 || scale > k_max_scale) corrupt("bad parameters");
  const std::size_t lanes = std::size_t{1} << lanes_log2;
  if (lanes > n) corrupt("more lanes than symbols");
  Freqs freq;
  const std::size_t head = 2 + read_table(b + 2, size - 2, scale, freq);
  if (size - head < 4 * lanes) corrupt("truncated states");
  DecodeCursor c;
  for (std::size_t k = 0; k < lanes; ++k) {
    c.x[k] = util::load_le<u32>(block.data() + head + 4 * k);
    if (c.x[k] < k_state_low) corrupt("state out of range");
  }
  c.p = b + head + 4 * lanes;
  c.end = b + size;
  c.out = o;
  c.rounds = n / lanes;
  DecTables t;
  build_decoder(freq, scale, t);
  if (scale <= k_packed_max_scale)
    decode_lanes<true>(t, c, lanes_log2, n, kernel);
  else
    decode_lanes<false>(t, c, lanes_log2, n, kernel);
  if (c.p != c.end) corrupt("trailing bytes after the stream");
  for (std::size_t k = 0; k < lanes; ++k)
    if (c.x[k] != k_state_low) corrupt("final state mismatch");
}

}  // namespace

std::optional<std::size_t> encode(util::ByteSpan in, const Histogram& hist, util::MutableByteSpan out) {
  const std::size_t n = in.size();
  if (n > std::numeric_limits<u32>::max())
    throw Error(Errc::invalid_argument, "rans::encode: block of " + std::to_string(n) + " bytes exceeds 4 GiB");
  u64 total = 0;
  unsigned nsym = 0, last = 0;
  for (unsigned s = 0; s < 256; ++s) {
    total += hist[s];
    if (hist[s]) nsym++, last = s;
  }
  if (total != n)
    throw Error(Errc::invalid_argument, "rans::encode: histogram counts " + std::to_string(total) +
                                            " bytes, input has " + std::to_string(n));
  u8* o = reinterpret_cast<u8*>(out.data());
  if (n == 0) {
    if (out.empty()) return std::nullopt;
    o[0] = tag(k_kind_empty);
    return 1;
  }
  if (nsym == 1) {
    if (out.size() < 2) return std::nullopt;
    o[0] = tag(k_kind_constant);
    o[1] = static_cast<u8>(last);
    return 2;
  }

  const Plan plan = plan_block(hist, n, nsym);
  const std::size_t lanes = std::size_t{1} << plan.lanes_log2;
  const std::size_t head = 2 + (plan.table_bits + 7) / 8;
  const std::size_t floor = head + 4 * lanes;
  // Give up before any work when the model's size is clearly over: rANS
  // lands within a few bytes per lane of payload_bits (it can undercut it
  // only by what the final states hold, < 2 bytes a lane), so the slack
  // below is generous, yet small enough to catch near-random planes.
  const double estimate = static_cast<double>(head) + 2.0 * static_cast<double>(lanes) + plan.payload_bits / 8.0;
  const double slack = plan.payload_bits / 8.0 / 262144.0 + 32.0;
  if (estimate - slack > static_cast<double>(out.size()) || out.size() < floor) return std::nullopt;

  o[0] = tag(k_kind_rans);
  o[1] = static_cast<u8>((plan.lanes_log2 << 4) | (plan.scale - k_min_scale));
  {
    std::array<u8, k_max_table_bytes> buf;  // aside, so `out` is never overrun
    const std::size_t written = write_table(plan.freq, plan.k, buf.data());
    if (2 + written != head) throw Error(Errc::internal, "rans::encode: table size mismatch");
    std::memcpy(o + 2, buf.data(), written);
  }
  std::array<EncSym, 256> tab;
  build_encoder(plan.freq, plan.scale, tab);
  u32 states[k_max_lanes];
  u8* front = o + out.size();
  const auto* src = reinterpret_cast<const u8*>(in.data());
  if (!k_encoders[plan.lanes_log2](src, n, tab, o + floor, front, states)) return std::nullopt;
  const auto words = static_cast<std::size_t>(o + out.size() - front);
  std::memmove(o + floor, front, words);
  for (std::size_t k = 0; k < lanes; ++k) util::store_le<u32>(out.data() + head + 4 * k, states[k]);
  return floor + words;
}

void decode(util::ByteSpan block, util::MutableByteSpan out) { decode_impl(block, out, best_kernel()); }

std::string_view decode_isa() { return best_kernel() == Kernel::avx2 ? "avx2" : "scalar"; }

namespace detail {
bool kernel_available(Kernel k) { return k == Kernel::scalar || cpu_has_avx2(); }
void decode_with(util::ByteSpan block, util::MutableByteSpan out, Kernel k) { decode_impl(block, out, k); }
}  // namespace detail

}  // namespace mithril::codec::rans
