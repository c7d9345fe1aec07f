#include "codec/rans.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "mithril/error.hpp"
#include "codec_test_helpers.hpp"
#include "test_helpers.hpp"

using namespace mithril;
namespace rans = mithril::codec::rans;
using codec::Histogram;
using util::ByteVector;

namespace {

using test::bound_bytes;
using test::hist_of;

using Gen = std::function<ByteVector(std::size_t, std::uint64_t)>;

ByteVector from_fn(std::size_t n, std::uint64_t seed, const std::function<std::uint8_t(std::mt19937_64&)>& f) {
  std::mt19937_64 rng(seed);
  ByteVector v(n);
  for (auto& b : v) b = static_cast<std::byte>(f(rng));
  return v;
}

ByteVector uniform(std::size_t n, std::uint64_t seed) { return test::random_bytes(n, seed); }

ByteVector single_symbol(std::size_t n, std::uint64_t) { return ByteVector(n, std::byte{0x7f}); }

ByteVector two_symbols(std::size_t n, std::uint64_t seed) {
  return from_fn(n, seed, [](auto& rng) -> std::uint8_t { return (rng() % 10) < 3 ? 0x41 : 0xc3; });
}

// Two-sided geometric around 128 (Laplacian-like residuals).
ByteVector laplacian(std::size_t n, std::uint64_t seed) {
  return from_fn(n, seed, [](auto& rng) -> std::uint8_t {
    std::geometric_distribution<int> g(0.3);
    const int mag = std::min(g(rng), 127);
    return static_cast<std::uint8_t>(128 + ((rng() & 1) ? mag : -mag));
  });
}

// 99.9% zeros, the rest a few low-bit flips (XOR residual of a stable plane).
ByteVector zeros_999(std::size_t n, std::uint64_t seed) {
  return from_fn(n, seed, [](auto& rng) -> std::uint8_t {
    return (rng() % 1000) == 0 ? static_cast<std::uint8_t>(1u << (rng() % 4)) : 0;
  });
}

// 99.9% zeros, the rest spread over all other byte values: the hard case for
// a 15-bit model (every rare symbol costs at least 1/32768 of the range).
ByteVector zeros_999_wide(std::size_t n, std::uint64_t seed) {
  return from_fn(n, seed, [](auto& rng) -> std::uint8_t {
    return (rng() % 1000) == 0 ? static_cast<std::uint8_t>(1 + rng() % 255) : 0;
  });
}

// 99% zeros, the rest a few small values (an XOR residual of exponent bytes).
ByteVector zeros_99(std::size_t n, std::uint64_t seed) {
  return from_fn(n, seed, [](auto& rng) -> std::uint8_t {
    if (rng() % 100) return 0;
    static constexpr std::uint8_t k_vals[] = {1, 1, 1, 1, 2, 2, 3, 4, 0x80, 0x81};
    return k_vals[rng() % 10];
  });
}

std::uint16_t to_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);  // round to nearest even (no NaNs here)
  return static_cast<std::uint16_t>(u >> 16);
}

// Top plane of rotl1-grouped bf16 weights ~ N(0, 0.02): the 8 exponent bits.
ByteVector bf16_exponents(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, 0.02f);
  ByteVector v(n);
  for (auto& b : v) {
    const std::uint16_t h = to_bf16(d(rng));
    const std::uint16_t r = static_cast<std::uint16_t>((h << 1) | (h >> 15));
    b = static_cast<std::byte>(r >> 8);
  }
  return v;
}

// All 256 values, skewed, with symbol 0x5a appearing exactly once.
ByteVector all_with_rare(std::size_t n, std::uint64_t seed) {
  ByteVector v = from_fn(n, seed, [](auto& rng) -> std::uint8_t {
    std::uint8_t s;
    do {
      s = static_cast<std::uint8_t>(rng() % 7 ? rng() % 16 : rng());
    } while (s == 0x5a);
    return s;
  });
  if (!v.empty()) v[v.size() / 2] = std::byte{0x5a};
  return v;
}

