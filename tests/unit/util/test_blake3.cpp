// BLAKE3 against the official test vectors (BLAKE3-team/BLAKE3, test_vectors.json,
// copied to tests/data/), plus equivalence of the incremental, one-shot and
// parallel paths over sizes that cross chunk, batch and subtree boundaries.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "test_helpers.hpp"
#include "util/blake3.hpp"

namespace mithril::util {
namespace {

ByteVector vector_input(std::size_t n) {
  ByteVector v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = std::byte(i % 251);  // the vectors' input rule
  return v;
}

nlohmann::json load_vectors() {
  std::ifstream f(MITHRIL_SOURCE_DIR "/tests/data/blake3_test_vectors.json");
  EXPECT_TRUE(f.good());
  return nlohmann::json::parse(f);
}

std::string xof_hex(const Blake3& h, std::size_t n) {
  std::vector<std::uint8_t> out(n);
  h.finalize(out);
  return to_hex(out);
}

TEST(Blake3, OfficialVectorsAllModes) {
  auto j = load_vectors();
  std::string key = j["key"];
  ASSERT_EQ(key.size(), 32u);
  std::array<std::uint8_t, 32> key_bytes;
  std::memcpy(key_bytes.data(), key.data(), 32);
  std::string context = j["context_string"];
  ASSERT_GE(j["cases"].size(), 30u);
  for (const auto& c : j["cases"]) {
    std::size_t n = c["input_len"];
    std::string hash = c["hash"], keyed = c["keyed_hash"], derive = c["derive_key"];
    auto in = vector_input(n);
    SCOPED_TRACE("input_len=" + std::to_string(n));

    Blake3 h;
    h.update(in);
    EXPECT_EQ(xof_hex(h, hash.size() / 2), hash);
    EXPECT_EQ(to_hex(blake3(in)), hash.substr(0, 64));
    EXPECT_EQ(to_hex(blake3_parallel(in, 2)), hash.substr(0, 64));

    Blake3 k = Blake3::keyed(key_bytes);
    k.update(in);
    EXPECT_EQ(xof_hex(k, keyed.size() / 2), keyed);

    Blake3 d = Blake3::derive_key(context);
    d.update(in);
    EXPECT_EQ(xof_hex(d, derive.size() / 2), derive);

    // Byte-at-a-time and odd splits must agree with the one-shot.
    Blake3 s;
    std::size_t pos = 0, step = 1;
    while (pos < n) {
      std::size_t take = std::min(step, n - pos);
      s.update(ByteSpan(in).subspan(pos, take));
      pos += take;
      step = step * 3 + 1;
      if (step > 5000) step = 1;
    }
    EXPECT_EQ(xof_hex(s, hash.size() / 2), hash);
  }
}

// Every SIMD kernel must agree with the portable one. One test per kernel,
// so a kernel this CPU lacks shows up as a reported skip (e.g. AVX-512 on an
// AVX2-only AMD machine), never as a silent pass.
class Blake3Kernel : public ::testing::TestWithParam<const char*> {};

TEST_P(Blake3Kernel, AgreesWithPortable) {
  const std::string_view original = detail::blake3_kernel();
  ByteVector in(1536 * 1024 + 3 * 1024 + 5);
  std::mt19937_64 rng(3);
  for (auto& b : in) b = std::byte(rng());
  // Tails of 1..7 chunks and parents after whole batches of 8, aligned
  // subtrees of 64 to 512 chunks (the last size: 1024 + 512 + 3 chunks).
  // Then partial sixteen-lane calls (9..15 chunks after whole ones).
  const std::size_t sizes[] = {0,          1024,       3 * 1024,   7 * 1024 + 9, 8 * 1024,
                               16 * 1024 + 1, 17 * 1024, 100 * 1024, 300 * 1024 + 123, in.size(),
                               9 * 1024 + 1, 25 * 1024 + 7, 31 * 1024 + 1, 47 * 1024 + 1};
  ASSERT_TRUE(detail::set_blake3_kernel("portable"));
  std::vector<Digest> ref;
  for (std::size_t n : sizes) ref.push_back(blake3(ByteSpan(in).first(n)));
  if (!detail::set_blake3_kernel(GetParam())) {
    ASSERT_TRUE(detail::set_blake3_kernel(original));
    GTEST_SKIP() << "CPU lacks " << GetParam() << ": BLAKE3 " << GetParam() << " kernel NOT tested on this machine";
  }
  std::size_t i = 0;
  for (std::size_t n : sizes) EXPECT_EQ(blake3(ByteSpan(in).first(n)), ref[i++]) << GetParam() << " n=" << n;
  EXPECT_TRUE(detail::set_blake3_kernel(original));
}

// Chunks anywhere in memory, each with its own counter (Blake3Tree's chunks
// that straddle two pieces): every count from 1 to 40 (whole and partial
// SIMD calls), counters that cross 2^32 inside a call, against the portable
// kernel and against the chunk hashed alone.
TEST_P(Blake3Kernel, GatheredChunksAgreeWithPortable) {
  const std::string_view original = detail::blake3_kernel();
  std::mt19937_64 rng(17);
  ByteVector in(64 * 1024);
  for (auto& b : in) b = std::byte(rng());
  std::vector<const std::uint8_t*> at;
  std::vector<std::uint64_t> counters;
  for (std::size_t i = 0; i < 40; ++i) {
    at.push_back(reinterpret_cast<const std::uint8_t*>(in.data()) + (rng() % 63) * 1024 + rng() % 1024);
    counters.push_back(i % 3 == 0 ? (std::uint64_t{1} << 32) - 2 + i / 3 : rng() % (std::uint64_t{1} << 40));
  }
  ASSERT_TRUE(detail::set_blake3_kernel("portable"));
  std::vector<std::vector<detail::ChainingValue>> ref;
  for (std::size_t n = 1; n <= at.size(); ++n) {
    ref.emplace_back(n);
    detail::blake3_chunk_cvs(at.data(), counters.data(), n, ref.back().data());
  }
  // A chunk alone is a one-chunk subtree at its counter.
  for (std::size_t i = 0; i < at.size(); ++i) {
    std::vector<detail::SubtreeCv> one;
    detail::blake3_aligned_subtrees(at[i], counters[i], 1, one);
    ASSERT_EQ(one.size(), 1u);
    EXPECT_EQ(one[0].level, 0u);
    EXPECT_EQ(ref.back()[i], one[0].cv) << i;
  }
  if (!detail::set_blake3_kernel(GetParam())) {
    ASSERT_TRUE(detail::set_blake3_kernel(original));
    GTEST_SKIP() << "CPU lacks " << GetParam() << ": BLAKE3 " << GetParam() << " kernel NOT tested on this machine";
  }
  for (std::size_t n = 1; n <= at.size(); ++n) {
    std::vector<detail::ChainingValue> got(n);
    detail::blake3_chunk_cvs(at.data(), counters.data(), n, got.data());
    EXPECT_EQ(got, ref[n - 1]) << GetParam() << " n=" << n;
  }
  EXPECT_TRUE(detail::set_blake3_kernel(original));
}

INSTANTIATE_TEST_SUITE_P(AllKernels, Blake3Kernel, ::testing::Values("avx2", "avx512"),
                         [](const auto& p) { return std::string(p.param); });

TEST(Blake3, FinalizeDoesNotConsumeState) {
  auto in = vector_input(3000);
  Blake3 h;
  h.update(ByteSpan(in).first(1500));
  auto mid = h.digest();
  EXPECT_EQ(mid, blake3(ByteSpan(in).first(1500)));
  h.update(ByteSpan(in).subspan(1500));
  EXPECT_EQ(h.digest(), blake3(in));
}

TEST(Blake3, ParallelMatchesSequentialOnLargeInputs) {
  std::mt19937_64 rng(7);
  for (std::size_t n : {std::size_t{2} << 20, (std::size_t{2} << 20) + 1, (std::size_t{5} << 20) + 777,
                        std::size_t{8} << 20, (std::size_t{9} << 20) - 1}) {
    ByteVector in(n);
    for (auto& b : in) b = std::byte(rng());
    Blake3 inc;
    for (std::size_t pos = 0; pos < n; pos += 100003) inc.update(ByteSpan(in).subspan(pos, std::min<std::size_t>(100003, n - pos)));
    auto seq = inc.digest();
    EXPECT_EQ(blake3(in), seq) << n;
    EXPECT_EQ(blake3_parallel(in, 2), seq) << n;
    EXPECT_EQ(blake3_parallel(in, 4), seq) << n;
    EXPECT_EQ(blake3_parallel(in, 0), seq) << n;
  }
}

TEST(Blake3, HexRoundTripAndRejects) {
  Digest d = blake3(vector_input(10));
  Digest back{};
  ASSERT_TRUE(parse_hex_digest(to_hex(d), back));
  EXPECT_EQ(back, d);
  std::string upper = to_hex(d);
  for (auto& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  ASSERT_TRUE(parse_hex_digest(upper, back));
  EXPECT_EQ(back, d);
  EXPECT_FALSE(parse_hex_digest(to_hex(d).substr(1), back));
  EXPECT_FALSE(parse_hex_digest(to_hex(d) + "0", back));
  std::string bad = to_hex(d);
  bad[5] = 'g';
  EXPECT_FALSE(parse_hex_digest(bad, back));
}

}  // namespace
}  // namespace mithril::util
