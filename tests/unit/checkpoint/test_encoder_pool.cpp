// Which waiting encoder compression hands a chunk (checkpoint/encode.hpp,
// detail::pick_encoder): the grown ones are kept for the chunks that need them.
#include <gtest/gtest.h>

#include <vector>

#include "checkpoint/encode.hpp"

namespace mithril::checkpoint {
namespace {

using detail::pick_encoder;
using detail::WaitingEncoder;

constexpr std::size_t KiB = 1024, MiB = 1024 * KiB;

TEST(EncoderPool, NoneWaitingOrNoneOfTheLevelMeansANewEncoder) {
  EXPECT_EQ(pick_encoder({}, 3, 4 * MiB), 0u);
  const std::vector<WaitingEncoder> w = {{1, 10 * MiB}, {5, 10 * MiB}};
  EXPECT_EQ(pick_encoder(w, 3, 4 * MiB), w.size());
  EXPECT_EQ(pick_encoder(w, 5, 4 * MiB), 1u);
}

TEST(EncoderPool, TheSmallestThatHoldsTwiceTheChunk) {
  const std::vector<WaitingEncoder> w = {{3, 12 * MiB}, {3, 9 * MiB}, {3, 3 * MiB}, {3, 20 * MiB}};
  EXPECT_EQ(pick_encoder(w, 3, 4 * MiB), 1u);  // 9 MiB: the least of those >= 8 MiB
  EXPECT_EQ(pick_encoder(w, 3, 1 * MiB), 2u);  // 3 MiB holds 2 MiB
}

TEST(EncoderPool, ElseTheLargestSoTheLeastGrows) {
  const std::vector<WaitingEncoder> w = {{3, 2 * MiB}, {3, 5 * MiB}, {3, 64 * KiB}};
  EXPECT_EQ(pick_encoder(w, 3, 4 * MiB), 1u);
}

TEST(EncoderPool, ASmallChunkLeavesTheGrownEncodersToLargeOnes) {
  // Only grown encoders wait (the small ones are held by chunks queued behind
  // a large one): a 2 KiB tensor's chunk gets a new encoder rather than one
  // the next 4 MiB chunk would need.
  const std::vector<WaitingEncoder> grown = {{3, 5 * MiB + 600 * KiB}, {3, 9 * MiB}};
  EXPECT_EQ(pick_encoder(grown, 3, 2 * KiB), grown.size());
  EXPECT_EQ(pick_encoder(grown, 3, 4 * MiB), 1u);
  // With a small one waiting too, it takes that one, grown a little or not.
  std::vector<WaitingEncoder> mixed = grown;
  mixed.push_back({3, 2 * KiB});
  EXPECT_EQ(pick_encoder(mixed, 3, 2 * KiB), 2u);
  mixed.push_back({3, 10 * KiB});
  EXPECT_EQ(pick_encoder(mixed, 3, 2 * KiB), 3u);  // 10 KiB holds 4 KiB
  // A chunk of a sixteenth of an encoder's buffers or more still takes it
  // (a 1 MiB tensor after a 4 MiB one: a little waste, no growth).
  EXPECT_EQ(pick_encoder(grown, 3, 512 * KiB), 0u);
  // Small encoders (under 1 MiB) go to any chunk.
  const std::vector<WaitingEncoder> small = {{3, 900 * KiB}};
  EXPECT_EQ(pick_encoder(small, 3, 16), 0u);
}

}  // namespace
}  // namespace mithril::checkpoint
