// codec/rans_pairs.cpp — a byte plane coded two bytes per rANS symbol
// (rans_pairs.hpp).
//
// Block format, version 1 (multi-byte integers little-endian; n = the
// plane's size, given by the caller, at least 2):
//
//   block      := tag:u8 map:u8[15] pairs_size:u32 pairs esc_count:u32 esc_kind:u8 esc
//   tag        := 0x10                               version 1
//   pairs      := a rans0 block (rans.cpp) of pairs_size bytes decoding to
//                 n / 2 (rounded down) pair symbols
//   esc        := esc_kind 0: esc_count bytes as they are;
//                 esc_kind 1: a rans0 block decoding to esc_count >= 1 bytes;
//                 either way it ends exactly at the block's end
//
// Pair symbol j is (c0 << 4) | c1, the codes of plane bytes 2j and 2j + 1. A
// code c < 15 stands for the byte map[c]; a code 15 for the next byte of
// the escape stream, taken in plane order. When n is odd the plane's last
// byte is the escape stream's last byte. Every escape byte is used. The
// encoder maps the 15 most frequent values (ties: the smaller value first;
// unused entries 0) and escapes the other bytes, and both bytes of every
// pair too rare to be worth a slot of its own (rans_pairs.hpp).
#include "codec/rans_pairs.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <string>
#include <vector>

#include "codec/rans.hpp"
#include "mithril/error.hpp"
#include "util/simd_level.hpp"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MITHRIL_PAIRS_X86 1
#endif

namespace mithril::codec::rans_pairs {

namespace {

using u8 = std::uint8_t;
using u32 = std::uint32_t;

constexpr u8 k_tag = 0x10;
constexpr unsigned k_escape = 15;
constexpr std::size_t k_head = 1 + 15 + 4;  // tag, map, pairs_size
constexpr std::size_t k_sub = 8192;         // pair symbols decoded at a time (into L1)
// The encoder counts the pair symbols of one slice in every k_sample_stride
// (planes of k_sample_from pair symbols and up; smaller ones whole): the
// counts only shape the rANS table and pick the rare pairs, the escape pass
// counts every pair it rewrites exactly, and the slices' scaled counts
// cost 0.001-0.003% in size against exact ones (bench/data's files and
// MiniLM, 4 MiB chunks; rans_pairs.hpp).
constexpr std::size_t k_sample_slice = 4096;
constexpr std::size_t k_sample_stride = 4 * k_sample_slice;  // one slice in every four
constexpr std::size_t k_sample_from = 64 * 1024;

// How many slices of a plane of `half` pair symbols are counted: slice i is
// symbols [i * k_sample_stride, i * k_sample_stride + k_sample_slice); 0 for
// a plane counted whole.
std::size_t sampled_slices(std::size_t half) { return half < k_sample_from ? 0 : half / k_sample_stride; }

[[noreturn]] void corrupt(const char* what) { throw Error(Errc::corrupt, std::string("rans pairs block: ") + what); }

// Byte values by count, most frequent first (ties: the smaller value first).
struct Ranked {
  std::array<u8, 256> order{};
  unsigned present = 0;
  std::uint64_t top = 0;  // bytes among the 15 most frequent values
};
Ranked rank(const Histogram& hist) {
  Ranked r;
  for (unsigned s = 0; s < 256; ++s) r.order[s] = static_cast<u8>(s);
  std::stable_sort(r.order.begin(), r.order.end(), [&](u8 a, u8 b) { return hist[a] > hist[b]; });
  for (unsigned s = 0; s < 256; ++s) r.present += hist[s] != 0;
  for (unsigned i = 0; i < k_escape; ++i) r.top += hist[r.order[i]];
  return r;
}

// The escape stream as the decoder consumes it.
struct Escapes {
  const u8* p = nullptr;
  std::size_t count = 0, used = 0;
  u8 take() {
    if (used == count) corrupt("the escape stream runs out");
    return p[used++];
  }
};

// Expands k pair symbols into 2k bytes.
void expand_scalar(const u8* pairs, std::size_t k, const u8* map, u8* out, Escapes& e) {
  for (std::size_t j = 0; j < k; ++j) {
    const unsigned s = pairs[j], hi = s >> 4, lo = s & 15;
    out[2 * j] = hi == k_escape ? e.take() : map[hi];
    out[2 * j + 1] = lo == k_escape ? e.take() : map[lo];
  }
}

#ifdef MITHRIL_PAIRS_X86
// 32 pair symbols at a time: their nibbles interleaved into 64 codes in
// order, mapped by one vpshufb per 32 (code 15 maps to map[15] = 0, then
// the escaped bytes are written over from a bit mask).
__attribute__((target("avx2,popcnt,bmi"))) void expand_avx2(const u8* pairs, std::size_t k, const u8* map, u8* out,
                                                            Escapes& e) {
  const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(map)));
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  const __m256i esc = _mm256_set1_epi8(static_cast<char>(k_escape));
  std::size_t j = 0;
  for (; j + 32 <= k; j += 32) {
    const __m256i p = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pairs + j));
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(p, 4), nibble);
    const __m256i lo = _mm256_and_si256(p, nibble);
    const __m256i a = _mm256_unpacklo_epi8(hi, lo);  // pairs 0-7 | 16-23
    const __m256i b = _mm256_unpackhi_epi8(hi, lo);  // pairs 8-15 | 24-31
    const __m256i c0 = _mm256_permute2x128_si256(a, b, 0x20);
    const __m256i c1 = _mm256_permute2x128_si256(a, b, 0x31);
    u8* o = out + 2 * j;
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), _mm256_shuffle_epi8(table, c0));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 32), _mm256_shuffle_epi8(table, c1));
    const auto m0 = static_cast<u32>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(c0, esc)));
    const auto m1 = static_cast<u32>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(c1, esc)));
    std::uint64_t m = m0 | (std::uint64_t{m1} << 32);
    if (m != 0) [[unlikely]] {
      if (static_cast<std::size_t>(_mm_popcnt_u64(m)) > e.count - e.used) corrupt("the escape stream runs out");
      do {
        o[_tzcnt_u64(m)] = e.p[e.used++];
        m = _blsr_u64(m);
      } while (m != 0);
    }
  }
  expand_scalar(pairs + j, k - j, map, out + 2 * j, e);
}
#endif

