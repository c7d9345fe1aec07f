// codec/byte_group.cpp — public byte-grouping API: validation, tails, run-time
// kernel selection, histograms and order-0 entropy. The kernels themselves are
// in byte_group_{scalar,sse2,avx2,avx512}.cpp.
#include "codec/byte_group.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <functional>
#include <span>
#include <string>

#include "codec/byte_group_kernels.hpp"
#include "mithril/error.hpp"
#include "util/simd_level.hpp"

namespace mithril::codec {
namespace detail {
namespace {

[[noreturn]] void invalid(const std::string& what) { throw Error(Errc::invalid_argument, what); }

unsigned width_index(unsigned width, const char* fn) {
  switch (width) {
    case 1: return 0;
    case 2: return 1;
    case 4: return 2;
    case 8: return 3;
    default: invalid(std::string(fn) + ": width must be 1, 2, 4 or 8, got " + std::to_string(width));
  }
}

unsigned mode_index(GroupMode mode, const char* fn) {
  switch (mode) {
    case GroupMode::plain: return 0;
    case GroupMode::rotl1: return 1;
  }
  invalid(std::string(fn) + ": unknown group mode " + std::to_string(static_cast<unsigned>(mode)));
}

bool overlaps(const std::byte* a, std::size_t na, const std::byte* b, std::size_t nb) {
  if (na == 0 || nb == 0) return false;
  // std::less gives a total order even for pointers into unrelated objects.
  const std::less<const std::byte*> lt;
  return lt(a, b + nb) && lt(b, a + na);
}

void check_sizes(std::size_t in, std::size_t out, const char* fn) {
  if (in != out) invalid(std::string(fn) + ": output size " + std::to_string(out) + " != input size " + std::to_string(in));
}

// Elementwise functions read each input element before writing the same
// element of the output, so exact aliasing is harmless; partial is not.
void check_alias(util::ByteSpan in, util::MutableByteSpan out, const char* fn) {
  if (in.data() != out.data() && overlaps(in.data(), in.size(), out.data(), out.size()))
    invalid(std::string(fn) + ": output partially overlaps an input");
}

}  // namespace

std::string_view isa_name(Isa isa) noexcept {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::sse2: return "sse2";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "unknown";
}

const ByteGroupKernels* kernels_for(Isa isa) noexcept {
  switch (isa) {
    case Isa::scalar: return &k_scalar_kernels;
#if defined(__x86_64__)
    case Isa::sse2:  // part of the x86-64 baseline
      return util::simd_allows(util::SimdLevel::sse2) ? &k_sse2_kernels : nullptr;
    case Isa::avx2:
      __builtin_cpu_init();
      // libgcc's feature bits also require the OS to save the YMM/ZMM state.
      return util::simd_allows(util::SimdLevel::avx2) && __builtin_cpu_supports("avx2") ? &k_avx2_kernels : nullptr;
    case Isa::avx512:
      __builtin_cpu_init();
      return util::simd_allows(util::SimdLevel::avx512) && __builtin_cpu_supports("avx512f") &&
                     __builtin_cpu_supports("avx512bw")
                 ? &k_avx512_kernels
                 : nullptr;
#else
    default: return nullptr;
#endif
  }
  return nullptr;
}

const ByteGroupKernels& active_kernels() noexcept {
  static const ByteGroupKernels& chosen = [] () -> const ByteGroupKernels& {
    for (auto it = std::rbegin(k_all_isas); it != std::rend(k_all_isas); ++it)
      if (const auto* k = kernels_for(*it)) return *k;
    return k_scalar_kernels;
  }();
  return chosen;
}

void group_bytes(const ByteGroupKernels& k, util::ByteSpan in, util::MutableByteSpan out, unsigned width,
                 GroupMode mode) {
  const unsigned wi = width_index(width, "group_bytes");
  const unsigned mi = mode_index(mode, "group_bytes");
  check_sizes(in.size(), out.size(), "group_bytes");
  if (overlaps(in.data(), in.size(), out.data(), out.size())) invalid("group_bytes: input and output overlap");
  if (in.empty()) return;
  if (wi == 0) {
    std::memcpy(out.data(), in.data(), in.size());
    return;
  }
  const std::size_t m = in.size() / width;
  if (m > 0) k.group[wi - 1][mi](in.data(), out.data(), m, m);
  std::memcpy(out.data() + m * width, in.data() + m * width, in.size() - m * width);
}

void group_elements(const ByteGroupKernels& k, util::ByteSpan in, util::MutableByteSpan grouped, std::size_t first,
                    std::size_t m, unsigned width, GroupMode mode) {
  const unsigned wi = width_index(width, "group_elements");
  const unsigned mi = mode_index(mode, "group_elements");
  const std::size_t n = in.size() / width;
  if (in.size() % width != 0 || first > m || n > m - first || grouped.size() / width < m)
    invalid("group_elements: sizes do not fit");
  if (overlaps(in.data(), in.size(), grouped.data(), grouped.size())) invalid("group_elements: input and output overlap");
  if (n == 0) return;
  if (wi == 0) {
    std::memcpy(grouped.data() + first, in.data(), n);
    return;
  }
  k.group[wi - 1][mi](in.data(), grouped.data() + first, n, m);
}

void ungroup_bytes(const ByteGroupKernels& k, util::ByteSpan in, util::MutableByteSpan out, unsigned width,
                   GroupMode mode) {
  const unsigned wi = width_index(width, "ungroup_bytes");
  const unsigned mi = mode_index(mode, "ungroup_bytes");
  check_sizes(in.size(), out.size(), "ungroup_bytes");
  if (overlaps(in.data(), in.size(), out.data(), out.size())) invalid("ungroup_bytes: input and output overlap");
  if (in.empty()) return;
  if (wi == 0) {
    std::memcpy(out.data(), in.data(), in.size());
    return;
  }
  const std::size_t m = in.size() / width;
  std::array<const std::byte*, 8> planes{};
  for (unsigned p = 0; p < width; ++p) planes[p] = in.data() + p * m;
  if (m > 0) k.ungroup[wi - 1][mi](planes.data(), out.data(), m);
  std::memcpy(out.data() + m * width, in.data() + m * width, in.size() - m * width);
}

void ungroup_planes(const ByteGroupKernels& k, std::span<const util::ByteSpan> planes, util::MutableByteSpan out,
                    unsigned width, GroupMode mode) {
  const unsigned wi = width_index(width, "ungroup_planes");
  const unsigned mi = mode_index(mode, "ungroup_planes");
  if (planes.size() != width) invalid("ungroup_planes: one plane per byte of the element");
  const std::size_t m = out.size() / width;
  const std::size_t tail = out.size() % width;
  std::array<const std::byte*, 8> ptr{};
  for (unsigned p = 0; p < width; ++p) {
    if (planes[p].size() != (p + 1 == width ? m + tail : m)) invalid("ungroup_planes: plane of the wrong size");
    if (overlaps(planes[p].data(), planes[p].size(), out.data(), out.size()))
      invalid("ungroup_planes: input and output overlap");
    ptr[p] = planes[p].data();
  }
  if (out.empty()) return;
  if (wi == 0) {
    std::memcpy(out.data(), ptr[0], out.size());
    return;
  }
  if (m > 0) k.ungroup[wi - 1][mi](ptr.data(), out.data(), m);
  if (tail) std::memcpy(out.data() + m * width, ptr[width - 1] + m, tail);
}

void xor_residual(const ByteGroupKernels& k, util::ByteSpan target, util::ByteSpan base, util::MutableByteSpan out) {
  check_sizes(target.size(), base.size(), "xor_residual: base");
  check_sizes(target.size(), out.size(), "xor_residual");
  check_alias(target, out, "xor_residual");
  check_alias(base, out, "xor_residual");
  if (!target.empty()) k.xor_bytes(target.data(), base.data(), out.data(), target.size());
}

namespace {

template <bool Sub>
void arith_residual(const ByteGroupKernels& k, util::ByteSpan a, util::ByteSpan base, util::MutableByteSpan out,
                    unsigned width, const char* fn) {
  const unsigned wi = width_index(width, fn);
  check_sizes(a.size(), base.size(), fn);
  check_sizes(a.size(), out.size(), fn);
  check_alias(a, out, fn);
  check_alias(base, out, fn);
  const std::size_t m = a.size() / width;
  if (m > 0) (Sub ? k.sub : k.add)[wi](a.data(), base.data(), out.data(), m);
  xor_range(a.data(), base.data(), out.data(), m * width, a.size());
}

}  // namespace

void sub_residual(const ByteGroupKernels& k, util::ByteSpan target, util::ByteSpan base, util::MutableByteSpan out,
                  unsigned width) {
  arith_residual<true>(k, target, base, out, width, "sub_residual");
}

void add_residual(const ByteGroupKernels& k, util::ByteSpan residual, util::ByteSpan base, util::MutableByteSpan out,
                  unsigned width) {
  arith_residual<false>(k, residual, base, out, width, "add_residual");
}

}  // namespace detail

// ---- histograms --------------------------------------------------------------
namespace {

// Byte j of every 16-byte block is counted in table j, so a run of equal
// bytes (an exponent plane is mostly one or two values) increments 16
// different counters per block instead of hammering one: no store-to-load
// forwarding chain. Since 16 % w == 0, table j only ever sees plane j % w.
constexpr unsigned k_tables = 16;
using Tables = std::array<std::array<std::uint32_t, 256>, k_tables>;

// Rotate each w-byte lane of a 64-bit word left by one bit (SWAR).
template <unsigned W>
inline std::uint64_t rotl1_lanes(std::uint64_t x) noexcept {
  if constexpr (W == 8) {
    return std::rotl(x, 1);
  } else {
    constexpr unsigned bits = 8 * W;
    constexpr std::uint64_t low = W == 2 ? 0x0001000100010001ull : 0x0000000100000001ull;
    return ((x << 1) & ~low) | ((x >> (bits - 1)) & low);
  }
}

template <unsigned W, bool Rot>
inline void count_block(const std::byte* p, Tables& t, unsigned valid) noexcept {
  if constexpr (!Rot) {
    // Each byte by its own load (movzx): two loads and a store per byte,
    // which the load ports take faster than shifting bytes out of two
    // 64-bit words (fp16 exponent planes, 64 KiB pieces, Intel Xeon:
    // 2.3-2.5 GB/s against 2.0-2.1).
    const auto* b = reinterpret_cast<const std::uint8_t*>(p);
    if (valid == 16) {
#pragma GCC unroll 16
      for (unsigned j = 0; j < 16; ++j) ++t[j][b[j]];
    } else {
      for (unsigned j = 0; j < valid; ++j) ++t[j][b[j]];
    }
    return;
  }
  std::uint64_t a = util::load_le<std::uint64_t>(p);
  std::uint64_t b = util::load_le<std::uint64_t>(p + 8);
  if constexpr (Rot) {
    a = rotl1_lanes<W>(a);
    b = rotl1_lanes<W>(b);
  }
  if (valid == 16) {
    for (unsigned j = 0; j < 8; ++j) {
      ++t[j][(a >> (8 * j)) & 0xff];
      ++t[8 + j][(b >> (8 * j)) & 0xff];
    }
  } else {
    for (unsigned j = 0; j < valid; ++j) {
      const std::uint64_t v = j < 8 ? a >> (8 * j) : b >> (8 * (j - 8));
      ++t[j][v & 0xff];
    }
  }
}

// Counts the first n bytes of p (n a multiple of W) into t.
template <unsigned W, bool Rot>
void count_tables(const std::byte* p, std::size_t n, Tables& t) noexcept {
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) count_block<W, Rot>(p + i, t, 16);
  if (i < n) {
    // Fewer than 16 bytes of whole elements left: pad a copy with zeros,
    // rotate whole elements as usual, count only the real bytes.
    std::array<std::byte, 16> last{};
    std::memcpy(last.data(), p + i, n - i);
    count_block<W, Rot>(last.data(), t, static_cast<unsigned>(n - i));
  }
}

template <unsigned W>
void count_tables(const std::byte* p, std::size_t n, GroupMode mode, Tables& t) noexcept {
  if (mode == GroupMode::rotl1 && W > 1)
    count_tables<W, true>(p, n, t);
  else
    count_tables<W, false>(p, n, t);
}

// Inputs up to this many bytes are counted without the tables.
constexpr std::size_t k_direct_count = 2048;

void check_count_limit(std::size_t n, const char* fn) {
  if (n > 0xFFFFFFFFull)
    throw Error(Errc::invalid_argument, std::string(fn) + ": " + std::to_string(n) +
                                            " bytes per histogram exceed the 32-bit counters");
}

}  // namespace

