// Xxh3Stream against the one-shot XXH3-64: any split of the input gives the
// same digest, and the empty input gives the reference value.
#include <gtest/gtest.h>

#include <random>

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

}  // namespace
}  // namespace mithril::util