using ExpandFn = void (*)(const u8*, std::size_t, const u8*, u8*, Escapes&);

bool avx2_expands() {
#ifdef MITHRIL_PAIRS_X86
  static const bool yes = util::simd_allows(util::SimdLevel::avx2) && __builtin_cpu_supports("avx2") &&
                          __builtin_cpu_supports("bmi") && __builtin_cpu_supports("popcnt");
  return yes;
#else
  return false;
#endif
}

ExpandFn expand_fn(bool vector) {
#ifdef MITHRIL_PAIRS_X86
  if (vector) return expand_avx2;
#endif
  return expand_scalar;
}


// ---- the encoder's passes ---------------------------------------------------

// pairs[j] = code[src[2j]] << 4 | code[src[2j + 1]] for j < half.
void make_pairs_scalar(const u8* src, std::size_t half, const std::array<u8, 256>& code, u8* pairs) {
  for (std::size_t j = 0; j < half; ++j) pairs[j] = static_cast<u8>(code[src[2 * j]] << 4 | code[src[2 * j + 1]]);
}

// The escape stream as the encoder's escape pass writes it, and the exact
// count of every pair symbol that pass visits (the symbols marked in
// `attention`, before they are remapped).
struct EscapeOut {
  util::ByteVector& bytes;  // cleared by the caller; grows as needed
  std::array<std::uint32_t, 256>& visited;

  void pair(const u8* src, std::size_t j, unsigned s, unsigned t) {
    ++visited[s];
    if (t >> 4 == k_escape) bytes.push_back(static_cast<std::byte>(src[2 * j]));
    if ((t & 15) == k_escape) bytes.push_back(static_cast<std::byte>(src[2 * j + 1]));
  }
};

// Rewrites the pairs whose bit is set in `attention` (remap), writes the
// bytes they escape, in order, and counts them (EscapeOut).
void escape_pass_scalar(const u8* src, std::size_t half, const std::array<u8, 256>& remap,
                        const std::array<u8, 32>& attention, u8* pairs, EscapeOut& out) {
  for (std::size_t j = 0; j < half; ++j) {
    const unsigned s = pairs[j];
    if ((attention[s >> 3] >> (s & 7)) & 1) [[unlikely]] {
      const unsigned t = remap[s];
      pairs[j] = static_cast<u8>(t);
      out.pair(src, j, s, t);
    }
  }
}

