// codec/byte_group_avx512.cpp — AVX-512 (F + BW) kernels, selected at run time.
//
// Same per-128-bit-lane cascades as byte_group_sse2.cpp (see there), on
// blocks of 64 elements: lane L works on elements 16L..16L+15. Whole 64-byte
// registers are loaded and stored; 16-byte chunks are routed to and from
// their lanes with vshufi64x2 / vpermt2q (a 4x4 transpose of 128-bit lanes).
#include "codec/byte_group_kernels.hpp"

#if defined(__x86_64__)

#include <immintrin.h>

#include <algorithm>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw")
// GCC 12's avx512fintrin.h builds "undefined" pass-through operands as
// `__m512i __Y = __Y;`, which -Wmaybe-uninitialized flags once inlined.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace mithril::codec::detail {
namespace {

using V = __m512i;

inline V load(const std::byte* p) { return _mm512_loadu_si512(p); }
inline void store(std::byte* p, V v) { _mm512_storeu_si512(p, v); }

template <unsigned W>
inline V rotl(V x) {
  if constexpr (W == 2) return _mm512_or_si512(_mm512_slli_epi16(x, 1), _mm512_srli_epi16(x, 15));
  else if constexpr (W == 4) return _mm512_rol_epi32(x, 1);
  else return _mm512_rol_epi64(x, 1);
}
template <unsigned W>
inline V rotr(V x) {
  if constexpr (W == 2) return _mm512_or_si512(_mm512_srli_epi16(x, 1), _mm512_slli_epi16(x, 15));
  else if constexpr (W == 4) return _mm512_ror_epi32(x, 1);
  else return _mm512_ror_epi64(x, 1);
}

// o[L] = lane L of a, b, c, d in turn. Its own inverse.
inline void transpose_lanes(V a, V b, V c, V d, V& o0, V& o1, V& o2, V& o3) {
  const V ab_lo = _mm512_shuffle_i64x2(a, b, 0x44);  // a0 a1 b0 b1
  const V ab_hi = _mm512_shuffle_i64x2(a, b, 0xEE);  // a2 a3 b2 b3
  const V cd_lo = _mm512_shuffle_i64x2(c, d, 0x44);
  const V cd_hi = _mm512_shuffle_i64x2(c, d, 0xEE);
  o0 = _mm512_shuffle_i64x2(ab_lo, cd_lo, 0x88);  // a0 b0 c0 d0
  o1 = _mm512_shuffle_i64x2(ab_lo, cd_lo, 0xDD);
  o2 = _mm512_shuffle_i64x2(ab_hi, cd_hi, 0x88);
  o3 = _mm512_shuffle_i64x2(ab_hi, cd_hi, 0xDD);
}

inline void split(V a, V b, V& even, V& odd) {
  const V lo = _mm512_set1_epi16(0x00FF);
  even = _mm512_packus_epi16(_mm512_and_si512(a, lo), _mm512_and_si512(b, lo));
  odd = _mm512_packus_epi16(_mm512_srli_epi16(a, 8), _mm512_srli_epi16(b, 8));
}

template <unsigned W>
inline void group_lanes(const V* v, V* p) {
  if constexpr (W == 2) {
    split(v[0], v[1], p[0], p[1]);
  } else if constexpr (W == 4) {
    V e01, o01, e23, o23;
    split(v[0], v[1], e01, o01);
    split(v[2], v[3], e23, o23);
    split(e01, e23, p[0], p[2]);
    split(o01, o23, p[1], p[3]);
  } else {
    V e[4], o[4];
    for (unsigned j = 0; j < 4; ++j) split(v[2 * j], v[2 * j + 1], e[j], o[j]);
    V ee01, eo01, ee23, eo23, oe01, oo01, oe23, oo23;
    split(e[0], e[1], ee01, eo01);
    split(e[2], e[3], ee23, eo23);
    split(o[0], o[1], oe01, oo01);
    split(o[2], o[3], oe23, oo23);
    split(ee01, ee23, p[0], p[4]);
    split(eo01, eo23, p[2], p[6]);
    split(oe01, oe23, p[1], p[5]);
    split(oo01, oo23, p[3], p[7]);
  }
}

template <unsigned W>
inline void ungroup_lanes(const V* p, V* r) {
  if constexpr (W == 2) {
    r[0] = _mm512_unpacklo_epi8(p[0], p[1]);
    r[1] = _mm512_unpackhi_epi8(p[0], p[1]);
  } else if constexpr (W == 4) {
    const V al = _mm512_unpacklo_epi8(p[0], p[1]), ah = _mm512_unpackhi_epi8(p[0], p[1]);
    const V cl = _mm512_unpacklo_epi8(p[2], p[3]), ch = _mm512_unpackhi_epi8(p[2], p[3]);
    r[0] = _mm512_unpacklo_epi16(al, cl);
    r[1] = _mm512_unpackhi_epi16(al, cl);
    r[2] = _mm512_unpacklo_epi16(ah, ch);
    r[3] = _mm512_unpackhi_epi16(ah, ch);
  } else {
    V s[8];
    for (unsigned q = 0; q < 4; ++q) {
      s[2 * q] = _mm512_unpacklo_epi8(p[2 * q], p[2 * q + 1]);
      s[2 * q + 1] = _mm512_unpackhi_epi8(p[2 * q], p[2 * q + 1]);
    }
    V t[4], u[4];
    for (unsigned h = 0; h < 2; ++h) {
      t[2 * h] = _mm512_unpacklo_epi16(s[h], s[2 + h]);
      t[2 * h + 1] = _mm512_unpackhi_epi16(s[h], s[2 + h]);
      u[2 * h] = _mm512_unpacklo_epi16(s[4 + h], s[6 + h]);
      u[2 * h + 1] = _mm512_unpackhi_epi16(s[4 + h], s[6 + h]);
    }
    for (unsigned j = 0; j < 4; ++j) {
      r[2 * j] = _mm512_unpacklo_epi32(t[j], u[j]);
      r[2 * j + 1] = _mm512_unpackhi_epi32(t[j], u[j]);
    }
  }
}

// x[i] lane l holds chunk 4i + l of a 64-element block; returns v with
// v[j] lane L = chunk W*L + j, the order group_lanes wants. ungroup_order
// is the inverse.
template <unsigned W>
inline void lane_order(const V* x, V* v) {
  if constexpr (W == 2) {
    v[0] = _mm512_shuffle_i64x2(x[0], x[1], 0x88);  // chunks 0 2 4 6
    v[1] = _mm512_shuffle_i64x2(x[0], x[1], 0xDD);  // chunks 1 3 5 7
  } else if constexpr (W == 4) {
    transpose_lanes(x[0], x[1], x[2], x[3], v[0], v[1], v[2], v[3]);
  } else {
    transpose_lanes(x[0], x[2], x[4], x[6], v[0], v[1], v[2], v[3]);
    transpose_lanes(x[1], x[3], x[5], x[7], v[4], v[5], v[6], v[7]);
  }
}

template <unsigned W>
inline void chunk_order(const V* r, V* x) {
  if constexpr (W == 2) {
    const V idx_lo = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
    const V idx_hi = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
    x[0] = _mm512_permutex2var_epi64(r[0], idx_lo, r[1]);
    x[1] = _mm512_permutex2var_epi64(r[0], idx_hi, r[1]);
  } else if constexpr (W == 4) {
    transpose_lanes(r[0], r[1], r[2], r[3], x[0], x[1], x[2], x[3]);
  } else {
    transpose_lanes(r[0], r[1], r[2], r[3], x[0], x[2], x[4], x[6]);
    transpose_lanes(r[4], r[5], r[6], r[7], x[1], x[3], x[5], x[7]);
  }
}

template <typename T, bool Rot>
void group(const std::byte* in, std::byte* out, std::size_t n, std::size_t stride) {
  constexpr unsigned W = sizeof(T);
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    V x[W], v[W], p[W];
    for (unsigned j = 0; j < W; ++j) {
      x[j] = load(in + W * i + 64 * j);
      if constexpr (Rot) x[j] = rotl<W>(x[j]);
    }
    lane_order<W>(x, v);
    group_lanes<W>(v, p);
    for (unsigned k = 0; k < W; ++k) store(out + k * stride + i, p[k]);
  }
  group_range<T, Rot>(in, out, stride, i, n);
}

