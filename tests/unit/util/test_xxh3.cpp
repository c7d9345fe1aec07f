// Xxh3Stream against the one-shot XXH3-64: any split of the input gives the
// same digest, and the empty input gives the reference value.
#include <gtest/gtest.h>

#include <random>

#include <xxhash.h>

#include "test_helpers.hpp"
#include "util/xxh3.hpp"

namespace mithril::util {
namespace {

TEST(Xxh3, EmptyInputIsTheReferenceValue) {
  // XXH3_64bits("", 0) with seed 0, from xxHash's own sanity test table.
  EXPECT_EQ(xxh3_64({}), 0x2D06800538D394C2ull);
  Xxh3Stream s;
  EXPECT_EQ(s.digest(), 0x2D06800538D394C2ull);
}

TEST(Xxh3, StreamEqualsOneShotForAnySplit) {
  std::mt19937_64 rng(7);
  Xxh3Stream s;
  for (const std::size_t n : {1u, 15u, 240u, 241u, 1024u, 65536u, 300001u}) {
    const auto data = test::random_bytes(n, n);
    for (int trial = 0; trial < 5; ++trial) {
      s.reset();
      std::size_t pos = 0;
      while (pos < n) {
        const std::size_t take = std::min<std::size_t>(n - pos, 1 + rng() % (trial == 0 ? 64 : 70000));
        s.update(ByteSpan(data).subspan(pos, take));
        pos += take;
      }
      ASSERT_EQ(s.digest(), xxh3_64(data)) << "n=" << n << " trial " << trial;
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// The AVX2 build used under MITHRIL_ISA=avx2 (util/xxh3_avx2.cpp) against
// libxxhash's baseline build, one-shot and streamed, at the sizes where
// XXH3's code paths change (0-16, 17-128, 129-240, long inputs, stripes and
// blocks of 1 KiB).
TEST(Xxh3, Avx2BuildMatchesLibxxhash) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2")) GTEST_SKIP() << "this CPU has no AVX2";
  std::mt19937_64 rng(11);
  XXH3_state_t* state = XXH3_createState();
  ASSERT_NE(state, nullptr);
  for (const std::size_t n : {0u, 1u, 3u, 16u, 17u, 128u, 129u, 240u, 241u, 1023u, 1024u, 1025u, 65536u, 300001u}) {
    const auto data = test::random_bytes(n, n + 1);
    const std::uint64_t want = XXH3_64bits(data.data(), n);
    EXPECT_EQ(detail::xxh3_64_avx2(data.data(), n), want) << "n=" << n;
    (void)XXH3_64bits_reset(state);
    std::size_t pos = 0;
    while (pos < n) {
      const std::size_t take = std::min<std::size_t>(n - pos, 1 + rng() % 5000);
      detail::xxh3_update_avx2(state, data.data() + pos, take);
      pos += take;
    }
    EXPECT_EQ(XXH3_64bits_digest(state), want) << "streamed, n=" << n;
  }
  XXH3_freeState(state);
}
#endif

}  // namespace
}  // namespace mithril::util
