// codec/rans_avx2.cpp — AVX2 rANS kernels: eight lanes per register, up to
// eight independent registers (64 lanes). Same arithmetic and the same bytes
// as the scalar kernels in rans_scalar.cpp; see rans_kernels.hpp.
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include <bit>

#include "codec/rans_kernels.hpp"

namespace mithril::codec::rans::detail {
namespace {

using u8 = std::uint8_t;
using u32 = std::uint32_t;

// Decoder: lane k of an 8-lane group takes the (number of renormalising lanes
// below k)-th word of the group's 16-byte load.
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

// Encoder: the low words of the emitting lanes of a group, in lane order,
// moved to the top of 16 bytes (they end where the previous group began).
struct PackLut {
  alignas(16) u8 idx[256][16];
};
constexpr PackLut make_pack_lut() {
  PackLut l{};
  for (unsigned m = 0; m < 256; ++m) {
    for (auto& b : l.idx[m]) b = 0x80;
    unsigned slot = 8 - static_cast<unsigned>(std::popcount(m));
    for (unsigned k = 0; k < 8; ++k)
      if ((m >> k) & 1) {
        l.idx[m][2 * slot] = static_cast<u8>(2 * k);
        l.idx[m][2 * slot + 1] = static_cast<u8>(2 * k + 1);
        ++slot;
      }
  }
  return l;
}
constexpr PackLut k_pack = make_pack_lut();

// Rounds backwards, groups from the highest lanes down, as the scalar kernel.
// q = floor(x / f) from a 32-bit reciprocal r = floor((2^32 - 1) / f): after
// renormalisation x < f * 2^(32 - scale), so x * r / 2^32 falls short of x / f
// by less than 2^-scale + f * 2^-scale < 1, and one correction step is exact.
// Each group stores 16 bytes below its words: a round starts only when
// 2 * Lanes bytes are free above the floor, which covers every group.
template <unsigned V>
__attribute__((target("avx2,popcnt"))) void encode_rounds_v(const u8* in, const EncTables& t, EncodeCursor& c) {
  constexpr unsigned Lanes = 8 * V;
  __m256i x[V];
  for (unsigned v = 0; v < V; ++v) x[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c.x + 8 * v));
  const __m128i sh_scale = _mm_cvtsi32_si128(static_cast<int>(t.scale));
  const __m128i sh_xmax = _mm_cvtsi32_si128(static_cast<int>(32 - t.scale));
  const __m256i low16 = _mm256_set1_epi32(0xffff);
  const __m256i one = _mm256_set1_epi32(1);
  const auto* cum_f = reinterpret_cast<const int*>(t.cum_f);
  const auto* rcp = reinterpret_cast<const int*>(t.rcp32);
  u8* p = c.p;
  std::size_t r = c.round;
  for (; r > 0 && p - c.floor >= static_cast<std::ptrdiff_t>(2 * Lanes); --r) {
    const u8* src = in + (r - 1) * Lanes;
    for (unsigned v = V; v-- > 0;) {
      const __m256i s = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + 8 * v)));
      const __m256i cf = _mm256_i32gather_epi32(cum_f, s, 4);
      const __m256i rc = _mm256_i32gather_epi32(rcp, s, 4);
      const __m256i f = _mm256_srli_epi32(cf, 16);
      __m256i xv = x[v];
      const __m256i emit = _mm256_cmpeq_epi32(_mm256_max_epu32(xv, _mm256_sll_epi32(f, sh_xmax)), xv);
      const auto bits = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(emit)));
      const __m256i xl = _mm256_and_si256(xv, low16);
      __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(xl), _mm256_extracti128_si256(xl, 1));
      w = _mm_shuffle_epi8(w, _mm_load_si128(reinterpret_cast<const __m128i*>(k_pack.idx[bits])));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p - 16), w);
      p -= 2 * _mm_popcnt_u32(bits);
      xv = _mm256_blendv_epi8(xv, _mm256_srli_epi32(xv, 16), emit);
      const __m256i lo = _mm256_mul_epu32(xv, rc);
      const __m256i hi = _mm256_mul_epu32(_mm256_srli_epi64(xv, 32), _mm256_srli_epi64(rc, 32));
      __m256i q = _mm256_blend_epi32(_mm256_srli_epi64(lo, 32), hi, 0xaa);
      __m256i rem = _mm256_sub_epi32(xv, _mm256_mullo_epi32(q, f));
      const __m256i fix = _mm256_cmpgt_epi32(rem, _mm256_sub_epi32(f, one));  // rem >= f (both < 2^17)
      q = _mm256_sub_epi32(q, fix);
      rem = _mm256_sub_epi32(rem, _mm256_and_si256(f, fix));
      x[v] = _mm256_add_epi32(_mm256_add_epi32(_mm256_sll_epi32(q, sh_scale), rem), _mm256_and_si256(cf, low16));
    }
  }
  for (unsigned v = 0; v < V; ++v) _mm256_storeu_si256(reinterpret_cast<__m256i*>(c.x + 8 * v), x[v]);
  c.p = p;
  c.round = r;
}

// Same arithmetic as the scalar decoder, eight lanes per register. Each
// group reads its words with one 16-byte load; a round starts only when
// 2 * Lanes bytes remain, which covers every group's load.
template <unsigned V, bool Packed>
__attribute__((target("avx2,popcnt"))) void decode_rounds_v(const DecTables& t, DecodeCursor& c) {
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

}  // namespace

EncodeRoundsFn encode_rounds_avx2(unsigned lanes_log2) {
  constexpr EncodeRoundsFn fns[] = {encode_rounds_v<1>, encode_rounds_v<2>, encode_rounds_v<4>, encode_rounds_v<8>};
  return lanes_log2 >= 3 ? fns[lanes_log2 - 3] : nullptr;
}

DecodeRoundsFn decode_rounds_avx2(unsigned lanes_log2, bool packed) {
  constexpr DecodeRoundsFn fns[2][4] = {
      {decode_rounds_v<1, false>, decode_rounds_v<2, false>, decode_rounds_v<4, false>, decode_rounds_v<8, false>},
      {decode_rounds_v<1, true>, decode_rounds_v<2, true>, decode_rounds_v<4, true>, decode_rounds_v<8, true>}};
  return lanes_log2 >= 3 ? fns[packed][lanes_log2 - 3] : nullptr;
}

}  // namespace mithril::codec::rans::detail
#endif
