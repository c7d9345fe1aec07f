// Byte grouping, histograms, entropy and residuals: every kernel the CPU
// supports is compared with simple element-by-element references written
// here (explicit shifts, no code shared with the library), and every
// transform with its exact inverse.
#include "codec/byte_group.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "codec/byte_group_kernels.hpp"
#include "mithril/error.hpp"
#include "test_helpers.hpp"
#include "util/simd_level.hpp"

using namespace mithril;
using codec::GroupMode;
using codec::Histogram;
using codec::detail::ByteGroupKernels;
using codec::detail::Isa;
using util::ByteVector;

namespace {

// ---- independent references ------------------------------------------------

std::uint64_t mask_of(unsigned w) { return w == 8 ? ~0ull : (1ull << (8 * w)) - 1; }

std::uint64_t get_elem(const ByteVector& v, std::size_t at, unsigned w) {
  std::uint64_t x = 0;
  for (unsigned k = 0; k < w; ++k) x |= std::uint64_t(std::uint8_t(v[at + k])) << (8 * k);
  return x;
}
void put_elem(ByteVector& v, std::size_t at, unsigned w, std::uint64_t x) {
  for (unsigned k = 0; k < w; ++k) v[at + k] = std::byte((x >> (8 * k)) & 0xff);
}

ByteVector ref_group(const ByteVector& in, unsigned w, GroupMode mode) {
  ByteVector out(in.size());
  const std::size_t m = in.size() / w;
  const unsigned bits = 8 * w;
  for (std::size_t i = 0; i < m; ++i) {
    std::uint64_t x = get_elem(in, i * w, w);
    if (mode == GroupMode::rotl1 && w > 1) x = ((x << 1) | (x >> (bits - 1))) & mask_of(w);
    for (unsigned k = 0; k < w; ++k) out[k * m + i] = std::byte((x >> (8 * k)) & 0xff);
  }
  for (std::size_t i = m * w; i < in.size(); ++i) out[i] = in[i];
  return out;
}

ByteVector ref_ungroup(const ByteVector& in, unsigned w, GroupMode mode) {
  ByteVector out(in.size());
  const std::size_t m = in.size() / w;
  const unsigned bits = 8 * w;
  for (std::size_t i = 0; i < m; ++i) {
    std::uint64_t x = 0;
    for (unsigned k = 0; k < w; ++k) x |= std::uint64_t(std::uint8_t(in[k * m + i])) << (8 * k);
    if (mode == GroupMode::rotl1 && w > 1) x = ((x >> 1) | (x << (bits - 1))) & mask_of(w);
    put_elem(out, i * w, w, x);
  }
  for (std::size_t i = m * w; i < in.size(); ++i) out[i] = in[i];
  return out;
}

ByteVector ref_sub(const ByteVector& t, const ByteVector& b, unsigned w) {
  ByteVector out(t.size());
  const std::size_t m = t.size() / w;
  const std::uint64_t mask = mask_of(w);
  for (std::size_t i = 0; i < m; ++i) {
    const std::uint64_t d = (get_elem(t, i * w, w) - get_elem(b, i * w, w)) & mask;
    const bool negative = (d >> (8 * w - 1)) & 1;
    put_elem(out, i * w, w, ((d << 1) & mask) ^ (negative ? mask : 0));
  }
  for (std::size_t i = m * w; i < t.size(); ++i) out[i] = t[i] ^ b[i];
  return out;
}

Histogram ref_histogram(const std::byte* p, std::size_t n) {
  Histogram h{};
  for (std::size_t i = 0; i < n; ++i) ++h[std::uint8_t(p[i])];
  return h;
}

// ---- helpers -------------------------------------------------------------------

constexpr unsigned k_widths[] = {1, 2, 4, 8};
constexpr GroupMode k_modes[] = {GroupMode::plain, GroupMode::rotl1};

std::string mode_name(GroupMode m) { return m == GroupMode::plain ? "plain" : "rotl1"; }

// Lengths 0..300 (every block remainder of every kernel), random ones up to
// a few thousand, and a few large ones that are not multiples of any width.
std::vector<std::size_t> test_lengths() {
  std::vector<std::size_t> v;
  for (std::size_t n = 0; n <= 300; ++n) v.push_back(n);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 100; ++i) v.push_back(301 + rng() % 5000);
  for (std::size_t n : {4096u, 4097u, 65535u, (1u << 20) + 3, (3u << 20) + 13}) v.push_back(n);
  return v;
}

