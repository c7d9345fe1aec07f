// codec/byte_group_sse2.cpp — SSE2 kernels (the x86-64 baseline).
//
// Grouping splits the byte stream into even and odd bytes log2(w) times
// (mask/shift + packus); after the last split each register holds one plane,
// in bit-reversed plane order. Ungrouping is the mirror: log2(w) rounds of
// unpacklo/hi interleave. Blocks are 16 elements; the remainder goes through
// the portable loops of byte_group_kernels.hpp.
//
// The AVX2 and AVX-512 files run the very same per-128-bit-lane cascades and
// only add the shuffles that route 16-byte chunks to and from lanes.
#include "codec/byte_group_kernels.hpp"

#if defined(__x86_64__)

#include <emmintrin.h>

#pragma GCC push_options
#pragma GCC target("sse2")

namespace mithril::codec::detail {
namespace {

using V = __m128i;

inline V load(const std::byte* p) { return _mm_loadu_si128(reinterpret_cast<const V*>(p)); }
inline void store(std::byte* p, V v) { _mm_storeu_si128(reinterpret_cast<V*>(p), v); }

template <unsigned W>
inline V rotl(V x) {
  if constexpr (W == 2) return _mm_or_si128(_mm_slli_epi16(x, 1), _mm_srli_epi16(x, 15));
  else if constexpr (W == 4) return _mm_or_si128(_mm_slli_epi32(x, 1), _mm_srli_epi32(x, 31));
  else return _mm_or_si128(_mm_slli_epi64(x, 1), _mm_srli_epi64(x, 63));
}
template <unsigned W>
inline V rotr(V x) {
  if constexpr (W == 2) return _mm_or_si128(_mm_srli_epi16(x, 1), _mm_slli_epi16(x, 15));
  else if constexpr (W == 4) return _mm_or_si128(_mm_srli_epi32(x, 1), _mm_slli_epi32(x, 31));
  else return _mm_or_si128(_mm_srli_epi64(x, 1), _mm_slli_epi64(x, 63));
}

// Even bytes of a:b into `even`, odd bytes into `odd`.
inline void split(V a, V b, V& even, V& odd) {
  const V lo = _mm_set1_epi16(0x00FF);
  even = _mm_packus_epi16(_mm_and_si128(a, lo), _mm_and_si128(b, lo));
  odd = _mm_packus_epi16(_mm_srli_epi16(a, 8), _mm_srli_epi16(b, 8));
}

// v: 16 elements as W consecutive registers -> p[k]: plane k of them.
template <unsigned W>
inline void group_lanes(const V* v, V* p) {
  if constexpr (W == 2) {
    split(v[0], v[1], p[0], p[1]);
  } else if constexpr (W == 4) {
    V e01, o01, e23, o23;
    split(v[0], v[1], e01, o01);  // e: bytes 0,2; o: bytes 1,3 of elements 0-7
    split(v[2], v[3], e23, o23);
    split(e01, e23, p[0], p[2]);
    split(o01, o23, p[1], p[3]);
  } else {
    V e[4], o[4];
    for (unsigned j = 0; j < 4; ++j) split(v[2 * j], v[2 * j + 1], e[j], o[j]);  // bytes 0246 / 1357
    V ee01, eo01, ee23, eo23, oe01, oo01, oe23, oo23;
    split(e[0], e[1], ee01, eo01);  // ee: bytes 0,4; eo: bytes 2,6
    split(e[2], e[3], ee23, eo23);
    split(o[0], o[1], oe01, oo01);  // oe: bytes 1,5; oo: bytes 3,7
    split(o[2], o[3], oe23, oo23);
    split(ee01, ee23, p[0], p[4]);
    split(eo01, eo23, p[2], p[6]);
    split(oe01, oe23, p[1], p[5]);
    split(oo01, oo23, p[3], p[7]);
  }
}

// p[k]: plane k of 16 elements -> r: the 16 elements, W consecutive registers.
template <unsigned W>
inline void ungroup_lanes(const V* p, V* r) {
  if constexpr (W == 2) {
    r[0] = _mm_unpacklo_epi8(p[0], p[1]);
    r[1] = _mm_unpackhi_epi8(p[0], p[1]);
  } else if constexpr (W == 4) {
    const V al = _mm_unpacklo_epi8(p[0], p[1]), ah = _mm_unpackhi_epi8(p[0], p[1]);
    const V cl = _mm_unpacklo_epi8(p[2], p[3]), ch = _mm_unpackhi_epi8(p[2], p[3]);
    r[0] = _mm_unpacklo_epi16(al, cl);
    r[1] = _mm_unpackhi_epi16(al, cl);
    r[2] = _mm_unpacklo_epi16(ah, ch);
    r[3] = _mm_unpackhi_epi16(ah, ch);
  } else {
    V s[8];  // s[2q], s[2q+1]: byte pairs (2q, 2q+1) of elements 0-7, 8-15
    for (unsigned q = 0; q < 4; ++q) {
      s[2 * q] = _mm_unpacklo_epi8(p[2 * q], p[2 * q + 1]);
      s[2 * q + 1] = _mm_unpackhi_epi8(p[2 * q], p[2 * q + 1]);
    }
    V t[4], u[4];  // t: bytes 0-3, u: bytes 4-7 of elements 4j..4j+3
    for (unsigned h = 0; h < 2; ++h) {
      t[2 * h] = _mm_unpacklo_epi16(s[h], s[2 + h]);
      t[2 * h + 1] = _mm_unpackhi_epi16(s[h], s[2 + h]);
      u[2 * h] = _mm_unpacklo_epi16(s[4 + h], s[6 + h]);
      u[2 * h + 1] = _mm_unpackhi_epi16(s[4 + h], s[6 + h]);
    }
    for (unsigned j = 0; j < 4; ++j) {
      r[2 * j] = _mm_unpacklo_epi32(t[j], u[j]);
      r[2 * j + 1] = _mm_unpackhi_epi32(t[j], u[j]);
    }
  }
}

template <typename T, bool Rot>
void group(const std::byte* in, std::byte* out, std::size_t n, std::size_t stride) {
  constexpr unsigned W = sizeof(T);
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    V v[W], p[W];
    for (unsigned j = 0; j < W; ++j) {
      v[j] = load(in + W * i + 16 * j);
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
  for (; i + 16 <= m; i += 16) {
    V p[W], r[W];
    for (unsigned k = 0; k < W; ++k) p[k] = load(in[k] + i);
    ungroup_lanes<W>(p, r);
    for (unsigned j = 0; j < W; ++j) {
      if constexpr (Rot) r[j] = rotr<W>(r[j]);
      store(out + W * i + 16 * j, r[j]);
    }
  }
  ungroup_range<T, Rot>(in, out, i, m);
}

// ---- residuals ----------------------------------------------------------------

template <unsigned W>
inline V sub_zigzag(V t, V b) {
  if constexpr (W == 1) {
    const V d = _mm_sub_epi8(t, b);
    return _mm_xor_si128(_mm_add_epi8(d, d), _mm_cmpgt_epi8(_mm_setzero_si128(), d));
  } else if constexpr (W == 2) {
    const V d = _mm_sub_epi16(t, b);
    return _mm_xor_si128(_mm_slli_epi16(d, 1), _mm_srai_epi16(d, 15));
  } else if constexpr (W == 4) {
    const V d = _mm_sub_epi32(t, b);
    return _mm_xor_si128(_mm_slli_epi32(d, 1), _mm_srai_epi32(d, 31));
  } else {
    const V d = _mm_sub_epi64(t, b);
    // No 64-bit arithmetic shift in SSE2: spread each high dword's sign.
    const V sign = _mm_shuffle_epi32(_mm_srai_epi32(d, 31), _MM_SHUFFLE(3, 3, 1, 1));
    return _mm_xor_si128(_mm_slli_epi64(d, 1), sign);
  }
}

template <unsigned W>
inline V add_unzigzag(V z, V b) {
  const V zero = _mm_setzero_si128();
  if constexpr (W == 1) {
    const V one = _mm_set1_epi8(1);
    const V half = _mm_and_si128(_mm_srli_epi16(z, 1), _mm_set1_epi8(0x7F));
    return _mm_add_epi8(b, _mm_xor_si128(half, _mm_sub_epi8(zero, _mm_and_si128(z, one))));
  } else if constexpr (W == 2) {
    const V one = _mm_set1_epi16(1);
    return _mm_add_epi16(b, _mm_xor_si128(_mm_srli_epi16(z, 1), _mm_sub_epi16(zero, _mm_and_si128(z, one))));
  } else if constexpr (W == 4) {
    const V one = _mm_set1_epi32(1);
    return _mm_add_epi32(b, _mm_xor_si128(_mm_srli_epi32(z, 1), _mm_sub_epi32(zero, _mm_and_si128(z, one))));
  } else {
    const V one = _mm_set1_epi64x(1);
    return _mm_add_epi64(b, _mm_xor_si128(_mm_srli_epi64(z, 1), _mm_sub_epi64(zero, _mm_and_si128(z, one))));
  }
}

template <typename T>
void sub(const std::byte* a, const std::byte* b, std::byte* out, std::size_t m) {
  constexpr unsigned W = sizeof(T);
  const std::size_t n = m * W;
  std::size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const V r0 = sub_zigzag<W>(load(a + i), load(b + i));
    const V r1 = sub_zigzag<W>(load(a + i + 16), load(b + i + 16));
    store(out + i, r0);
    store(out + i + 16, r1);
  }
  sub_range<T>(a, b, out, i / W, m);
}

template <typename T>
void add(const std::byte* a, const std::byte* b, std::byte* out, std::size_t m) {
  constexpr unsigned W = sizeof(T);
  const std::size_t n = m * W;
  std::size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const V r0 = add_unzigzag<W>(load(a + i), load(b + i));
    const V r1 = add_unzigzag<W>(load(a + i + 16), load(b + i + 16));
    store(out + i, r0);
    store(out + i + 16, r1);
  }
  add_range<T>(a, b, out, i / W, m);
}

void xor_bytes(const std::byte* a, const std::byte* b, std::byte* out, std::size_t n) {
  std::size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const V r0 = _mm_xor_si128(load(a + i), load(b + i));
    const V r1 = _mm_xor_si128(load(a + i + 16), load(b + i + 16));
    store(out + i, r0);
    store(out + i + 16, r1);
  }
  xor_range(a, b, out, i, n);
}

}  // namespace
}  // namespace mithril::codec::detail

#pragma GCC pop_options

namespace mithril::codec::detail {

// Outside the target region: this initializer must run on any CPU.
const ByteGroupKernels k_sse2_kernels = {
    Isa::sse2,
    {{group<std::uint16_t, false>, group<std::uint16_t, true>},
     {group<std::uint32_t, false>, group<std::uint32_t, true>},
     {group<std::uint64_t, false>, group<std::uint64_t, true>}},
    {{ungroup<std::uint16_t, false>, ungroup<std::uint16_t, true>},
     {ungroup<std::uint32_t, false>, ungroup<std::uint32_t, true>},
     {ungroup<std::uint64_t, false>, ungroup<std::uint64_t, true>}},
    xor_bytes,
    {sub<std::uint8_t>, sub<std::uint16_t>, sub<std::uint32_t>, sub<std::uint64_t>},
    {add<std::uint8_t>, add<std::uint16_t>, add<std::uint32_t>, add<std::uint64_t>},
    {nullptr, nullptr, nullptr, nullptr},
    count_window_portable,
    count_spread_portable,
};

}  // namespace mithril::codec::detail

#endif  // __x86_64__
