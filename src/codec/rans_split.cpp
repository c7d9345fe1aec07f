// codec/rans_split.cpp — a byte plane's high bits coded in pairs and its low
// bits stored as bit planes (rans_split.hpp).
//
// Block format, version 1 (multi-byte integers little-endian; n = the
// plane's size, given by the caller, at least 2):
//
//   block      := tag:u8 low:u8 high_size:u32 high bits
//   tag        := 0x20                               version 1
//   low        := 1 .. 4, the low bits L split off each byte
//   high       := a rans_pairs block (rans_pairs.cpp) of high_size bytes
//                 decoding to the n values b >> L of the plane's bytes b
//   bits       := ceil(n / 64) groups of L words (u64), ending exactly at
//                 the block's end: word j of group g holds, in its bit i,
//                 bit j of plane byte 64 g + i; bits past byte n - 1 are 0
//
// Plane byte i is ((high_i << L) | its L low bits) mod 256. The encoder
// splits off the fewest low bits that leave a plane the pair coder takes
// (low_bits_for).
#include "codec/rans_split.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <string>
#include <type_traits>

#include "mithril/error.hpp"
#include "util/simd_level.hpp"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MITHRIL_SPLIT_X86 1
#endif

namespace mithril::codec::rans_split {

namespace {

using u8 = std::uint8_t;
using u32 = std::uint32_t;
using u64 = std::uint64_t;

constexpr u8 k_tag = 0x20;
constexpr std::size_t k_head = 1 + 1 + 4;  // tag, low, high_size
constexpr std::size_t k_group = 64;         // bytes a group of bit words covers

[[noreturn]] void corrupt(const char* what) { throw Error(Errc::corrupt, std::string("rans split block: ") + what); }

std::size_t bits_size(std::size_t n, unsigned low) { return (n + k_group - 1) / k_group * low * 8; }

// Byte i of k_spread[b] is bit i of b (0 or 1).
constexpr std::array<u64, 256> make_spread() {
  std::array<u64, 256> t{};
  for (unsigned b = 0; b < 256; ++b)
    for (unsigned i = 0; i < 8; ++i) t[b] |= u64{(b >> i) & 1u} << (8 * i);
  return t;
}
constexpr std::array<u64, 256> k_spread = make_spread();

// The byte mask that keeps the high 8 - low bits of each byte, 8 bytes wide.
u64 high_mask(unsigned low) { return 0x0101010101010101ull * ((0xffu << low) & 0xffu); }

// ---- packing: the low bits of `groups` groups of 64 bytes, `low` words each ----

void pack_scalar(const u8* in, std::size_t groups, unsigned low, u8* words) {
  for (std::size_t g = 0; g < groups; ++g, in += k_group, words += 8 * low)
    for (unsigned j = 0; j < low; ++j) {
      u64 w = 0;
      for (unsigned i = 0; i < k_group; ++i) w |= u64{(in[i] >> j) & 1u} << i;
      util::store_le<u64>(reinterpret_cast<std::byte*>(words + 8 * j), w);
    }
}

// ---- merging: the high values of `groups` groups (in place) with their words ----

void merge_scalar(u8* io, std::size_t groups, unsigned low, const u8* words) {
  const u64 keep = high_mask(low);
  for (std::size_t g = 0; g < groups; ++g, io += k_group, words += 8 * low)
    for (unsigned q = 0; q < 8; ++q) {
      u64 x;
      std::memcpy(&x, io + 8 * q, 8);
      x = (x << low) & keep;
      for (unsigned j = 0; j < low; ++j) {
        const u64 w = util::load_le<u64>(reinterpret_cast<const std::byte*>(words + 8 * j));
        x |= k_spread[(w >> (8 * q)) & 0xff] << j;
      }
      std::memcpy(io + 8 * q, &x, 8);
    }
}

#ifdef MITHRIL_SPLIT_X86
__attribute__((target("avx2"))) void pack_avx2(const u8* in, std::size_t groups, unsigned low, u8* words) {
  for (std::size_t g = 0; g < groups; ++g, in += k_group, words += 8 * low) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + 32));
    for (unsigned j = 0; j < low; ++j) {
      // Bit j of each byte to its top bit (a 16-bit shift moves each byte's
      // own bit j there), then one bit a byte.
      const __m128i s = _mm_cvtsi32_si128(static_cast<int>(7 - j));
      const auto lo = static_cast<u32>(_mm256_movemask_epi8(_mm256_sll_epi16(a, s)));
      const auto hi = static_cast<u32>(_mm256_movemask_epi8(_mm256_sll_epi16(b, s)));
      util::store_le<u64>(reinterpret_cast<std::byte*>(words + 8 * j), u64{lo} | (u64{hi} << 32));
    }
  }
}

