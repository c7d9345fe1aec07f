// util/fresh_memory.hpp — a new output buffer about to be written whole, in
// pieces, by several threads (in-memory compress and decompress).
//
// Its pages are mapped ahead of the writers, one madvise(MADV_POPULATE_WRITE)
// per piece (Linux >= 5.14) instead of one page fault per 4 KiB page as the
// writer first touches them, and the buffer is advised as transparent huge
// pages (MADV_HUGEPAGE), so that a 2 MiB page is mapped, and later unmapped,
// at once. Measured on an 87 MiB buffer (AMD EPYC, Linux 6.18): populating
// 35-51 ms with 4 KiB pages, 4.4 ms with huge pages; unmapping 8.5 ms against
// 0.5 ms — in an in-memory decompress of MiniLM the 4 KiB faults were about
// half of the call.
//
// But a huge page can cost more than the 512 small ones. On a virtual machine
// with free page reporting (virtio-balloon, as on this project's development
// VMs) the free 2 MiB blocks a huge page comes from have been handed back to
// the host, and zeroing one faults its memory in again from the host: 4 MiB
// populated in 5-10 ms (0.4-0.8 GiB/s) against 0.2 ms on memory the guest
// holds, and slower than 4 KiB pages, which come from recently freed memory.
// Where the kernel compacts memory for advised regions
// (/sys/kernel/mm/transparent_hugepage/defrag = madvise, Debian's default)
// and memory is fragmented, each 2 MiB fault can also run direct compaction.
// So the advice is adaptive: each buffer's huge-page populates are timed,
// and after two buffers in a row (of at least 8 MiB populated) below 1 GiB/s
// (4 KiB pages populate at ~2 GiB/s, huge pages at ~20 GiB/s) huge pages are
// off for the rest of the process: a one-time cost of two slow buffers.
// Whole buffers, not windows of bytes, and no switch half-way through one: a
// loop of calls reuses the huge pages the previous call freed before they
// are reported, so after one slow call it runs at the fast rate, as long as
// the previous call used huge pages throughout (MiniLM decompressed in
// memory in a loop, one thread: 30 ms a call against 53-65 ms with 4 KiB
// pages); a program that decompresses now and then on such a VM gets slow
// buffers every time and turns them off after two. A buffer whose first
// 8 MiB populate slowly goes back to 4 KiB pages for the rest of it, so a
// slow buffer costs at most ~16 ms more than one of small pages; so does one
// whose first 8 MiB were fast but a later piece of at least one huge page
// populates below the same rate (seen on an Intel VM: a 195 MiB buffer whose
// first pieces came from just-freed memory and the rest from the host, 423 ms
// of system time against ~50 ms with small pages). While off, every eighth
// large buffer tries huge pages again, and a fast one turns them back on: a
// loop that started in a slow phase finds the fast rate again, and a slow
// VM pays for one slow buffer in eight.
// The single slow piece has a cost in a loop that allocates nothing else: a
// buffer sent to 4 KiB pages early frees few huge pages for the next one,
// whose next huge page then comes from the host again (Intel Xeon VM, fp32
// decompressed into new bytes in a Python loop: ~2.4 GB/s, against ~3.2 with
// MITHRIL_THP=1). Judging 8 MiB windows instead (one slow page in four
// passes) was tried and lost where other code allocates between the calls,
// as bench/compare_memory.py's ZipNN and copies do: bf16 into new bytes
// 2.64 → 1.27-1.68 GB/s, fp16 2.24 → 1.12-1.46, the kept pages being slow.
// MITHRIL_THP=0 never advises huge pages (no probes either),
// MITHRIL_THP=1 keeps them on whatever the timings say, for whole buffers.
// Contents and results never depend on any of this.
//
// Thread-safety: prefault() may be called from any number of threads at once
// for disjoint pieces of the buffer.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace mithril::util {

// The process's rule (one instance, FreshMemory::huge_pages_on); a class of
// its own so that tests can drive it with made-up timings.
class HugePagePolicy {
 public:
  static constexpr std::uint64_t k_min_timed_bytes = std::uint64_t{8} << 20;
  static constexpr double k_slow_bytes_per_second = 1024.0 * 1024 * 1024;
  // Whether `bytes` populated in `ns` is below k_slow_bytes_per_second.
  static bool slow(std::uint64_t bytes, std::uint64_t ns) noexcept {
    return static_cast<double>(bytes) < k_slow_bytes_per_second * 1e-9 * static_cast<double>(ns);
  }
  static constexpr int k_slow_buffers_to_stop = 2;
  static constexpr unsigned k_probe_every = 8;

