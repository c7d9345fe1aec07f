// codec/byte_group_avx2.cpp — AVX2 kernels, selected at run time.
//
// Same per-128-bit-lane cascades as byte_group_sse2.cpp (see there), on
// blocks of 32 elements: lane 0 works on elements 0-15, lane 1 on 16-31.
// Grouping loads each register from two 16-byte chunks (load + vinserti128,
// no shuffle-port work), so each final register is already 32 bytes of one
// plane. Ungrouping fixes the lane order with one vperm2i128 per output.
#include "codec/byte_group_kernels.hpp"

#if defined(__x86_64__)

#include <immintrin.h>

#include <algorithm>

#pragma GCC push_options
#pragma GCC target("avx2")

namespace mithril::codec::detail {
namespace {

using V = __m256i;

inline V load(const std::byte* p) { return _mm256_loadu_si256(reinterpret_cast<const V*>(p)); }
inline void store(std::byte* p, V v) { _mm256_storeu_si256(reinterpret_cast<V*>(p), v); }
inline V load2(const std::byte* lo, const std::byte* hi) {
  const V l = _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(lo)));
  return _mm256_inserti128_si256(l, _mm_loadu_si128(reinterpret_cast<const __m128i*>(hi)), 1);
}

template <unsigned W>
inline V rotl(V x) {
  if constexpr (W == 2) return _mm256_or_si256(_mm256_slli_epi16(x, 1), _mm256_srli_epi16(x, 15));
  else if constexpr (W == 4) return _mm256_or_si256(_mm256_slli_epi32(x, 1), _mm256_srli_epi32(x, 31));
  else return _mm256_or_si256(_mm256_slli_epi64(x, 1), _mm256_srli_epi64(x, 63));
}
template <unsigned W>
inline V rotr(V x) {
  if constexpr (W == 2) return _mm256_or_si256(_mm256_srli_epi16(x, 1), _mm256_slli_epi16(x, 15));
  else if constexpr (W == 4) return _mm256_or_si256(_mm256_srli_epi32(x, 1), _mm256_slli_epi32(x, 31));
  else return _mm256_or_si256(_mm256_srli_epi64(x, 1), _mm256_slli_epi64(x, 63));
}

inline void split(V a, V b, V& even, V& odd) {
  const V lo = _mm256_set1_epi16(0x00FF);
  even = _mm256_packus_epi16(_mm256_and_si256(a, lo), _mm256_and_si256(b, lo));
  odd = _mm256_packus_epi16(_mm256_srli_epi16(a, 8), _mm256_srli_epi16(b, 8));
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
    r[0] = _mm256_unpacklo_epi8(p[0], p[1]);
    r[1] = _mm256_unpackhi_epi8(p[0], p[1]);
  } else if constexpr (W == 4) {
    const V al = _mm256_unpacklo_epi8(p[0], p[1]), ah = _mm256_unpackhi_epi8(p[0], p[1]);
    const V cl = _mm256_unpacklo_epi8(p[2], p[3]), ch = _mm256_unpackhi_epi8(p[2], p[3]);
    r[0] = _mm256_unpacklo_epi16(al, cl);
    r[1] = _mm256_unpackhi_epi16(al, cl);
    r[2] = _mm256_unpacklo_epi16(ah, ch);
    r[3] = _mm256_unpackhi_epi16(ah, ch);
  } else {
    V s[8];
    for (unsigned q = 0; q < 4; ++q) {
      s[2 * q] = _mm256_unpacklo_epi8(p[2 * q], p[2 * q + 1]);
      s[2 * q + 1] = _mm256_unpackhi_epi8(p[2 * q], p[2 * q + 1]);
    }
    V t[4], u[4];
    for (unsigned h = 0; h < 2; ++h) {
      t[2 * h] = _mm256_unpacklo_epi16(s[h], s[2 + h]);
      t[2 * h + 1] = _mm256_unpackhi_epi16(s[h], s[2 + h]);
      u[2 * h] = _mm256_unpacklo_epi16(s[4 + h], s[6 + h]);
      u[2 * h + 1] = _mm256_unpackhi_epi16(s[4 + h], s[6 + h]);
    }
    for (unsigned j = 0; j < 4; ++j) {
      r[2 * j] = _mm256_unpacklo_epi32(t[j], u[j]);
      r[2 * j + 1] = _mm256_unpackhi_epi32(t[j], u[j]);
    }
  }
}