// Symbols spanning exactly `span` byte values from `first` (skewed towards
// a few in the middle, both ends present): around the widths the vector
// encoders keep their tables in registers for (avx2x: 32, AVX-512: 64 and
// 128; fp16 exponent planes span ~90-140), up to the top of the byte range.
Gen spanning(unsigned first, unsigned span) {
  return [first, span](std::size_t n, std::uint64_t seed) {
    ByteVector v = from_fn(n, seed, [&](auto& rng) -> std::uint8_t {
      return static_cast<std::uint8_t>(first + (rng() % 3 ? span / 2 + rng() % 4 : rng() % span));
    });
    if (v.size() >= 2) v.front() = static_cast<std::byte>(first), v.back() = static_cast<std::byte>(first + span - 1);
    return v;
  };
}

// A bf16 exponent plane with rare outliers: 99.7% of the symbols within 23
// values (112..134), the first one a 96, the rest far below (0..90, as zeros
// and tiny weights give): wider than 32 values, yet a window of 32 holds all
// but ~0.3%, so avx2x codes most groups from registers and the few with an
// outlier by scalar table loads.
ByteVector window_with_outliers(std::size_t n, std::uint64_t seed) {
  ByteVector v = from_fn(n, seed, [](auto& rng) -> std::uint8_t {
    if (rng() % 1000 < 3) return static_cast<std::uint8_t>(rng() % 91);
    return static_cast<std::uint8_t>(112 + rng() % 8 + (rng() % 4 ? 0 : rng() % 16));
  });
  if (v.size() >= 2) v.front() = std::byte{96}, v.back() = std::byte{0};
  return v;
}

struct Dist {
  const char* name;
  Gen gen;
};

const std::vector<Dist>& distributions() {
  static const std::vector<Dist> d = {
      {"uniform", uniform},     {"single", single_symbol},     {"two", two_symbols},
      {"laplacian", laplacian}, {"zeros999", zeros_999},       {"zeros999wide", zeros_999_wide},
      {"zeros99", zeros_99},    {"bf16exp", bf16_exponents},   {"all256rare", all_with_rare},
      {"span32top", spanning(224, 32)}, {"span33", spanning(100, 33)}, {"span64", spanning(3, 64)},
      {"span65", spanning(150, 65)}, {"span128top", spanning(128, 128)}, {"span129", spanning(10, 129)},
      {"window32outliers", window_with_outliers},
  };
  return d;
}

// Encodes with a generous buffer, decodes into an exact one, checks identity.
std::size_t round_trip(const ByteVector& data) {
  ByteVector enc(data.size() + data.size() / 8 + 4096);
  const auto size = rans::encode(data, hist_of(data), enc);
  EXPECT_TRUE(size.has_value());
  if (!size) return 0;
  EXPECT_LE(*size, enc.size());
  ByteVector dec(data.size(), std::byte{0xee});
  rans::decode(util::ByteSpan(enc.data(), *size), dec);
  EXPECT_TRUE(dec == data);
  return *size;
}

}  // namespace

TEST(Rans, RoundTripAllSizesAndDistributions) {
  const std::size_t sizes[] = {0, 1, 2, 7, 31, 32, 33, 1000, 65537, (1u << 20) + 13, (3u << 20) + 63};
  for (const auto& d : distributions()) {
    for (std::size_t n : sizes) {
      SCOPED_TRACE(std::string(d.name) + " n=" + std::to_string(n));
      round_trip(d.gen(n, n * 31 + 7));
    }
  }
}

TEST(Rans, RoundTripManySmallSizes) {
  // Every tail length of every lane count, and the small-block scale search.
  for (std::size_t n = 0; n < 300; ++n) {
    SCOPED_TRACE("n=" + std::to_string(n));
    round_trip(laplacian(n, n));
    round_trip(two_symbols(n, n + 1000));
  }
}

TEST(Rans, SizeNearOrder0Bound) {
  // ratio slack 0.5% plus a constant for header, table and lane states
  // (64 lanes x 4 bytes, about 3 of them overhead each).
  struct Case {
    const char* name;
    Gen gen;
    double slack;
  };
  const Case cases[] = {
      {"bf16exp", bf16_exponents, 0.005}, {"laplacian", laplacian, 0.005}, {"two", two_symbols, 0.005},
      {"zeros99", zeros_99, 0.005},       {"zeros999", zeros_999, 0.005},
  };
  for (const auto& c : cases) {
    const auto data = c.gen((1u << 20) + 3, 42);
    const Histogram h = hist_of(data);
    const double bound = bound_bytes(h);
    const std::size_t size = round_trip(data);
    SCOPED_TRACE(c.name);
    EXPECT_LE(static_cast<double>(size), bound * (1 + c.slack) + 320) << "bound " << bound;
    // Order-0 coding can never beat the bound by more than the state slack.
    EXPECT_GE(static_cast<double>(size), bound - 16 * 8);
  }
}

