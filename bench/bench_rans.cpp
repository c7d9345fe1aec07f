// bench_rans — single-thread rANS encode/decode throughput and ratio, for
// every kernel this CPU has (scalar, avx2, avx512, avx2x and avx512x as
// kernel:0-3 and 7; the others are skipped), of the Huffman coder (kernel:4,
// codec/huff.hpp) and of rANS in pairs
// (kernel:5, codec/rans_pairs.hpp: two bytes a symbol, the default level's
// coding of exponent planes) and of pairs-or-split (kernel:6,
// codec/rans_split.hpp: high bits in pairs, low bits stored, levels 1-2's
// coding of fp16 high bytes) on the same planes.
//
//   ./build/bench_rans --benchmark_min_time=0.5
//   MITHRIL_BENCH_WEIGHTS=model.safetensors ./build/bench_rans --benchmark_filter=plane:3
//
// Counters: the rate over the raw plane in binary units (bytes_per_second,
// Google Benchmark's: 1.86G/s is 1.86 GiB/s) and in decimal ones (`SI`:
// 2.00G/s is 2.00 GB/s, the unit of the targets and of the published
// coders' figures), bits/byte of the block, and `vs_bound` = block size /
// order-0 Shannon bound. Planes:
//   bf16exp  exponent plane of bf16 weights ~ N(0, 0.02) after rotl1 (16 MiB)
//   zeros99  99% zeros, the rest a few small values (XOR residual plane)
//   uniform  random bytes (encode gives up early: the caller stores raw)
//   real     exponent plane of real weights: the fp32 tensors of the
//            safetensors file named by MITHRIL_BENCH_WEIGHTS, cast to bf16
//            (round to nearest even) and rotl1-grouped; 16 MiB of it,
//            repeated if the file is smaller (skipped when unset)
//   fp16hi   high-byte plane of fp16 weights ~ N(0, 0.02) after rotl1: five
//            exponent bits and the top three mantissa bits, ~70 values (no
//            window of 32 byte values holds them)
// The context lines name the CPU and the kernels encode()/decode() chose.
// Each is coded as 1 MiB blocks (the container's chunk scale) and as one
// 16 MiB block. BM_histogram counts each plane's bytes as the encoder's
// block split does (64 KiB pieces), by each byte-grouping ISA.
#include <benchmark/benchmark.h>

#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "codec/byte_group_kernels.hpp"
#include "codec/huff.hpp"
#include "codec/rans_pairs.hpp"
#include "codec/rans_split.hpp"
#include "codec/rans.hpp"
#include "host_clock.hpp"
#include "mithril/version.hpp"

