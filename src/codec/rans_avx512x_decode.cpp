// codec/rans_avx512x_decode.cpp — the "avx512x" rANS decoder: sixteen lanes
// per AVX-512 register, the same rounds as avx512's (rans_avx512.cpp), the
// table entries read by scalar loads instead of gathers, as avx2x reads them
// (rans_avx2_decode.hpp). Its encoder is avx512's (rans_scalar.cpp).
//
// Why (issue 11, session 45): on AMD Zen 4 (EPYC, family 25 model 17, 3.65
// GHz) a 16-dword vpgatherdd is slower than sixteen loads through the three
// load ports, so avx512 decoded at 1.91 GB/s and avx2x — the scalar loads,
// eight lanes a register — won the timing at 2.23-2.34. avx512x takes
// avx2x's lookup with half its vector instructions a symbol: bench_rans,
// 1 MiB blocks, binary GB/s, three medians of 3 each, bf16 exponents and the
// fp16 high byte: 2.41-2.46 against avx2x's 2.10-2.34 in the same runs
// (1.39 cycles a symbol, ~5.8 instructions). In the pipeline
// (bench_pipeline, one thread, decompression without the digest, three
// medians of 3): fp16 GPT 18.0-18.4 -> 17.5-17.6 ms, bf16 13.5-13.8 ->
// 13.3-13.5, MiniLM 20.3-20.9 -> 19.6-20.5.
//
// Tried on the same machine and dropped: two entries put together in an
// integer register and inserted by vpinsrq (-11%); the slots out through one
// 64-byte store and sixteen 32-bit loads (-7%); the four groups' symbols
// stored by two vpermt2b and one vinserti64x4 instead of four vpmovdb (-3%);
// GCC's pre-register-allocation scheduler, as avx2x is built (level), and
// -mtune=znver3 (-2%).
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "codec/rans_kernels.hpp"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace mithril::codec::rans::detail {
namespace {

using u8 = std::uint8_t;
using u32 = std::uint32_t;

#define MITHRIL_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,popcnt")))

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

// V registers of sixteen lanes; a round starts only when 2 * Lanes bytes
// remain, which covers every group's 32-byte load of renormalisation words.
template <unsigned V, bool Packed>
MITHRIL_AVX512 void decode_rounds_loads(const DecTables& t, DecodeCursor& c) {
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
#pragma GCC unroll 4
    for (unsigned v = 0; v < V; ++v) {
      const __m512i slot = _mm512_and_si512(x[v], mask);
      const __m512i e = lookup16(slots, slot);
      __m512i s, y;
      if constexpr (Packed) {
        s = e;
        y = _mm512_mullo_epi32(_mm512_srli_epi32(e, 20), _mm512_srl_epi32(x[v], shift));
        y = _mm512_add_epi32(y, _mm512_and_si512(_mm512_srli_epi32(e, 8), low12));
      } else {
        s = lookup16_sym(sym, slot);
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

DecodeRoundsFn decode_rounds_avx512x(unsigned lanes_log2, bool packed) {
  constexpr DecodeRoundsFn fns[2][3] = {
      {decode_rounds_loads<1, false>, decode_rounds_loads<2, false>, decode_rounds_loads<4, false>},
      {decode_rounds_loads<1, true>, decode_rounds_loads<2, true>, decode_rounds_loads<4, true>}};
  return lanes_log2 >= 4 ? fns[packed][lanes_log2 - 4] : nullptr;
}

}  // namespace mithril::codec::rans::detail

#pragma GCC diagnostic pop
#endif