TEST(Rans, BeatsHuffmanFloorOnMostlyZeros) {
  // Huffman needs >= 1 bit per byte; rANS should be far below.
  const auto data = zeros_99(1 << 20, 5);
  const std::size_t size = round_trip(data);
  EXPECT_LT(size * 8, data.size() / 5);
}

TEST(Rans, ManyRareSymbolsStayWithinModelPrecision) {
  // Known limit of a 15-bit model: 255 symbols at ~4e-6 each cost 15 bits
  // instead of ~18 and steal ~0.8% of the range from the zeros. Still far
  // below Huffman's floor (1 bit/byte = 131072 bytes here).
  const auto data = zeros_999_wide((1u << 20) + 3, 42);
  const double bound = bound_bytes(hist_of(data));
  const std::size_t size = round_trip(data);
  EXPECT_LE(static_cast<double>(size), bound * 1.6 + 200) << "bound " << bound;
  EXPECT_LT(size, 5000u);
}

// encode_fast() stays at scale 12 or below (one packed table load a symbol
// in the decoder) where encode() takes a finer one for many rare symbols,
// at some cost in size, and decodes the same; where encode() takes scale 12
// anyway the two blocks are the same bytes.
namespace {

// `data` coded by one of the rANS encoders (encode, encode_fast, encode_lanes).
using EncodeFn = std::optional<std::size_t> (*)(util::ByteSpan, const Histogram&, util::MutableByteSpan);
ByteVector encode_by(EncodeFn fn, const ByteVector& data) {
  ByteVector out(data.size() + 1024);
  const auto n = fn(data, hist_of(data), out);
  EXPECT_TRUE(n.has_value());
  out.resize(n.value_or(0));
  return out;
}

std::optional<std::size_t> encode_8_lanes(util::ByteSpan in, const Histogram& hist, util::MutableByteSpan out) {
  return rans::encode_lanes(in, hist, out, 3);
}

}  // namespace

TEST(Rans, EncodeFastStaysAtTheCoarseScales) {
  auto scale_of = [](const ByteVector& block) { return (static_cast<unsigned>(block[1]) & 15) + 8; };
  auto encode = [](const ByteVector& data, bool fast) { return encode_by(fast ? rans::encode_fast : rans::encode, data); };
  const auto rare = zeros_999_wide(1u << 20, 43);
  const ByteVector fine = encode(rare, false), coarse = encode(rare, true);
  ASSERT_GT(scale_of(fine), 12u);
  EXPECT_LE(scale_of(coarse), 12u);
  EXPECT_GT(coarse.size(), fine.size());
  ByteVector back(rare.size());
  rans::decode(coarse, back);
  EXPECT_EQ(back, rare);
  const auto exps = bf16_exponents(1 << 18, 44);
  EXPECT_EQ(encode(exps, true), encode(exps, false));
  EXPECT_EQ(scale_of(encode(exps, true)), 12u);
}

TEST(Rans, EncodeLanesGivesSmallBlocksEightLanes) {
  auto lanes_of = [](const ByteVector& block) { return 1u << (static_cast<unsigned>(block[1]) >> 4); };
  auto encode = [](const ByteVector& data, bool short_block) {
    return encode_by(short_block ? encode_8_lanes : rans::encode, data);
  };
  for (const std::size_t n : {std::size_t{9}, std::size_t{300}, std::size_t{2003}, std::size_t{40000}}) {
    const auto data = bf16_exponents(n, n);
    const ByteVector plain = encode(data, false), wide = encode(data, true);
    ASSERT_GE(plain.size(), 2u);
    EXPECT_EQ(lanes_of(wide), std::max(8u, lanes_of(plain))) << n;
    // Only the extra lanes' states: 4 bytes each (less what they save).
    EXPECT_LE(wide.size(), plain.size() + 4 * (lanes_of(wide) - lanes_of(plain))) << n;
    ByteVector back(n);
    rans::decode(wide, back);
    EXPECT_EQ(back, data) << n;
  }
  // Fewer bytes than 8 lanes: as many lanes as the block allows.
  const auto tiny = bf16_exponents(5, 5);
  ByteVector back(5);
  rans::decode(encode(tiny, true), back);
  EXPECT_EQ(back, tiny);
}