#ifdef MITHRIL_PAIRS_X86
// The codes of 32 bytes by nibble tables: code = tab[i][low nibble] where the
// high nibble is hv[i], 15 elsewhere; returned as 16 pairs, (first << 4) |
// second in the low byte of each 16-bit lane.
__attribute__((always_inline, target("avx2"))) inline __m256i pair_codes(const u8* p, const __m256i* tab,
                                                                         const __m256i* hv, unsigned nhigh) {
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i lo = _mm256_and_si256(v, nibble), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
  __m256i c = _mm256_set1_epi8(static_cast<char>(k_escape));
  for (unsigned i = 0; i < nhigh; ++i)
    c = _mm256_blendv_epi8(c, _mm256_shuffle_epi8(tab[i], lo), _mm256_cmpeq_epi8(hi, hv[i]));
  return _mm256_and_si256(_mm256_or_si256(_mm256_slli_epi16(c, 4), _mm256_srli_epi16(c, 8)), _mm256_set1_epi16(0x00ff));
}

// pairs[j] for high nibbles `highs` (the caller checks there are at most 4;
// an exponent plane's 15 values span 2 or 3), 15 elsewhere. 64 bytes make 32
// pairs: in each 16-bit lane, (first << 4) | second.
__attribute__((target("avx2"))) void make_pairs_avx2(const u8* src, std::size_t half, const std::array<u8, 256>& code,
                                                      const std::array<unsigned, 4>& highs, unsigned nhigh, u8* pairs) {
  __m256i tab[4], hv[4];
  for (unsigned i = 0; i < nhigh; ++i) {
    tab[i] = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(code.data() + 16 * highs[i])));
    hv[i] = _mm256_set1_epi8(static_cast<char>(highs[i]));
  }
  std::size_t j = 0;
  for (; j + 32 <= half; j += 32) {
    const __m256i a = pair_codes(src + 2 * j, tab, hv, nhigh), b = pair_codes(src + 2 * j + 32, tab, hv, nhigh);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(pairs + j),
                        _mm256_permute4x64_epi64(_mm256_packus_epi16(a, b), 0xd8));
  }
  make_pairs_scalar(src + 2 * j, half - j, code, pairs + j);
}

// 32 pairs at a time: the bit of each in `attention` by two nibble lookups
// (its byte of the bitmap, then its bit); only the marked ones are visited.
__attribute__((target("avx2,bmi,popcnt"))) void escape_pass_avx2(const u8* src, std::size_t half,
                                                                 const std::array<u8, 256>& remap,
                                                                 const std::array<u8, 32>& attention, u8* pairs,
                                                                 EscapeOut& out) {
  const __m256i lo_tab = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(attention.data())));
  const __m256i hi_tab =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(attention.data() + 16)));
  const __m256i bits = _mm256_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128,  //
                                        1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
  const __m256i seven = _mm256_set1_epi8(7), thirty_one = _mm256_set1_epi8(31);
  std::size_t j = 0;
  for (; j + 32 <= half; j += 32) {
    const __m256i p = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pairs + j));
    const __m256i idx = _mm256_and_si256(_mm256_srli_epi16(p, 3), thirty_one);
    const __m256i byte = _mm256_blendv_epi8(_mm256_shuffle_epi8(lo_tab, idx), _mm256_shuffle_epi8(hi_tab, idx),
                                            _mm256_slli_epi16(idx, 3));
    const __m256i bit = _mm256_shuffle_epi8(bits, _mm256_and_si256(p, seven));
    auto m = static_cast<u32>(
        _mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_and_si256(byte, bit), bit)));
    while (m != 0) {
      const std::size_t k = j + _tzcnt_u32(m);
      m = _blsr_u32(m);
      const unsigned s = pairs[k], t = remap[s];
      pairs[k] = static_cast<u8>(t);
      out.pair(src, k, s, t);
    }
  }
  escape_pass_scalar(src + 2 * j, half - j, remap, attention, pairs + j, out);
}
#endif

void make_pairs(const u8* src, std::size_t half, const std::array<u8, 256>& code, u8* pairs, bool vector) {
#ifdef MITHRIL_PAIRS_X86
  if (vector) {
    std::array<unsigned, 4> highs{};
    unsigned nhigh = 0;
    for (unsigned h = 0; h < 16; ++h) {
      bool any = false;
      for (unsigned l = 0; l < 16; ++l) any |= code[16 * h + l] != k_escape;
      if (any) {
        if (nhigh == highs.size()) return make_pairs_scalar(src, half, code, pairs);
        highs[nhigh++] = h;
      }
    }
    return make_pairs_avx2(src, half, code, highs, nhigh, pairs);
  }
#endif
  make_pairs_scalar(src, half, code, pairs);
}