template <typename T, bool Rot>
void ungroup(const std::byte* const* planes, std::byte* out, std::size_t m) {
  constexpr unsigned W = sizeof(T);
  // A local copy: stores through std::byte* may alias anything, and would
  // make the compiler reload the plane pointers after every store.
  const std::byte* in[W];
  for (unsigned k = 0; k < W; ++k) in[k] = planes[k];
  std::size_t i = 0;
  for (; i + 64 <= m; i += 64) {
    V p[W], r[W], x[W];
    for (unsigned k = 0; k < W; ++k) p[k] = load(in[k] + i);
    ungroup_lanes<W>(p, r);
    chunk_order<W>(r, x);
    for (unsigned j = 0; j < W; ++j) {
      if constexpr (Rot) x[j] = rotr<W>(x[j]);
      store(out + W * i + 64 * j, x[j]);
    }
  }
  ungroup_range<T, Rot>(in, out, i, m);
}

// ---- residuals ----------------------------------------------------------------

template <unsigned W>
inline V sub_zigzag(V t, V b) {
  if constexpr (W == 1) {
    const V d = _mm512_sub_epi8(t, b);
    const V sign = _mm512_movm_epi8(_mm512_movepi8_mask(d));
    return _mm512_xor_si512(_mm512_add_epi8(d, d), sign);
  } else if constexpr (W == 2) {
    const V d = _mm512_sub_epi16(t, b);
    return _mm512_xor_si512(_mm512_slli_epi16(d, 1), _mm512_srai_epi16(d, 15));
  } else if constexpr (W == 4) {
    const V d = _mm512_sub_epi32(t, b);
    return _mm512_xor_si512(_mm512_slli_epi32(d, 1), _mm512_srai_epi32(d, 31));
  } else {
    const V d = _mm512_sub_epi64(t, b);
    return _mm512_xor_si512(_mm512_slli_epi64(d, 1), _mm512_srai_epi64(d, 63));
  }
}

