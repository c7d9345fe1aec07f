#include "util/cold_memory.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "util/simd_level.hpp"

namespace mithril::util {

Residency residency(const void* p, std::size_t n) noexcept {
#if defined(__linux__)
  if (!p || n == 0) return {};
  static const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t begin = a & ~(page - 1);
  const std::uintptr_t end = (a + n + page - 1) & ~(page - 1);
  const std::size_t pages = (end - begin) / page;
  // 4 MiB of 4 KiB pages is a 1 KiB vector: on the stack up to 16 MiB.
  unsigned char small[4096];
  std::vector<unsigned char> large;
  unsigned char* v = small;
  if (pages > sizeof small) {
    try {
      large.resize(pages);
    } catch (...) {
      return {};
    }
    v = large.data();
  }
  if (::mincore(reinterpret_cast<void*>(begin), end - begin, v) != 0) return {};
  Residency r{true, pages, 0};
  for (std::size_t i = 0; i < pages; ++i) r.resident += v[i] & 1;
  return r;
#else
  (void)p;
  (void)n;
  return {};
#endif
}

bool mapped_and_resident(const void* p, std::size_t n) noexcept { return residency(p, n).all(); }

namespace {

void copy_sse2(void* dst, const void* src, std::size_t n) noexcept {
  if (n == 0) return;  // dst and src may be null (an empty chunk)
#if defined(__SSE2__)
  auto* d = static_cast<std::byte*>(dst);
  const auto* s = static_cast<const std::byte*>(src);
  const std::size_t head = std::min<std::size_t>(n, (16 - (reinterpret_cast<std::uintptr_t>(d) & 15)) & 15);
  std::memcpy(d, s, head);
  std::size_t i = head;
  for (; i + 64 <= n; i += 64) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 16));
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 32));
    const __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 48));
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), a);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 16), b);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 32), c);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 48), e);
  }
  for (; i + 16 <= n; i += 16)
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
  std::memcpy(d + i, s + i, n - i);
#else
  std::memcpy(dst, src, n);
#endif
}

#if defined(__x86_64__) && defined(__GNUC__)
// Two 32-byte stores a line, from the first 64-byte boundary of dst: half
// the store instructions of the 16-byte kernel, each line written whole
// while it is still being combined. Measured (Intel Xeon with AMX, one
// thread, bench_pipeline, decompression into a reused buffer, six
// alternations): fp16 23.1 -> 21.9 ms under MITHRIL_ISA=avx2 and 19.5 ->
// 18.5 with the AVX-512 kernels, fp32 26.7 -> 25.2 and 25.1 -> 24.0; 64-byte
// AVX-512 stores were no faster than these (18.4, 23.9).
__attribute__((target("avx2"))) void copy_avx2(void* dst, const void* src, std::size_t n) noexcept {
  if (n == 0) return;
  auto* d = static_cast<std::byte*>(dst);
  const auto* s = static_cast<const std::byte*>(src);
  const std::size_t head = std::min<std::size_t>(n, (64 - (reinterpret_cast<std::uintptr_t>(d) & 63)) & 63);
  std::memcpy(d, s, head);
  std::size_t i = head;
  for (; i + 64 <= n; i += 64) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i + 32));
    _mm256_stream_si256(reinterpret_cast<__m256i*>(d + i), a);
    _mm256_stream_si256(reinterpret_cast<__m256i*>(d + i + 32), b);
  }
  std::memcpy(d + i, s + i, n - i);
}
#endif

// The x86-64 baseline, whatever MITHRIL_ISA says.
constexpr detail::StreamingCopy k_baseline{
#if defined(__SSE2__)
    "sse2",
#else
    "portable",
#endif
    copy_sse2};

// The widest kernel the CPU has and MITHRIL_ISA allows, if wider than the baseline.
const detail::StreamingCopy* wider() noexcept {
#if defined(__x86_64__) && defined(__GNUC__)
  static constexpr detail::StreamingCopy avx2{"avx2", copy_avx2};
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && simd_allows(SimdLevel::avx2)) return &avx2;
#endif
  return nullptr;
}

const detail::StreamingCopy& chosen() noexcept {
  static const detail::StreamingCopy* const w = wider();
  return w ? *w : k_baseline;
}

}  // namespace

namespace detail {
std::vector<StreamingCopy> streaming_copy_kernels() {
  std::vector<StreamingCopy> k;
  if (const StreamingCopy* w = wider()) k.push_back(*w);
  k.push_back(k_baseline);
  return k;
}
}  // namespace detail

std::string_view streaming_copy_kernel() noexcept { return chosen().name; }

void copy_streaming(void* dst, const void* src, std::size_t n) noexcept { chosen().fn(dst, src, n); }

void prefetch(const void* p, std::size_t n) noexcept {
  if (n == 0) return;
  const auto* b = static_cast<const char*>(p);
  const auto first = reinterpret_cast<std::uintptr_t>(b) & ~std::uintptr_t{63};
  const auto last = reinterpret_cast<std::uintptr_t>(b + n - 1) & ~std::uintptr_t{63};
  for (std::uintptr_t a = first; a <= last; a += 64) __builtin_prefetch(reinterpret_cast<const void*>(a), 0, 1);
}

void stream_fence() noexcept {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

}  // namespace mithril::util