void escape_pass(const u8* src, std::size_t half, const std::array<u8, 256>& remap,
                 const std::array<u8, 32>& attention, u8* pairs, EscapeOut& out, bool vector) {
#ifdef MITHRIL_PAIRS_X86
  if (vector) return escape_pass_avx2(src, half, remap, attention, pairs, out);
#endif
  escape_pass_scalar(src, half, remap, attention, pairs, out);
}

// The pair symbols' histogram over sampled_slices() (all of them where that
// is 0); returns how many were counted.
std::size_t sample_pairs(const u8* pairs, std::size_t half, Histogram& counted) {
  const std::size_t n = sampled_slices(half);
  if (n == 0) {
    histogram(util::ByteSpan(reinterpret_cast<const std::byte*>(pairs), half), counted);
    return half;
  }
  std::vector<util::ByteSpan> slices(n);
  for (std::size_t i = 0; i < n; ++i)
    slices[i] = util::ByteSpan(reinterpret_cast<const std::byte*>(pairs + i * k_sample_stride), k_sample_slice);
  plane_histograms(slices, 1, GroupMode::plain, std::span<Histogram>(&counted, 1));
  return n * k_sample_slice;
}

}  // namespace

const char* expand_kernel_name() { return avx2_expands() ? "avx2" : "scalar"; }

namespace detail {
bool kernel_available(Kernel k) { return k == Kernel::scalar || avx2_expands(); }
bool pair_in_sample(std::size_t j, std::size_t half) {
  const std::size_t n = sampled_slices(half);
  return n == 0 ? j < half : j / k_sample_stride < n && j % k_sample_stride < k_sample_slice;
}
}  // namespace detail

Encoder::Encoder() : m_vector(avx2_expands()) {}
Encoder::Encoder(detail::Kernel k) : m_vector(k == detail::Kernel::avx2 && avx2_expands()) {}

bool worth_trying(const Histogram& hist, std::size_t n) {
  if (n < k_min_plane) return false;
  const Ranked r = rank(hist);
  return r.present >= 2 && static_cast<double>(n - r.top) <= k_max_escape_share * static_cast<double>(n);
}

