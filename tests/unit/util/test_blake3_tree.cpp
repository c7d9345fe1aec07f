// Blake3Tree: the digest of pieces hashed out of order on several threads must
// equal the reference Blake3 of the whole input, whatever the cut points
// (unaligned, tiny, empty pieces, pieces inside one chunk, the last chunk
// split) and whatever the order in which pieces are added.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <thread>

#include "mithril/error.hpp"
#include "util/blake3.hpp"
#include "util/blake3_tree.hpp"

namespace mithril::util {
namespace {

ByteVector random_bytes(std::size_t n, std::mt19937_64& rng) {
  ByteVector v(n);
  for (auto& b : v) b = std::byte(rng() & 0xff);
  return v;
}

// Digest of `data` cut at `cuts` (sorted, inside [0, size]), pieces added in a
// shuffled order from `threads` threads.
Digest tree_digest(const ByteVector& data, std::vector<std::uint64_t> cuts, std::mt19937_64& rng,
                   unsigned threads) {
  cuts.insert(cuts.begin(), 0);
  cuts.push_back(data.size());
  const std::size_t pieces = cuts.size() - 1;
  Blake3Tree tree(data.size(), pieces);
  std::vector<std::size_t> order(pieces);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<std::thread> workers;
  for (unsigned t = 0; t < threads; ++t)
    workers.emplace_back([&, t] {
      for (std::size_t k = t; k < pieces; k += threads) {
        const std::size_t i = order[k];
        tree.add(i, cuts[i], ByteSpan(data).subspan(cuts[i], cuts[i + 1] - cuts[i]));
      }
    });
  for (auto& w : workers) w.join();
  return tree.digest();
}

TEST(Blake3Tree, EqualsReferenceOnRandomSizesAndCuts) {
  std::mt19937_64 rng(20261202);
  const std::vector<std::size_t> sizes = {0, 1, 1023, 1024, 1025, 2048, 2049, 4095, 65536, 65537, 300000, 1 << 20,
                                          (1 << 20) + 4097};
  for (std::size_t size : sizes) {
    const ByteVector data = random_bytes(size, rng);
    const Digest want = blake3(data);
    for (int trial = 0; trial < 12; ++trial) {
      std::vector<std::uint64_t> cuts;
      const int n_cuts = size == 0 ? 0 : static_cast<int>(rng() % 20);
      for (int c = 0; c < n_cuts; ++c) {
        std::uint64_t at = rng() % (size + 1);
        if (trial % 3 == 1) at &= ~std::uint64_t{1023};         // chunk-aligned cuts
        if (trial % 3 == 2 && at + 3 <= size) cuts.push_back(at + 3);  // tiny pieces
        cuts.push_back(at);
      }
      std::sort(cuts.begin(), cuts.end());  // duplicates make empty pieces
      EXPECT_EQ(to_hex(tree_digest(data, cuts, rng, 1 + trial % 4)), to_hex(want))
          << "size " << size << " trial " << trial;
    }
  }
}

TEST(Blake3Tree, LargeUnalignedPiecesLikeTensorChunks) {
  // A header of odd size, then "tensors" cut into 4 MiB chunks from there.
  std::mt19937_64 rng(7);
  const ByteVector data = random_bytes((9u << 20) + 12345, rng);
  std::vector<std::uint64_t> cuts = {8 + 777};
  for (std::uint64_t at = cuts[0] + (4u << 20); at < data.size(); at += 4u << 20) cuts.push_back(at);
  EXPECT_EQ(to_hex(tree_digest(data, cuts, rng, 3)), to_hex(blake3(data)));
}

// Ranges (chunks) fed through Feeders while "written" in odd steps, pieces cut
// at 512 KiB of the input (the default), 128 KiB (compression's) or an odd
// size: the digest of the whole, whatever the steps.
TEST(Blake3Tree, FeedersOfRangesWrittenInSteps) {
  std::mt19937_64 rng(21);
  const ByteVector data = random_bytes((3u << 20) + 4321, rng);
  for (std::uint64_t piece : {Blake3Tree::k_range_piece, std::uint64_t{128} << 10, std::uint64_t{100003}}) {
    for (std::uint64_t range : {std::uint64_t{300007}, std::uint64_t{1} << 20, (std::uint64_t{4} << 20)}) {
      std::vector<std::uint64_t> starts = {0, 777};
      for (std::uint64_t at = 777 + range; at < data.size(); at += range) starts.push_back(at);
      starts.push_back(data.size());  // an empty range at the end
      std::vector<std::size_t> first(starts.size() + 1, 0);
      for (std::size_t i = 0; i < starts.size(); ++i) {
        const std::uint64_t end = i + 1 < starts.size() ? starts[i + 1] : data.size();
        first[i + 1] = first[i] + Blake3Tree::pieces_in(starts[i], end - starts[i], piece);
      }
      const auto listed = Blake3Tree::first_pieces(starts.size(), [&](std::size_t i) {
        const std::uint64_t end = i + 1 < starts.size() ? starts[i + 1] : data.size();
        return std::pair<std::uint64_t, std::uint64_t>{starts[i], end - starts[i]};
      }, piece);
      EXPECT_EQ(listed, first);
      Blake3Tree tree(data.size(), first.back(), piece);
      for (std::size_t i = starts.size(); i-- > 0;) {  // ranges in reverse order
        const std::uint64_t end = i + 1 < starts.size() ? starts[i + 1] : data.size();
        const ByteSpan r = ByteSpan(data).subspan(starts[i], end - starts[i]);
        Blake3Tree::Feeder feed(tree, first[i], starts[i], r);
        for (std::size_t n = 0; n < r.size(); n += 1 + rng() % 100000) feed.advance(n);
        feed.advance(r.size() / 2);  // going back is a no-op
        feed.finish();
        feed.finish();  // and so is finishing twice
      }
      EXPECT_EQ(to_hex(tree.digest()), to_hex(blake3(data))) << range << " " << piece;
    }
  }
  EXPECT_EQ(Blake3Tree::pieces_in(0, 0), 1u);
  EXPECT_EQ(Blake3Tree::pieces_in(0, Blake3Tree::k_range_piece), 1u);
  EXPECT_EQ(Blake3Tree::pieces_in(1, Blake3Tree::k_range_piece), 2u);
  EXPECT_EQ(Blake3Tree::pieces_in(0, 4u << 20, 128u << 10), 32u);
  EXPECT_EQ(Blake3Tree::pieces_in(1, 4u << 20, 128u << 10), 33u);
}

// Pieces are merged by whichever add() completes a run of them, while other
// threads go on adding (the TSan build runs this one): many small unaligned
// pieces, 4 threads, each order of arrival giving the reference digest.
TEST(Blake3Tree, ConcurrentAddsMergeWhileOthersHash) {
  std::mt19937_64 rng(5);
  const ByteVector data = random_bytes((2u << 20) + 999, rng);
  const std::string want = to_hex(blake3(data));
  for (int trial = 0; trial < 6; ++trial) {
    std::vector<std::uint64_t> cuts;
    for (std::uint64_t at = 1 + rng() % 3000; at < data.size(); at += 1 + rng() % 40000) cuts.push_back(at);
    EXPECT_EQ(to_hex(tree_digest(data, cuts, rng, 4)), want) << trial;
  }
  // In order from one thread: every add() merges its own piece at once.
  EXPECT_EQ(to_hex(tree_digest(data, {1, 2, 3, 4096, 700001}, rng, 1)), want);
}

TEST(Blake3Tree, EveryKernelGivesTheSameDigest) {
  std::mt19937_64 rng(11);
  const ByteVector data = random_bytes(700000, rng);
  const Digest want = blake3(data);
  const std::string before(detail::blake3_kernel());
  for (const char* k : {"portable", "avx2", "avx512"}) {
    if (!detail::set_blake3_kernel(k)) continue;
    EXPECT_EQ(to_hex(tree_digest(data, {1, 5000, 333333}, rng, 2)), to_hex(want)) << k;
  }
  detail::set_blake3_kernel(before);
}

// A file of many small tensors: pieces of 1 to 70 chunks at odd offsets, so
// that dozens of chunks straddle two pieces (hashed in batches of 16 by the
// merger, nodes queued behind them) and each piece's subtrees rise and fall
// in size; every kernel, pieces added from one thread and from three.
TEST(Blake3Tree, ManySmallUnalignedPiecesOnEveryKernel) {
  std::mt19937_64 rng(23);
  const ByteVector data = random_bytes(1900000, rng);
  const Digest want = blake3(data);
  std::vector<std::uint64_t> cuts;
  for (std::uint64_t at = 8 + 1234; at < data.size(); at += 1 + rng() % 70000) cuts.push_back(at);
  ASSERT_GT(cuts.size(), 40u);
  const std::string before(detail::blake3_kernel());
  for (const char* k : {"portable", "avx2", "avx512"}) {
    if (!detail::set_blake3_kernel(k)) continue;
    EXPECT_EQ(to_hex(tree_digest(data, cuts, rng, 1)), to_hex(want)) << k;
    EXPECT_EQ(to_hex(tree_digest(data, cuts, rng, 3)), to_hex(want)) << k;
  }
  detail::set_blake3_kernel(before);
}

TEST(Blake3Tree, MissingOrOverlappingPiecesAreAnError) {
  std::mt19937_64 rng(3);
  const ByteVector data = random_bytes(5000, rng);
  Blake3Tree missing(data.size(), 2);
  missing.add(0, 0, ByteSpan(data).first(2000));
  EXPECT_THROW(missing.digest(), Error);
  Blake3Tree gap(data.size(), 2);
  gap.add(0, 0, ByteSpan(data).first(2000));
  gap.add(1, 2001, ByteSpan(data).subspan(2001));
  EXPECT_THROW(gap.digest(), Error);
  Blake3Tree short_input(data.size() + 1, 1);
  short_input.add(0, 0, data);
  EXPECT_THROW(short_input.digest(), Error);
  Blake3Tree twice(data.size(), 2);
  twice.add(0, 0, ByteSpan(data).first(2000));
  twice.add(0, 0, ByteSpan(data).first(2000));
  twice.add(1, 2000, ByteSpan(data).subspan(2000));
  EXPECT_THROW(twice.digest(), Error);
  Blake3Tree late_gap(data.size(), 3);  // the gap found while merging, reported by digest()
  late_gap.add(2, 3000, ByteSpan(data).subspan(3000));
  late_gap.add(1, 1000, ByteSpan(data).subspan(1000, 1999));
  late_gap.add(0, 0, ByteSpan(data).first(1000));
  EXPECT_THROW(late_gap.digest(), Error);
}

}  // namespace
}  // namespace mithril::util