// A small block's lane count is not only what its payload pays for (~0.4%
// of it in states): up to 16 lanes while the states stay within 1/128 of
// the raw size, so that a few-KiB plane of low entropy does not decode one
// symbol at a time.
TEST(Rans, SmallBlocksGetLanesUpToARawSizeShare) {
  auto lanes_of = [](const ByteVector& block) { return 1u << (static_cast<unsigned>(block[1]) >> 4); };
  // (raw size, lanes at least): 4 bytes a lane, at most 32 lanes and n / 64
  // bytes of them.
  const std::pair<std::size_t, unsigned> cases[] = {{250, 1},   {512, 2},    {1024, 4},   {2560, 8},
                                                    {4096, 16}, {8192, 32},  {20000, 32}, {40000, 32}};
  for (const auto& [n, want] : cases) {
    const auto data = zeros_99(n, n);  // codes to ~0.1 bits a byte: its payload pays for 1 lane
    const ByteVector block = encode_by(rans::encode, data);
    EXPECT_GE(lanes_of(block), want) << n;
    EXPECT_LE(4 * lanes_of(block), std::max<std::size_t>(n / 64, 4)) << n;
    EXPECT_LE(lanes_of(block), 32u) << n;
    ByteVector back(n);
    rans::decode(block, back);
    EXPECT_EQ(back, data) << n;
  }
}

TEST(Rans, SmallBlocksHaveCompactTables) {
  for (std::size_t n : {256u, 1024u, 4096u}) {
    const auto data = bf16_exponents(n, n);
    const double bound = bound_bytes(hist_of(data));
    const std::size_t size = round_trip(data);
    EXPECT_LE(static_cast<double>(size), bound * 1.03 + 48) << "n=" << n << " bound " << bound;
  }
}

TEST(Rans, ConstantBlockIsTiny) {
  for (std::size_t n : {1u, 2u, 1000u, 1u << 20}) {
    const ByteVector data(n, std::byte{0x3c});
    EXPECT_LE(round_trip(data), 4u);
  }
}

TEST(Rans, RandomDataDoesNotFitInItsOwnSize) {
  const auto data = uniform(1 << 16, 3);
  ByteVector out(data.size());
  EXPECT_FALSE(rans::encode(data, hist_of(data), out).has_value());
}

TEST(Rans, NulloptExactlyWhenTooSmallAndNoWritePastEnd) {
  constexpr std::size_t k_guard = 64;
  for (const auto& d : distributions()) {
    for (std::size_t n : {0u, 1u, 33u, 1000u, 70000u}) {
      SCOPED_TRACE(std::string(d.name) + " n=" + std::to_string(n));
      const auto data = d.gen(n, 9);
      const Histogram h = hist_of(data);
      ByteVector big(n + 4096);
      const auto full = rans::encode(data, h, big);
      ASSERT_TRUE(full.has_value());
      const ByteVector expect(big.begin(), big.begin() + static_cast<std::ptrdiff_t>(*full));
      std::vector<std::size_t> caps = {0, 1, 2, *full / 2, *full - 1, *full, *full + 1};
      for (std::size_t cap : caps) {
        if (cap > *full + 1) continue;
        ByteVector buf(cap + k_guard, std::byte{0xa5});
        const auto r = rans::encode(data, h, util::MutableByteSpan(buf.data(), cap));
        for (std::size_t i = cap; i < buf.size(); ++i) ASSERT_EQ(buf[i], std::byte{0xa5}) << "cap " << cap;
        if (cap >= *full) {
          ASSERT_TRUE(r.has_value()) << "cap " << cap;
          EXPECT_EQ(*r, *full);
          EXPECT_TRUE(std::equal(expect.begin(), expect.end(), buf.begin()));
        } else {
          EXPECT_FALSE(r.has_value()) << "cap " << cap;
        }
      }
    }
  }
}

TEST(Rans, HistogramMismatchIsInvalidArgument) {
  const auto data = laplacian(100, 1);
  Histogram h = hist_of(data);
  ++h[0];
  ByteVector out(1000);
  try {
    (void)rans::encode(data, h, out);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::invalid_argument);
  }
}