template <typename T, bool Rot>
void group(const std::byte* in, std::byte* out, std::size_t n, std::size_t stride) {
  constexpr unsigned W = sizeof(T);
  std::size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const std::byte* blk = in + W * i;
    V v[W], p[W];
    for (unsigned j = 0; j < W; ++j) {
      v[j] = load2(blk + 16 * j, blk + 16 * (W + j));  // lane 1 runs elements 16-31
      if constexpr (Rot) v[j] = rotl<W>(v[j]);
    }
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
  for (; i + 32 <= m; i += 32) {
    V p[W], r[W];
    for (unsigned k = 0; k < W; ++k) p[k] = load(in[k] + i);
    ungroup_lanes<W>(p, r);
    // r[j] lane h holds output chunk W*h + j (16-byte chunks of the block).
    std::byte* blk = out + W * i;
    for (unsigned j = 0; j < W; j += 2) {
      V lo = _mm256_permute2x128_si256(r[j], r[j + 1], 0x20);
      V hi = _mm256_permute2x128_si256(r[j], r[j + 1], 0x31);
      if constexpr (Rot) {
        lo = rotr<W>(lo);
        hi = rotr<W>(hi);
      }
      store(blk + 16 * j, lo);
      store(blk + 16 * (W + j), hi);
    }
  }
  ungroup_range<T, Rot>(in, out, i, m);
}

// ---- residuals ----------------------------------------------------------------

template <unsigned W>
inline V sub_zigzag(V t, V b) {
  if constexpr (W == 1) {
    const V d = _mm256_sub_epi8(t, b);
    return _mm256_xor_si256(_mm256_add_epi8(d, d), _mm256_cmpgt_epi8(_mm256_setzero_si256(), d));
  } else if constexpr (W == 2) {
    const V d = _mm256_sub_epi16(t, b);
    return _mm256_xor_si256(_mm256_slli_epi16(d, 1), _mm256_srai_epi16(d, 15));
  } else if constexpr (W == 4) {
    const V d = _mm256_sub_epi32(t, b);
    return _mm256_xor_si256(_mm256_slli_epi32(d, 1), _mm256_srai_epi32(d, 31));
  } else {
    const V d = _mm256_sub_epi64(t, b);
    return _mm256_xor_si256(_mm256_slli_epi64(d, 1), _mm256_cmpgt_epi64(_mm256_setzero_si256(), d));
  }
}

template <unsigned W>
inline V add_unzigzag(V z, V b) {
  const V zero = _mm256_setzero_si256();
  if constexpr (W == 1) {
    const V one = _mm256_set1_epi8(1);
    const V half = _mm256_and_si256(_mm256_srli_epi16(z, 1), _mm256_set1_epi8(0x7F));
    return _mm256_add_epi8(b, _mm256_xor_si256(half, _mm256_sub_epi8(zero, _mm256_and_si256(z, one))));
  } else if constexpr (W == 2) {
    const V one = _mm256_set1_epi16(1);
    return _mm256_add_epi16(b, _mm256_xor_si256(_mm256_srli_epi16(z, 1), _mm256_sub_epi16(zero, _mm256_and_si256(z, one))));
  } else if constexpr (W == 4) {
    const V one = _mm256_set1_epi32(1);
    return _mm256_add_epi32(b, _mm256_xor_si256(_mm256_srli_epi32(z, 1), _mm256_sub_epi32(zero, _mm256_and_si256(z, one))));
  } else {
    const V one = _mm256_set1_epi64x(1);
    return _mm256_add_epi64(b, _mm256_xor_si256(_mm256_srli_epi64(z, 1), _mm256_sub_epi64(zero, _mm256_and_si256(z, one))));
  }
}

template <typename T>
void sub(const std::byte* a, const std::byte* b, std::byte* out, std::size_t m) {
  constexpr unsigned W = sizeof(T);
  const std::size_t n = m * W;
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const V r0 = sub_zigzag<W>(load(a + i), load(b + i));
    const V r1 = sub_zigzag<W>(load(a + i + 32), load(b + i + 32));
    store(out + i, r0);
    store(out + i + 32, r1);
  }
  sub_range<T>(a, b, out, i / W, m);
}

template <typename T>
void add(const std::byte* a, const std::byte* b, std::byte* out, std::size_t m) {
  constexpr unsigned W = sizeof(T);
  const std::size_t n = m * W;
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const V r0 = add_unzigzag<W>(load(a + i), load(b + i));
    const V r1 = add_unzigzag<W>(load(a + i + 32), load(b + i + 32));
    store(out + i, r0);
    store(out + i + 32, r1);
  }
  add_range<T>(a, b, out, i / W, m);
}

