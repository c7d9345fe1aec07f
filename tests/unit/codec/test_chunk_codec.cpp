#include "codec/chunk_codec.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <random>

#include "mithril/error.hpp"
#include "util/xxh3.hpp"
#include "test_helpers.hpp"

using namespace mithril;
using namespace mithril::codec;

namespace {

// n floats ~ N(0, 0.02) as 16-bit values: `half` maps a float's bits to its own.
template <class Half>
util::ByteVector half_weights(std::size_t n, std::uint64_t seed, Half half) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  util::ByteVector out(n * 2);
  for (std::size_t i = 0; i < n; ++i) {
    const float f = dist(rng);
    std::uint32_t bits;
    std::memcpy(&bits, &f, 4);
    const auto h = static_cast<std::uint16_t>(half(bits));
    std::memcpy(out.data() + 2 * i, &h, 2);
  }
  return out;
}

util::ByteVector bf16_weights(std::size_t n, std::uint64_t seed) {
  return half_weights(n, seed, [](std::uint32_t x) { return x >> 16; });
}

// fp32 weights ~ N(0, 0.02) whose runs of 64 are scaled by 1/4, 1 or 4 (rows
// of a trained matrix differ in scale): neighbouring exponents go together,
// which the pair symbols of plane codec 5 see.
util::ByteVector scaled_fp32(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  util::ByteVector out(n * 4);
  float scale = 1;
  for (std::size_t i = 0; i < n; ++i) {
    if (i % 64 == 0) scale = std::array<float, 3>{0.25f, 1.0f, 4.0f}[rng() % 3];
    const float f = scale * dist(rng);
    std::memcpy(out.data() + 4 * i, &f, 4);
  }
  return out;
}

