#include "util/fresh_memory.hpp"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

namespace {

using mithril::util::FreshMemory;
using mithril::util::HugePagePolicy;

constexpr std::uint64_t k_mib = 1 << 20;
constexpr std::uint64_t k_buffer = 87 * k_mib;

// ns that populating `bytes` takes at `gib_per_s`.
std::uint64_t ns_at(std::uint64_t bytes, double gib_per_s) {
  return static_cast<std::uint64_t>(static_cast<double>(bytes) / (gib_per_s * 1024 * 1024 * 1024) * 1e9);
}

TEST(HugePagePolicy, FastBuffersKeepHugePagesOn) {
  HugePagePolicy p(true, true);
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(p.record_buffer(k_buffer, ns_at(k_buffer, 20.0)));
  EXPECT_TRUE(p.on());
}

TEST(HugePagePolicy, TwoSlowBuffersInARowTurnThemOff) {
  HugePagePolicy p(true, true);
  EXPECT_TRUE(p.record_buffer(k_buffer, ns_at(k_buffer, 0.5)));
  EXPECT_TRUE(p.on());
  EXPECT_FALSE(p.record_buffer(k_buffer, ns_at(k_buffer, 0.5)));
  EXPECT_FALSE(p.on());
}

TEST(HugePagePolicy, AFastBufferBetweenSlowOnesStartsTheCountAgain) {
  // A loop of calls on a VM with free page reporting: now and then a call
  // gets fresh huge pages from the host (slow), the next reuses them (fast).
  HugePagePolicy p(true, true);
  for (int round = 0; round < 20; ++round) {
    EXPECT_TRUE(p.record_buffer(k_buffer, ns_at(k_buffer, 0.5)));
    EXPECT_TRUE(p.record_buffer(k_buffer, ns_at(k_buffer, 20.0)));
  }
  EXPECT_TRUE(p.on());
}

TEST(HugePagePolicy, WhileOffEveryEighthBufferIsAProbe) {
  HugePagePolicy p(true, true);
  EXPECT_TRUE(p.advise_next());
  p.record_buffer(k_buffer, ns_at(k_buffer, 0.5));
  p.record_buffer(k_buffer, ns_at(k_buffer, 0.5));
  ASSERT_FALSE(p.on());
  int advised = 0;
  for (unsigned i = 0; i < 8 * HugePagePolicy::k_probe_every; ++i) {
    if (!p.advise_next()) continue;
    ++advised;
    EXPECT_EQ(i % HugePagePolicy::k_probe_every, HugePagePolicy::k_probe_every - 1);
    EXPECT_FALSE(p.record_buffer(k_buffer, ns_at(k_buffer, 0.5)));  // a slow probe: still off
  }
  EXPECT_EQ(advised, 8);
  EXPECT_FALSE(p.on());
}

TEST(HugePagePolicy, AFastProbeTurnsThemBackOn) {
  HugePagePolicy p(true, true);
  p.record_buffer(k_buffer, ns_at(k_buffer, 0.5));
  p.record_buffer(k_buffer, ns_at(k_buffer, 0.5));
  ASSERT_FALSE(p.on());
  while (!p.advise_next()) {
  }
  EXPECT_TRUE(p.record_buffer(k_buffer, ns_at(k_buffer, 20.0)));
  EXPECT_TRUE(p.on());
  EXPECT_TRUE(p.advise_next());
}

TEST(HugePagePolicy, SetOffMeansNeverAdvised) {
  HugePagePolicy p(false, false);
  for (int i = 0; i < 100; ++i) EXPECT_FALSE(p.advise_next());
}

TEST(HugePagePolicy, SmallBuffersAreNotJudged) {
  HugePagePolicy p(true, true);
  const std::uint64_t small = HugePagePolicy::k_min_timed_bytes - 1;
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(p.record_buffer(small, ns_at(small, 0.1)));
  EXPECT_TRUE(p.on());
}

TEST(HugePagePolicy, NotAdaptiveKeepsItsSetting) {
  HugePagePolicy on(true, false);
  HugePagePolicy off(false, false);
  for (int i = 0; i < 10; ++i) {
    EXPECT_TRUE(on.record_buffer(k_buffer, ns_at(k_buffer, 0.1)));
    off.record_buffer(k_buffer, ns_at(k_buffer, 20.0));
  }
  EXPECT_TRUE(on.on());
  EXPECT_FALSE(off.on());
}

// A buffer is judged on its first 8 MiB as a whole, then piece by piece: a
// slow piece after a fast start (the rest of the buffer's huge pages coming
// from the host) sends the rest back to 4 KiB pages.
TEST(FreshMemory, JudgedOnItsFirst8MiBThenEachPiece) {
  const std::uint64_t judge = FreshMemory::k_judge_bytes, piece = 4 * k_mib;
  // Not judged before 8 MiB, however slow.
  EXPECT_FALSE(FreshMemory::too_slow(piece, ns_at(piece, 0.1), piece, ns_at(piece, 0.1), true));
  // The first judgement is of the whole 8 MiB: one slow piece among fast ones passes.
  EXPECT_FALSE(FreshMemory::too_slow(piece, ns_at(piece, 0.8), judge, ns_at(piece, 0.8) + ns_at(piece, 20), true));
  EXPECT_TRUE(FreshMemory::too_slow(piece, ns_at(piece, 0.5), judge, ns_at(judge, 0.5), true));
  // Later: each piece on its own, whatever the buffer's average.
  const std::uint64_t total = 100 * k_mib;
  EXPECT_TRUE(FreshMemory::too_slow(piece, ns_at(piece, 0.5), total, ns_at(total, 15), false));
  EXPECT_FALSE(FreshMemory::too_slow(piece, ns_at(piece, 5), total, ns_at(total, 0.5), false));
  // A piece smaller than a huge page is too short to judge.
  const std::uint64_t small = FreshMemory::k_judge_piece_bytes - 1;
  EXPECT_FALSE(FreshMemory::too_slow(small, ns_at(small, 0.1), total, ns_at(total, 15), false));
}

// The buffer's contents are whatever the writers put there, pieces mapped
// from several threads at once, with huge pages or without.
TEST(FreshMemory, ConcurrentPiecesHoldWhatWasWritten) {
  const std::size_t size = 24 * k_mib + 12345;
  void* map = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(map, MAP_FAILED);
  auto* bytes = static_cast<unsigned char*>(map) + 7;  // not page aligned, like a bytes object's data
  const std::size_t n = size - 7;
  FreshMemory fresh(bytes, n);
  // Advised wherever the kernel has transparent huge pages and the process
  // has not turned them off.
  if (FreshMemory::huge_pages_on() && ::access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) == 0) {
    EXPECT_TRUE(fresh.huge());
  }
  const std::size_t piece = 3 * k_mib + 999;
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t)
    threads.emplace_back([&, t] {
      for (std::size_t at = t * piece; at < n; at += 3 * piece) {
        const std::size_t len = std::min(piece, n - at);
        fresh.prefault(bytes + at, len);
        for (std::size_t i = 0; i < len; ++i) bytes[at + i] = static_cast<unsigned char>((at + i) * 131 >> 3);
      }
    });
  for (auto& t : threads) t.join();
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < n; ++i) wrong += bytes[i] != static_cast<unsigned char>(i * 131 >> 3);
  EXPECT_EQ(wrong, 0u);
  ::munmap(map, size);
}

