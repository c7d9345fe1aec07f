// codec/byte_group_kernels.hpp — private: the per-ISA kernel tables behind
// byte_group.hpp, and entry points that take an explicit table so that tests
// and benchmarks can exercise every kernel the CPU supports.
//
// Each ISA lives in its own translation unit (byte_group_<isa>.cpp) compiled
// with `#pragma GCC target`, never with -march, so one binary runs on any
// x86-64; the table of an ISA is handed out only when the CPU (and the OS,
// for the wider register state) supports it.
//
// Kernel contract: pointers are to whole elements only (the public functions
// deal with tails and validation). Group kernels take n elements and lay
// plane k at offset k*stride; ungroup kernels take m elements and read plane k from planes[k]
// (m bytes each, anywhere). Residual kernels take m elements of their width.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "codec/byte_group.hpp"
#include "util/bytes.hpp"

namespace mithril::codec::detail {

enum class Isa : std::uint8_t { scalar = 0, sse2 = 1, avx2 = 2, avx512 = 3 };
inline constexpr Isa k_all_isas[] = {Isa::scalar, Isa::sse2, Isa::avx2, Isa::avx512};

// Groups n elements, plane k at out + k * stride (stride >= n: n elements
// of a longer buffer, grouped a piece at a time).
using PlaneFn = void (*)(const std::byte* in, std::byte* out, std::size_t n, std::size_t stride);
using UngroupFn = void (*)(const std::byte* const* planes, std::byte* out, std::size_t m);
using ResidualFn = void (*)(const std::byte* a, const std::byte* b, std::byte* out, std::size_t m);

// Adds to hist[b] the number of bytes b in p[0, n): bytes equal to one of
// the K distinct `syms` are counted with vector compares into byte-wide
// counters, any other byte one at a time (so it pays when the symbols cover
// nearly all bytes, as the few exponents of a float plane do).
using CountFn = void (*)(const std::byte* p, std::size_t n, const std::uint8_t* syms, std::uint32_t* hist);
// K of each count[] entry.
inline constexpr unsigned k_count_symbols[] = {8, 12, 16, 24};

// A sampled count of bytes that nearly all lie in the window [lo, lo + 16)
// (lo <= 240), for histogram_estimate(): of every k_window_run bytes the
// first k_window_counted are counted exactly and the rest only checked for
// which window values occur; a byte outside the window is counted exactly
// wherever it is. Adds the exact counts to hist; uncounted receives the
// number of window bytes counted nowhere, present bit j whether lo + j is
// among them. The bytes after the last whole run are all counted. hist
// starts zeroed.
struct WindowSample {
  std::uint32_t* hist;
  std::uint64_t uncounted = 0;
  std::uint32_t present = 0;
};
inline constexpr std::size_t k_window_run = 4096;
inline constexpr std::size_t k_window_counted = 1024;
using WindowCountFn = void (*)(const std::byte* p, std::size_t n, std::uint8_t lo, WindowSample& w);

// The same for bytes of any spread (an fp16 plane's high bytes: ~64 values):
// the first k_window_counted bytes of every k_window_run are counted into
// `sample`; in the rest a byte whose value the counted runs have not shown
// yet is counted into `extra`, and the
// others, `uncounted` in all, are only skipped. Every value that occurs has
// a count in one of the two. The bytes after the last whole run go to sample.
// sample and extra start zeroed.
struct SpreadSample {
  std::uint32_t* sample;
  std::uint32_t* extra;
  std::uint64_t uncounted = 0;
};
using SpreadCountFn = void (*)(const std::byte* p, std::size_t n, SpreadSample& w);

struct ByteGroupKernels {
  Isa isa;
  // Index [log2(width) - 1][mode]: widths 2, 4, 8 (width 1 is a copy).
  PlaneFn group[3][2];
  UngroupFn ungroup[3][2];
  ResidualFn xor_bytes;  // m = bytes
  // Index [log2(width)]: widths 1, 2, 4, 8.
  ResidualFn sub[4];
  ResidualFn add[4];
  // Index i: k_count_symbols[i] symbols; nullptr where this ISA has none
  // (scalar, SSE2; AVX2 for K > 12: more counters than registers).
  CountFn count[4];
  // Every table has both, with the same results (the estimates, and so the
  // containers, do not depend on the ISA): the portable ones for scalar and
  // SSE2, the AVX2 ones for AVX2 and AVX-512.
  WindowCountFn count_window;
  SpreadCountFn count_spread;
};

void count_window_portable(const std::byte* p, std::size_t n, std::uint8_t lo, WindowSample& w);
void count_spread_portable(const std::byte* p, std::size_t n, SpreadSample& w);
#if defined(__x86_64__)
void count_window_avx2(const std::byte* p, std::size_t n, std::uint8_t lo, WindowSample& w);
void count_spread_avx2(const std::byte* p, std::size_t n, SpreadSample& w);
#endif

std::string_view isa_name(Isa isa) noexcept;

// The table of `isa`, or nullptr when this CPU/OS or this build lacks it.
const ByteGroupKernels* kernels_for(Isa isa) noexcept;

// The widest supported table, chosen once (thread-safe).
const ByteGroupKernels& active_kernels() noexcept;

// The public functions, with an explicit kernel table.
void group_bytes(const ByteGroupKernels& k, util::ByteSpan in, util::MutableByteSpan out, unsigned width,
                 GroupMode mode);
void group_elements(const ByteGroupKernels& k, util::ByteSpan in, util::MutableByteSpan grouped, std::size_t first,
                    std::size_t m, unsigned width, GroupMode mode);
void ungroup_bytes(const ByteGroupKernels& k, util::ByteSpan in, util::MutableByteSpan out, unsigned width,
                   GroupMode mode);
void ungroup_planes(const ByteGroupKernels& k, std::span<const util::ByteSpan> planes, util::MutableByteSpan out,
                    unsigned width, GroupMode mode);
void xor_residual(const ByteGroupKernels& k, util::ByteSpan target, util::ByteSpan base, util::MutableByteSpan out);
void sub_residual(const ByteGroupKernels& k, util::ByteSpan target, util::ByteSpan base, util::MutableByteSpan out,
                  unsigned width);
void add_residual(const ByteGroupKernels& k, util::ByteSpan residual, util::ByteSpan base, util::MutableByteSpan out,
                  unsigned width);
// histogram() with an explicit kernel table; `like` as in histogram_like().
void histogram(const ByteGroupKernels& k, util::ByteSpan in, Histogram& hist, const Histogram* like);
// histogram_estimate() with an explicit kernel table.
void histogram_estimate(const ByteGroupKernels& k, util::ByteSpan in, const Histogram& like, Histogram& hist);

// Per-ISA tables; each defined in its own file. The SIMD ones exist only on
// x86-64 and must not be used before checking kernels_for().
extern const ByteGroupKernels k_scalar_kernels;
#if defined(__x86_64__)
extern const ByteGroupKernels k_sse2_kernels;
extern const ByteGroupKernels k_avx2_kernels;
extern const ByteGroupKernels k_avx512_kernels;
#endif

// ---- portable element loops, shared by the scalar kernels and the SIMD
// kernels' remainders. Always inlined into their callers, so no out-of-line
// (COMDAT) copy is ever compiled under an AVX target and then picked by the
// linker for baseline code.
#define MITHRIL_KERNEL_INLINE [[gnu::always_inline]] inline

// Counts the bytes of a vector whose bit is set in `others` (bit j: p[j]).
MITHRIL_KERNEL_INLINE void count_others(const std::byte* p, std::uint64_t others, std::uint32_t* hist) noexcept {
  for (; others != 0; others &= others - 1) ++hist[static_cast<std::uint8_t>(p[__builtin_ctzll(others)])];
}

template <typename T>
MITHRIL_KERNEL_INLINE T rotl1(T v) noexcept {
  return static_cast<T>(static_cast<T>(v << 1) | static_cast<T>(v >> (8 * sizeof(T) - 1)));
}
template <typename T>
MITHRIL_KERNEL_INLINE T rotr1(T v) noexcept {
  return static_cast<T>(static_cast<T>(v >> 1) | static_cast<T>(v << (8 * sizeof(T) - 1)));
}

// Elements [begin, end) into their planes, plane k at out + k * stride.
template <typename T, bool Rot>
MITHRIL_KERNEL_INLINE void group_range(const std::byte* in, std::byte* out, std::size_t stride, std::size_t begin,
                        std::size_t end) noexcept {
  constexpr unsigned w = sizeof(T);
  for (std::size_t i = begin; i < end; ++i) {
    T v = util::load_le<T>(in + i * w);
    if constexpr (Rot) v = rotl1(v);
    for (unsigned k = 0; k < w; ++k) out[k * stride + i] = static_cast<std::byte>(v >> (8 * k));
  }
}

template <typename T, bool Rot>
MITHRIL_KERNEL_INLINE void ungroup_range(const std::byte* const* planes, std::byte* out, std::size_t begin,
                          std::size_t end) noexcept {
  constexpr unsigned w = sizeof(T);
  for (std::size_t i = begin; i < end; ++i) {
    T v = 0;
    for (unsigned k = 0; k < w; ++k) v = static_cast<T>(v | static_cast<T>(static_cast<T>(planes[k][i]) << (8 * k)));
    if constexpr (Rot) v = rotr1(v);
    util::store_le<T>(out + i * w, v);
  }
}

template <typename T>
MITHRIL_KERNEL_INLINE T zigzag(T d) noexcept {
  constexpr unsigned bits = 8 * sizeof(T);
  return static_cast<T>(static_cast<T>(d << 1) ^ static_cast<T>(T{0} - static_cast<T>(d >> (bits - 1))));
}
template <typename T>
MITHRIL_KERNEL_INLINE T unzigzag(T z) noexcept {
  return static_cast<T>(static_cast<T>(z >> 1) ^ static_cast<T>(T{0} - static_cast<T>(z & 1u)));
}

// Elements [begin, end): out = zigzag(a - b) / out = b + unzigzag(a).
template <typename T>
MITHRIL_KERNEL_INLINE void sub_range(const std::byte* a, const std::byte* b, std::byte* out, std::size_t begin,
                      std::size_t end) noexcept {
  constexpr unsigned w = sizeof(T);
  for (std::size_t i = begin; i < end; ++i) {
    const T d = static_cast<T>(util::load_le<T>(a + i * w) - util::load_le<T>(b + i * w));
    util::store_le<T>(out + i * w, zigzag(d));
  }
}
template <typename T>
MITHRIL_KERNEL_INLINE void add_range(const std::byte* a, const std::byte* b, std::byte* out, std::size_t begin,
                      std::size_t end) noexcept {
  constexpr unsigned w = sizeof(T);
  for (std::size_t i = begin; i < end; ++i) {
    const T s = unzigzag(util::load_le<T>(a + i * w));
    util::store_le<T>(out + i * w, static_cast<T>(util::load_le<T>(b + i * w) + s));
  }
}

MITHRIL_KERNEL_INLINE void xor_range(const std::byte* a, const std::byte* b, std::byte* out, std::size_t begin,
                      std::size_t end) noexcept {
  for (std::size_t i = begin; i < end; ++i) out[i] = a[i] ^ b[i];
}

}  // namespace mithril::codec::detail