void plane_histograms(std::span<const util::ByteSpan> pieces, unsigned width, GroupMode mode,
                      std::span<Histogram> hists) {
  if (width != 1 && width != 2 && width != 4 && width != 8)
    throw Error(Errc::invalid_argument, "plane_histograms: width must be 1, 2, 4 or 8, got " + std::to_string(width));
  if (mode != GroupMode::plain && mode != GroupMode::rotl1)
    throw Error(Errc::invalid_argument, "plane_histograms: unknown group mode");
  if (hists.size() < width)
    throw Error(Errc::invalid_argument, "plane_histograms: " + std::to_string(hists.size()) +
                                            " histograms for width " + std::to_string(width));
  std::size_t m = 0;
  for (const auto& in : pieces) m += in.size() / width;
  check_count_limit(m, "plane_histograms");
  if (m * width <= k_direct_count) {
    // Small tensors (a layer norm's 1-4 KiB): counted straight into the
    // histograms, an element at a time.
    for (unsigned k = 0; k < width; ++k) hists[k].fill(0);
    const bool rot = mode == GroupMode::rotl1 && width > 1;
    const unsigned bits = 8 * width;
    for (const auto& in : pieces)
      for (std::size_t e = 0; e + width <= in.size(); e += width) {
        std::uint64_t v = 0;  // the element, little-endian
        for (unsigned k = 0; k < width; ++k) v |= std::uint64_t{static_cast<std::uint8_t>(in[e + k])} << (8 * k);
        if (rot) v = ((v << 1) | (v >> (bits - 1))) & (bits == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << bits) - 1);
        for (unsigned k = 0; k < width; ++k) ++hists[k][(v >> (8 * k)) & 0xff];
      }
    return;
  }
  // One set of tables for all the pieces: zeroing and summing 16 tables
  // costs as much as counting a 16 KiB piece.
  Tables t{};
  for (const auto& in : pieces) {
    const std::size_t n = in.size() / width;
    switch (width) {
      case 1: count_tables<1>(in.data(), n, mode, t); break;
      case 2: count_tables<2>(in.data(), n * 2, mode, t); break;
      case 4: count_tables<4>(in.data(), n * 4, mode, t); break;
      default: count_tables<8>(in.data(), n * 8, mode, t); break;
    }
  }
  for (unsigned k = 0; k < width; ++k) hists[k].fill(0);
  for (unsigned j = 0; j < k_tables; ++j) {
    Histogram& h = hists[j % width];
    for (unsigned v = 0; v < 256; ++v) h[v] += t[j][v];
  }
}