namespace {

ByteVector encode_ok(const ByteVector& data) {
  ByteVector enc(data.size() + 4096);
  const auto size = rans::encode(data, hist_of(data), enc);
  if (!size) throw std::runtime_error("encode failed");
  enc.resize(*size);
  return enc;
}

void expect_corrupt(util::ByteSpan block, std::size_t out_size, const std::string& what) {
  ByteVector out(out_size);
  try {
    rans::decode(block, out);
    ADD_FAILURE() << what << ": no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::corrupt) << what;
  }
}

}  // namespace

TEST(Rans, RejectsWrongOutputSize) {
  for (const auto& d : distributions()) {
    const auto data = d.gen(5000, 17);
    const auto enc = encode_ok(data);
    if (std::string(d.name) == "single") {
      expect_corrupt(enc, 0, "constant into empty");
      continue;
    }
    for (std::size_t n : {0u, 1u, 4999u, 5001u, 10000u}) expect_corrupt(enc, n, std::string(d.name) + " size " + std::to_string(n));
  }
  expect_corrupt(encode_ok({}), 1, "empty into one byte");
}

TEST(Rans, RejectsTruncatedAndMalformedHeaders) {
  const auto data = bf16_exponents(3000, 1);
  const auto enc = encode_ok(data);
  for (std::size_t len = 0; len < enc.size(); ++len)
    expect_corrupt(util::ByteSpan(enc.data(), len), data.size(), "truncated to " + std::to_string(len));
  ByteVector bad = enc;
  bad[0] = std::byte{0x22};  // version 2
  expect_corrupt(bad, data.size(), "version");
  bad = enc;
  bad[0] = std::byte{0x13};  // unknown kind
  expect_corrupt(bad, data.size(), "kind");
  bad = enc;
  bad[1] = std::byte{0x09};  // scale 17
  expect_corrupt(bad, data.size(), "scale");
  bad = enc;
  bad[1] = std::byte{0x60};  // 64 lanes
  expect_corrupt(bad, data.size(), "lanes");
  ByteVector longer = enc;
  longer.push_back(std::byte{0});
  longer.push_back(std::byte{0});
  longer.push_back(std::byte{0});
  longer.push_back(std::byte{0});
  expect_corrupt(longer, data.size(), "extra word");
}

TEST(Rans, FuzzMutatedBlocksNeverCrash) {
  // Mutated valid blocks and raw garbage, decoded into buffers of various
  // sizes inside a guarded allocation: each must succeed or throw Error.
  std::mt19937_64 rng(20240601);
  std::vector<std::pair<ByteVector, std::size_t>> seeds;
  for (const auto& d : distributions())
    for (std::size_t n : {1u, 40u, 700u, 9000u}) seeds.emplace_back(encode_ok(d.gen(n, n)), n);
  std::size_t ok = 0, rejected = 0;
  constexpr std::size_t k_guard = 32;
  auto attempt = [&](const ByteVector& block, std::size_t out_size) {
    ByteVector out(out_size + 2 * k_guard, std::byte{0x5c});
    try {
      rans::decode(block, util::MutableByteSpan(out.data() + k_guard, out_size));
      ++ok;
    } catch (const Error& e) {
      ASSERT_EQ(e.code(), Errc::corrupt);
      ++rejected;
    }
    for (std::size_t i = 0; i < k_guard; ++i) {
      ASSERT_EQ(out[i], std::byte{0x5c});
      ASSERT_EQ(out[out.size() - 1 - i], std::byte{0x5c});
    }
  };
  for (int iter = 0; iter < 6000; ++iter) {
    ByteVector block;
    std::size_t orig = rng() % 100;
    if (iter % 10 == 0) {
      block = test::random_bytes(rng() % 200, rng());
      if (!block.empty() && (rng() & 1)) block[0] = std::byte{0x12};  // plausible tag
    } else {
      const auto& seed = seeds[rng() % seeds.size()];
      block = seed.first;
      orig = seed.second;
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits && !block.empty(); ++e) {
        switch (rng() % 4) {
          case 0: block[rng() % block.size()] ^= static_cast<std::byte>(1u << (rng() % 8)); break;
          case 1: block[rng() % block.size()] = static_cast<std::byte>(rng()); break;
          case 2: block.resize(rng() % block.size()); break;
          default: block.insert(block.begin() + static_cast<std::ptrdiff_t>(rng() % block.size()), static_cast<std::byte>(rng()));
        }
      }
    }
    const std::size_t sizes[] = {orig, orig, orig + 1, orig - std::min<std::size_t>(orig, 1), 0, rng() % 64, rng() % 20000};
    attempt(block, sizes[rng() % 7]);
    if (HasFatalFailure()) return;
  }
  EXPECT_GT(rejected, 1000u);  // the checks do fire
  (void)ok;
}

