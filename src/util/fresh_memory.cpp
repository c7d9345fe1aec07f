#include "util/fresh_memory.hpp"

#include "util/cold_memory.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace mithril::util {
namespace {

#if defined(__linux__)
constexpr int k_populate_write = 23;  // MADV_POPULATE_WRITE (Linux 5.14); older headers lack it
constexpr std::size_t k_min_huge_buffer = std::size_t{4} << 20;
constexpr std::uintptr_t k_huge_page = std::uintptr_t{2} << 20;

HugePagePolicy& policy() {
  static HugePagePolicy p = [] {
    const char* env = std::getenv("MITHRIL_THP");
    const std::string_view v = env ? env : "";
    return HugePagePolicy(v != "0", v != "0" && v != "1");
  }();
  return p;
}

std::uintptr_t page_size() {
  static const auto p = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  return p;
}
#endif

}  // namespace

bool HugePagePolicy::advise_next() noexcept {
  if (on()) return true;
  if (!m_adaptive) return false;
  return m_buffers_while_off.fetch_add(1, std::memory_order_relaxed) % k_probe_every == k_probe_every - 1;
}

bool HugePagePolicy::record_buffer(std::uint64_t bytes, std::uint64_t ns) noexcept {
  if (!m_adaptive || bytes < k_min_timed_bytes) return true;
  if (!slow(bytes, ns)) {
    m_slow_buffers.store(0, std::memory_order_relaxed);
    m_on.store(true, std::memory_order_relaxed);
    return true;
  }
  if (m_slow_buffers.fetch_add(1, std::memory_order_relaxed) + 1 < k_slow_buffers_to_stop) return true;
  m_on.store(false, std::memory_order_relaxed);
  return false;
}

bool FreshMemory::too_slow(std::uint64_t piece_bytes, std::uint64_t piece_ns, std::uint64_t total_bytes,
                           std::uint64_t total_ns, bool first_judgement) noexcept {
  if (total_bytes < k_judge_bytes) return false;
  if (first_judgement) return HugePagePolicy::slow(total_bytes, total_ns);
  return piece_bytes >= k_judge_piece_bytes && HugePagePolicy::slow(piece_bytes, piece_ns);
}

void grow_populated(std::vector<std::byte>& v, std::size_t size) {
  if (v.size() >= size) return;
#if defined(__linux__)
  if (v.capacity() < size) {
    // (As resize() would: at least twice the old capacity, so that a buffer
    // growing by steps is not moved at every step. The bytes past `size`
    // stay untouched.)
    v.reserve(std::max(size, 2 * v.capacity()));
    const std::uintptr_t page = page_size();
    const auto b = (reinterpret_cast<std::uintptr_t>(v.data() + v.size()) + page - 1) / page * page;
    const auto e = reinterpret_cast<std::uintptr_t>(v.data() + size) / page * page;
    if (e > b) ::madvise(reinterpret_cast<void*>(b), e - b, k_populate_write);
  }
#endif
  v.resize(size);
}

bool FreshMemory::huge_pages_on() noexcept {
#if defined(__linux__)
  return policy().on();
#else
  return false;
#endif
}

std::unique_ptr<FreshMemory> FreshMemory::if_untouched(void* data, std::size_t size, std::size_t min_bytes) {
  if (size < min_bytes || !residency(data, size).mostly_untouched()) return nullptr;
  return std::make_unique<FreshMemory>(data, size);
}

FreshMemory::FreshMemory(void* data, std::size_t size) noexcept {
#if defined(__linux__)
  const auto begin = reinterpret_cast<std::uintptr_t>(data);
  if (!data || size < k_min_huge_buffer || !policy().advise_next()) return;
  // The 2 MiB pages wholly inside the buffer: a huge page reaching outside it
  // would map (and zero) memory that belongs to someone else's allocation.
  const std::uintptr_t hb = (begin + k_huge_page - 1) & ~(k_huge_page - 1);
  const std::uintptr_t he = (begin + size) & ~(k_huge_page - 1);
  m_huge = he > hb && ::madvise(reinterpret_cast<void*>(hb), he - hb, MADV_HUGEPAGE) == 0;
  m_huge_begin = hb;
  m_huge_end = he;
#else
  (void)data;
  (void)size;
#endif
}

FreshMemory::~FreshMemory() {
#if defined(__linux__)
  if (m_huge) policy().record_buffer(m_huge_bytes.load(), m_huge_ns.load());
#endif
}

void FreshMemory::prefault(void* data, std::size_t size) noexcept {
#if defined(__linux__)
  if (!data || size == 0) return;
  const auto up = [](std::uintptr_t x, std::uintptr_t a) { return (x + a - 1) / a * a; };
  const auto p = reinterpret_cast<std::uintptr_t>(data);
  const std::uintptr_t q = p + size;
  const std::uintptr_t page = page_size();
  // The pages whose first byte lies in [p, q): pieces that tile the buffer
  // map every page once (the one holding the buffer's first byte, if it
  // starts mid-page, is mapped by its first write).
  const std::uintptr_t b = up(p, page);
  const std::uintptr_t e = up(q, page);
  if (!m_huge || m_switched.load(std::memory_order_relaxed)) {
    if (e > b) ::madvise(reinterpret_cast<void*>(b), e - b, k_populate_write);
    return;
  }
  // Small pages outside the advised range, whole huge pages inside it.
  if (b < m_huge_begin && std::min(e, m_huge_begin) > b)
    ::madvise(reinterpret_cast<void*>(b), std::min(e, m_huge_begin) - b, k_populate_write);
  if (e > m_huge_end && e > std::max(b, m_huge_end))
    ::madvise(reinterpret_cast<void*>(std::max(b, m_huge_end)), e - std::max(b, m_huge_end), k_populate_write);
  const std::uintptr_t hb = std::clamp(up(p, k_huge_page), m_huge_begin, m_huge_end);
  const std::uintptr_t he = std::clamp(up(q, k_huge_page), m_huge_begin, m_huge_end);
  if (he <= hb) return;
  const auto t0 = std::chrono::steady_clock::now();
  if (::madvise(reinterpret_cast<void*>(hb), he - hb, k_populate_write) != 0) return;
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
  const std::uint64_t bytes = m_huge_bytes.fetch_add(he - hb, std::memory_order_relaxed) + (he - hb);
  const std::uint64_t total_ns =
      m_huge_ns.fetch_add(static_cast<std::uint64_t>(ns), std::memory_order_relaxed) + static_cast<std::uint64_t>(ns);
  if (!policy().adaptive()) return;  // MITHRIL_THP=1: huge pages throughout
  // Slow on its first k_judge_bytes, or in a later piece: the rest of the
  // buffer gets 4 KiB pages (its later pieces are populated without huge pages).
  if (bytes < k_judge_bytes) return;
  const bool first = !m_judged.exchange(true, std::memory_order_relaxed);
  if (!too_slow(he - hb, static_cast<std::uint64_t>(ns), bytes, total_ns, first)) return;
  if (m_switched.exchange(true, std::memory_order_relaxed)) return;
  ::madvise(reinterpret_cast<void*>(m_huge_begin), m_huge_end - m_huge_begin, MADV_NOHUGEPAGE);
#else
  (void)data;
  (void)size;
#endif
}

}  // namespace mithril::util
