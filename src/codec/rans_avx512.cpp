// codec/rans_avx512.cpp — AVX-512 (F, BW, VL) rANS kernels: sixteen lanes per
// register, up to four independent registers (64 lanes). Same arithmetic and
// the same bytes as the scalar kernels; see rans_kernels.hpp and, for the
// division and the store/load bounds, rans_avx2_encode.hpp and rans_avx2_decode.hpp.
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include <algorithm>

#include "codec/rans_kernels.hpp"

// GCC 12's AVX-512 headers build their set1/cvt results from an undefined
// vector, which -Wmaybe-uninitialized reports in every caller (a false
// positive; byte_group_avx512.cpp does the same).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace mithril::codec::rans::detail {
namespace {

using u8 = std::uint8_t;
using u32 = std::uint32_t;

#define MITHRIL_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,popcnt")))

// The two per-symbol tables, looked up for sixteen symbols (s: their bytes
// widened to 32 bits): by two gathers, or — where every symbol the block
// codes lies in a window of 64 consecutive byte values, as a float plane's
// exponents do — in registers, two vpermi2d per table and a blend, which
// runs at a fraction of the gathers' cost.
struct GatherLookup {
  const EncTables& t;
  MITHRIL_AVX512 void operator()(__m512i s, __m512i& cf, __m512i& rc) const {
    cf = _mm512_i32gather_epi32(s, t.cum_f, 4);
    rc = _mm512_i32gather_epi32(s, t.rcp32, 4);
  }
};

// N = 64: two vpermi2d per table and a blend by bit 5 of the index. N = 128
// (fp16 exponent planes: the exponent's five bits and three of the
// mantissa, spans of 92-144 in real weights): four, picked from by bits 5
// and 6; measured on the fp16 plane of bench/data's weights cast (Intel Xeon,
// 2 MiB blocks): 1.96-1.97 GB/s against 1.86-1.91 with gathers.
template <unsigned N>
struct WindowLookup {
  static_assert(N == 64 || N == 128);
  static constexpr unsigned R = N / 16;  // registers per table
  __m512i lo, cf_t[R], rc_t[R];

  MITHRIL_AVX512 static __m512i pick(const __m512i* t, __m512i i, __mmask16 b5, __mmask16 b6) {
    const __m512i a = _mm512_mask_blend_epi32(b5, _mm512_permutex2var_epi32(t[0], i, t[1]),
                                              _mm512_permutex2var_epi32(t[2], i, t[3]));
    if constexpr (N == 64) {
      (void)b6;
      return a;
    } else {
      const __m512i b = _mm512_mask_blend_epi32(b5, _mm512_permutex2var_epi32(t[4], i, t[5]),
                                                _mm512_permutex2var_epi32(t[6], i, t[7]));
      return _mm512_mask_blend_epi32(b6, a, b);
    }
  }
  MITHRIL_AVX512 void operator()(__m512i s, __m512i& cf, __m512i& rc) const {
    const __m512i i = _mm512_sub_epi32(s, lo);
    const __mmask16 b5 = _mm512_test_epi32_mask(i, _mm512_set1_epi32(32));
    const __mmask16 b6 = N == 128 ? _mm512_test_epi32_mask(i, _mm512_set1_epi32(64)) : 0;
    cf = pick(cf_t, i, b5, b6);
    rc = pick(rc_t, i, b5, b6);
  }
  MITHRIL_AVX512 static WindowLookup make(const EncTables& t, unsigned first) {
    alignas(64) std::uint32_t cf[N], rc[N];
    window_tables(t, first, N, cf, rc);
    WindowLookup w;
    w.lo = _mm512_set1_epi32(static_cast<int>(first));
    for (unsigned j = 0; j < R; ++j) {
      w.cf_t[j] = _mm512_load_si512(cf + 16 * j);
      w.rc_t[j] = _mm512_load_si512(rc + 16 * j);
    }
    return w;
  }
};

template <unsigned V, class Lookup>
MITHRIL_AVX512 void encode_rounds_with(const u8* in, const EncTables& t, EncodeCursor& c, const Lookup& lookup) {
  constexpr unsigned Lanes = 16 * V;
  __m512i x[V];
  for (unsigned v = 0; v < V; ++v) x[v] = _mm512_loadu_si512(c.x + 16 * v);
  const __m128i sh_scale = _mm_cvtsi32_si128(static_cast<int>(t.scale));
  const __m128i sh_xmax = _mm_cvtsi32_si128(static_cast<int>(32 - t.scale));
  const __m512i low16 = _mm512_set1_epi32(0xffff);
  const __m512i one = _mm512_set1_epi32(1);
  u8* p = c.p;
  std::size_t r = c.round;
  for (; r > 0 && p - c.floor >= static_cast<std::ptrdiff_t>(2 * Lanes); --r) {
    const u8* src = in + (r - 1) * Lanes;
    for (unsigned v = V; v-- > 0;) {
      const __m512i s = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 16 * v)));
      __m512i cf, rc;
      lookup(s, cf, rc);
      const __m512i f = _mm512_srli_epi32(cf, 16);
      __m512i xv = x[v];
      const __mmask16 emit = _mm512_cmpge_epu32_mask(xv, _mm512_sll_epi32(f, sh_xmax));
      const unsigned cnt = static_cast<unsigned>(_mm_popcnt_u32(emit));
      p -= 2 * cnt;
      const __m256i w = _mm512_cvtepi32_epi16(_mm512_maskz_compress_epi32(emit, xv));
      _mm256_mask_storeu_epi16(p, static_cast<__mmask16>((1u << cnt) - 1), w);
      xv = _mm512_mask_srli_epi32(xv, emit, xv, 16);
      const __m512i lo = _mm512_mul_epu32(xv, rc);
      const __m512i hi = _mm512_mul_epu32(_mm512_srli_epi64(xv, 32), _mm512_srli_epi64(rc, 32));
      __m512i q = _mm512_mask_blend_epi32(0xaaaa, _mm512_srli_epi64(lo, 32), hi);
      __m512i rem = _mm512_sub_epi32(xv, _mm512_mullo_epi32(q, f));
      const __mmask16 fix = _mm512_cmpge_epu32_mask(rem, f);
      q = _mm512_mask_add_epi32(q, fix, q, one);
      rem = _mm512_mask_sub_epi32(rem, fix, rem, f);
      x[v] = _mm512_add_epi32(_mm512_add_epi32(_mm512_sll_epi32(q, sh_scale), rem), _mm512_and_si512(cf, low16));
    }
  }
  for (unsigned v = 0; v < V; ++v) _mm512_storeu_si512(c.x + 16 * v, x[v]);
  c.p = p;
  c.round = r;
}