namespace {

struct Outcome {
  bool ok = false;
  ByteVector out;
};

Outcome decode_with(util::ByteSpan block, std::size_t n, rans::detail::Kernel k) {
  Outcome r;
  r.out.assign(n, std::byte{0});
  try {
    rans::detail::decode_with(block, r.out, k);
    r.ok = true;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::corrupt);
  }
  return r;
}

}  // namespace

// The vector kernels of this CPU, each checked against the scalar one; the
// ISAs this CPU lacks are printed (a CI log shows what was not covered).
std::vector<rans::detail::Kernel> vector_kernels() {
  using rans::detail::Kernel;
  std::vector<Kernel> ks;
  std::string skipped;
  for (Kernel k : rans::detail::k_all_kernels) {
    if (k == Kernel::scalar) continue;
    if (rans::detail::kernel_available(k))
      ks.push_back(k);
    else
      skipped += std::string(skipped.empty() ? "" : ", ") + std::string(rans::detail::kernel_name(k));
  }
  if (!skipped.empty()) std::printf("[  NOTE    ] rans kernels not available on this CPU, not tested: %s\n", skipped.c_str());
  return ks;
}

TEST(Rans, KernelsAgreeOnValidAndCorruptBlocks) {
  using rans::detail::Kernel;
  const auto kernels = vector_kernels();
  if (kernels.empty()) GTEST_SKIP() << "no vector kernel on this CPU";
  std::mt19937_64 rng(77);
  bool saw_packed = false, saw_wide = false;  // table layouts reached by the vector kernels
  for (const auto& d : distributions()) {
    for (std::size_t n : {5000u, 70000u, 300001u, (1u << 20) + 5}) {
      SCOPED_TRACE(std::string(d.name) + " n=" + std::to_string(n));
      const auto data = d.gen(n, n + 3);
      const auto enc = encode_ok(data);
      // Format facts (grammar in rans.cpp): kind in the tag's low nibble,
      // then (log2_lanes << 4) | (scale - 8).
      if (enc.size() > 2 && (static_cast<unsigned>(enc[0]) & 15) == 2 && (static_cast<unsigned>(enc[1]) >> 4) >= 4) {
        ((static_cast<unsigned>(enc[1]) & 15) + 8 <= 12 ? saw_packed : saw_wide) = true;
      }
      const Outcome a = decode_with(enc, n, Kernel::scalar);
      ASSERT_TRUE(a.ok && a.out == data);
      for (Kernel k : kernels) {
        SCOPED_TRACE(std::string(rans::detail::kernel_name(k)));
        const Outcome b = decode_with(enc, n, k);
        ASSERT_TRUE(b.ok && b.out == data);
      }
      const int mutations = n > 100000 ? 10 : 100;
      for (int m = 0; m < mutations; ++m) {
        ByteVector bad = enc;
        const std::size_t at = rng() % bad.size();
        bad[at] ^= static_cast<std::byte>(1 + rng() % 255);
        if (rng() % 4 == 0) bad.resize(rng() % bad.size());
        const Outcome x = decode_with(bad, n, Kernel::scalar);
        for (Kernel k : kernels) {
          const Outcome y = decode_with(bad, n, k);
          ASSERT_EQ(x.ok, y.ok);
          if (x.ok) {
            ASSERT_TRUE(x.out == y.out);
          }
        }
      }
    }
  }
  EXPECT_TRUE(saw_packed);
  EXPECT_TRUE(saw_wide);
}