std::optional<std::size_t> Encoder::encode(util::ByteSpan in, const Histogram& hist, util::MutableByteSpan out,
                                           double give_up_above) {
  const std::size_t n = in.size();
  if (n < k_min_plane || n > 0xffffffffu) return std::nullopt;
  const Ranked r = rank(hist);
  if (r.present < 2 || static_cast<double>(n - r.top) > k_max_escape_share * static_cast<double>(n))
    return std::nullopt;
  std::array<u8, 256> code;
  code.fill(k_escape);
  std::array<u8, 15> map{};
  for (unsigned i = 0; i < std::min(r.present, k_escape); ++i) {
    code[r.order[i]] = static_cast<u8>(i);
    map[i] = r.order[i];
  }

  // The pair symbols, then their counts.
  const auto* src = reinterpret_cast<const u8*>(in.data());
  const std::size_t half = n / 2;
  m_pairs.resize(half);
  auto* pairs = reinterpret_cast<u8*>(m_pairs.data());
  make_pairs(src, half, code, pairs, m_vector);
  Histogram counted;
  const std::size_t sampled = sample_pairs(pairs, half, counted);
  const double scale = static_cast<double>(half) / static_cast<double>(sampled);

  // Rare pairs become (15, 15), and so do the pairs the sample did not show
  // (its counts are the only ones before the escape pass). `attention`
  // marks the pair symbols that escape a byte or are rewritten: the escape
  // pass stops only at those, and counts them exactly.
  std::array<u8, 256> remap;
  std::array<u8, 32> attention{};
  const double rare = k_rare_share * static_cast<double>(half) / 4096.0;
  const auto marked = [&](unsigned s) { return ((attention[s >> 3] >> (s & 7)) & 1) != 0; };
  for (unsigned s = 0; s < 256; ++s) {
    remap[s] = static_cast<u8>(s);
    if (s != 0xff && static_cast<double>(counted[s]) * scale < rare) remap[s] = 0xff;
    const unsigned t = remap[s];
    if (t != s || t >> 4 == k_escape || (t & 15) == k_escape)
      attention[s >> 3] = static_cast<u8>(attention[s >> 3] | (1u << (s & 7)));
  }
  m_escapes.clear();
  std::array<std::uint32_t, 256> visited{};
  EscapeOut escaped{m_escapes, visited};
  escape_pass(src, half, remap, attention, pairs, escaped, m_vector);
  if (n & 1) m_escapes.push_back(in[n - 1]);
  const std::uint64_t total = m_escapes.size();  // escaped bytes

  // The pair stream's histogram: the marked symbols as the escape pass
  // counted them, the others from the sample, scaled to the pairs left
  // (each at least 1: every one of them was seen). Exact where the sample
  // is the whole stream.
  Histogram ph{};
  std::uint64_t exact = 0, unmarked = 0;
  for (unsigned s = 0; s < 256; ++s) {
    if (marked(s)) {
      ph[remap[s]] += visited[s];
      exact += visited[s];
    } else {
      unmarked += counted[s];
    }
  }
  const std::uint64_t rest = half - exact;
  if (rest < unmarked) throw Error(Errc::internal, "rans pairs: more sampled pairs than pairs");
  if (unmarked != 0) {
    std::uint64_t given = 0;
    unsigned largest = 256;  // none yet (unmarked != 0: the loop finds one)
    for (unsigned s = 0; s < 256; ++s) {
      if (marked(s) || counted[s] == 0) continue;
      ph[s] = static_cast<std::uint32_t>(std::uint64_t{counted[s]} * rest / unmarked);
      given += ph[s];
      if (largest == 256 || ph[s] > ph[largest]) largest = s;
    }
    ph[largest] += static_cast<std::uint32_t>(rest - given);  // the rounding's remainder
  } else if (rest != 0) {
    throw Error(Errc::internal, "rans pairs: pairs the sample did not account for");
  }

  // Give up before coding when the order-0 estimate (plus ~1 byte a table
  // entry) is over the caller's bar.
  Histogram eh;
  histogram(util::ByteSpan(m_escapes.data(), static_cast<std::size_t>(total)), eh);
  unsigned entries = 0;
  for (unsigned s = 0; s < 256; ++s) entries += (ph[s] != 0) + (eh[s] != 0);
  if ((order0_bits(ph) + order0_bits(eh)) / 8.0 + entries + k_head + 5 > give_up_above) return std::nullopt;

  // The escapes first, aside (~0.2% of the plane): their block's size is
  // then known, and so is the room the pair block has.
  std::size_t esc_size = static_cast<std::size_t>(total);  // stored as they are
  bool esc_rans = false;
  if (total > 1) {
    if (m_esc_coded.size() < total - 1) m_esc_coded.resize(static_cast<std::size_t>(total - 1));
    // Coded only where that is smaller than the bytes themselves.
    if (const auto c =
            rans::encode_lanes(util::ByteSpan(m_escapes.data(), static_cast<std::size_t>(total)), eh,
                               util::MutableByteSpan(m_esc_coded.data(), static_cast<std::size_t>(total - 1)), 3)) {
      esc_size = *c;
      esc_rans = true;
    }
  }

  // The block. The pair block gets no more room than the caller's bar
  // leaves it (a block past that would be refused anyway), and given too
  // little room rans::encode_fast gives up on its model, before coding: on
  // MiniLM, 12 of 49 exponent planes used to be coded whole and then
  // refused, 1-800 bytes over.
  auto* o = reinterpret_cast<u8*>(out.data());
  if (out.size() < k_head + 5 + esc_size) return std::nullopt;
  std::size_t pairs_room = out.size() - k_head - 5 - esc_size;
  const double left = give_up_above - static_cast<double>(k_head + 5 + esc_size);
  if (left < static_cast<double>(pairs_room)) pairs_room = left > 0 ? static_cast<std::size_t>(left) : 0;
  const auto coded = rans::encode_fast(util::ByteSpan(m_pairs.data(), half), ph, out.subspan(k_head, pairs_room));
  if (!coded) return std::nullopt;
  o[0] = k_tag;
  std::memcpy(o + 1, map.data(), map.size());
  util::store_le<u32>(out.data() + 16, static_cast<u32>(*coded));
  std::size_t at = k_head + *coded;
  util::store_le<u32>(out.data() + at, static_cast<u32>(total));
  at += 4;
  o[at] = esc_rans ? 1 : 0;
  if (esc_size != 0) std::memcpy(o + at + 1, esc_rans ? m_esc_coded.data() : m_escapes.data(), esc_size);
  return at + 1 + esc_size;
}

