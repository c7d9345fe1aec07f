#include "util/cold_memory.hpp"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

TEST(ColdMemory, ResidencyFollowsTheFirstWrite) {
  const std::size_t n = std::size_t{1} << 20;
  void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  auto* b = static_cast<std::byte*>(p);
  EXPECT_FALSE(mithril::util::mapped_and_resident(b, n));  // nothing touched yet
  std::memset(b, 1, n / 2);
  EXPECT_TRUE(mithril::util::mapped_and_resident(b, n / 2));
  EXPECT_TRUE(mithril::util::mapped_and_resident(b + 100, 5000));
  EXPECT_FALSE(mithril::util::mapped_and_resident(b, n));  // the second half is not
  std::memset(b + n / 2, 2, n / 2);
  EXPECT_TRUE(mithril::util::mapped_and_resident(b, n));
  EXPECT_FALSE(mithril::util::mapped_and_resident(b, 0));
  ::munmap(p, n);
}

// residency() counts the resident pages: an allocation just made has at most
// its first page (the allocator's header) resident, "mostly untouched".
TEST(ColdMemory, ResidencyCountsResidentPages) {
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const std::size_t n = 256 * page;
  void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  auto* b = static_cast<std::byte*>(p);
  auto r = mithril::util::residency(b + 64, n - 64);  // from inside the first page, like a malloc'd block
  EXPECT_TRUE(r.known);
  EXPECT_EQ(r.pages, 256u);
  EXPECT_EQ(r.resident, 0u);
  EXPECT_TRUE(r.mostly_untouched());
  EXPECT_FALSE(r.all());
  b[0] = std::byte{1};  // the header's page
  r = mithril::util::residency(b + 64, n - 64);
  EXPECT_EQ(r.resident, 1u);
  EXPECT_TRUE(r.mostly_untouched());
  std::memset(b, 1, 5 * page);  // more than 1/64 of it
  EXPECT_FALSE(mithril::util::residency(b, n).mostly_untouched());
  std::memset(b, 1, n);
  EXPECT_TRUE(mithril::util::residency(b, n).all());
  EXPECT_FALSE(mithril::util::residency(b, 0).known);
  EXPECT_FALSE(mithril::util::residency(b, 0).mostly_untouched());
  ::munmap(p, n);
}

TEST(ColdMemory, StreamingCopyMatchesMemcpyAtEveryAlignment) {
  std::vector<std::byte> src(5000);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<std::byte>(i * 131 + 7);
  const auto kernels = mithril::util::detail::streaming_copy_kernels();
  ASSERT_FALSE(kernels.empty());
  EXPECT_EQ(kernels.front().name, mithril::util::streaming_copy_kernel());
  // Every kernel the CPU has, and the dispatching entry point.
  auto copies = std::vector<mithril::util::detail::StreamingCopy>(kernels);
  copies.push_back({"copy_streaming", mithril::util::copy_streaming});
  for (const auto& k : copies) {
    SCOPED_TRACE(k.name);
    for (std::size_t from : {0u, 1u, 3u, 15u, 16u, 32u}) {
      for (std::size_t to : {0u, 1u, 9u, 16u, 33u, 48u, 63u}) {
        for (std::size_t n : {0u, 1u, 15u, 16u, 17u, 31u, 32u, 63u, 64u, 65u, 127u, 128u, 129u, 1000u, 4000u}) {
          std::vector<std::byte> dst(n + 128, std::byte{0xee});
          k.fn(dst.data() + to, src.data() + from, n);
          mithril::util::stream_fence();
          ASSERT_TRUE(std::equal(src.begin() + from, src.begin() + from + n, dst.begin() + to))
              << from << " " << to << " " << n;
          for (std::size_t i = 0; i < to; ++i) ASSERT_EQ(dst[i], std::byte{0xee});
          for (std::size_t i = to + n; i < dst.size(); ++i) ASSERT_EQ(dst[i], std::byte{0xee});
        }
      }
    }
  }
}