// A span of n bytes inside a larger buffer at a deliberately odd offset, so
// kernels never see 16/32/64-byte alignment by luck.
struct Unaligned {
  ByteVector storage;
  std::size_t offset;
  Unaligned(std::size_t n, std::size_t off) : storage(n + 64), offset(off) {}
  util::MutableByteSpan span(std::size_t n) { return {storage.data() + offset, n}; }
};

class ByteGroupKernel : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    k = codec::detail::kernels_for(GetParam());
    if (!k) GTEST_SKIP() << "CPU lacks " << codec::detail::isa_name(GetParam());
  }
  const ByteGroupKernels* k = nullptr;
};

std::string isa_param_name(const ::testing::TestParamInfo<Isa>& info) {
  return std::string(codec::detail::isa_name(info.param));
}

}  // namespace

// ---- grouping ------------------------------------------------------------------

TEST_P(ByteGroupKernel, GroupMatchesReferenceAndRoundTrips) {
  std::size_t seed = 1;
  std::size_t cases = 0;
  for (const std::size_t n : test_lengths()) {
    const ByteVector in = test::random_bytes(n, ++seed);
    for (const unsigned w : k_widths) {
      for (const GroupMode mode : k_modes) {
        SCOPED_TRACE("n=" + std::to_string(n) + " w=" + std::to_string(w) + " " + mode_name(mode));
        const ByteVector expect = ref_group(in, w, mode);
        Unaligned g(n, 1 + (seed % 63));
        codec::detail::group_bytes(*k, in, g.span(n), w, mode);
        ASSERT_TRUE(std::equal(expect.begin(), expect.end(), g.span(n).begin()));
        Unaligned back(n, 3 + (seed % 61));
        codec::detail::ungroup_bytes(*k, g.span(n), back.span(n), w, mode);
        ASSERT_TRUE(std::equal(in.begin(), in.end(), back.span(n).begin()));
        // Ungrouping arbitrary bytes (not produced by group) matches too.
        const ByteVector expect_un = ref_ungroup(in, w, mode);
        codec::detail::ungroup_bytes(*k, in, back.span(n), w, mode);
        ASSERT_TRUE(std::equal(expect_un.begin(), expect_un.end(), back.span(n).begin()));
        ++cases;
      }
    }
  }
  RecordProperty("cases", static_cast<int>(cases));
}

// Planes scattered over separate buffers (as the decoder has them: coded
// planes in scratch, stored ones in the payload) ungroup exactly like their
// concatenation, tail bytes included.
TEST_P(ByteGroupKernel, UngroupPlanesMatchesUngroupOfTheConcatenation) {
  std::size_t seed = 100;
  for (const std::size_t n : test_lengths()) {
    const ByteVector grouped = test::random_bytes(n, ++seed);
    for (const unsigned w : {1u, 2u, 4u, 8u}) {
      for (const GroupMode mode : k_modes) {
        SCOPED_TRACE("n=" + std::to_string(n) + " w=" + std::to_string(w) + " " + mode_name(mode));
        const std::size_t m = n / w;
        std::vector<Unaligned> bufs;
        std::vector<util::ByteSpan> planes;
        bufs.reserve(w);
        for (unsigned p = 0; p < w; ++p) {
          const std::size_t len = p + 1 == w ? n - p * m : m;
          bufs.emplace_back(len, 1 + ((seed + 7 * p) % 63));
          std::copy_n(grouped.begin() + static_cast<std::ptrdiff_t>(p * m), len, bufs.back().span(len).begin());
          planes.push_back(bufs.back().span(len));
        }
        ByteVector expect(n);
        codec::detail::ungroup_bytes(*k, grouped, expect, w, mode);
        Unaligned out(n, 5 + (seed % 59));
        codec::detail::ungroup_planes(*k, planes, out.span(n), w, mode);
        ASSERT_TRUE(std::equal(expect.begin(), expect.end(), out.span(n).begin()));
      }
    }
  }
}