template <unsigned V>
MITHRIL_AVX512 void encode_rounds_v(const u8* in, const EncTables& t, EncodeCursor& c) {
  const SymbolSpan span = coded_span(t);
  if (span.within(64)) return encode_rounds_with<V>(in, t, c, WindowLookup<64>::make(t, span.first));
  if (span.within(128)) return encode_rounds_with<V>(in, t, c, WindowLookup<128>::make(t, span.first));
  encode_rounds_with<V>(in, t, c, GatherLookup{t});
}

// Each group reads its words with one 32-bit load and spreads them over the
// renormalising lanes with an expand; a round starts only when 2 * Lanes
// bytes remain, which covers every group's load.
template <unsigned V, bool Packed>
MITHRIL_AVX512 void decode_rounds_v(const DecTables& t, DecodeCursor& c) {
  constexpr unsigned Lanes = 16 * V;
  __m512i x[V];
  for (unsigned v = 0; v < V; ++v) x[v] = _mm512_loadu_si512(c.x + 16 * v);
  const __m512i mask = _mm512_set1_epi32(static_cast<int>((u32{1} << t.scale) - 1));
  const __m512i low16 = _mm512_set1_epi32(0xffff);
  const __m512i low12 = _mm512_set1_epi32(0xfff);
  const __m512i state_low = _mm512_set1_epi32(static_cast<int>(k_state_low));
  const __m128i shift = _mm_cvtsi32_si128(static_cast<int>(t.scale));
  const u32* slots = t.slots.get();
  const u8* sym = t.sym.get();
  const u8* p = c.p;
  std::size_t r = c.round;
  for (; r < c.rounds && c.end - p >= static_cast<std::ptrdiff_t>(2 * Lanes); ++r) {
    u8* o = c.out + r * Lanes;
    for (unsigned v = 0; v < V; ++v) {
      const __m512i slot = _mm512_and_si512(x[v], mask);
      const __m512i e = _mm512_i32gather_epi32(slot, slots, 4);
      __m512i s, y;
      if constexpr (Packed) {
        s = e;
        y = _mm512_mullo_epi32(_mm512_srli_epi32(e, 20), _mm512_srl_epi32(x[v], shift));
        y = _mm512_add_epi32(y, _mm512_and_si512(_mm512_srli_epi32(e, 8), low12));
      } else {
        s = _mm512_i32gather_epi32(slot, sym, 1);
        y = _mm512_mullo_epi32(_mm512_and_si512(e, low16), _mm512_srl_epi32(x[v], shift));
        y = _mm512_add_epi32(y, _mm512_srli_epi32(e, 16));
      }
      const __mmask16 renorm = _mm512_cmplt_epu32_mask(y, state_low);
      const __m512i w = _mm512_maskz_expand_epi32(
          renorm, _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
      x[v] = _mm512_mask_or_epi32(y, renorm, _mm512_slli_epi32(y, 16), w);
      p += 2 * _mm_popcnt_u32(renorm);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 16 * v), _mm512_cvtepi32_epi8(s));
    }
  }
  for (unsigned v = 0; v < V; ++v) _mm512_storeu_si512(c.x + 16 * v, x[v]);
  c.p = p;
  c.round = r;
}

}  // namespace

EncodeRoundsFn encode_rounds_avx512(unsigned lanes_log2) {
  constexpr EncodeRoundsFn fns[] = {encode_rounds_v<1>, encode_rounds_v<2>, encode_rounds_v<4>};
  return lanes_log2 >= 4 ? fns[lanes_log2 - 4] : nullptr;
}

DecodeRoundsFn decode_rounds_avx512(unsigned lanes_log2, bool packed) {
  constexpr DecodeRoundsFn fns[2][3] = {
      {decode_rounds_v<1, false>, decode_rounds_v<2, false>, decode_rounds_v<4, false>},
      {decode_rounds_v<1, true>, decode_rounds_v<2, true>, decode_rounds_v<4, true>}};
  return lanes_log2 >= 4 ? fns[packed][lanes_log2 - 4] : nullptr;
}

}  // namespace mithril::codec::rans::detail

#pragma GCC diagnostic pop
#endif
