// codec/rans_avx512.cpp — AVX-512 (F, BW, VL) rANS kernels: sixteen lanes per
// register, up to four independent registers (64 lanes); the decoder with
// gathers ("avx512") or scalar loads ("avx512x"). Same arithmetic and
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

// How a decoder group looks up its sixteen table entries: by gathers (the
// "avx512" kernel, fast on Intel) or by scalar loads (the "avx512x" kernel:
// on AMD Zen 4 a sixteen-dword vpgatherdd is slower than sixteen loads
// through its three load ports; docs/kernels.md, "avx512x").
enum class DecLookup { gather, loads };

// Four table entries: the slots leave the register two at a time (vmovq /
// vpextrq of a 128-bit quarter, split by a shift in the integer units), the
// entries enter by vmovd + vpinsrd.
MITHRIL_AVX512 inline __m128i lookup4(const u32* table, __m128i q) {
  const auto a = static_cast<std::uint64_t>(_mm_cvtsi128_si64(q));
  const auto b = static_cast<std::uint64_t>(_mm_extract_epi64(q, 1));
  __m128i r = _mm_cvtsi32_si128(static_cast<int>(table[static_cast<u32>(a)]));
  r = _mm_insert_epi32(r, static_cast<int>(table[static_cast<u32>(a >> 32)]), 1);
  r = _mm_insert_epi32(r, static_cast<int>(table[static_cast<u32>(b)]), 2);
  return _mm_insert_epi32(r, static_cast<int>(table[static_cast<u32>(b >> 32)]), 3);
}
// Sixteen: four quarters put together.
MITHRIL_AVX512 inline __m512i lookup16(const u32* table, __m512i slot) {
  const __m128i r0 = lookup4(table, _mm512_castsi512_si128(slot));
  const __m128i r1 = lookup4(table, _mm512_extracti32x4_epi32(slot, 1));
  const __m128i r2 = lookup4(table, _mm512_extracti32x4_epi32(slot, 2));
  const __m128i r3 = lookup4(table, _mm512_extracti32x4_epi32(slot, 3));
  const __m256i lo = _mm256_inserti128_si256(_mm256_castsi128_si256(r0), r1, 1);
  const __m256i hi = _mm256_inserti128_si256(_mm256_castsi128_si256(r2), r3, 1);
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}
// The symbol bytes of sixteen slots (wide table, scales 13-16: rare), one per
// dword.
MITHRIL_AVX512 inline __m512i lookup16_sym(const u8* sym, __m512i slot) {
  alignas(64) u32 i[16];
  _mm512_store_si512(i, slot);
  alignas(64) u32 v[16];
  for (unsigned k = 0; k < 16; ++k) v[k] = sym[i[k]];
  return _mm512_load_si512(v);
}

// Sixteen entries of a table of T (u32: the slots' entries; u8: the wide
// table's symbols) by either lookup.
template <DecLookup L, class T>
MITHRIL_AVX512 inline __m512i lookup(const T* table, __m512i slot) {
  if constexpr (L == DecLookup::gather)
    return _mm512_i32gather_epi32(slot, table, sizeof(T));
  else if constexpr (sizeof(T) == 4)
    return lookup16(table, slot);
  else
    return lookup16_sym(table, slot);
}

struct DecConsts {
  __m512i mask, low16, low12, state_low;
  __m128i shift;
  const u32* slots;
  const u8* sym;
};

// One group of sixteen lanes: one decoding step, its symbols stored at o,
// and the renormalisation of x, whose words come from p (advanced past
// them): one 32-byte load, spread over the renormalising lanes by an expand.
template <bool Packed, DecLookup L>
__attribute__((always_inline, target("avx512f,avx512bw,avx512vl,popcnt"))) inline void decode_group(
    __m512i& x, const u8*& p, u8* o, const DecConsts& k) {
  const __m512i slot = _mm512_and_si512(x, k.mask);
  const __m512i e = lookup<L>(k.slots, slot);
  __m512i s, y;
  if constexpr (Packed) {
    s = e;
    y = _mm512_mullo_epi32(_mm512_srli_epi32(e, 20), _mm512_srl_epi32(x, k.shift));
    y = _mm512_add_epi32(y, _mm512_and_si512(_mm512_srli_epi32(e, 8), k.low12));
  } else {
    s = lookup<L>(k.sym, slot);
    y = _mm512_mullo_epi32(_mm512_and_si512(e, k.low16), _mm512_srl_epi32(x, k.shift));
    y = _mm512_add_epi32(y, _mm512_srli_epi32(e, 16));
  }
  const __mmask16 renorm = _mm512_cmplt_epu32_mask(y, k.state_low);
  const __m512i w =
      _mm512_maskz_expand_epi32(renorm, _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
  x = _mm512_mask_or_epi32(y, renorm, _mm512_slli_epi32(y, 16), w);
  p += 2 * _mm_popcnt_u32(renorm);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(o), _mm512_cvtepi32_epi8(s));
}

// V registers of sixteen lanes; a round starts only when 2 * Lanes bytes
// remain, which covers every group's load. The scalar-load kernel's groups
// are unrolled (on AMD Zen 4: 2.45 GB/s rolled, 2.62-2.65 unrolled); the
// gather kernel's loop is left as it was measured on Intel.
template <unsigned V, bool Packed, DecLookup L>
MITHRIL_AVX512 void decode_rounds_v(const DecTables& t, DecodeCursor& c) {
  constexpr unsigned Lanes = 16 * V;
  __m512i x[V];
  for (unsigned v = 0; v < V; ++v) x[v] = _mm512_loadu_si512(c.x + 16 * v);
  const DecConsts k{_mm512_set1_epi32(static_cast<int>((u32{1} << t.scale) - 1)),
                    _mm512_set1_epi32(0xffff),
                    _mm512_set1_epi32(0xfff),
                    _mm512_set1_epi32(static_cast<int>(k_state_low)),
                    _mm_cvtsi32_si128(static_cast<int>(t.scale)),
                    t.slots.get(),
                    t.sym.get()};
  const u8* p = c.p;
  std::size_t r = c.round;
  for (; r < c.rounds && c.end - p >= static_cast<std::ptrdiff_t>(2 * Lanes); ++r) {
    u8* o = c.out + r * Lanes;
    if constexpr (L == DecLookup::loads) {
#pragma GCC unroll 4
      for (unsigned v = 0; v < V; ++v) decode_group<Packed, L>(x[v], p, o + 16 * v, k);
    } else {
      for (unsigned v = 0; v < V; ++v) decode_group<Packed, L>(x[v], p, o + 16 * v, k);
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

namespace {
template <DecLookup L>
DecodeRoundsFn decode_rounds_of(unsigned lanes_log2, bool packed) {
  constexpr DecodeRoundsFn fns[2][3] = {
      {decode_rounds_v<1, false, L>, decode_rounds_v<2, false, L>, decode_rounds_v<4, false, L>},
      {decode_rounds_v<1, true, L>, decode_rounds_v<2, true, L>, decode_rounds_v<4, true, L>}};
  return lanes_log2 >= 4 ? fns[packed][lanes_log2 - 4] : nullptr;
}
}  // namespace

DecodeRoundsFn decode_rounds_avx512(unsigned lanes_log2, bool packed) {
  return decode_rounds_of<DecLookup::gather>(lanes_log2, packed);
}

DecodeRoundsFn decode_rounds_avx512x(unsigned lanes_log2, bool packed) {
  return decode_rounds_of<DecLookup::loads>(lanes_log2, packed);
}

}  // namespace mithril::codec::rans::detail

#pragma GCC diagnostic pop
#endif