template <unsigned W>
inline V add_unzigzag(V z, V b) {
  const V zero = _mm512_setzero_si512();
  if constexpr (W == 1) {
    const V one = _mm512_set1_epi8(1);
    const V half = _mm512_and_si512(_mm512_srli_epi16(z, 1), _mm512_set1_epi8(0x7F));
    return _mm512_add_epi8(b, _mm512_xor_si512(half, _mm512_sub_epi8(zero, _mm512_and_si512(z, one))));
  } else if constexpr (W == 2) {
    const V one = _mm512_set1_epi16(1);
    return _mm512_add_epi16(b, _mm512_xor_si512(_mm512_srli_epi16(z, 1), _mm512_sub_epi16(zero, _mm512_and_si512(z, one))));
  } else if constexpr (W == 4) {
    const V one = _mm512_set1_epi32(1);
    return _mm512_add_epi32(b, _mm512_xor_si512(_mm512_srli_epi32(z, 1), _mm512_sub_epi32(zero, _mm512_and_si512(z, one))));
  } else {
    const V one = _mm512_set1_epi64(1);
    return _mm512_add_epi64(b, _mm512_xor_si512(_mm512_srli_epi64(z, 1), _mm512_sub_epi64(zero, _mm512_and_si512(z, one))));
  }
}

template <typename T>
void sub(const std::byte* a, const std::byte* b, std::byte* out, std::size_t m) {
  constexpr unsigned W = sizeof(T);
  const std::size_t n = m * W;
  std::size_t i = 0;
  for (; i + 128 <= n; i += 128) {
    const V r0 = sub_zigzag<W>(load(a + i), load(b + i));
    const V r1 = sub_zigzag<W>(load(a + i + 64), load(b + i + 64));
    store(out + i, r0);
    store(out + i + 64, r1);
  }
  sub_range<T>(a, b, out, i / W, m);
}