// 32 bytes, each 0xff where its bit of w is set.
__attribute__((always_inline, target("avx2"))) inline __m256i spread32_avx2(u32 w) {
  const __m256i idx = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,  //
                                       2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i sel = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ull));
  const __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(w)), idx);
  return _mm256_cmpeq_epi8(_mm256_and_si256(b, sel), sel);
}

// Each half group's 32 bits of word j spread to bytes, masked to bit j.
template <unsigned Low>
__attribute__((always_inline, target("avx2"))) inline void merge_avx2_groups(u8* io, std::size_t groups,
                                                                              const u8* words) {
  const __m128i s = _mm_cvtsi32_si128(static_cast<int>(Low));
  const __m256i keep = _mm256_set1_epi8(static_cast<char>((0xffu << Low) & 0xffu));
  for (std::size_t g = 0; g < groups; ++g, io += k_group, words += 8 * Low) {
    for (unsigned h = 0; h < 2; ++h) {
      auto* p = reinterpret_cast<__m256i*>(io + 32 * h);
      __m256i v = _mm256_and_si256(_mm256_sll_epi16(_mm256_loadu_si256(p), s), keep);
      for (unsigned j = 0; j < Low; ++j) {
        u32 w;
        std::memcpy(&w, words + 8 * j + 4 * h, 4);  // little-endian: bits 32h .. 32h + 31
        const __m256i bit = _mm256_set1_epi8(static_cast<char>(1u << j));
        v = _mm256_or_si256(v, _mm256_and_si256(spread32_avx2(w), bit));
      }
      _mm256_storeu_si256(p, v);
    }
  }
}

__attribute__((target("avx2"))) void merge_avx2(u8* io, std::size_t groups, unsigned low, const u8* words) {
  switch (low) {
    case 1: return merge_avx2_groups<1>(io, groups, words);
    case 2: return merge_avx2_groups<2>(io, groups, words);
    case 3: return merge_avx2_groups<3>(io, groups, words);
    default: return merge_avx2_groups<4>(io, groups, words);
  }
}

__attribute__((target("avx512f,avx512bw"))) void pack_avx512(const u8* in, std::size_t groups, unsigned low,
                                                              u8* words) {
  for (std::size_t g = 0; g < groups; ++g, in += k_group, words += 8 * low) {
    const __m512i v = _mm512_loadu_si512(in);
    for (unsigned j = 0; j < low; ++j) {
      const __mmask64 m = _mm512_test_epi8_mask(v, _mm512_set1_epi8(static_cast<char>(1u << j)));
      util::store_le<u64>(reinterpret_cast<std::byte*>(words + 8 * j), static_cast<u64>(m));
    }
  }
}

template <unsigned Low>
__attribute__((always_inline, target("avx512f,avx512bw"))) inline void merge_avx512_groups(u8* io, std::size_t groups,
                                                                                          const u8* words) {
  const __m128i s = _mm_cvtsi32_si128(static_cast<int>(Low));
  const __m512i keep = _mm512_set1_epi8(static_cast<char>((0xffu << Low) & 0xffu));
  for (std::size_t g = 0; g < groups; ++g, io += k_group, words += 8 * Low) {
    __m512i v = _mm512_and_si512(_mm512_sll_epi16(_mm512_loadu_si512(io), s), keep);
    for (unsigned j = 0; j < Low; ++j) {
      // The bit is 0 in v before: adding it where the word says sets it.
      u64 w;
      std::memcpy(&w, words + 8 * j, 8);  // little-endian
      v = _mm512_mask_add_epi8(v, static_cast<__mmask64>(w), v, _mm512_set1_epi8(static_cast<char>(1u << j)));
    }
    _mm512_storeu_si512(io, v);
  }
}

__attribute__((target("avx512f,avx512bw"))) void merge_avx512(u8* io, std::size_t groups, unsigned low,
                                                               const u8* words) {
  switch (low) {
    case 1: return merge_avx512_groups<1>(io, groups, words);
    case 2: return merge_avx512_groups<2>(io, groups, words);
    case 3: return merge_avx512_groups<3>(io, groups, words);
    default: return merge_avx512_groups<4>(io, groups, words);
  }
}
#endif

using PackFn = void (*)(const u8*, std::size_t, unsigned, u8*);
using MergeFn = void (*)(u8*, std::size_t, unsigned, const u8*);