void plane_histograms(util::ByteSpan in, unsigned width, GroupMode mode, std::span<Histogram> hists) {
  plane_histograms(std::span<const util::ByteSpan>(&in, 1), width, mode, hists);
}

namespace detail {

void histogram(const ByteGroupKernels& k, util::ByteSpan in, Histogram& hist, const Histogram* like) {
  // Counting with vector compares pays when a few symbols cover nearly all
  // bytes. Which, and how many, is judged from `like` or from the first
  // k_sample bytes counted one by one, by a cost per 64 bytes fitted to
  // bench_rans's BM_histogram and exponent planes of bench/data (AVX-512,
  // relative units): 0.8 per symbol + 3, plus k_cost_other per byte no
  // symbol covers, against k_cost_plain for the plain count.
  constexpr double k_cost_plain = 42.0;
  constexpr double k_cost_other = 7.0;
  constexpr std::size_t k_min_vector = std::size_t{32} << 10;
  constexpr std::size_t k_sample = std::size_t{4} << 10;
  const bool any = std::any_of(std::begin(k.count), std::end(k.count), [](CountFn f) { return f != nullptr; });
  if (in.size() < k_min_vector || !any) {
    plane_histograms(in, 1, GroupMode::plain, std::span<Histogram>(&hist, 1));
    return;
  }
  std::size_t done = 0;
  Histogram sample{};
  if (!like) {
    plane_histograms(in.first(k_sample), 1, GroupMode::plain, std::span<Histogram>(&sample, 1));
    like = &sample;
    done = k_sample;
  }
  std::array<std::uint8_t, 256> order;
  unsigned distinct = 0;
  std::uint64_t total = 0;
  for (unsigned b = 0; b < 256; ++b)
    if ((*like)[b] != 0) {
      order[distinct++] = static_cast<std::uint8_t>(b);
      total += (*like)[b];
    }
  // Near-uniform bytes: even k_most symbols of the largest count could not
  // cover enough of them to beat the plain count.
  constexpr unsigned k_most = k_count_symbols[std::size(k_count_symbols) - 1];
  const std::uint64_t largest = *std::max_element(like->begin(), like->end());
  if (total == 0 || k_cost_other * 64.0 * (1.0 - std::min(1.0, static_cast<double>(k_most * largest) /
                                                                    static_cast<double>(total))) >= k_cost_plain) {
    plane_histograms(in, 1, GroupMode::plain, std::span<Histogram>(&hist, 1));
    return;
  }
  // The most common k_most first (a full sort of up to 256 symbols would
  // cost a third of counting a 64 KiB piece of near-uniform bytes).
  const auto more = [&](std::uint8_t a, std::uint8_t b) {
    return (*like)[a] != (*like)[b] ? (*like)[a] > (*like)[b] : a < b;
  };
  const unsigned top = std::min(distinct, k_most);
  if (distinct > top) std::nth_element(order.begin(), order.begin() + top, order.begin() + distinct, more);
  std::sort(order.begin(), order.begin() + top, more);
  double best = k_cost_plain;
  CountFn fn = nullptr;
  unsigned symbols = 0;
  std::uint64_t covered = 0;
  unsigned taken = 0;
  for (unsigned i = 0; i < std::size(k_count_symbols); ++i) {
    const unsigned want = k_count_symbols[i];
    for (; taken < want && taken < distinct; ++taken) covered += (*like)[order[taken]];
    if (!k.count[i] || want > distinct + 8) continue;  // (a few unused symbols cost little)
    const double uncovered = total ? 64.0 * static_cast<double>(total - covered) / static_cast<double>(total) : 0.0;
    const double cost = 0.8 * want + 3.0 + k_cost_other * uncovered;
    if (cost < best) {
      best = cost;
      fn = k.count[i];
      symbols = want;
    }
  }
  if (!fn) {
    plane_histograms(in, 1, GroupMode::plain, std::span<Histogram>(&hist, 1));
    return;
  }
  // Symbols beyond the distinct ones seen: any other bytes, still distinct.
  std::array<std::uint8_t, 256> syms = order;
  std::array<bool, 256> used{};
  for (unsigned i = 0; i < std::min(distinct, symbols); ++i) used[syms[i]] = true;
  for (unsigned i = distinct, b = 0; i < symbols; ++i) {
    while (used[b]) ++b;
    syms[i] = static_cast<std::uint8_t>(b);
    used[b] = true;
  }
  hist = sample;  // the counted prefix, or zeros
  fn(in.data() + done, in.size() - done, syms.data(), hist.data());
}

namespace {

// Adds `uncounted` bytes to counts[j] in proportion to sampled[j] (floors,
// the remainder to the most sampled), and at least one to each j of
// `seen_only` (bit j: the value occurred among the uncounted bytes) whose
// count would stay 0. False, with nothing added, when nothing was sampled or
// those ones would overdraw the remainder. sampled may alias counts.
bool share_out(std::span<const std::uint32_t> sampled, std::uint64_t uncounted, std::uint64_t seen_only,
               std::span<std::uint32_t> counts) {
  std::uint64_t total = 0;
  std::size_t most = 0;
  for (std::size_t j = 0; j < sampled.size(); ++j) {
    total += sampled[j];
    if (sampled[j] > sampled[most]) most = j;
  }
  if (total == 0) return false;
  std::array<std::uint64_t, 256> add{};
  std::uint64_t given = 0;
  for (std::size_t j = 0; j < sampled.size(); ++j) {
    add[j] = uncounted * sampled[j] / total;  // (both < 2^32)
    if (counts[j] + add[j] == 0 && j < 64 && (seen_only >> j & 1)) add[j] = 1;
    given += add[j];
  }
  if (given - add[most] > uncounted) return false;
  add[most] = uncounted - (given - add[most]);
  for (std::size_t j = 0; j < sampled.size(); ++j) counts[j] += static_cast<std::uint32_t>(add[j]);
  return true;
}

// histogram_estimate() for bytes no 16 values cover (count_spread). Values
// seen only where nothing was counted were counted exactly (extra), so
// exactly the bytes that occur have counts.
void spread_estimate(const ByteGroupKernels& k, util::ByteSpan in, const Histogram& like, Histogram& hist) {
  Histogram sample{}, extra{};
  SpreadSample w{sample.data(), extra.data()};
  k.count_spread(in.data(), in.size(), w);
  for (unsigned b = 0; b < 256; ++b) hist[b] = sample[b] + extra[b];
  if (!share_out(sample, w.uncounted, 0, hist)) histogram(k, in, hist, &like);
}

}  // namespace

void histogram_estimate(const ByteGroupKernels& k, util::ByteSpan in, const Histogram& like, Histogram& hist) {
  // Smaller inputs would leave too small a sample (and cost little anyway).
  constexpr std::size_t k_min_estimated = std::size_t{16} << 10;
  if (in.size() < k_min_estimated) return histogram(k, in, hist, &like);
  // The window of 16 values that holds the most of `like`.
  std::uint64_t total = 0, covered = 0, best = 0;
  for (unsigned b = 0; b < 16; ++b) covered += like[b];
  unsigned lo = 0;
  best = covered;
  for (unsigned b = 0; b < 256; ++b) total += like[b];
  for (unsigned b = 16; b < 256; ++b) {
    covered += like[b];
    covered -= like[b - 16];
    if (covered > best) best = covered, lo = b - 15;
  }
  if (total == 0) return histogram(k, in, hist, &like);
  if (best < total - total / 100) return spread_estimate(k, in, like, hist);
  hist.fill(0);
  WindowSample w{hist.data()};
  k.count_window(in.data(), in.size(), static_cast<std::uint8_t>(lo), w);
  // The window's uncounted bytes shared out as its counted ones are, at
  // least one to each value seen only among them.
  const std::span<std::uint32_t, 16> window(hist.data() + lo, 16);
  if (w.uncounted != 0 && !share_out(window, w.uncounted, w.present, window)) histogram(k, in, hist, &like);
}

}  // namespace detail