// Every vector decoder (avx2 and avx512 with gathers, avx2x and avx512x with
// scalar loads) at every lane count its registers allow (8, 16, 32 and 64
// lanes: 1, 2, 4 and 8 AVX2 registers, 1, 2 and 4 AVX-512 ones — 8 lanes
// there go to the AVX2 kernel of the same lookup; the 4- and 8-register
// avx2x ones store 32 lanes' symbols at once, the gather ones each register's
// eight from the Lean step), both table layouts, and blocks cut
// short or with a byte changed anywhere, in particular in the last words,
// where a round may start only when 2 * lanes bytes remain. Each block is
// decoded from a buffer of its exact size, so that a sanitizer build sees any
// read past its end.
TEST(Rans, VectorDecodersAgreeAtEveryLaneCount) {
  using rans::detail::Kernel;
  const auto kernels = vector_kernels();
  if (kernels.empty()) GTEST_SKIP() << "no vector kernel on this CPU";
  std::mt19937_64 rng(2026);
  std::set<unsigned> packed_lanes, wide_lanes;  // log2 lane counts reached per layout
  for (const auto& d : distributions()) {
    for (std::size_t n : {1500u, 3001u, 6000u, 12007u, 24000u, 48001u, 96000u, 200003u}) {
      SCOPED_TRACE(std::string(d.name) + " n=" + std::to_string(n));
      const auto data = d.gen(n, n + 5);
      const auto enc = encode_ok(data);
      if (enc.size() < 2 || (static_cast<unsigned>(enc[0]) & 15) != 2) continue;  // not a rans block
      const unsigned lanes_log2 = static_cast<unsigned>(enc[1]) >> 4;
      ((static_cast<unsigned>(enc[1]) & 15) + 8 <= 12 ? packed_lanes : wide_lanes).insert(lanes_log2);
      for (Kernel k : kernels) {
        SCOPED_TRACE(std::string(rans::detail::kernel_name(k)));
        const ByteVector exact(enc.begin(), enc.end());
        const Outcome b = decode_with(exact, n, k);
        ASSERT_TRUE(b.ok && b.out == data);
      }
      for (int m = 0; m < 60; ++m) {
        ByteVector bad = enc;
        if (m < 20) {
          bad.resize(bad.size() - 1 - rng() % std::min<std::size_t>(bad.size() - 1, 300));  // cut near the end
        } else {
          const std::size_t at = m < 40 ? bad.size() - 1 - rng() % std::min<std::size_t>(bad.size(), 300)
                                        : rng() % bad.size();
          bad[at] ^= static_cast<std::byte>(1 + rng() % 255);
        }
        const ByteVector exact(bad.begin(), bad.end());
        const Outcome x = decode_with(exact, n, Kernel::scalar);
        for (Kernel k : kernels) {
          SCOPED_TRACE(std::string(rans::detail::kernel_name(k)) + " m=" + std::to_string(m));
          const Outcome y = decode_with(exact, n, k);
          ASSERT_EQ(x.ok, y.ok);
          if (x.ok) {
            ASSERT_TRUE(x.out == y.out);
          }
        }
      }
    }
  }
  for (unsigned l = 3; l <= 6; ++l) EXPECT_TRUE(packed_lanes.count(l)) << "packed table never at 2^" << l << " lanes";
  EXPECT_FALSE(wide_lanes.empty());
}

// Every encode kernel writes the very same block as the scalar one (the
// stream must not depend on the CPU), including when the output buffer is
// too small, at every lane count and both table layouts.
TEST(Rans, EncodeKernelsWriteIdenticalBlocks) {
  using rans::detail::Kernel;
  const auto kernels = vector_kernels();
  if (kernels.empty()) GTEST_SKIP() << "no vector kernel on this CPU";
  std::vector<std::size_t> sizes = {1, 2, 15, 16, 17, 100, 1000, 4099, 65536, 70001, 300001, (1u << 20) + 5};
  for (const auto& d : distributions()) {
    for (std::size_t n : sizes) {
      SCOPED_TRACE(std::string(d.name) + " n=" + std::to_string(n));
      const auto data = d.gen(n, n + 11);
      const Histogram h = hist_of(data);
      for (std::size_t cap : {n + n / 8 + 4096, n / 2, n / 3 + 300}) {
        ByteVector ref(cap, std::byte{0x5a});
        const auto ref_size = rans::detail::encode_with(data, h, ref, Kernel::scalar);
        for (Kernel k : kernels) {
          SCOPED_TRACE(std::string(rans::detail::kernel_name(k)) + " cap=" + std::to_string(cap));
          ByteVector got(cap + 64, std::byte{0x5a});
          const auto size = rans::detail::encode_with(data, h, util::MutableByteSpan(got.data(), cap), k);
          ASSERT_EQ(ref_size.has_value(), size.has_value());
          for (std::size_t i = cap; i < got.size(); ++i) ASSERT_EQ(got[i], std::byte{0x5a}) << "wrote past the end";
          if (!size) continue;
          ASSERT_EQ(*ref_size, *size);
          ASSERT_TRUE(std::equal(ref.begin(), ref.begin() + static_cast<std::ptrdiff_t>(*size), got.begin()));
        }
      }
    }
  }
}