  // on: huge pages to begin with; adaptive: false keeps them as they are.
  HugePagePolicy(bool on, bool adaptive) noexcept : m_on(on), m_adaptive(adaptive) {}

  bool on() const noexcept { return m_on.load(std::memory_order_relaxed); }
  // Whether timings may turn huge pages off (MITHRIL_THP unset).
  bool adaptive() const noexcept { return m_adaptive; }
  // Whether the next buffer gets huge pages: while on, yes; while turned off
  // by timings, every k_probe_every-th buffer (a probe); if set off, never.
  bool advise_next() noexcept;
  // One finished buffer: `bytes` populated as huge pages in `ns` (summed over
  // its threads). False when this turned huge pages off; a fast buffer turns
  // them (back) on.
  bool record_buffer(std::uint64_t bytes, std::uint64_t ns) noexcept;

 private:
  std::atomic<bool> m_on;
  bool m_adaptive;
  std::atomic<int> m_slow_buffers{0};
  std::atomic<unsigned> m_buffers_while_off{0};
};

class FreshMemory {
 public:
  // Advises [data, data + size) as huge pages when they are on. No-op for
  // small buffers (< 4 MiB) and off Linux.
  FreshMemory(void* data, std::size_t size) noexcept;
  // Reports the buffer's populate timings to the process's policy.
  ~FreshMemory();
  FreshMemory(const FreshMemory&) = delete;
  FreshMemory& operator=(const FreshMemory&) = delete;

  // Maps writable the pages whose first byte lies in [data, data + size), a
  // piece of the buffer: those of its huge pages, where it has them. Pieces
  // that tile the buffer map each page once, so a writer can map each small
  // piece (~256 KiB) just before writing it, while the zeroed lines are still
  // in cache, rather than a whole chunk up front. No-op where the kernel
  // lacks MADV_POPULATE_WRITE.
  void prefault(void* data, std::size_t size) noexcept;

  // Whether this buffer was advised as huge pages.
  bool huge() const noexcept { return m_huge; }
  // Whether its first k_judge_bytes populated slowly and the rest of it was
  // advised back to 4 KiB pages.
  bool switched() const noexcept { return m_switched.load(std::memory_order_relaxed); }

  // How much of a huge-page buffer is populated before it is judged as a
  // whole; after that each piece of at least k_judge_piece_bytes is judged
  // on its own.
  static constexpr std::uint64_t k_judge_bytes = std::uint64_t{8} << 20;
  static constexpr std::uint64_t k_judge_piece_bytes = std::uint64_t{2} << 20;

  // Whether, after a piece of `piece_bytes` populated in `piece_ns`, making
  // `total_bytes` in `total_ns` of the buffer so far, the rest of the buffer
  // goes back to 4 KiB pages. `first_judgement`: the buffer has not been
  // judged as a whole yet (it is, once total_bytes >= k_judge_bytes).
  static bool too_slow(std::uint64_t piece_bytes, std::uint64_t piece_ns, std::uint64_t total_bytes,
                       std::uint64_t total_ns, bool first_judgement) noexcept;

  // Whether fresh buffers get huge pages in this process now.
  static bool huge_pages_on() noexcept;

  // A FreshMemory for a caller's destination that looks newly allocated —
  // at least min_bytes, at most 1/64 of its pages resident (a large
  // allocation just made has the page of the allocator's header only:
  // util::residency) — and nullptr for anything else (memory that holds
  // data, or that cannot be told).
  static std::unique_ptr<FreshMemory> if_untouched(void* data, std::size_t size, std::size_t min_bytes);

 private:
  bool m_huge = false;
  std::uintptr_t m_huge_begin = 0;  // the advised range
  std::uintptr_t m_huge_end = 0;
  std::atomic<bool> m_judged{false};
  std::atomic<bool> m_switched{false};
  std::atomic<std::uint64_t> m_huge_bytes{0};
  std::atomic<std::uint64_t> m_huge_ns{0};
};

// Grows `v` to at least `size` bytes (as v.resize(size), new bytes zero)
// and, when that takes new storage, maps the new storage's pages in one
// madvise(MADV_POPULATE_WRITE) first rather than one page fault per 4 KiB
// page as resize() zeroes them. For a coder's buffers that grow with the
// chunks they hold: on a virtual machine a first touch costs ~3.5 us a page
// and a populate ~2.2 (AMD EPYC Zen 3 under KVM); a two-thread compression
// of a 97.5 MiB fp32 file 82.1 -> 77.0 ms (docs/benchmarks.md, session 56).
// No-op beyond resize() where the kernel lacks it, and off Linux.
void grow_populated(std::vector<std::byte>& v, std::size_t size);

}  // namespace mithril::util