void histogram_estimate(util::ByteSpan in, const Histogram& like, Histogram& hist) {
  detail::histogram_estimate(detail::active_kernels(), in, like, hist);
}

void histogram(util::ByteSpan in, Histogram& hist) {
  detail::histogram(detail::active_kernels(), in, hist, nullptr);
}

void histogram_like(util::ByteSpan in, const Histogram& like, Histogram& hist) {
  detail::histogram(detail::active_kernels(), in, hist, &like);
}

namespace {

double log2_portable(std::uint64_t v) {
  int e = std::bit_width(v) - 1;
  double m = static_cast<double>(v) / static_cast<double>(std::uint64_t{1} << e);  // [1, 2)
  if (m > 1.4142135623730951) {
    m *= 0.5;
    ++e;
  }
  // ln m = 2 atanh(t), t = (m - 1) / (m + 1), |t| <= 0.172: 11 terms reach 1e-17.
  const double t = (m - 1.0) / (m + 1.0);
  const double t2 = t * t;
  constexpr double c[] = {1.0 / 21, 1.0 / 19, 1.0 / 17, 1.0 / 15, 1.0 / 13, 1.0 / 11,
                          1.0 / 9,  1.0 / 7,  1.0 / 5,  1.0 / 3,  1.0};
  double s = 0.0;
  for (double ci : c) s = s * t2 + ci;
  constexpr double k_two_over_ln2 = 2.8853900817779268;
  return static_cast<double>(e) + k_two_over_ln2 * t * s;
}

// Remembered values (rANS frequencies are at most 2^16 + 1; small counts
// recur in every histogram). 0 marks "not yet" (log2(1) = 0 is answered
// before the table). Relaxed atomics: two threads may store the same value.
// The table's 512 KiB are written (zeroed) when it is made, not left to
// first use: a page first read maps the kernel's shared zero page, and the
// first store to it then replaces that mapping, which flushes the TLB of
// every CPU running the process — an interprocessor interrupt per page, each
// a VM exit on a virtual machine (2% of a 2-thread compression's CPU time
// on a 2-vCPU KVM guest, in the stores here).
constexpr std::uint64_t k_log2_cached = (std::uint64_t{1} << 16) + 2;

std::atomic<std::uint64_t>* log2_table() {
  static std::atomic<std::uint64_t>* const table = new std::atomic<std::uint64_t>[k_log2_cached]();
  return table;
}

}  // namespace