// Hand-computed IEEE encodings: after rotl1 the top plane is the exponent.
TEST_P(ByteGroupKernel, Rotl1PutsExponentInTopPlane) {
  // bf16 1.0 = 0x3F80 -> rotl1 0x7F00: top 0x7F (exponent 127), low 0x00.
  // bf16 -2.5 = 0xC020 -> rotl1 0x8041: top 0x80 (exponent 128), low 0x41
  // (mantissa 0100000 shifted up, sign 1 at the bottom).
  const ByteVector bf16 = {std::byte{0x80}, std::byte{0x3F}, std::byte{0x20}, std::byte{0xC0}};
  ByteVector g(4);
  codec::detail::group_bytes(*k, bf16, g, 2, GroupMode::rotl1);
  EXPECT_EQ(g, (ByteVector{std::byte{0x00}, std::byte{0x41}, std::byte{0x7F}, std::byte{0x80}}));

  // fp32 1.0f = 0x3F800000 -> 0x7F000000; -2.5f = 0xC0200000 -> 0x80400001.
  ASSERT_EQ(std::bit_cast<std::uint32_t>(1.0f), 0x3F800000u);
  ASSERT_EQ(std::bit_cast<std::uint32_t>(-2.5f), 0xC0200000u);
  const float f[2] = {1.0f, -2.5f};
  ByteVector fp32(8), g32(8);
  std::memcpy(fp32.data(), f, 8);
  codec::detail::group_bytes(*k, fp32, g32, 4, GroupMode::rotl1);
  // planes 0..3, two elements each
  EXPECT_EQ(g32, (ByteVector{std::byte{0x00}, std::byte{0x01}, std::byte{0x00}, std::byte{0x00}, std::byte{0x00},
                             std::byte{0x40}, std::byte{0x7F}, std::byte{0x80}}));

  // Property over many random floats, long enough for every SIMD block path.
  std::mt19937_64 rng(11);
  const std::size_t count = 1000;
  std::vector<float> fs(count);
  std::vector<double> ds(count);
  for (std::size_t i = 0; i < count; ++i) {
    fs[i] = std::ldexp(float(rng() % 2000) / 1000.0f - 1.0f, int(rng() % 80) - 40);
    ds[i] = std::ldexp(double(rng() % 2000) / 1000.0 - 1.0, int(rng() % 400) - 200);
  }
  ByteVector in32(count * 4), out32(count * 4), in64(count * 8), out64(count * 8);
  std::memcpy(in32.data(), fs.data(), in32.size());
  std::memcpy(in64.data(), ds.data(), in64.size());
  codec::detail::group_bytes(*k, in32, out32, 4, GroupMode::rotl1);
  codec::detail::group_bytes(*k, in64, out64, 8, GroupMode::rotl1);
  ByteVector in16(count * 2), out16(count * 2);
  for (std::size_t i = 0; i < count; ++i) {
    const std::uint32_t bits32 = std::bit_cast<std::uint32_t>(fs[i]);
    const std::uint64_t bits64 = std::bit_cast<std::uint64_t>(ds[i]);
    ASSERT_EQ(std::uint8_t(out32[3 * count + i]), (bits32 >> 23) & 0xFF) << fs[i];
    ASSERT_EQ(std::uint8_t(out32[i]) & 1u, bits32 >> 31) << fs[i];
    // fp64: 11 exponent bits become the top 11 bits of the element.
    ASSERT_EQ(std::uint8_t(out64[7 * count + i]), (bits64 >> 55) & 0xFF) << ds[i];
    const std::uint16_t b16 = std::uint16_t(bits32 >> 16);  // bf16 by truncation
    in16[2 * i] = std::byte(b16 & 0xFF);
    in16[2 * i + 1] = std::byte(b16 >> 8);
  }
  codec::detail::group_bytes(*k, in16, out16, 2, GroupMode::rotl1);
  for (std::size_t i = 0; i < count; ++i) {
    const std::uint16_t b16 = std::uint16_t(std::uint8_t(in16[2 * i]) | std::uint8_t(in16[2 * i + 1]) << 8);
    ASSERT_EQ(std::uint8_t(out16[count + i]), (b16 >> 7) & 0xFF);
  }
}