bool cpu_has(detail::Kernel k) {
#ifdef MITHRIL_SPLIT_X86
  switch (k) {
    case detail::Kernel::scalar: return true;
    case detail::Kernel::avx2: return util::simd_allows(util::SimdLevel::avx2) && __builtin_cpu_supports("avx2");
    case detail::Kernel::avx512:
      return util::simd_allows(util::SimdLevel::avx512) && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw");
  }
  return false;
#else
  return k == detail::Kernel::scalar;
#endif
}

// `k`, or the widest narrower kernel this CPU has.
detail::Kernel usable(detail::Kernel k) {
  if (k == detail::Kernel::avx512 && !cpu_has(k)) k = detail::Kernel::avx2;
  if (k == detail::Kernel::avx2 && !cpu_has(k)) k = detail::Kernel::scalar;
  return k;
}

detail::Kernel best_kernel() {
  static const detail::Kernel k = usable(detail::Kernel::avx512);
  return k;
}

// Kernel k's packing and merging.
struct KernelFns {
  PackFn pack;
  MergeFn merge;
};
KernelFns kernel_fns(detail::Kernel k) {
#ifdef MITHRIL_SPLIT_X86
  if (k == detail::Kernel::avx512) return {pack_avx512, merge_avx512};
  if (k == detail::Kernel::avx2) return {pack_avx2, merge_avx2};
#endif
  (void)k;
  return {pack_scalar, merge_scalar};
}

// The high values of bytes [pos, pos + m), in io, merged with their low
// bits in place: whole groups by `merge`, the bytes of a group cut by the
// piece's ends one at a time.
void merge_piece(u8* io, std::size_t m, std::size_t pos, const u8* bits, unsigned low, MergeFn merge) {
  const std::size_t words = std::size_t{low} * 8;  // bytes of a group's words
  auto one = [&](std::size_t i) {
    const std::size_t at = pos + i;
    const u8* w = bits + at / k_group * words;
    unsigned v = static_cast<unsigned>(io[i]) << low;
    for (unsigned j = 0; j < low; ++j)
      v |= static_cast<unsigned>((util::load_le<u64>(reinterpret_cast<const std::byte*>(w + 8 * j)) >> (at % k_group)) & 1u)
           << j;
    io[i] = static_cast<u8>(v);
  };
  std::size_t i = 0;
  for (; i < m && (pos + i) % k_group != 0; ++i) one(i);
  if (const std::size_t groups = (m - i) / k_group; groups != 0) {
    merge(io + i, groups, low, bits + (pos + i) / k_group * words);
    i += groups * k_group;
  }
  for (; i < m; ++i) one(i);
}

}  // namespace

unsigned low_bits_for(const Histogram& hist, std::size_t n) {
  for (unsigned low = 1; low <= k_max_low_bits; ++low) {
    Histogram h{};
    for (unsigned v = 0; v < 256; ++v) h[v >> low] += hist[v];
    if (rans_pairs::worth_trying(h, n)) return low;
  }
  return 0;
}

const char* merge_kernel_name() {
  switch (best_kernel()) {
    case detail::Kernel::avx512: return "avx512";
    case detail::Kernel::avx2: return "avx2";
    case detail::Kernel::scalar: break;
  }
  return "scalar";
}

namespace detail {
bool kernel_available(Kernel k) { return cpu_has(k); }
}  // namespace detail

Encoder::Encoder() : m_kernel(best_kernel()) {}
Encoder::Encoder(detail::Kernel k) : m_pairs(k == detail::Kernel::scalar ? rans_pairs::Encoder(rans_pairs::detail::Kernel::scalar) : rans_pairs::Encoder()), m_kernel(usable(k)) {}

