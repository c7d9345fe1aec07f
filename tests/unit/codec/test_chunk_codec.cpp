#include "codec/chunk_codec.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "mithril/error.hpp"
#include "util/xxh3.hpp"
#include "test_helpers.hpp"

using namespace mithril;
using namespace mithril::codec;

namespace {

util::ByteVector bf16_weights(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  util::ByteVector out(n * 2);
  for (std::size_t i = 0; i < n; ++i) {
    const float f = dist(rng);
    std::uint32_t bits;
    std::memcpy(&bits, &f, 4);
    const auto h = static_cast<std::uint16_t>(bits >> 16);
    std::memcpy(out.data() + 2 * i, &h, 2);
  }
  return out;
}

container::ChunkRecord record_for(const EncodedChunk& e, util::ByteSpan raw) {
  container::ChunkRecord r;
  r.raw_size = static_cast<std::uint32_t>(raw.size());
  r.stored_size = static_cast<std::uint32_t>(e.payload.size());
  r.raw_xxh3 = util::xxh3_64(raw);
  r.layout = e.layout;
  r.width = e.width;
  r.group_mode = e.group_mode;
  r.residual = e.residual;
  return r;
}

util::ByteVector roundtrip(ChunkEncoder& enc, util::ByteSpan raw, ChunkKind kind, util::ByteSpan base = {},
                           std::size_t* stored = nullptr) {
  const EncodedChunk e = enc.encode(raw, kind, base);
  const util::ByteVector payload(e.payload.begin(), e.payload.end());
  const auto rec = record_for(e, raw);
  if (stored) *stored = payload.size();
  util::ByteVector out(raw.size());
  ChunkDecoder dec;
  dec.decode(payload, rec, out, base, "test chunk");
  return out;
}

}  // namespace

TEST(ChunkCodec, RoundTripAllWidthsAndSizes) {
  ChunkEncoder enc(3);
  for (unsigned width : {1u, 2u, 4u, 8u}) {
    for (bool is_float : {false, true}) {
      for (std::size_t n : {0u, 1u, 3u, 7u, 8u, 9u, 1000u, 65537u}) {
        const auto raw = test::random_bytes(n, n * 31 + width);
        const auto out = roundtrip(enc, raw, ChunkKind{width, is_float, true});
        EXPECT_EQ(out, raw) << width << " " << n;
      }
    }
  }
}

TEST(ChunkCodec, Bf16WeightsShrinkAndRoundTrip) {
  ChunkEncoder enc(3);
  const auto raw = bf16_weights(1 << 18, 7);
  std::size_t stored = 0;
  const auto out = roundtrip(enc, raw, ChunkKind{2, true, true}, {}, &stored);
  EXPECT_EQ(out, raw);
  EXPECT_LT(stored, raw.size() * 0.8) << "bf16 weights should compress by > 1.25x";
}

TEST(ChunkCodec, IncompressibleDataIsStoredRaw) {
  ChunkEncoder enc(3);
  const auto raw = test::random_bytes(100000, 3);
  const EncodedChunk e = enc.encode(raw, ChunkKind{4, true, true});
  EXPECT_EQ(e.layout, container::Layout::raw);
  EXPECT_EQ(e.payload.size(), raw.size());
}

TEST(ChunkCodec, ResidualAgainstBaseRoundTrips) {
  ChunkEncoder enc(3);
  const auto base = bf16_weights(50000, 1);
  auto target = base;
  std::mt19937 rng(9);
  for (std::size_t i = 0; i < target.size(); i += 2)
    if (rng() % 3 == 0) target[i] = static_cast<std::byte>(static_cast<unsigned>(target[i]) ^ (rng() & 3));
  std::size_t stored_delta = 0, stored_plain = 0;
  EXPECT_EQ(roundtrip(enc, target, ChunkKind{2, true, true}, base, &stored_delta), target);
  EXPECT_EQ(roundtrip(enc, target, ChunkKind{2, true, true}, {}, &stored_plain), target);
  EXPECT_LT(stored_delta, stored_plain / 2);
}

TEST(ChunkCodec, CorruptPayloadIsDetected) {
  ChunkEncoder enc(3);
  const auto raw = bf16_weights(20000, 5);
  const EncodedChunk e = enc.encode(raw, ChunkKind{2, true, true});
  const util::ByteVector good(e.payload.begin(), e.payload.end());
  const auto rec = record_for(e, raw);
  ChunkDecoder dec;
  util::ByteVector out(raw.size());
  std::mt19937 rng(1);
  for (int trial = 0; trial < 300; ++trial) {
    auto bad = good;
    bad[rng() % bad.size()] ^= static_cast<std::byte>(1u << (rng() % 8));
    EXPECT_THROW(dec.decode(bad, rec, out, {}, "chunk"), Error);
  }
  // Truncated and extended payloads.
  EXPECT_THROW(dec.decode(util::ByteSpan(good).first(good.size() - 1), rec, out, {}, "chunk"), Error);
  auto longer = good;
  longer.push_back(std::byte{0});
  EXPECT_THROW(dec.decode(longer, rec, out, {}, "chunk"), Error);
}

TEST(ChunkCodec, PlaneWithChangingStatisticsUsesRansBlocks) {
  // fp32 weights whose first quarter is a different distribution (as rows of
  // rare tokens in an embedding table): the exponent plane codes best with
  // one table per block (plane codec 3).
  std::mt19937_64 rng(11);
  std::normal_distribution<float> wide(0.0f, 0.05f), narrow(0.0f, 0.0005f);
  const std::size_t n = 1 << 18;
  util::ByteVector raw(4 * n);
  for (std::size_t i = 0; i < n; ++i) {
    const float f = i < n / 4 ? narrow(rng) : wide(rng);
    std::memcpy(raw.data() + 4 * i, &f, 4);
  }
  ChunkEncoder enc(3);
  const EncodedChunk e = enc.encode(raw, ChunkKind{4, true, true});
  ASSERT_EQ(e.layout, container::Layout::planes);
  bool blocks = false;
  for (unsigned k = 0; k < 4; ++k) blocks |= static_cast<PlaneCodec>(e.payload[1 + 5 * k]) == PlaneCodec::rans0_blocks;
  EXPECT_TRUE(blocks);
  EXPECT_EQ(roundtrip(enc, raw, ChunkKind{4, true, true}), raw);
}