// ---- residuals -----------------------------------------------------------------

TEST_P(ByteGroupKernel, ResidualsMatchReferenceAndInvert) {
  std::size_t seed = 1000;
  for (const std::size_t n : test_lengths()) {
    const ByteVector t = test::random_bytes(n, ++seed);
    // A base close to t (small signed differences) and an unrelated one.
    ByteVector near = t;
    std::mt19937_64 rng(seed);
    for (auto& x : near) x = std::byte(std::uint8_t(std::uint8_t(x) + std::uint8_t(rng() % 7) - 3));
    const ByteVector far = test::random_bytes(n, seed * 31);
    for (const ByteVector* base : {static_cast<const ByteVector*>(&near), &far}) {
      ByteVector x(n), back(n);
      codec::detail::xor_residual(*k, t, *base, x);
      for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(x[i], t[i] ^ (*base)[i]) << "n=" << n << " i=" << i;
      codec::detail::xor_residual(*k, x, *base, back);
      ASSERT_EQ(back, t);
      for (const unsigned w : k_widths) {
        SCOPED_TRACE("n=" + std::to_string(n) + " w=" + std::to_string(w));
        const ByteVector expect = ref_sub(t, *base, w);
        Unaligned r(n, 5 + seed % 50);
        codec::detail::sub_residual(*k, t, *base, r.span(n), w);
        ASSERT_TRUE(std::equal(expect.begin(), expect.end(), r.span(n).begin()));
        codec::detail::add_residual(*k, r.span(n), *base, back, w);
        ASSERT_EQ(back, t);
      }
    }
  }
}

TEST_P(ByteGroupKernel, ResidualsInPlace) {
  const std::size_t n = 1000 * 8 + 5;
  const ByteVector t = test::random_bytes(n, 77), b = test::random_bytes(n, 78);
  for (const unsigned w : k_widths) {
    ByteVector buf = t;
    codec::detail::sub_residual(*k, buf, b, buf, w);
    EXPECT_EQ(buf, ref_sub(t, b, w));
    codec::detail::add_residual(*k, buf, b, buf, w);
    EXPECT_EQ(buf, t);
  }
  ByteVector buf = t;
  codec::detail::xor_residual(*k, buf, b, buf);
  codec::detail::xor_residual(*k, buf, b, buf);
  EXPECT_EQ(buf, t);
}

// Hand-computed zigzag values (little-endian uint16 elements).
TEST_P(ByteGroupKernel, SubResidualKnownValues) {
  auto u16 = [](std::initializer_list<std::uint16_t> xs) {
    ByteVector v;
    for (auto x : xs) {
      v.push_back(std::byte(x & 0xFF));
      v.push_back(std::byte(x >> 8));
    }
    return v;
  };
  // 5-7 = -2 -> 3; 0-0xFFFF = 1 -> 2; 0x8000-0 = -32768 -> 0xFFFF; 9-9 -> 0;
  // 0x7FFF-0 = 32767 -> 0xFFFE. Repeated to reach the SIMD blocks.
  ByteVector t, b, expect;
  for (int rep = 0; rep < 40; ++rep) {
    util::append_bytes(t, u16({5, 0, 0x8000, 9, 0x7FFF}));
    util::append_bytes(b, u16({7, 0xFFFF, 0, 9, 0}));
    util::append_bytes(expect, u16({3, 2, 0xFFFF, 0, 0xFFFE}));
  }
  ByteVector r(t.size());
  codec::detail::sub_residual(*k, t, b, r, 2);
  EXPECT_EQ(r, expect);
}