std::vector<PlaneCodec> codecs_of(const EncodedChunk& e) {
  std::vector<PlaneCodec> v;
  if (e.layout == container::Layout::planes)
    for (unsigned k = 0; k < e.width; ++k) v.push_back(static_cast<PlaneCodec>(e.payload[1 + 5 * k]));
  return v;
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

// Stored planes beside a coded one: the decoder cuts each piece's coded
// plane in parts and prefetches the stored planes' next piece between them;
// the last piece of these chunks is 1 to 1000 elements long (a piece is
// 32 KiB of output), shorter than one part or not a whole number of them.
TEST(ChunkCodec, StoredBesideCodedPlanesRoundTripWhateverTheLastPiece) {
  ChunkEncoder enc(3);
  for (std::size_t last : {1u, 5u, 7u, 8u, 63u, 64u, 65u, 1000u}) {
    const auto bf16 = bf16_weights(2 * 16384 + last, last);
    const auto f32 = scaled_fp32(2 * 8192 + last, last);
    for (const auto& [raw, width] : {std::pair{&bf16, 2u}, std::pair{&f32, 4u}}) {
      const auto codecs = codecs_of(enc.encode(*raw, ChunkKind{width, true, true}));
      ASSERT_EQ(codecs.size(), width) << last;
      EXPECT_NE(std::count(codecs.begin(), codecs.end(), PlaneCodec::stored), 0) << width << " " << last;
      EXPECT_NE(std::count(codecs.begin(), codecs.end(), PlaneCodec::stored), static_cast<long>(width))
          << width << " " << last;
      EXPECT_EQ(roundtrip(enc, *raw, ChunkKind{width, true, true}), *raw) << width << " " << last;
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

// encode(apart): the last plane's coding left in the encoder's buffer as the
// tail; payload + tail are the bytes of the contiguous encoding (bf16, fp32
// with a coded exponent plane, a delta residual, bytes stored raw).
TEST(ChunkCodec, TailApartIsTheContiguousPayloadsEnd) {
  const auto bf16 = bf16_weights(1 << 17, 11);
  util::ByteVector fp32(bf16.size() * 2);
  for (std::size_t i = 0; i < bf16.size() / 2; ++i) std::memcpy(fp32.data() + 4 * i + 2, bf16.data() + 2 * i, 2);
  auto next = bf16;
  for (std::size_t i = 0; i < next.size(); i += 64) next[i] ^= std::byte{1};
  const auto noise = test::random_bytes(50000, 4);
  struct Case {
    util::ByteSpan raw;
    ChunkKind kind;
    util::ByteSpan base;
    bool has_tail;
  };
  const Case cases[] = {{bf16, ChunkKind{2, true, true}, {}, true},
                        {fp32, ChunkKind{4, true, true}, {}, true},
                        {next, ChunkKind{2, true, true}, bf16, true},
                        {noise, ChunkKind{4, true, true}, {}, false}};
  for (const auto& c : cases) {
    ChunkEncoder whole_enc(3), apart_enc(3);
    const EncodedChunk whole = whole_enc.encode(c.raw, c.kind, c.base);
    const EncodedChunk apart = apart_enc.encode(c.raw, c.kind, c.base, nullptr, true);
    EXPECT_TRUE(whole.tail.empty());
    EXPECT_EQ(!apart.tail.empty(), c.has_tail) << c.kind.width;
    util::ByteVector joined(apart.payload.begin(), apart.payload.end());
    joined.insert(joined.end(), apart.tail.begin(), apart.tail.end());
    EXPECT_EQ(joined, util::ByteVector(whole.payload.begin(), whole.payload.end())) << c.kind.width;
    EXPECT_EQ(apart.size(), whole.size());
    EXPECT_EQ(apart.layout, whole.layout);
  }
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

// An exponent plane of 64 KiB or more is coded two bytes a symbol (plane
// codec 5) at every level where that comes near the order-0 bound, here
// below it; levels 10 and up where it is the smaller coding. It decodes the
// same whole (width 1, in place) and a piece at a time (grouped planes), and
// a damaged one is caught.
TEST(ChunkCodec, ExponentPlanesAreCodedInPairs) {
  const auto raw = scaled_fp32((1 << 18) + 1, 31);  // a 1-byte tail too
  const ChunkKind kind{4, true, true};
  for (int level : {1, 3, 12}) {
    ChunkEncoder enc(level);
    EXPECT_EQ(codecs_of(enc.encode(raw, kind)).back(), PlaneCodec::rans_pairs) << level;
    EXPECT_EQ(roundtrip(enc, raw, kind), raw) << level;
  }
  ChunkEncoder enc(3);
  util::ByteVector exps(raw.size() / 4);
  for (std::size_t i = 0; i < exps.size(); ++i)
    exps[i] = static_cast<std::byte>((static_cast<unsigned>(raw[4 * i + 3]) << 1 | static_cast<unsigned>(raw[4 * i + 2]) >> 7) & 0xff);
  EXPECT_EQ(codecs_of(enc.encode(exps, ChunkKind{1, true, true})).front(), PlaneCodec::rans_pairs);
  EXPECT_EQ(roundtrip(enc, exps, ChunkKind{1, true, true}), exps);
  // Not for integers (nor for an fp16 high byte: rans_pairs refuses its
  // many values, test_rans_pairs.cpp).
  EXPECT_NE(codecs_of(enc.encode(raw, ChunkKind{4, false, true})).back(), PlaneCodec::rans_pairs);
  const auto e = enc.encode(raw, kind);
  util::ByteVector bad(e.payload.begin(), e.payload.end());
  bad[bad.size() - 50] ^= std::byte{0x08};
  util::ByteVector out(raw.size());
  ChunkDecoder dec;
  EXPECT_THROW(dec.decode(bad, record_for(e, raw), out, {}, "chunk 4"), Error);
}

// fp16 weights ~ N(0, 0.02): normal values rounded to nearest even,
// subnormal ones truncated.
util::ByteVector fp16_weights(std::size_t n, std::uint64_t seed) {
  return half_weights(n, seed, [](std::uint32_t x) {
    const std::uint32_t sign = (x >> 16) & 0x8000u;
    const int e = static_cast<int>((x >> 23) & 0xff) - 127 + 15;
    if (e >= 1) {
      const std::uint32_t m = x & 0x7fffffu;
      const std::uint32_t round = ((m >> 12) & 1u) & ((m & 0x2fffu) != 0 ? 1u : 0u);
      return sign | ((static_cast<std::uint32_t>(e) << 10) + (m >> 13) + round);
    }
    if (e >= -10) return sign | (((x & 0x7fffffu) | 0x800000u) >> (14 - e));
    return sign;  // |f| < 2^-25: zero
  });
}

// An fp16 chunk's high-byte plane (too many values for pairs) is split at
// levels 1-2 — its exponent bits in pairs, three mantissa bits stored —
// for ~1.5% more on that plane; the default level keeps one symbol a byte
// there, and levels 10 and up the smaller (one symbol a byte here).
TEST(ChunkCodec, FastLevelsSplitAnFp16HighByte) {
  const auto raw = fp16_weights((1 << 18) + 3, 41);
  const ChunkKind kind{2, true, true};
  ChunkEncoder fast(1), normal(3), high(12);
  const EncodedChunk f = fast.encode(raw, kind);
  ASSERT_EQ(f.layout, container::Layout::planes);
  EXPECT_EQ(f.group_mode, static_cast<std::uint8_t>(GroupMode::rotl1));
  EXPECT_EQ(codecs_of(f).back(), PlaneCodec::rans_split);
  const std::size_t fast_size = f.payload.size();
  EXPECT_NE(codecs_of(normal.encode(raw, kind)).back(), PlaneCodec::rans_split);
  EXPECT_NE(codecs_of(high.encode(raw, kind)).back(), PlaneCodec::rans_split);
  std::size_t normal_size = 0;
  EXPECT_EQ(roundtrip(normal, raw, kind, {}, &normal_size), raw);
  EXPECT_EQ(roundtrip(fast, raw, kind), raw);
  EXPECT_GT(fast_size, normal_size);
  EXPECT_LT(static_cast<double>(fast_size), 1.01 * static_cast<double>(normal_size));
  // A residual chunk against a base splits and decodes the same way.
  util::ByteVector next = raw;
  for (std::size_t i = 0; i < next.size(); i += 2000) next[i] ^= std::byte{1};
  EXPECT_EQ(roundtrip(fast, next, kind, raw), next);
  // A damaged stored low bit is caught by the chunk's checksum.
  util::ByteVector bad(f.payload.begin(), f.payload.end());
  bad[bad.size() - 100] ^= std::byte{0x10};
  util::ByteVector out(raw.size());
  ChunkDecoder dec;
  EXPECT_THROW(dec.decode(bad, record_for(f, raw), out, {}, "chunk 2"), Error);
}

// Levels 10 and up keep whichever of pairs and one symbol a byte is smaller:
// never larger than the default level's coding.
TEST(ChunkCodec, HighLevelsKeepTheSmallerOfPairsAndRans) {
  const ChunkKind kind{2, true, true};
  for (std::size_t n : {std::size_t{1} << 17, std::size_t{1} << 18, std::size_t{1} << 19}) {
    const auto raw = bf16_weights(n, n + 1);
    ChunkEncoder normal(3), high(12);
    std::size_t normal_size = 0, high_size = 0;
    EXPECT_EQ(roundtrip(normal, raw, kind, {}, &normal_size), raw);
    EXPECT_EQ(roundtrip(high, raw, kind, {}, &high_size), raw);
    EXPECT_LE(high_size, normal_size) << n;
  }
}

// Levels 1-2 code a bf16 chunk's exponent plane that pairs do not take
// (under 64 KiB) with Huffman (plane codec 4), a little larger than rANS at
// the default level, and it decodes the same whether whole (width 1, in
// place) or a piece at a time (grouped planes); delta residual planes
// (mostly zeros, where Huffman pays a bit a byte) stay rANS or zstd unless
// they are all zeros.
TEST(ChunkCodec, FastLevelsCodeExponentPlanesWithHuffman) {
  const auto raw = bf16_weights(60003, 21);
  const ChunkKind kind{2, true, true};
  auto codecs = [](const EncodedChunk& e) {
    std::vector<PlaneCodec> v;
    for (unsigned k = 0; k < e.width; ++k) v.push_back(static_cast<PlaneCodec>(e.payload[1 + 5 * k]));
    return v;
  };
  ChunkEncoder fast(1), normal(3);
  std::size_t fast_size = 0, normal_size = 0;
  EXPECT_EQ(roundtrip(fast, raw, kind, {}, &fast_size), raw);
  EXPECT_EQ(roundtrip(normal, raw, kind, {}, &normal_size), raw);
  EXPECT_EQ(codecs(fast.encode(raw, kind)).back(), PlaneCodec::huff0);
  EXPECT_NE(codecs(normal.encode(raw, kind)).back(), PlaneCodec::huff0);
  EXPECT_GT(fast_size, normal_size);
  EXPECT_LT(static_cast<double>(fast_size), 1.03 * static_cast<double>(normal_size));
  // One plane (width 1, decoded in place), piece by piece through hooks too.
  util::ByteVector exps(raw.size() / 2);
  for (std::size_t i = 0; i < exps.size(); ++i) exps[i] = raw[2 * i + 1];
  const EncodedChunk one = fast.encode(exps, ChunkKind{1, true, true});
  ASSERT_EQ(one.layout, container::Layout::planes);
  EXPECT_EQ(codecs(one).front(), PlaneCodec::huff0);
  EXPECT_EQ(roundtrip(fast, exps, ChunkKind{1, true, true}), exps);
  // A residual against a nearby base: its planes are mostly zeros.
  util::ByteVector next = raw;
  for (std::size_t i = 0; i < next.size(); i += 64) next[i] ^= std::byte{1};
  const EncodedChunk delta = fast.encode(next, kind, raw);
  ASSERT_EQ(delta.layout, container::Layout::planes);
  for (unsigned k = 0; k < delta.width; ++k)  // Huffman only for an all-zero plane (a 2-byte constant block)
    if (static_cast<PlaneCodec>(delta.payload[1 + 5 * k]) == PlaneCodec::huff0) {
      EXPECT_EQ(util::load_le<std::uint32_t>(delta.payload.data() + 2 + 5 * k), 2u) << k;
    }
  EXPECT_EQ(roundtrip(fast, next, kind, raw), next);
  // A damaged Huffman plane is caught, naming the chunk.
  const EncodedChunk e = fast.encode(raw, kind);
  util::ByteVector bad(e.payload.begin(), e.payload.end());
  bad[bad.size() - 100] ^= std::byte{0x40};
  util::ByteVector out(raw.size());
  ChunkDecoder dec;
  EXPECT_THROW(dec.decode(bad, record_for(e, raw), out, {}, "chunk 9"), Error);
}

// Levels 1-2 never store a plane that level 3 codes (where the Huffman
// encoder's room for each slice's worst case does not fit, rANS codes it),
// planes under 16 KiB stay rANS, and the cost stays within a few percent.
TEST(ChunkCodec, FastLevelsCodeEveryPlaneTheDefaultCodes) {
  ChunkEncoder fast(1), normal(3);
  const ChunkKind kind{2, true, true};
  for (std::size_t n : {40u, 100u, 1000u, 8191u, 16383u, 16384u, 16385u, 40000u}) {
    const auto raw = bf16_weights(n, n);
    auto exponent_codec = [](const EncodedChunk& e) {
      return e.layout == container::Layout::planes ? static_cast<PlaneCodec>(e.payload[1 + 5]) : PlaneCodec::stored;
    };
    const EncodedChunk a = normal.encode(raw, kind);
    const PlaneCodec normal_codec = exponent_codec(a);
    const std::size_t normal_size = a.payload.size();
    const EncodedChunk b = fast.encode(raw, kind);
    const PlaneCodec fast_codec = exponent_codec(b);
    if (normal_codec != PlaneCodec::stored) {
      EXPECT_NE(fast_codec, PlaneCodec::stored) << n;
    }
    EXPECT_EQ(fast_codec == PlaneCodec::huff0, n >= k_huff_min_plane) << n;
    EXPECT_LE(static_cast<double>(b.payload.size()), 1.03 * static_cast<double>(normal_size)) << n;
    EXPECT_EQ(roundtrip(fast, raw, kind), raw) << n;
  }
}

// Hooks::prepare sees out in pieces that tile it front to back, each before
// any of its bytes is written (fresh pages are mapped there); written(n)
// never reports bytes beyond what was prepared. Every layout: grouped planes
// ungrouped in pieces (with a tail), one plane decoded in place, raw, and a
// residual against a base.
TEST(ChunkCodec, HooksPrepareEachPieceBeforeItIsWritten) {
  ChunkEncoder enc(3);
  const auto bf16 = bf16_weights((3 << 19) + 5, 11);
  auto fp32ish = bf16_weights(1 << 19, 12);  // 1 MiB of 4-byte elements
  fp32ish.push_back(std::byte{7});           // and a 1-byte tail
  const auto base = bf16_weights(300001, 13);
  auto target = base;
  for (std::size_t i = 0; i < target.size(); i += 7) target[i] ^= std::byte{1};
  struct Case {
    const char* name;
    util::ByteVector raw;
    ChunkKind kind;
    util::ByteVector base;
  };
  const std::vector<Case> cases = {{"bf16 grouped", bf16, ChunkKind{2, true, true}, {}},
                                   {"4-byte grouped with a tail", fp32ish, ChunkKind{4, true, true}, {}},
                                   {"one plane", bf16, ChunkKind{1, false, true}, {}},
                                   {"raw", test::random_bytes(700001, 5), ChunkKind{4, true, true}, {}},
                                   {"residual", target, ChunkKind{2, true, true}, base},
                                   {"empty", {}, ChunkKind{2, true, true}, {}}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const EncodedChunk e = enc.encode(c.raw, c.kind, c.base);
    const util::ByteVector payload(e.payload.begin(), e.payload.end());
    const auto rec = record_for(e, c.raw);
    const std::string name = c.name;
    if (name == "raw") {
      EXPECT_EQ(e.layout, container::Layout::raw);
    } else if (name == "residual") {
      EXPECT_NE(e.residual, container::Residual::none);
    } else if (name == "one plane") {
      EXPECT_EQ(e.width, 1u);
    }
    util::ByteVector out(c.raw.size(), std::byte{0xEE});
    std::size_t prepared = 0, calls = 0, reported = 0;
    bool ok = true;
    ChunkDecoder::Hooks hooks;
    hooks.prepare = [&](util::MutableByteSpan piece) {
      ++calls;
      ok = ok && piece.data() == out.data() + prepared && piece.size() <= out.size() - prepared;
      for (const std::byte b : piece) ok = ok && b == std::byte{0xEE};
      prepared += piece.size();
    };
    hooks.written = [&](std::size_t n) {
      ok = ok && n <= prepared && n >= reported;
      reported = n;
    };
    ChunkDecoder dec;
    dec.decode(payload, rec, out, c.base, "test chunk", &hooks);
    EXPECT_TRUE(ok);
    EXPECT_EQ(prepared, out.size());
    EXPECT_GE(calls, 1u);
    EXPECT_EQ(reported, out.size());
    EXPECT_EQ(out, c.raw);
  }
  // The grouped layouts are prepared a piece at a time, not all at once.
  const EncodedChunk e = enc.encode(bf16, ChunkKind{2, true, true});
  ASSERT_EQ(e.layout, container::Layout::planes);
  const util::ByteVector payload(e.payload.begin(), e.payload.end());
  util::ByteVector out(bf16.size());
  std::vector<std::size_t> sizes;
  ChunkDecoder::Hooks hooks;
  hooks.prepare = [&](util::MutableByteSpan piece) { sizes.push_back(piece.size()); };
  ChunkDecoder().decode(payload, record_for(e, bf16), out, {}, "test chunk", &hooks);
  ASSERT_EQ(sizes.size(), (bf16.size() + ChunkDecoder::k_prepare_piece - 1) / ChunkDecoder::k_prepare_piece);
  for (std::size_t i = 0; i + 1 < sizes.size(); ++i) EXPECT_EQ(sizes[i], ChunkDecoder::k_prepare_piece);
}

// A reader given to encode() is called over the whole chunk, in order, in
// pieces that tile it, and the payload is the one encode() makes without it:
// grouped chunks read a piece at a time as they are grouped, residual
// chunks (read whole first) too.
TEST(ChunkCodec, ReaderTilesTheChunkAndChangesNothing) {
  const auto bf16 = bf16_weights((1 << 20) + 3, 21);
  auto next = bf16;
  for (std::size_t i = 0; i < next.size(); i += 5) next[i] ^= std::byte{1};
  struct Case {
    const char* name;
    util::ByteVector raw;
    ChunkKind kind;
    util::ByteVector base;
  };
  const std::vector<Case> cases = {{"bf16 with a tail byte", bf16, ChunkKind{2, true, true}, {}},
                                   {"bytes", bf16, ChunkKind{1, false, false}, {}},
                                   {"random", test::random_bytes(300001, 4), ChunkKind{4, true, true}, {}},
                                   {"residual", next, ChunkKind{2, true, true}, bf16},
                                   {"empty", {}, ChunkKind{4, true, true}, {}}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    ChunkEncoder plain(3), reading(3);
    const EncodedChunk a = plain.encode(c.raw, c.kind, c.base);
    std::size_t covered = 0;
    bool in_order = true;
    std::mt19937 rng(3);
    const ChunkEncoder::Reader read = [&](std::size_t at) {
      in_order = in_order && at == covered;
      covered = std::min(c.raw.size(), at + 1 + rng() % 200000);
      return covered;
    };
    const EncodedChunk b = reading.encode(c.raw, c.kind, c.base, &read);
    EXPECT_TRUE(in_order);
    EXPECT_EQ(covered, c.raw.size());
    EXPECT_EQ(a.layout, b.layout);
    EXPECT_EQ(a.group_mode, b.group_mode);
    EXPECT_EQ(a.residual, b.residual);
    EXPECT_TRUE(std::equal(a.payload.begin(), a.payload.end(), b.payload.begin(), b.payload.end()));
  }
  // A reader that stops advancing is a bug, reported, not a hang.
  ChunkEncoder enc(3);
  const ChunkEncoder::Reader stuck = [](std::size_t at) { return at; };
  EXPECT_THROW(enc.encode(bf16, ChunkKind{2, true, true}, {}, &stuck), Error);
}

// Hooks::cold_output (non-temporal stores through an L1 stage) writes the
// same bytes as the ordinary path, at every alignment of out, for every
// width, for raw and grouped chunks and for chunks longer than a stage.
TEST(ChunkCodec, ColdOutputWritesTheSameBytes) {
  ChunkEncoder enc(3);
  ChunkDecoder dec;
  ChunkDecoder::Hooks cold;
  cold.cold_output = true;
  for (unsigned width : {1u, 2u, 4u, 8u}) {
    for (std::size_t n : {0u, 5u, 64u, 1000u, 70001u, 300000u}) {
      for (bool noise : {false, true}) {
        // bf16-like weights give grouped chunks; noise gives raw ones.
        auto raw = noise ? test::random_bytes(n, n + width) : bf16_weights((n + 1) / 2, n + width);
        raw.resize(n - n % width);
        const EncodedChunk e = enc.encode(raw, ChunkKind{width, true, true});
        const util::ByteVector payload(e.payload.begin(), e.payload.end());
        const auto rec = record_for(e, raw);
        for (std::size_t shift : {0u, 1u, 7u, 16u}) {
          util::ByteVector buffer(raw.size() + shift + 32, std::byte{0x5a});
          const util::MutableByteSpan out(buffer.data() + shift, raw.size());
          dec.decode(payload, rec, out, {}, "cold chunk", &cold);
          ASSERT_TRUE(std::equal(out.begin(), out.end(), raw.begin(), raw.end()))
              << "width " << width << " n " << n << " shift " << shift << " raw " << noise;
          // Nothing outside out is touched.
          for (std::size_t i = 0; i < shift; ++i) ASSERT_EQ(buffer[i], std::byte{0x5a});
          for (std::size_t i = shift + raw.size(); i < buffer.size(); ++i) ASSERT_EQ(buffer[i], std::byte{0x5a});
        }
      }
    }
  }
}

// A corrupt chunk is refused on the cold path as on the ordinary one; a raw
// chunk's bytes are checked before any of them reach out.
TEST(ChunkCodec, ColdOutputStillChecksEveryChunk) {
  ChunkEncoder enc(3);
  ChunkDecoder dec;
  ChunkDecoder::Hooks cold;
  cold.cold_output = true;
  const auto weights = bf16_weights(1 << 17, 21);
  const EncodedChunk e = enc.encode(weights, ChunkKind{2, true, true});
  ASSERT_NE(e.layout, container::Layout::raw);
  util::ByteVector bad(e.payload.begin(), e.payload.end());
  bad[bad.size() / 2] ^= std::byte{0x10};
  util::ByteVector out(weights.size());
  EXPECT_THROW(dec.decode(bad, record_for(e, weights), out, {}, "chunk", &cold), Error);

  const auto noise = test::random_bytes(1 << 18, 22);
  const EncodedChunk r = enc.encode(noise, ChunkKind{4, true, true});
  ASSERT_EQ(r.layout, container::Layout::raw);
  util::ByteVector bad_raw(r.payload.begin(), r.payload.end());
  bad_raw[12345] ^= std::byte{1};
  util::ByteVector untouched(noise.size(), std::byte{0x33});
  EXPECT_THROW(dec.decode(bad_raw, record_for(r, noise), untouched, {}, "chunk", &cold), Error);
  EXPECT_TRUE(std::all_of(untouched.begin(), untouched.end(), [](std::byte b) { return b == std::byte{0x33}; }));
}

// The stage is used only where it pays: old, resident memory of at least a
// prepare piece.
TEST(ChunkCodec, ColdOutputPaysOnlyForLargeResidentMemory) {
  util::ByteVector touched(1 << 20, std::byte{1});
  EXPECT_TRUE(ChunkDecoder::cold_output_pays(touched));
  EXPECT_FALSE(ChunkDecoder::cold_output_pays(util::MutableByteSpan(touched).first(1000)));
  EXPECT_FALSE(ChunkDecoder::cold_output_pays({}));
}

// Residual (delta) chunks are ungrouped, folded into their base and checked
// a piece at a time: xor and arithmetic residuals, 2- and 4-byte elements
// with a tail, chunks of several pieces, into ordinary and into cold memory
// (the L1 stage), all give the target's bytes; a wrong base is refused.
TEST(ChunkCodec, ResidualChunksDecodePieceByPiece) {
  ChunkEncoder enc(3);
  ChunkDecoder dec;
  ChunkDecoder::Hooks cold;
  cold.cold_output = true;
  bool saw_xor = false, saw_sub = false;
  for (unsigned width : {2u, 4u}) {
    for (std::size_t n : {std::size_t{1001}, std::size_t{300003}, std::size_t{1} << 20}) {
      for (int kind = 0; kind < 2; ++kind) {
        auto base = bf16_weights((n + 1) / 2, n + width);
        base.resize(n);
        auto target = base;
        std::mt19937_64 rng(n + kind);
        if (kind == 0) {
          // Flipped low bits: an xor residual.
          for (std::size_t i = 0; i < n; i += width) target[i] ^= static_cast<std::byte>(rng() & 3);
        } else {
          // Small integer steps of whole elements, carries included: a sub residual.
          for (std::size_t i = 0; i + width <= n; i += width) {
            std::uint32_t v = 0;
            std::memcpy(&v, target.data() + i, width);
            v += static_cast<std::uint32_t>(rng() % 5) - 2;
            std::memcpy(target.data() + i, &v, width);
          }
        }
        const EncodedChunk e = enc.encode(target, ChunkKind{width, true, true}, base);
        if (e.residual == container::Residual::xor_) saw_xor = true;
        if (e.residual == container::Residual::sub) saw_sub = true;
        const util::ByteVector payload(e.payload.begin(), e.payload.end());
        const auto rec = record_for(e, target);
        SCOPED_TRACE("width " + std::to_string(width) + " n " + std::to_string(n) + " kind " + std::to_string(kind));
        for (const ChunkDecoder::Hooks* h : {static_cast<const ChunkDecoder::Hooks*>(nullptr), static_cast<const ChunkDecoder::Hooks*>(&cold)}) {
          util::ByteVector out(n, std::byte{0x5a});
          dec.decode(payload, rec, out, base, "delta chunk", h);
          ASSERT_TRUE(out == target);
        }
        if (e.residual != container::Residual::none) {
          auto wrong = base;
          wrong[n / 2] ^= std::byte{0x40};
          util::ByteVector out(n);
          EXPECT_THROW(dec.decode(payload, rec, out, wrong, "delta chunk", nullptr), Error);
        }
      }
    }
  }
  EXPECT_TRUE(saw_xor);
  EXPECT_TRUE(saw_sub);
}

// Both modes' plane histograms counted in one pass equal plane_histograms()
// of each mode, the tail (n % width bytes) counted as it is in the last plane.
TEST(ChunkCodec, BothModesHistogramsEqualEachModeCountedAlone) {
  std::mt19937_64 rng(40);
  for (const unsigned width : {2u, 4u, 8u}) {
    for (const std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{8}, std::size_t{9},
                                std::size_t{63}, std::size_t{4099}, std::size_t{65536 + 5}}) {
      util::ByteVector in(n);
      // Skewed bytes (as exponents) with every top bit pattern.
      for (auto& b : in) b = std::byte(rng() % 3 == 0 ? rng() & 0xff : 0x3c | (rng() & 0x81));
      std::array<Histogram, 8> plain{}, rotl1{};
      detail::both_modes_histograms(in, width, plain, rotl1);
      for (const auto mode : {GroupMode::plain, GroupMode::rotl1}) {
        std::array<Histogram, 8> want{};
        const std::size_t whole = n - n % width;
        plane_histograms(util::ByteSpan(in).first(whole), width, mode, want);
        for (std::size_t i = whole; i < n; ++i) ++want[width - 1][static_cast<std::uint8_t>(in[i])];
        const auto& got = mode == GroupMode::plain ? plain : rotl1;
        for (unsigned k = 0; k < width; ++k)
          EXPECT_EQ(got[k], want[k]) << "width " << width << " n " << n << " plane " << k << " rotl1 "
                                     << (mode == GroupMode::rotl1);
      }
    }
  }
  std::array<Histogram, 8> a{}, b{};
  EXPECT_THROW(detail::both_modes_histograms(util::ByteVector(6), 3, a, b), Error);
}

// Over several pieces (a large chunk's sample slices): the sums of each
// piece counted alone, each piece's tail in the last plane.
TEST(ChunkCodec, BothModesHistogramsOfPiecesSumThePieces) {
  std::mt19937_64 rng(41);
  util::ByteVector bytes(70000);
  for (auto& b : bytes) b = std::byte(rng() % 3 == 0 ? rng() & 0xff : 0x3c | (rng() & 0x81));
  const util::ByteSpan all(bytes);
  for (const unsigned width : {2u, 4u, 8u}) {
    const std::array<util::ByteSpan, 4> pieces{all.subspan(0, 8192), all.subspan(9000, 4096 + 3),
                                               all.subspan(20000, 0), all.subspan(30001, 40000 - 1)};
    std::array<Histogram, 8> plain{}, rotl1{};
    detail::both_modes_histograms(pieces, width, plain, rotl1);
    std::array<Histogram, 8> want_plain{}, want_rotl1{};
    for (const auto& piece : pieces) {
      std::array<Histogram, 8> p{}, r{};
      detail::both_modes_histograms(piece, width, p, r);
      for (unsigned k = 0; k < width; ++k)
        for (unsigned v = 0; v < 256; ++v) {
          want_plain[k][v] += p[k][v];
          want_rotl1[k][v] += r[k][v];
        }
    }
    for (unsigned k = 0; k < width; ++k) {
      EXPECT_EQ(plain[k], want_plain[k]) << "width " << width << " plane " << k;
      EXPECT_EQ(rotl1[k], want_rotl1[k]) << "width " << width << " plane " << k;
    }
  }
}