// if_untouched: a FreshMemory for memory just mapped (at least min_bytes),
// none for memory that holds data or is too small.
TEST(FreshMemory, OnlyForUntouchedMemoryOfTheMinimumSize) {
  const std::size_t size = 8 * k_mib;
  void* map = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(map, MAP_FAILED);
  auto* bytes = static_cast<unsigned char*>(map);
  EXPECT_NE(FreshMemory::if_untouched(bytes + 16, size - 16, k_mib), nullptr);
  EXPECT_EQ(FreshMemory::if_untouched(bytes + 16, size - 16, size), nullptr);  // under the minimum
  std::memset(bytes, 1, size / 2);
  EXPECT_EQ(FreshMemory::if_untouched(bytes, size, k_mib), nullptr);
  EXPECT_EQ(FreshMemory::if_untouched(nullptr, 0, 0), nullptr);
  ::munmap(map, size);
}

long minor_faults() {
  rusage u{};
  ::getrusage(RUSAGE_THREAD, &u);
  return u.ru_minflt;
}

// Pieces that tile the buffer, cut anywhere, map every page once between
// them (each maps the pages whose first byte lies in it): writing the whole
// buffer afterwards takes no page fault but the one for the page holding
// its first byte, which starts mid-page. Mapping whole pages inside each
// piece instead would leave the pages across piece edges to fault. Counted
// against a control buffer mapped whole in one call, so that faults that
// are not the buffer's own (AddressSanitizer's shadow pages) cancel out.
TEST(FreshMemory, PiecesCutAnywhereMapEveryPage) {
  constexpr int k_populate_write = 23;  // MADV_POPULATE_WRITE, Linux >= 5.14
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  void* probe = ::mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(probe, MAP_FAILED);
  const bool kernel_has_it = ::madvise(probe, page, k_populate_write) == 0;
  ::munmap(probe, page);
  if (!kernel_has_it) GTEST_SKIP() << "kernel without MADV_POPULATE_WRITE: prefault() does nothing here";
  const std::size_t size = 24 * k_mib + 12345;
  for (const std::size_t piece : {std::size_t{256} << 10, std::size_t{300007}, std::size_t{3} << 20}) {
    void* control = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(control, MAP_FAILED);
    ASSERT_EQ(::madvise(control, size, k_populate_write), 0);
    long before = minor_faults();
    std::memset(static_cast<unsigned char*>(control) + 7, 0x5a, size - 7);
    const long control_faults = minor_faults() - before;
    ::munmap(control, size);

    void* map = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(map, MAP_FAILED);
    auto* bytes = static_cast<unsigned char*>(map) + 7;
    const std::size_t n = size - 7;
    {
      FreshMemory fresh(bytes, n);
      for (std::size_t at = 0; at < n; at += piece) fresh.prefault(bytes + at, std::min(piece, n - at));
      before = minor_faults();
      std::memset(bytes, 0x5a, n);
      EXPECT_LE(minor_faults() - before, control_faults + 1)
          << "pieces of " << piece << " bytes, huge pages " << fresh.huge();
    }
    EXPECT_EQ(bytes[n - 1], 0x5a);
    ::munmap(map, size);
  }
}