// Grouping a buffer a piece at a time, cut anywhere, writes the planes that
// grouping it whole does.
TEST_P(ByteGroupKernel, GroupElementsInPiecesMatchesGroupBytes) {
  std::mt19937_64 rng(11);
  for (unsigned width : {1u, 2u, 4u, 8u}) {
    for (GroupMode mode : {GroupMode::plain, GroupMode::rotl1}) {
      for (std::size_t m : {std::size_t{0}, std::size_t{1}, std::size_t{63}, std::size_t{1000}, std::size_t{70001}}) {
        const auto in = test::random_bytes(m * width, m + width);
        ByteVector whole(in.size()), pieces(in.size(), std::byte{0xAB});
        codec::detail::group_bytes(*k, in, whole, width, mode);
        for (std::size_t first = 0; first < m;) {
          const std::size_t n = std::min<std::size_t>(m - first, rng() % 3 == 0 ? rng() % 8 : rng() % 5000);
          codec::detail::group_elements(*k, util::ByteSpan(in).subspan(first * width, n * width), pieces, first, m,
                                        width, mode);
          first += n;
        }
        ASSERT_EQ(pieces, whole) << "width " << width << ", m " << m;
      }
    }
  }
  ByteVector small(16);
  EXPECT_THROW(codec::detail::group_elements(*k, util::ByteSpan(small).first(8), small, 0, 4, 2, GroupMode::plain),
               Error);  // overlap
  ByteVector out(16);
  EXPECT_THROW(codec::detail::group_elements(*k, util::ByteSpan(small).first(8), out, 5, 8, 2, GroupMode::plain),
               Error);  // elements past m
}

// ---- histograms ------------------------------------------------------------------

namespace {

// Bytes drawn from `n_symbols` values (weights falling off like a float
// plane's exponents), with a fraction `rare` of uniformly random bytes.
ByteVector skewed_bytes(std::size_t n, unsigned n_symbols, double rare, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::geometric_distribution<unsigned> pick(0.35);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const unsigned base = static_cast<unsigned>(rng() % 200);
  ByteVector out(n);
  for (auto& b : out)
    b = u(rng) < rare ? static_cast<std::byte>(rng()) : static_cast<std::byte>(base + pick(rng) % n_symbols);
  return out;
}

}  // namespace

// Every counting kernel against a plain count: any symbol set (most common
// bytes first, or bytes that never occur), sizes around the vector widths
// and the 255-vector flush of the byte counters, unaligned input, and bytes
// no symbol covers.
TEST_P(ByteGroupKernel, CountSymbolsMatchesAPlainCount) {
  std::mt19937_64 rng(5);
  int kernels = 0;
  for (unsigned i = 0; i < std::size(codec::detail::k_count_symbols); ++i) {
    const auto fn = k->count[i];
    if (!fn) continue;
    ++kernels;
    const unsigned K = codec::detail::k_count_symbols[i];
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{31}, std::size_t{32}, std::size_t{63},
                          std::size_t{64}, std::size_t{65}, std::size_t{255 * 64}, std::size_t{255 * 64 + 1},
                          std::size_t{256 * 64 + 17}, std::size_t{1} << 20}) {
      for (unsigned n_symbols : {1u, 7u, 40u}) {
        const ByteVector data = skewed_bytes(n + 3, n_symbols, 0.01, n * 7 + n_symbols);
        const std::span<const std::byte> in(data.data() + 3, n);
        const Histogram ref = ref_histogram(in.data(), n);
        // The K most common bytes, then K distinct random ones.
        std::array<std::uint8_t, 256> order;
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](std::uint8_t a, std::uint8_t b) { return ref[a] > ref[b]; });
        std::array<std::uint8_t, 256> shuffled = order;
        std::shuffle(shuffled.begin(), shuffled.end(), rng);
        for (const auto* syms : {order.data(), shuffled.data()}) {
          Histogram h{};
          h[0] = 5;  // counts are added
          fn(in.data(), n, syms, h.data());
          h[0] -= 5;
          ASSERT_EQ(h, ref) << "K " << K << ", n " << n << ", " << n_symbols << " symbols";
        }
      }
    }
  }
  // AVX-512 has all four symbol counts, AVX2 the two that fit its sixteen
  // registers, the scalar and SSE2 tables none (histogram() counts plainly).
  if (k->isa == Isa::avx512) {
    EXPECT_EQ(kernels, 4);
  } else if (k->isa == Isa::avx2) {
    EXPECT_EQ(kernels, 2);
  } else {
    EXPECT_EQ(kernels, 0);
  }
}