void xor_bytes(const std::byte* a, const std::byte* b, std::byte* out, std::size_t n) {
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const V r0 = _mm256_xor_si256(load(a + i), load(b + i));
    const V r1 = _mm256_xor_si256(load(a + i + 32), load(b + i + 32));
    store(out + i, r0);
    store(out + i + 32, r1);
  }
  xor_range(a, b, out, i, n);
}

}  // namespace
// ---- symbol counting (CountFn) -----------------------------------------------
// As byte_group_avx512.cpp's, 32 bytes at a time; at most 12 symbols, so
// that the counters stay in the sixteen registers.
template <unsigned K>
void count_symbols(const std::byte* p, std::size_t n, const std::uint8_t* syms, std::uint32_t* hist) {
  static_assert(K <= 12);
  const __m256i zero = _mm256_setzero_si256();
  std::size_t i = 0;
  while (n - i >= 32) {
    const std::size_t vecs = std::min<std::size_t>((n - i) / 32, 255);
    __m256i acc[K];
    for (unsigned k = 0; k < K; ++k) acc[k] = zero;
    for (std::size_t v = 0; v < vecs; ++v, i += 32) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i));
      __m256i known = zero;
      for (unsigned k = 0; k < K; ++k) {
        const __m256i m = _mm256_cmpeq_epi8(x, _mm256_set1_epi8(static_cast<char>(syms[k])));
        acc[k] = _mm256_sub_epi8(acc[k], m);  // a match is -1
        known = _mm256_or_si256(known, m);
      }
      count_others(p + i, ~static_cast<std::uint32_t>(_mm256_movemask_epi8(known)) & 0xFFFFFFFFull, hist);
    }
    for (unsigned k = 0; k < K; ++k) {
      const __m256i s = _mm256_sad_epu8(acc[k], zero);
      const __m128i t = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
      hist[syms[k]] += static_cast<std::uint32_t>(_mm_cvtsi128_si64(t) + _mm_extract_epi64(t, 1));
    }
  }
  for (; i < n; ++i) ++hist[static_cast<std::uint8_t>(p[i])];
}

// WindowCountFn: each byte minus lo, plus 0x70 with unsigned saturation, is
// 0x70 + j for window value lo + j and has its top bit set outside the
// window (movemask: the bytes to count one at a time). Counted runs compare
// against the sixteen 0x70 + j; presence runs OR in vpshufb one-hot bits
// (indexed by the low nibble, j; zero where the top bit is set).
void count_window_avx2(const std::byte* p, std::size_t n, std::uint8_t lo, WindowSample& w) {
  const __m256i base = _mm256_set1_epi8(static_cast<char>(lo));
  const __m256i bias = _mm256_set1_epi8(0x70);
  const __m256i zero = _mm256_setzero_si256();
  const __m256i bits_lo = _mm256_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 0, 0, 0, 0, 0, 0, 0, 0,  //
                                           1, 2, 4, 8, 16, 32, 64, -128, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m256i bits_hi = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64, -128,  //
                                           0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64, -128);
  std::uint32_t* hist = w.hist;
  const auto shifted = [&](const std::byte* q) { return _mm256_adds_epu8(_mm256_sub_epi8(load(q), base), bias); };
  // Counts [i, end) exactly; end - i <= 255 vectors (byte-wide counters).
  const auto counted = [&](std::size_t i, std::size_t end) {
    __m256i acc[16];
    for (auto& a : acc) a = zero;
    for (; i < end; i += 32) {
      const __m256i u = shifted(p + i);
      if (const auto out = static_cast<std::uint32_t>(_mm256_movemask_epi8(u))) count_others(p + i, out, hist);
      for (int j = 0; j < 16; ++j) acc[j] = _mm256_sub_epi8(acc[j], _mm256_cmpeq_epi8(u, _mm256_set1_epi8(0x70 + j)));
    }
    for (unsigned j = 0; j < 16; ++j) {
      const __m256i s = _mm256_sad_epu8(acc[j], zero);
      const __m128i t = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
      hist[lo + j] += static_cast<std::uint32_t>(_mm_cvtsi128_si64(t) + _mm_extract_epi64(t, 1));
    }
  };
  __m256i seen_lo = zero, seen_hi = zero;
  std::uint64_t presence_bytes = 0, outside = 0;
  std::size_t i = 0;
  for (; n - i >= k_window_run; i += k_window_run) {
    counted(i, i + k_window_counted);
    for (std::size_t e = i + k_window_counted; e < i + k_window_run; e += 32) {
      const __m256i u = shifted(p + e);
      if (const auto out = static_cast<std::uint32_t>(_mm256_movemask_epi8(u))) {
        count_others(p + e, out, hist);
        outside += static_cast<unsigned>(__builtin_popcount(out));
      }
      seen_lo = _mm256_or_si256(seen_lo, _mm256_shuffle_epi8(bits_lo, u));
      seen_hi = _mm256_or_si256(seen_hi, _mm256_shuffle_epi8(bits_hi, u));
    }
    presence_bytes += k_window_run - k_window_counted;
  }
  const std::size_t whole = i + (n - i) / 32 * 32;
  counted(i, whole);  // (fewer than 128 vectors)
  for (i = whole; i < n; ++i) ++hist[static_cast<std::uint8_t>(p[i])];
  alignas(32) std::uint8_t seen[2][32];
  _mm256_store_si256(reinterpret_cast<__m256i*>(seen[0]), seen_lo);
  _mm256_store_si256(reinterpret_cast<__m256i*>(seen[1]), seen_hi);
  std::uint32_t present = 0;
  for (unsigned b = 0; b < 32; ++b) present |= std::uint32_t{seen[0][b]} | std::uint32_t{seen[1][b]} << 8;
  w.present = present;
  w.uncounted = presence_bytes - outside;
}