struct PieceDecoder::State {
  rans::PieceDecoder pairs;
  alignas(16) u8 map[16] = {};
  Escapes esc;
  util::ByteVector esc_buf, tmp;
  std::size_t n = 0, pos = 0, half = 0, pairs_done = 0;
  bool pending = false;  // the second byte of the last pair, not yet given out
  u8 pending_byte = 0;
  ExpandFn expand = expand_fn(avx2_expands());
  bool started = false;
};

PieceDecoder::PieceDecoder() : m_state(std::make_unique<State>()) {}
PieceDecoder::PieceDecoder(detail::Kernel k) : m_state(std::make_unique<State>()) {
  m_state->expand = expand_fn(k == detail::Kernel::avx2 && avx2_expands());
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
  std::memcpy(s.map, b + 1, 15);
  s.map[15] = 0;
  const std::size_t pairs_size = util::load_le<u32>(block.data() + 16);
  if (pairs_size > block.size() - k_head) corrupt("the pair stream runs past the block");
  s.n = n;
  s.half = n / 2;
  s.pos = 0;
  s.pairs_done = 0;
  s.pending = false;
  s.pairs.start(block.subspan(k_head, pairs_size), s.half);
  std::size_t at = k_head + pairs_size;
  if (block.size() - at < 5) corrupt("truncated escape header");
  const std::size_t count = util::load_le<u32>(block.data() + at);
  const unsigned kind = b[at + 4];
  at += 5;
  if (count > n) corrupt("more escaped bytes than the plane holds");
  const util::ByteSpan rest = block.subspan(at);
  s.esc = Escapes{};
  s.esc.count = count;
  if (kind == 0) {
    if (rest.size() != count) corrupt("the escaped bytes do not end the block");
    s.esc.p = reinterpret_cast<const u8*>(rest.data());
  } else if (kind == 1) {
    if (count == 0) corrupt("a coded escape stream of no bytes");
    if (s.esc_buf.size() < count) s.esc_buf.resize(count);
    rans::decode(rest, util::MutableByteSpan(s.esc_buf.data(), count));
    s.esc.p = reinterpret_cast<const u8*>(s.esc_buf.data());
  } else {
    corrupt("unknown escape coding");
  }
  if (s.tmp.size() < k_sub) s.tmp.resize(k_sub);
  s.started = true;
}

void PieceDecoder::next(util::MutableByteSpan out) {
  State& s = *m_state;
  if (!s.started || out.size() > s.n - s.pos) throw Error(Errc::internal, "rans pairs: decoding past the plane");
  auto* o = reinterpret_cast<u8*>(out.data());
  const std::size_t m = out.size();
  std::size_t i = 0;
  if (s.pending && m != 0) {
    o[i++] = s.pending_byte;
    s.pending = false;
  }
  auto* tmp = reinterpret_cast<u8*>(s.tmp.data());
  std::size_t whole = std::min((m - i) / 2, s.half - s.pairs_done);
  while (whole != 0) {
    const std::size_t c = std::min(whole, k_sub);
    s.pairs.next(util::MutableByteSpan(s.tmp.data(), c));
    s.expand(tmp, c, s.map, o + i, s.esc);
    i += 2 * c;
    whole -= c;
    s.pairs_done += c;
  }
  if (i < m && s.pairs_done < s.half) {  // the piece ends inside a pair
    u8 two[2];
    s.pairs.next(util::MutableByteSpan(s.tmp.data(), 1));
    expand_scalar(tmp, 1, s.map, two, s.esc);
    ++s.pairs_done;
    o[i++] = two[0];
    s.pending = true;
    s.pending_byte = two[1];
  }
  if (i < m) o[i++] = s.esc.take();  // an odd plane's last byte
  if (i != m) throw Error(Errc::internal, "rans pairs: piece not filled");
  s.pos += m;
}

void PieceDecoder::finish() {
  State& s = *m_state;
  if (!s.started || s.pos != s.n) throw Error(Errc::internal, "rans pairs: finish before the plane's end");
  s.started = false;
  s.pairs.finish();
  if (s.esc.used != s.esc.count) corrupt("escaped bytes left over");
}

std::size_t PieceDecoder::position() const noexcept { return m_state->pos; }

void decode(util::ByteSpan block, util::MutableByteSpan out) {
  PieceDecoder d;
  d.start(block, out.size());
  d.next(out);
  d.finish();
}

}  // namespace mithril::codec::rans_pairs