TEST(Rans, KernelNamesAreReported) {
  const auto names = rans::kernel_names();
  for (auto name : {names.encode, names.decode}) {
    bool known = false;
    for (auto k : rans::detail::k_all_kernels)
      if (rans::detail::kernel_name(k) == name) known = rans::detail::kernel_available(k);
    EXPECT_TRUE(known) << name;
  }
}

namespace {

// Decodes `block` with a PieceDecoder in pieces of the given sizes (cycled
// until n bytes are out); ok = no error, out = what was decoded.
Outcome decode_pieces(util::ByteSpan block, std::size_t n, rans::detail::Kernel k,
                      const std::vector<std::size_t>& pieces) {
  Outcome r;
  r.out.assign(n, std::byte{0});
  try {
    rans::PieceDecoder d(k);
    d.start(block, n);
    std::size_t at = 0;
    for (std::size_t i = 0; at < n; ++i) {
      const std::size_t len = std::min(pieces[i % pieces.size()], n - at);
      d.next(util::MutableByteSpan(r.out.data() + at, len));
      at += len;
      EXPECT_EQ(d.position(), at);
    }
    d.finish();
    r.ok = true;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::corrupt);
  }
  return r;
}

}  // namespace

// Piece by piece, as the chunk decoder reads a plane: pieces that split a
// round of lanes anywhere (1, 7, 63, 65 bytes), whole rounds, pieces larger
// than the rest of the block, and a piece sequence mixing them, with every
// kernel, give what decode() gives, on valid blocks and on corrupt ones
// (success or an Error(corrupt), never anything else).
TEST(Rans, PieceDecoderMatchesDecodeAtAnySplit) {
  using rans::detail::Kernel;
  std::vector<Kernel> kernels = vector_kernels();
  kernels.insert(kernels.begin(), Kernel::scalar);
  const std::vector<std::vector<std::size_t>> splits = {
      {1}, {7}, {63}, {64}, {65}, {4096}, {16384}, {1u << 30}, {3, 64, 1000, 1, 129, 8192}};
  std::mt19937_64 rng(91);
  for (const auto& d : distributions()) {
    for (std::size_t n : {1u, 100u, 5000u, 70001u}) {
      SCOPED_TRACE(std::string(d.name) + " n=" + std::to_string(n));
      const auto data = d.gen(n, n + 5);
      const auto enc = encode_ok(data);
      ByteVector bad = enc;
      bad[rng() % bad.size()] ^= static_cast<std::byte>(1 + rng() % 255);
      if (rng() % 2 == 0) bad.resize(rng() % bad.size());
      const Outcome bad_whole = decode_with(bad, n, Kernel::scalar);
      for (Kernel k : kernels) {
        for (const auto& split : splits) {
          if (n > 5000 && split[0] < 64) continue;  // byte-sized pieces: small blocks suffice
          SCOPED_TRACE(std::string(rans::detail::kernel_name(k)) + " first piece " + std::to_string(split[0]));
          const Outcome got = decode_pieces(enc, n, k, split);
          ASSERT_TRUE(got.ok);
          ASSERT_TRUE(got.out == data);
          const Outcome bad_got = decode_pieces(bad, n, k, split);
          ASSERT_EQ(bad_whole.ok, bad_got.ok);
          if (bad_whole.ok) { ASSERT_TRUE(bad_whole.out == bad_got.out); }
        }
      }
    }
  }
}

TEST(Rans, PieceDecoderRefusesToRunPastItsBlockOrFinishEarly) {
  const auto data = bf16_exponents(3000, 2);
  const auto enc = encode_ok(data);
  ByteVector out(3001);
  rans::PieceDecoder d;
  d.start(enc, 3000);
  try {
    d.next(util::MutableByteSpan(out.data(), 3001));
    ADD_FAILURE() << "decoded past the block";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::internal);
  }
  d.next(util::MutableByteSpan(out.data(), 1000));
  try {
    d.finish();
    ADD_FAILURE() << "finished early";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::internal);
  }
  // Reused for another block: the rest of this one is forgotten.
  const auto data2 = bf16_exponents(777, 3);
  const auto enc2 = encode_ok(data2);
  d.start(enc2, data2.size());
  ByteVector out2(data2.size());
  d.next(out2);
  d.finish();
  EXPECT_TRUE(out2 == data2);
}