// histogram() is exact whatever it judges from: narrow planes (vector
// counts), near-uniform ones (plain count), and a `like` that describes other
// bytes entirely.
TEST_P(ByteGroupKernel, HistogramIsExactWhateverItJudgesFrom) {
  Histogram uniform_like{};
  uniform_like.fill(100);
  Histogram narrow_like{};
  narrow_like[3] = 1000;
  for (std::size_t n : {std::size_t{1000}, std::size_t{32} << 10, (std::size_t{64} << 10) + 5, std::size_t{1} << 20}) {
    for (unsigned n_symbols : {1u, 5u, 12u, 30u, 256u}) {
      for (double rare : {0.0, 0.001, 0.2}) {
        const ByteVector in = skewed_bytes(n, n_symbols, rare, n + n_symbols);
        const Histogram ref = ref_histogram(in.data(), n);
        Histogram h;
        h.fill(77);
        codec::detail::histogram(*k, in, h, nullptr);
        ASSERT_EQ(h, ref) << n << " " << n_symbols << " " << rare;
        for (const Histogram* like : std::array<const Histogram*, 3>{&ref, &uniform_like, &narrow_like}) {
          h.fill(77);
          codec::detail::histogram(*k, in, h, like);
          ASSERT_EQ(h, ref) << n << " " << n_symbols << " " << rare;
        }
      }
    }
  }
}

