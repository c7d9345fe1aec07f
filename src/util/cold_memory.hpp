// util/cold_memory.hpp — writing into memory that is mapped but not in cache.
//
// A decode into memory that already holds something old (the tensors of a
// model that a torch.distributed.checkpoint load overwrites in place) pays,
// with ordinary stores, a read of every cache line it overwrites from DRAM
// first (read for ownership): three memory transfers per byte with the read
// of the input. Non-temporal stores skip that read. Measured, one thread,
// Intel Xeon (AVX-512), 4 MiB chunks decoded into a reused 87–195 MiB buffer:
// fp32 MiniLM 2.97 -> 3.68 GiB/s, fp32 AdamW state 2.50 -> 3.30 GiB/s,
// bf16 weights (whose time goes to the rANS decoder) 3.64–3.74 either way.
// But in memory that is not mapped yet, or whose pages were mapped just
// before being written (util::FreshMemory), the kernel has just zeroed the
// lines into the cache, and non-temporal stores lose (MiniLM into new bytes:
// 2.03 -> 1.46 GiB/s): hence mapped_and_resident() first.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

namespace mithril::util {

// How many of the pages that [p, p + n) touches are mapped and resident
// (mincore): all of them, and a write faults nothing; few, and the memory
// was never written (a large allocation just made: only the page holding
// the allocator's header is). known is false where that cannot be told (not
// Linux, mincore failed, n == 0). One system call; meant for spans of at
// least a few hundred KiB.
struct Residency {
  bool known = false;
  std::size_t pages = 0, resident = 0;
  bool all() const noexcept { return known && resident == pages; }
  // At most 1/64 of the pages resident.
  bool mostly_untouched() const noexcept { return known && resident * 64 <= pages; }
};
Residency residency(const void* p, std::size_t n) noexcept;
// residency(p, n).all().
bool mapped_and_resident(const void* p, std::size_t n) noexcept;

// memcpy(dst, src, n) with non-temporal stores for the whole 64-byte lines
// of dst, two 32-byte stores a line, where the CPU has AVX2 (and
// MITHRIL_ISA allows it); else for its whole 16-byte blocks (SSE2, x86-64's
// baseline); a plain memcpy elsewhere, and on CPUs without SSE2. The stores
// are weakly ordered: call stream_fence() before another thread may read dst
// (this thread sees them at once).
void copy_streaming(void* dst, const void* src, std::size_t n) noexcept;
void stream_fence() noexcept;
// The kernel copy_streaming() runs: "avx2", "sse2" or "portable".
std::string_view streaming_copy_kernel() noexcept;

namespace detail {
struct StreamingCopy {
  std::string_view name;
  void (*fn)(void* dst, const void* src, std::size_t n) noexcept;
};
// Every kernel this CPU may run, the one copy_streaming() uses first (tests).
std::vector<StreamingCopy> streaming_copy_kernels();
}  // namespace detail

// Asks for the cache lines of [p, p + n) to be brought into cache, for
// bytes that will be read in a burst a little later while the core computes
// something else now: the burst then finds them in cache instead of waiting
// on memory (the hardware prefetchers start again at each 4 KiB page). A
// few KiB at a time: each line holds a miss buffer until it arrives.
// prefetcht2 hints, the weakest temporal one (prefetcht0, into L1, measured
// slower for fp32, whose three stored planes crowd L1). Hints never fault,
// and the CPU may drop them.
void prefetch(const void* p, std::size_t n) noexcept;

}  // namespace mithril::util