namespace {

using namespace mithril;
using codec::Histogram;
using util::ByteVector;

constexpr std::size_t k_plane = 16u << 20;

Histogram hist_of(util::ByteSpan data) {
  Histogram h{};
  for (std::byte b : data) ++h[static_cast<std::uint8_t>(b)];
  return h;
}

double bound_bits(const Histogram& h) {
  double n = 0, bits = 0;
  for (auto c : h) n += c;
  for (auto c : h)
    if (c) bits -= c * std::log2(c / n);
  return bits;
}

// The high byte of a 16-bit float after rotl1 grouping (the sign moved to bit 0).
std::uint8_t rotl1_high_byte(std::uint16_t h) {
  return static_cast<std::uint8_t>(static_cast<std::uint16_t>((h << 1) | (h >> 15)) >> 8);
}

ByteVector make_plane(int kind) {
  std::mt19937_64 rng(1234 + kind);
  ByteVector v(k_plane);
  if (kind == 0) {
    std::normal_distribution<float> d(0.0f, 0.02f);
    for (auto& b : v) {
      const float f = d(rng);
      std::uint32_t u;
      std::memcpy(&u, &f, 4);
      u += 0x7fff + ((u >> 16) & 1);
      const auto h = static_cast<std::uint16_t>(u >> 16);
      b = static_cast<std::byte>(rotl1_high_byte(h));
    }
  } else if (kind == 4) {
    std::normal_distribution<float> d(0.0f, 0.02f);
    for (auto& b : v) {
      const auto h = std::bit_cast<std::uint16_t>(static_cast<_Float16>(d(rng)));
      b = static_cast<std::byte>(rotl1_high_byte(h));
    }
  } else if (kind == 1) {
    static constexpr std::uint8_t k_vals[] = {1, 1, 1, 1, 2, 2, 3, 4, 0x80, 0x81};
    for (auto& b : v) b = static_cast<std::byte>(rng() % 100 ? 0 : k_vals[rng() % 10]);
  } else {
    for (auto& b : v) b = static_cast<std::byte>(rng());
  }
  return v;
}

std::uint8_t bf16_exponent_byte(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  const auto h = static_cast<std::uint16_t>(u >> 16);
  return rotl1_high_byte(h);
}

// Every 4-byte value after the safetensors header, read as fp32 (the file
// is expected to hold fp32 tensors only, like all-MiniLM-L6-v2).
ByteVector real_plane() {
  const char* path = std::getenv("MITHRIL_BENCH_WEIGHTS");
  if (!path || !*path) return {};
  std::ifstream f(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::uint64_t header = 0;
  if (bytes.size() < 8) return {};
  std::memcpy(&header, bytes.data(), 8);
  if (header + 8 > bytes.size()) return {};
  const std::size_t n = (bytes.size() - 8 - header) / 4;
  if (n == 0) return {};
  ByteVector v(k_plane);
  for (std::size_t i = 0; i < k_plane; ++i) {
    float x;
    std::memcpy(&x, bytes.data() + 8 + header + 4 * (i % n), 4);
    v[i] = static_cast<std::byte>(bf16_exponent_byte(x));
  }
  return v;
}

const ByteVector& plane(int kind) {
  static const ByteVector planes[5] = {make_plane(0), make_plane(1), make_plane(2), real_plane(), make_plane(4)};
  return planes[kind];
}

bool plane_missing(benchmark::State& st, const ByteVector& src) {
  if (!src.empty()) return false;
  st.SkipWithError("set MITHRIL_BENCH_WEIGHTS to an fp32 .safetensors file");
  return true;
}

// Kernel k_huffman: the Huffman coder (codec/huff.hpp, plane codec 4;
// portable C++, one kernel), on the same planes.
constexpr std::int64_t k_huffman = 4;
// Kernel k_pairs: rANS in pairs (codec/rans_pairs.hpp, plane codec 5) with
// the rANS kernels encode()/decode() chose; a block the pair coder does not
// take (an fp16 high byte: too many values) is coded one symbol a byte, as
// the chunk encoder does.
constexpr std::int64_t k_pairs = 5;
// Kernel k_split: as k_pairs, and a block pairs refuse is split (high bits
// in pairs, low bits stored: codec/rans_split.hpp, plane codec 6) where
// low_bits_for finds a split, as levels 1-2 do with an fp16 high byte.
constexpr std::int64_t k_split = 6;
// Kernel 7: the rANS kernel avx512x (added after the coders above had their
// numbers); 0-3 are rans::detail::Kernel's own values.
constexpr std::int64_t k_avx512x = 7;
codec::rans::detail::Kernel rans_kernel_of(std::int64_t kernel) {
  return kernel == k_avx512x ? codec::rans::detail::Kernel::avx512x : static_cast<codec::rans::detail::Kernel>(kernel);
}

enum class Coder { rans, huffman, pairs, split };
Coder coder_of(std::int64_t kernel) {
  return kernel == k_huffman ? Coder::huffman
         : kernel == k_pairs ? Coder::pairs
         : kernel == k_split ? Coder::split
                             : Coder::rans;
}
enum class Block : std::uint8_t { rans, pairs, split };

bool kernel_missing(benchmark::State& st, std::int64_t kernel) {
  if (coder_of(kernel) != Coder::rans || codec::rans::detail::kernel_available(rans_kernel_of(kernel))) return false;
  st.SkipWithError("kernel not available on this CPU");
  return true;
}

struct Encoded {
  std::vector<ByteVector> blocks;  // empty vector entry = stored raw
  std::vector<Block> how;          // Coder::pairs and Coder::split: how each block is coded
  double bound = 0;
  std::size_t bytes = 0;
};

Encoded encode_all(const ByteVector& src, std::size_t block, Coder coder) {
  Encoded e;
  codec::rans_pairs::Encoder pairs;
  codec::rans_split::Encoder split;
  for (std::size_t off = 0; off < src.size(); off += block) {
    const util::ByteSpan in(src.data() + off, std::min(block, src.size() - off));
    const Histogram h = hist_of(in);
    e.bound += bound_bits(h) / 8;
    ByteVector out(in.size());
    std::optional<std::size_t> n;
    Block how = Block::rans;
    if (coder == Coder::pairs || coder == Coder::split) {
      n = pairs.encode(in, h, out);
      if (n) how = Block::pairs;
    }
    if (!n && coder == Coder::split) {
      n = split.encode(in, h, out);
      if (n) how = Block::split;
    }
    e.how.push_back(how);
    if (!n) n = coder == Coder::huffman ? codec::huff::encode(in, h, out) : codec::rans::encode(in, h, out);
    out.resize(n ? *n : 0);
    e.bytes += n ? *n : in.size();
    e.blocks.push_back(std::move(out));
  }
  return e;
}

void set_counters(benchmark::State& st, const ByteVector& src, const Encoded& e) {
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * src.size()));
  st.counters["SI"] = benchmark::Counter(static_cast<double>(src.size()), benchmark::Counter::kIsIterationInvariantRate,
                                         benchmark::Counter::OneK::kIs1000);
  st.counters["bits/byte"] = 8.0 * static_cast<double>(e.bytes) / static_cast<double>(src.size());
  st.counters["vs_bound"] = static_cast<double>(e.bytes) / e.bound;
}