// histogram_estimate: the same counts with every kernel; they sum to the
// size and are nonzero exactly for the bytes that occur (a rare byte inside
// the window, seen only where nothing is counted, included); the estimated
// counts stay close to the exact ones and code nearly as well.
TEST_P(ByteGroupKernel, HistogramEstimateKeepsTotalAndSupport) {
  for (std::size_t n : {std::size_t{1000}, std::size_t{16} << 10, (std::size_t{64} << 10) + 5, (std::size_t{1} << 20) + 77}) {
    for (unsigned n_symbols : {2u, 5u, 12u, 16u, 30u}) {
      for (double rare : {0.0, 0.001, 0.2}) {
        ByteVector data = skewed_bytes(n + 1, n_symbols, rare, n + 3 * n_symbols);
        const util::ByteSpan in = util::ByteSpan(data).subspan(1);  // unaligned
        // A value near the most common one that does not occur, once, where
        // a run is not counted (inside the estimate's window for few symbols).
        if (n > 3000 && rare == 0.0) {
          const Histogram before = ref_histogram(in.data(), n);
          const auto most = std::max_element(before.begin(), before.end()) - before.begin();
          data[1 + 3000] = static_cast<std::byte>(most - 5);
        }
        const Histogram ref = ref_histogram(in.data(), n);
        Histogram like = ref_histogram(in.data(), std::min<std::size_t>(n, 8192));
        Histogram h;
        h.fill(77);
        codec::detail::histogram_estimate(*k, in, like, h);
        // The containers do not depend on the ISA: nor does the estimate.
        Histogram portable;
        codec::detail::histogram_estimate(codec::detail::k_scalar_kernels, in, like, portable);
        ASSERT_EQ(h, portable) << n << " " << n_symbols << " " << rare;
        std::uint64_t total = 0, off = 0;
        for (unsigned b = 0; b < 256; ++b) {
          total += h[b];
          off += h[b] > ref[b] ? h[b] - ref[b] : ref[b] - h[b];
          ASSERT_EQ(h[b] != 0, ref[b] != 0) << n << " " << n_symbols << " " << rare << " byte " << b;
        }
        ASSERT_EQ(total, n) << n << " " << n_symbols << " " << rare;
        if (n < (std::size_t{16} << 10)) {
          EXPECT_EQ(h, ref);
        }
        // Sampling a quarter of a few values: the counts are off by a few
        // percent in all at 16 KiB, by well under one percent at 1 MiB.
        if (rare == 0.0) {
          EXPECT_LE(static_cast<double>(off), (n > (std::size_t{1} << 20) ? 0.01 : 0.08) * static_cast<double>(n))
              << n << " " << n_symbols;
        }
        // What a model built from the estimate costs: the bytes' cross-entropy
        // under it, against their entropy (the exact counts' model). Counts
        // from a quarter of the bytes cost ~2.9 bits per value present in
        // expectation (KL divergence of a sample's estimate), whatever the size.
        double cross = 0;
        unsigned distinct = 0;
        for (unsigned b = 0; b < 256; ++b)
          if (ref[b]) cross += ref[b] * std::log2(static_cast<double>(n) / h[b]), ++distinct;
        EXPECT_LE(cross, 1.0005 * codec::order0_bits(ref) + 10.0 * distinct) << n << " " << n_symbols << " " << rare;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllKernels, ByteGroupKernel, ::testing::ValuesIn(codec::detail::k_all_isas), isa_param_name);

// ---- public API, dispatch ---------------------------------------------------------

TEST(ByteGroup, ActiveKernelIsTheWidestSupported) {
  Isa best = Isa::scalar;
  for (Isa isa : codec::detail::k_all_isas)
    if (codec::detail::kernels_for(isa)) best = isa;
  EXPECT_EQ(codec::byte_group_isa(), codec::detail::isa_name(best));
#if defined(__x86_64__)
  // x86-64 baseline: only a MITHRIL_ISA=scalar cap rules it out.
  EXPECT_EQ(codec::detail::kernels_for(Isa::sse2) != nullptr, util::simd_allows(util::SimdLevel::sse2));
#endif
}

TEST(ByteGroup, PublicApiRoundTrips) {
  const ByteVector in = test::random_bytes(100003, 5);
  for (const unsigned w : k_widths) {
    for (const GroupMode mode : k_modes) {
      ByteVector g(in.size()), back(in.size());
      codec::group_bytes(in, g, w, mode);
      EXPECT_EQ(g, ref_group(in, w, mode));
      codec::ungroup_bytes(g, back, w, mode);
      EXPECT_EQ(back, in);
    }
    const ByteVector b = test::random_bytes(in.size(), 6);
    ByteVector r(in.size()), back(in.size());
    codec::sub_residual(in, b, r, w);
    codec::add_residual(r, b, back, w);
    EXPECT_EQ(back, in);
  }
}

TEST(ByteGroup, BadArgumentsThrow) {
  ByteVector a(64), b(64), c(63);
  auto expect_invalid = [](auto&& fn) {
    try {
      fn();
      ADD_FAILURE() << "no exception";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::invalid_argument) << e.what();
    }
  };
  expect_invalid([&] { codec::group_bytes(a, b, 3, GroupMode::plain); });
  expect_invalid([&] { codec::ungroup_bytes(a, b, 16, GroupMode::plain); });
  {
    const std::vector<util::ByteSpan> two = {util::ByteSpan(a).first(32), util::ByteSpan(c).first(31)};
    expect_invalid([&] { codec::ungroup_planes(two, b, 2, GroupMode::plain); });  // a plane too short
    expect_invalid([&] { codec::ungroup_planes(two, b, 4, GroupMode::plain); });  // plane count != width
    const std::vector<util::ByteSpan> self = {util::ByteSpan(b).first(32), util::ByteSpan(a).first(32)};
    expect_invalid([&] { codec::ungroup_planes(self, b, 2, GroupMode::plain); });  // overlaps the output
  }
  expect_invalid([&] { codec::group_bytes(a, c, 2, GroupMode::plain); });
  expect_invalid([&] { codec::group_bytes(a, b, 2, static_cast<GroupMode>(7)); });
  expect_invalid([&] { codec::group_bytes(util::ByteSpan(a).first(32), util::MutableByteSpan(a).subspan(16, 32), 2, GroupMode::plain); });
  expect_invalid([&] { codec::group_bytes(a, a, 2, GroupMode::plain); });  // grouping is not elementwise
  expect_invalid([&] { codec::xor_residual(a, c, b); });
  expect_invalid([&] { codec::sub_residual(a, b, c, 2); });
  expect_invalid([&] { codec::add_residual(a, b, b, 5); });
  // Elementwise functions accept exact aliasing but not a shifted overlap.
  expect_invalid([&] {
    codec::sub_residual(util::ByteSpan(a).first(32), util::ByteSpan(b).first(32), util::MutableByteSpan(a).subspan(8, 32), 4);
  });
  std::array<Histogram, 2> h;
  expect_invalid([&] { codec::plane_histograms(a, 4, GroupMode::plain, h); });
  expect_invalid([&] { codec::plane_histograms(a, 6, GroupMode::plain, h); });
}

// ---- histograms and entropy -----------------------------------------------------

TEST(ByteGroup, PlaneHistogramsMatchMaterializedPlanes) {
  std::size_t seed = 500, cases = 0;
  for (const std::size_t n : test_lengths()) {
    // Skewed data (like exponent bytes) and uniform data.
    ByteVector in = test::random_bytes(n, ++seed);
    if (seed % 2) {
      for (std::size_t i = 0; i < n; ++i)
        if (i % 3 != 0) in[i] = std::byte{0x3F};
    }
    for (const unsigned w : k_widths) {
      for (const GroupMode mode : k_modes) {
        SCOPED_TRACE("n=" + std::to_string(n) + " w=" + std::to_string(w) + " " + mode_name(mode));
        const ByteVector g = ref_group(in, w, mode);
        const std::size_t m = n / w;
        std::array<Histogram, 9> h;
        for (auto& x : h) x.fill(12345);  // must be overwritten, hist[w] untouched
        codec::plane_histograms(in, w, mode, h);
        for (unsigned k = 0; k < w; ++k) ASSERT_EQ(h[k], ref_histogram(g.data() + k * m, m)) << "plane " << k;
        ASSERT_EQ(h[w][0], 12345u);
        ++cases;
      }
    }
    Histogram whole;
    codec::histogram(in, whole);
    ASSERT_EQ(whole, ref_histogram(in.data(), n));
  }
  RecordProperty("cases", static_cast<int>(cases));
}

TEST(ByteGroup, HistogramOfARun) {
  // One symbol repeated: the worst case for a single table of counters.
  const ByteVector in(1'000'003, std::byte{0x7F});
  Histogram h;
  codec::histogram(in, h);
  EXPECT_EQ(h[0x7F], in.size());
  EXPECT_EQ(std::accumulate(h.begin(), h.end(), std::uint64_t{0}), in.size());
}

TEST(ByteGroup, Log2CountIsExactEnoughAndRemembersTheSame) {
  EXPECT_EQ(codec::log2_count(1), 0.0);
  for (unsigned e = 0; e < 64; ++e) EXPECT_EQ(codec::log2_count(std::uint64_t{1} << e), static_cast<double>(e)) << e;
  // Small values (remembered after the first call: the second call must
  // give the same bits), the cache's edge, and large counts.
  std::vector<std::uint64_t> vs;
  for (std::uint64_t v = 2; v < 5000; ++v) vs.push_back(v);
  for (std::uint64_t v : {65535ull, 65536ull, 65537ull, 65538ull, 65539ull, 1000003ull, 0xFFFFFFFFull, 0xFFFFFFFFFFFFull})
    vs.push_back(v);
  for (std::uint64_t v : vs) {
    const double first = codec::log2_count(v);
    EXPECT_NEAR(first, std::log2(static_cast<double>(v)), 4e-15 * std::max(1.0, std::log2(static_cast<double>(v))))
        << v;
    EXPECT_EQ(codec::log2_count(v), first) << v;
  }
}

TEST(ByteGroup, Order0BitsKnownDistributions) {
  Histogram h{};
  EXPECT_EQ(codec::order0_bits(h), 0.0);  // empty
  h[42] = 1000;
  EXPECT_EQ(codec::order0_bits(h), 0.0);  // single symbol
  h.fill(37);
  EXPECT_NEAR(codec::order0_bits(h), 8.0 * 256 * 37, 1e-6);  // uniform: 8 bits per byte
  h.fill(0);
  h[0] = 500;
  h[255] = 500;
  EXPECT_NEAR(codec::order0_bits(h), 1000.0, 1e-9);  // fair coin: 1 bit per byte
  h.fill(0);
  h[1] = 1;
  h[2] = 3;
  // 1*log2(4) + 3*log2(4/3) = 2 + 3*0.415037499... = 3.245112497836532
  EXPECT_NEAR(codec::order0_bits(h), 3.245112497836532, 1e-12);

  // Through histogram(): every byte value 4 times -> 8 bits per byte.
  ByteVector all(1024);
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = std::byte(i & 0xFF);
  codec::histogram(all, h);
  EXPECT_NEAR(codec::order0_bits(h), 8.0 * 1024, 1e-6);
}