TEST(FreshMemory, SmallAndEmptyBuffersAreLeftAlone) {
  FreshMemory none(nullptr, 0);
  EXPECT_FALSE(none.huge());
  none.prefault(nullptr, 0);
  std::vector<unsigned char> small(1 << 20, 1);
  FreshMemory s(small.data(), small.size());
  EXPECT_FALSE(s.huge());  // under 4 MiB: never advised
  s.prefault(small.data(), small.size());
  EXPECT_EQ(small[12345], 1);
}

}  // namespace

// grow_populated() is resize() for growing: what the buffer held stays, the
// new bytes are zero, a smaller size changes nothing, and new storage is at
// least twice the old capacity, so that a buffer grown by small steps is not
// moved at each step.
TEST(GrowPopulated, KeepsTheBytesAndZeroesTheRest) {
  std::vector<std::byte> v;
  mithril::util::grow_populated(v, 0);
  EXPECT_TRUE(v.empty());
  mithril::util::grow_populated(v, 5 * k_mib + 3);
  ASSERT_EQ(v.size(), 5 * k_mib + 3);
  EXPECT_TRUE(std::all_of(v.begin(), v.end(), [](std::byte b) { return b == std::byte{0}; }));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<std::byte>(i * 7 + 1);
  mithril::util::grow_populated(v, k_mib);  // smaller: nothing changes
  ASSERT_EQ(v.size(), 5 * k_mib + 3);
  const std::size_t held = v.size();
  mithril::util::grow_populated(v, 9 * k_mib + 1);
  ASSERT_EQ(v.size(), 9 * k_mib + 1);
  EXPECT_GE(v.capacity(), 2 * held);
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < held; ++i) wrong += v[i] != static_cast<std::byte>(i * 7 + 1);
  for (std::size_t i = held; i < v.size(); ++i) wrong += v[i] != std::byte{0};
  EXPECT_EQ(wrong, 0u);
  const std::byte* at = v.data();
  mithril::util::grow_populated(v, 10 * k_mib);  // within the capacity: not moved
  EXPECT_EQ(v.data(), at);
  EXPECT_EQ(v.size(), 10 * k_mib);
  EXPECT_TRUE(std::all_of(v.begin() + 9 * k_mib + 1, v.end(), [](std::byte b) { return b == std::byte{0}; }));
}