double log2_count(std::uint64_t v) {
  if (v <= 1) return 0.0;
  if (v >= k_log2_cached) return log2_portable(v);
  std::atomic<std::uint64_t>& slot = log2_table()[v];
  const std::uint64_t bits = slot.load(std::memory_order_relaxed);
  if (bits != 0) return std::bit_cast<double>(bits);
  const double l = log2_portable(v);
  slot.store(std::bit_cast<std::uint64_t>(l), std::memory_order_relaxed);
  return l;
}

double order0_bits(const Histogram& hist) {
  std::uint64_t n = 0;
  for (const auto c : hist) n += c;
  const double log2_n = log2_count(n);
  double bits = 0;
  // Each term c * (log2 n - log2 c) is non-negative (log2_count is monotone),
  // so the total carries no cancellation error.
  for (const auto c : hist)
    if (c != 0) bits += static_cast<double>(c) * (log2_n - log2_count(c));
  return bits;
}

std::string_view byte_group_isa() { return detail::isa_name(detail::active_kernels().isa); }

void group_bytes(util::ByteSpan in, util::MutableByteSpan out, unsigned width, GroupMode mode) {
  detail::group_bytes(detail::active_kernels(), in, out, width, mode);
}
void group_elements(util::ByteSpan in, util::MutableByteSpan grouped, std::size_t first, std::size_t m,
                    unsigned width, GroupMode mode) {
  detail::group_elements(detail::active_kernels(), in, grouped, first, m, width, mode);
}
void ungroup_bytes(util::ByteSpan in, util::MutableByteSpan out, unsigned width, GroupMode mode) {
  detail::ungroup_bytes(detail::active_kernels(), in, out, width, mode);
}

void ungroup_planes(std::span<const util::ByteSpan> planes, util::MutableByteSpan out, unsigned width,
                    GroupMode mode) {
  detail::ungroup_planes(detail::active_kernels(), planes, out, width, mode);
}
void xor_residual(util::ByteSpan target, util::ByteSpan base, util::MutableByteSpan out) {
  detail::xor_residual(detail::active_kernels(), target, base, out);
}
void sub_residual(util::ByteSpan target, util::ByteSpan base, util::MutableByteSpan out, unsigned width) {
  detail::sub_residual(detail::active_kernels(), target, base, out, width);
}
void add_residual(util::ByteSpan residual, util::ByteSpan base, util::MutableByteSpan out, unsigned width) {
  detail::add_residual(detail::active_kernels(), residual, base, out, width);
}

}  // namespace mithril::codec