void BM_encode(benchmark::State& st) {
  const ByteVector& src = plane(static_cast<int>(st.range(0)));
  const std::size_t block = static_cast<std::size_t>(st.range(1));
  const auto kernel = rans_kernel_of(st.range(2));
  if (plane_missing(st, src) || kernel_missing(st, st.range(2))) return;
  std::vector<Histogram> hists;
  for (std::size_t off = 0; off < src.size(); off += block)
    hists.push_back(hist_of(util::ByteSpan(src.data() + off, std::min(block, src.size() - off))));
  const Coder coder = coder_of(st.range(2));
  ByteVector out(block);
  codec::rans_pairs::Encoder pairs;
  codec::rans_split::Encoder split;
  for (auto _ : st) {
    std::size_t i = 0;
    for (std::size_t off = 0; off < src.size(); off += block, ++i) {
      const util::ByteSpan in(src.data() + off, std::min(block, src.size() - off));
      if (coder == Coder::huffman) {
        benchmark::DoNotOptimize(codec::huff::encode(in, hists[i], out));
      } else if (coder == Coder::pairs || coder == Coder::split) {
        if (!pairs.encode(in, hists[i], out) && !(coder == Coder::split && split.encode(in, hists[i], out)))
          benchmark::DoNotOptimize(codec::rans::encode(in, hists[i], out));
      } else {
        benchmark::DoNotOptimize(codec::rans::detail::encode_with(in, hists[i], out, kernel));
      }
    }
  }
  set_counters(st, src, encode_all(src, block, coder));
}