template <typename T>
void add(const std::byte* a, const std::byte* b, std::byte* out, std::size_t m) {
  constexpr unsigned W = sizeof(T);
  const std::size_t n = m * W;
  std::size_t i = 0;
  for (; i + 128 <= n; i += 128) {
    const V r0 = add_unzigzag<W>(load(a + i), load(b + i));
    const V r1 = add_unzigzag<W>(load(a + i + 64), load(b + i + 64));
    store(out + i, r0);
    store(out + i + 64, r1);
  }
  add_range<T>(a, b, out, i / W, m);
}

void xor_bytes(const std::byte* a, const std::byte* b, std::byte* out, std::size_t n) {
  std::size_t i = 0;
  for (; i + 128 <= n; i += 128) {
    const V r0 = _mm512_xor_si512(load(a + i), load(b + i));
    const V r1 = _mm512_xor_si512(load(a + i + 64), load(b + i + 64));
    store(out + i, r0);
    store(out + i + 64, r1);
  }
  xor_range(a, b, out, i, n);
}

}  // namespace
// ---- symbol counting (CountFn) -----------------------------------------------
// Per 64 bytes, K compares into masks; each symbol's byte counters take +1
// where it matched, the bytes no symbol matched are counted one by one.
// Counters are bytes: summed out (vpsadbw) every 255 vectors.
template <unsigned K>
void count_symbols(const std::byte* p, std::size_t n, const std::uint8_t* syms, std::uint32_t* hist) {
  V sym[K];
  for (unsigned k = 0; k < K; ++k) sym[k] = _mm512_set1_epi8(static_cast<char>(syms[k]));
  const V zero = _mm512_setzero_si512();
  const V one = _mm512_set1_epi8(1);
  std::size_t i = 0;
  while (n - i >= 64) {
    const std::size_t vecs = std::min<std::size_t>((n - i) / 64, 255);
    V acc[K];
    for (unsigned k = 0; k < K; ++k) acc[k] = zero;
    for (std::size_t v = 0; v < vecs; ++v, i += 64) {
      const V x = load(p + i);
      __mmask64 known = 0;
      for (unsigned k = 0; k < K; ++k) {
        const __mmask64 m = _mm512_cmpeq_epi8_mask(x, sym[k]);
        acc[k] = _mm512_mask_add_epi8(acc[k], m, acc[k], one);
        known = _kor_mask64(known, m);
      }
      count_others(p + i, ~static_cast<std::uint64_t>(known), hist);
    }
    for (unsigned k = 0; k < K; ++k)
      hist[syms[k]] += static_cast<std::uint32_t>(_mm512_reduce_add_epi64(_mm512_sad_epu8(acc[k], zero)));
  }
  for (; i < n; ++i) ++hist[static_cast<std::uint8_t>(p[i])];
}

}  // namespace mithril::codec::detail

#pragma GCC diagnostic pop
#pragma GCC pop_options

namespace mithril::codec::detail {

// Outside the target region: this initializer must run on any CPU.
const ByteGroupKernels k_avx512_kernels = {
    Isa::avx512,
    {{group<std::uint16_t, false>, group<std::uint16_t, true>},
     {group<std::uint32_t, false>, group<std::uint32_t, true>},
     {group<std::uint64_t, false>, group<std::uint64_t, true>}},
    {{ungroup<std::uint16_t, false>, ungroup<std::uint16_t, true>},
     {ungroup<std::uint32_t, false>, ungroup<std::uint32_t, true>},
     {ungroup<std::uint64_t, false>, ungroup<std::uint64_t, true>}},
    xor_bytes,
    {sub<std::uint8_t>, sub<std::uint16_t>, sub<std::uint32_t>, sub<std::uint64_t>},
    {add<std::uint8_t>, add<std::uint16_t>, add<std::uint32_t>, add<std::uint64_t>},
    {count_symbols<8>, count_symbols<12>, count_symbols<16>, count_symbols<24>},
    count_window_avx2,
    count_spread_avx2,
};

}  // namespace mithril::codec::detail

#endif  // __x86_64__