// SpreadCountFn: counted runs one byte at a time into four tables; in the
// other bytes, membership of the values seen so far by two vpshufb lookups
// of a 256-bit map (its byte x >> 3, from one half or the other by bit 4
// of that index) and one of the bit 1 << (x & 7).
void count_spread_avx2(const std::byte* p, std::size_t n, SpreadSample& w) {
  std::uint32_t t[4][256] = {};
  const auto count_run = [&](std::size_t i, std::size_t end) {
    for (; i + 4 <= end; i += 4)
      for (unsigned j = 0; j < 4; ++j) ++t[j][static_cast<std::uint8_t>(p[i + j])];
    for (; i < end; ++i) ++t[0][static_cast<std::uint8_t>(p[i])];
  };
  const __m256i low5 = _mm256_set1_epi8(0x1f);
  const __m256i low3 = _mm256_set1_epi8(7);
  const __m256i zero = _mm256_setzero_si256();
  const __m256i bit = _mm256_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 0, 0, 0, 0, 0, 0, 0, 0,  //
                                       1, 2, 4, 8, 16, 32, 64, -128, 0, 0, 0, 0, 0, 0, 0, 0);
  __m256i map_lo = zero, map_hi = zero;  // map bytes 0-15 and 16-31, in both lanes
  std::uint64_t skipped = 0;
  std::size_t i = 0;
  for (; n - i >= k_window_run; i += k_window_run) {
    count_run(i, i + k_window_counted);
    std::uint64_t outside = 0;
    {
      // The map of the values counted so far, eight table entries a step.
      alignas(16) std::uint8_t map[32];
      for (unsigned g = 0; g < 32; ++g) {
        const auto at = [&](unsigned j) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t[j] + 8 * g)); };
        const __m256i any = _mm256_or_si256(_mm256_or_si256(at(0), at(1)), _mm256_or_si256(at(2), at(3)));
        map[g] = static_cast<std::uint8_t>(~_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(any, zero))));
      }
      map_lo = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(map)));
      map_hi = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(map + 16)));
    }
    for (std::size_t e = i + k_window_counted; e < i + k_window_run; e += 32) {
      const __m256i x = load(p + e);
      const __m256i at = _mm256_and_si256(_mm256_srli_epi16(x, 3), low5);
      // (at < 32, so at << 3 keeps to its byte and moves its bit 4 to bit 7)
      const __m256i byte = _mm256_blendv_epi8(_mm256_shuffle_epi8(map_lo, at), _mm256_shuffle_epi8(map_hi, at),
                                              _mm256_slli_epi16(at, 3));
      const __m256i seen = _mm256_and_si256(byte, _mm256_shuffle_epi8(bit, _mm256_and_si256(x, low3)));
      if (const auto unseen = static_cast<std::uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(seen, zero)))) {
        count_others(p + e, unseen, w.extra);
        outside += static_cast<unsigned>(__builtin_popcount(unseen));
      }
    }
    skipped += k_window_run - k_window_counted - outside;
  }
  count_run(i, n);
  for (unsigned b = 0; b < 256; ++b) w.sample[b] += t[0][b] + t[1][b] + t[2][b] + t[3][b];
  w.uncounted = skipped;
}

}  // namespace mithril::codec::detail

#pragma GCC pop_options

namespace mithril::codec::detail {

// Outside the target region: this initializer must run on any CPU.
const ByteGroupKernels k_avx2_kernels = {
    Isa::avx2,
    {{group<std::uint16_t, false>, group<std::uint16_t, true>},
     {group<std::uint32_t, false>, group<std::uint32_t, true>},
     {group<std::uint64_t, false>, group<std::uint64_t, true>}},
    {{ungroup<std::uint16_t, false>, ungroup<std::uint16_t, true>},
     {ungroup<std::uint32_t, false>, ungroup<std::uint32_t, true>},
     {ungroup<std::uint64_t, false>, ungroup<std::uint64_t, true>}},
    xor_bytes,
    {sub<std::uint8_t>, sub<std::uint16_t>, sub<std::uint32_t>, sub<std::uint64_t>},
    {add<std::uint8_t>, add<std::uint16_t>, add<std::uint32_t>, add<std::uint64_t>},
    {count_symbols<8>, count_symbols<12>, nullptr, nullptr},
    count_window_avx2,
    count_spread_avx2,
};

}  // namespace mithril::codec::detail

#endif  // __x86_64__