void BM_decode(benchmark::State& st) {
  const ByteVector& src = plane(static_cast<int>(st.range(0)));
  const std::size_t block = static_cast<std::size_t>(st.range(1));
  const auto kernel = rans_kernel_of(st.range(2));
  if (plane_missing(st, src) || kernel_missing(st, st.range(2))) return;
  const Coder coder = coder_of(st.range(2));
  const Encoded e = encode_all(src, block, coder);
  ByteVector out(src.size());
  for (auto _ : st) {
    std::size_t off = 0;
    for (std::size_t i = 0; i < e.blocks.size(); ++i) {
      const ByteVector& b = e.blocks[i];
      const std::size_t n = std::min(block, src.size() - off);
      const util::MutableByteSpan to(out.data() + off, n);
      if (b.empty())
        std::memcpy(out.data() + off, src.data() + off, n);  // stored raw
      else if (coder == Coder::huffman)
        codec::huff::decode(b, to);
      else if (coder == Coder::pairs || coder == Coder::split)
        e.how[i] == Block::pairs   ? codec::rans_pairs::decode(b, to)
        : e.how[i] == Block::split ? codec::rans_split::decode(b, to)
                                   : codec::rans::decode(b, to);
      else
        codec::rans::detail::decode_with(b, to, kernel);
      off += n;
    }
    benchmark::DoNotOptimize(out.data());
  }
  if (out != src) st.SkipWithError("round trip mismatch");
  set_counters(st, src, e);
}

// kernel: 0 = scalar, 1 = avx2, 2 = avx512, 3 = avx2x, 7 = avx512x (rANS),
// 4 = Huffman, 5 = rANS in pairs, 6 = pairs or split
void kernel_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"plane", "block", "kernel"});
  for (int kind : {0, 1, 2, 3, 4})
    for (std::int64_t block : {std::int64_t{1} << 20, std::int64_t{k_plane}})
      for (int kernel : {0, 1, 2, 3, 7, 4, 5, 6}) b->Args({kind, block, kernel});
  b->Unit(benchmark::kMillisecond);
}

// The histogram every coded plane needs first, counted as rans_blocks does
// (64 KiB pieces, each judged on the previous one): isa 0 = scalar (plain
// count), 2 = avx2, 3 = avx512 (vector compares where a few bytes dominate).
void BM_histogram(benchmark::State& st) {
  const ByteVector& src = plane(static_cast<int>(st.range(0)));
  const auto isa = static_cast<codec::detail::Isa>(st.range(1));
  const auto* k = codec::detail::kernels_for(isa);
  if (plane_missing(st, src)) return;
  if (!k) {
    st.SkipWithError("kernel not available on this CPU");
    return;
  }
  constexpr std::size_t piece = std::size_t{64} << 10;
  std::vector<Histogram> h((src.size() + piece - 1) / piece);
  for (auto _ : st) {
    for (std::size_t i = 0; i < h.size(); ++i) {
      const util::ByteSpan in(src.data() + i * piece, std::min(piece, src.size() - i * piece));
      codec::detail::histogram(*k, in, h[i], i ? &h[i - 1] : nullptr);
    }
    benchmark::DoNotOptimize(h.data());
  }
  Histogram total{};
  for (const auto& x : h)
    for (unsigned b = 0; b < 256; ++b) total[b] += x[b];
  if (total != hist_of(src)) st.SkipWithError("histogram mismatch");
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * src.size()));
}

BENCHMARK(BM_encode)->Apply(kernel_args);
BENCHMARK(BM_decode)->Apply(kernel_args);
BENCHMARK(BM_histogram)
    ->ArgNames({"plane", "isa"})
    ->ArgsProduct({{0, 1, 2, 3}, {0, 2, 3}})
    ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  const auto names = codec::rans::kernel_names();
  benchmark::AddCustomContext("cpu_model", mithril::cpu_model());
  benchmark::AddCustomContext("host_clock", mithril::bench::describe(mithril::bench::measure_host_clock()));
  benchmark::AddCustomContext("rans_kernels", "encode " + std::string(names.encode) + ", decode " +
                                                  std::string(names.decode) +
                                                  " (0 = scalar, 1 = avx2, 2 = avx512, 3 = avx2x, 7 = avx512x; 4 = Huffman, levels 1-2;"
                                                  " 5 = pairs, expanded by " +
                                                  codec::rans_pairs::expand_kernel_name() +
                                                  "; 6 = pairs or split, merged by " +
                                                  codec::rans_split::merge_kernel_name() + ")");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