std::optional<std::size_t> Encoder::encode(util::ByteSpan in, const Histogram& hist, util::MutableByteSpan out,
                                           double give_up_above) {
  const std::size_t n = in.size();
  if (n > 0xffffffffu) return std::nullopt;
  const unsigned low = low_bits_for(hist, n);
  if (low == 0) return std::nullopt;
  const std::size_t nbits = bits_size(n, low);
  if (out.size() < k_head + nbits) return std::nullopt;

  // The high plane and its histogram (from the bytes' own).
  m_high.resize(n);
  const auto* src = reinterpret_cast<const u8*>(in.data());
  auto* high = reinterpret_cast<u8*>(m_high.data());
  // A constant shift, which the compiler vectorizes.
  auto shift = [&](auto by) {
    for (std::size_t i = 0; i < n; ++i) high[i] = static_cast<u8>(src[i] >> by.value);
  };
  switch (low) {
    case 1: shift(std::integral_constant<unsigned, 1>{}); break;
    case 2: shift(std::integral_constant<unsigned, 2>{}); break;
    case 3: shift(std::integral_constant<unsigned, 3>{}); break;
    default: shift(std::integral_constant<unsigned, 4>{}); break;
  }
  Histogram hh{};
  for (unsigned v = 0; v < 256; ++v) hh[v >> low] += hist[v];

  const double left = give_up_above - static_cast<double>(k_head + nbits);
  if (left <= 0) return std::nullopt;
  const auto coded = m_pairs.encode(util::ByteSpan(m_high.data(), n), hh, out.subspan(k_head, out.size() - k_head - nbits), left);
  if (!coded) return std::nullopt;

  auto* o = reinterpret_cast<u8*>(out.data());
  o[0] = k_tag;
  o[1] = static_cast<u8>(low);
  util::store_le<u32>(out.data() + 2, static_cast<u32>(*coded));
  u8* words = o + k_head + *coded;
  const PackFn pack = kernel_fns(m_kernel).pack;
  const std::size_t whole = n / k_group;
  pack(src, whole, low, words);
  if (n % k_group != 0) {
    std::array<u8, k_group> last{};  // zero past the plane's end
    std::memcpy(last.data(), src + whole * k_group, n % k_group);
    pack_scalar(last.data(), 1, low, words + whole * low * 8);
  }
  return k_head + *coded + nbits;
}

struct PieceDecoder::State {
  rans_pairs::PieceDecoder high;
  const u8* bits = nullptr;
  unsigned low = 0;
  std::size_t n = 0, pos = 0;
  MergeFn merge = kernel_fns(best_kernel()).merge;
  bool started = false;
};

PieceDecoder::PieceDecoder() : m_state(std::make_unique<State>()) {}
PieceDecoder::PieceDecoder(detail::Kernel k) : m_state(std::make_unique<State>()) {
  m_state->merge = kernel_fns(usable(k)).merge;
  if (k == detail::Kernel::scalar) m_state->high = rans_pairs::PieceDecoder(rans_pairs::detail::Kernel::scalar);
}
PieceDecoder::~PieceDecoder() = default;
PieceDecoder::PieceDecoder(PieceDecoder&&) noexcept = default;
PieceDecoder& PieceDecoder::operator=(PieceDecoder&&) noexcept = default;

void PieceDecoder::start(util::ByteSpan block, std::size_t n) {
  State& s = *m_state;
  s.started = false;
  if (n < 2) corrupt("a plane of fewer than 2 bytes");
  const auto* b = reinterpret_cast<const u8*>(block.data());
  if (block.size() < k_head) corrupt("truncated header");
  if (b[0] != k_tag) corrupt("unknown version");
  const unsigned low = b[1];
  if (low < 1 || low > k_max_low_bits) corrupt("low bits out of range");
  const std::size_t high_size = util::load_le<u32>(block.data() + 2);
  if (high_size > block.size() - k_head) corrupt("the high plane runs past the block");
  const std::size_t nbits = bits_size(n, low);
  if (block.size() - k_head - high_size != nbits) corrupt("the low bits do not end the block");
  const u8* bits = b + k_head + high_size;
  if (const std::size_t used = n % k_group; used != 0) {
    const u8* last = bits + nbits - std::size_t{low} * 8;
    for (unsigned j = 0; j < low; ++j)
      if (util::load_le<u64>(reinterpret_cast<const std::byte*>(last + 8 * j)) >> used != 0)
        corrupt("low bits set past the plane's end");
  }
  s.high.start(block.subspan(k_head, high_size), n);
  s.bits = bits;
  s.low = low;
  s.n = n;
  s.pos = 0;
  s.started = true;
}

void PieceDecoder::next(util::MutableByteSpan out) {
  State& s = *m_state;
  if (!s.started || out.size() > s.n - s.pos) throw Error(Errc::internal, "rans split: decoding past the plane");
  s.high.next(out);
  merge_piece(reinterpret_cast<u8*>(out.data()), out.size(), s.pos, s.bits, s.low, s.merge);
  s.pos += out.size();
}

void PieceDecoder::finish() {
  State& s = *m_state;
  if (!s.started || s.pos != s.n) throw Error(Errc::internal, "rans split: finish before the plane's end");
  s.started = false;
  s.high.finish();
}

std::size_t PieceDecoder::position() const noexcept { return m_state->pos; }

void decode(util::ByteSpan block, util::MutableByteSpan out) {
  PieceDecoder d;
  d.start(block, out.size());
  d.next(out);
  d.finish();
}

}  // namespace mithril::codec::rans_split
