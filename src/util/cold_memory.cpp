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

void copy_streaming(void* dst, const void* src, std::size_t n) noexcept {
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
