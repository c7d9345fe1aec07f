// codec/rans_avx2_encode.hpp — the AVX2 rANS encoders' rounds, as templates:
// eight lanes per register, up to eight independent registers (64 lanes).
// Same arithmetic and the same bytes as the scalar encoder in rans_scalar.cpp;
// see rans_kernels.hpp. Included only by the two files that instantiate them,
// each with the compiler flags its kernel runs best with (CMakeLists.txt):
// rans_avx2.cpp the gather encoder ("avx2"), rans_avx2x.cpp the scalar-load
// one ("avx2x"). Everything here has internal linkage, so each file's copy is
// compiled with its own flags. The decoders are in rans_avx2_decode.hpp.
#pragma once
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include <bit>

#include "codec/rans_kernels.hpp"

namespace mithril::codec::rans::detail {
namespace {

using u8 = std::uint8_t;
using u32 = std::uint32_t;

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

// The two per-symbol tables (cum | f << 16 and the reciprocal), looked up
// for the eight symbols at sym. The encoder's lookups do not depend on its
// states, so only their throughput counts.
//
// By two gathers: the "avx2" encoder, fast where gathers are (Intel).
struct GatherLookup {
  const int* cum_f;
  const int* rcp;
  __attribute__((target("avx2"))) void operator()(const u8* sym, __m256i& cf, __m256i& rc) const {
    const __m256i s = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sym)));
    cf = _mm256_i32gather_epi32(cum_f, s, 4);
    rc = _mm256_i32gather_epi32(rcp, s, 4);
  }
};

// By scalar loads: the "avx2x" encoder, for AMD Zen, whose AVX2 gathers are
// slow. One 64-bit load per symbol (cum_f | rcp32 << 32, indexed by the
// symbol byte read from the input), two per xmm, and vshufps splits the
// halves. On AMD Zen 3 (bench_rans, best of 5 rounds, avx2x before -> after)
// it beat both the gathers and the tables this encoder kept in registers
// before (four vpermd per table, for blocks whose symbols lie in a window of
// 32 byte values): bf16 exponent planes (synthetic, MiniLM's, trained
// weights') 0.94-1.11 -> 1.36-1.44 GB/s, fp16 high bytes (~70 values, so
// gathers before) 0.78-0.81 -> 1.35-1.39.
struct LoadsLookup {
  const std::uint64_t* cf_rcp;
  __attribute__((always_inline, target("avx2"))) __m128i pair(const u8* sym) const {
    return _mm_insert_epi64(_mm_cvtsi64_si128(static_cast<long long>(cf_rcp[sym[0]])),
                            static_cast<long long>(cf_rcp[sym[1]]), 1);
  }
  __attribute__((target("avx2"))) void operator()(const u8* sym, __m256i& cf, __m256i& rc) const {
    // e0 e1 | e4 e5 and e2 e3 | e6 e7: the even dwords of each lane pair up in lane order
    const __m256 a =
        _mm256_castsi256_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(pair(sym)), pair(sym + 4), 1));
    const __m256 b =
        _mm256_castsi256_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(pair(sym + 2)), pair(sym + 6), 1));
    cf = _mm256_castps_si256(_mm256_shuffle_ps(a, b, 0x88));
    rc = _mm256_castps_si256(_mm256_shuffle_ps(a, b, 0xdd));
  }
};

// Rounds backwards, groups from the highest lanes down, as the scalar kernel.
// q = floor(x / f) from a 32-bit reciprocal r = floor((2^32 - 1) / f): after
// renormalisation x < f * 2^(32 - scale), so x * r / 2^32 falls short of x / f
// by less than 2^-scale + f * 2^-scale < 1, and one correction step is exact.
// Each group stores 16 bytes below its words: a round starts only when
// 2 * Lanes bytes are free above the floor, which covers every group.
template <unsigned V, class Lookup>
__attribute__((target("avx2,popcnt"))) void encode_rounds_with(const u8* in, const EncTables& t, EncodeCursor& c,
                                                               const Lookup lookup) {
  constexpr unsigned Lanes = 8 * V;
  __m256i x[V];
  for (unsigned v = 0; v < V; ++v) x[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c.x + 8 * v));
  const __m128i sh_scale = _mm_cvtsi32_si128(static_cast<int>(t.scale));
  const __m128i sh_xmax = _mm_cvtsi32_si128(static_cast<int>(32 - t.scale));
  const __m256i low16 = _mm256_set1_epi32(0xffff);
  const __m256i one = _mm256_set1_epi32(1);
  u8* p = c.p;
  std::size_t r = c.round;
  for (; r > 0 && p - c.floor >= static_cast<std::ptrdiff_t>(2 * Lanes); --r) {
    const u8* src = in + (r - 1) * Lanes;
#pragma GCC unroll 8
    for (unsigned g = 0; g < V; ++g) {
      const unsigned v = V - 1 - g;
      __m256i cf, rc;
      lookup(src + 8 * v, cf, rc);
      const __m256i f = _mm256_srli_epi32(cf, 16);
      __m256i xv = x[v];
      const __m256i emit = _mm256_cmpeq_epi32(_mm256_max_epu32(xv, _mm256_sll_epi32(f, sh_xmax)), xv);
      const auto bits = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(emit)));
      const __m256i xl = _mm256_and_si256(xv, low16);
      __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(xl), _mm256_extracti128_si256(xl, 1));
      w = _mm_shuffle_epi8(w, _mm_load_si128(reinterpret_cast<const __m128i*>(k_pack.idx[bits])));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p - 16), w);
      p -= 2 * _mm_popcnt_u64(bits);
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

// Loads: the "avx2x" encoder (scalar table loads), else gathers; the start-up
// timing (rans_dispatch.cpp) keeps whichever runs faster.
template <unsigned V, bool Loads>
__attribute__((target("avx2,popcnt"))) void encode_rounds_v(const u8* in, const EncTables& t, EncodeCursor& c) {
  if constexpr (Loads)
    encode_rounds_with<V>(in, t, c, LoadsLookup{t.cf_rcp});
  else
    encode_rounds_with<V>(in, t, c,
                          GatherLookup{reinterpret_cast<const int*>(t.cum_f), reinterpret_cast<const int*>(t.rcp32)});
}

// The encoder of one lookup for 8-64 lanes; null for fewer than 8.
template <bool Loads>
EncodeRoundsFn encode_rounds_table(unsigned lanes_log2) {
  constexpr EncodeRoundsFn fns[4] = {encode_rounds_v<1, Loads>, encode_rounds_v<2, Loads>, encode_rounds_v<4, Loads>,
                                     encode_rounds_v<8, Loads>};
  return lanes_log2 >= 3 ? fns[lanes_log2 - 3] : nullptr;
}

}  // namespace
}  // namespace mithril::codec::rans::detail
#endif
