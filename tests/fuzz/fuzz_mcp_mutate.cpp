// libFuzzer target for the .mcp reader and decoder starting from valid
// containers (the complement of fuzz_mcp, whose random bytes rarely get past
// the footer): a few small containers (BF16/F32/I8 tensors, levels 3 and 19,
// a delta with XOR/SUB residuals against a base, and a BF16 tensor whose
// exponent plane is coded two bytes a rANS symbol, plane codec 5, format 1.1's
// shared chunks, and an F16 tensor at level 1 whose high bytes are split,
// plane codec 6) are written
// once at start-up; each input picks one and overwrites regions of it. Built
// and run by scripts/fuzz; replayed by ctest.
//
// Input: u8 which container, then any number of patches
//   offset:u32 (little-endian, modulo the file size) length:u8 bytes[length]
// and, if the input's first byte has bit 7 set, the file is cut at the
// first patch's offset instead.
//
// Contract checked: exercise_container's (fuzz_mcp.cpp), with the delta's
// real base given, so residual chunks are decoded against it.
#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "checkpoint/source.hpp"
#include "fuzz_mcp.hpp"
#include "mithril/tensors.hpp"
#include "util/mapped_file.hpp"

using namespace mithril;

namespace {

struct Corpus {
  std::vector<util::ByteVector> files;  // l3, l19, delta, pairs, shared, split
  std::unique_ptr<checkpoint::BaseSource> base;  // of the delta
  static constexpr std::size_t k_delta = 2;
};

util::ByteVector read_all(const std::filesystem::path& p) {
  const util::MappedFile f(p);
  return util::ByteVector(f.bytes().begin(), f.bytes().end());
}

// Deterministic weights: a smooth signal plus small noise, like trained ones.
std::vector<float> weights(std::size_t n, unsigned seed, float drift) {
  std::vector<float> w(n);
  std::uint32_t s = seed * 2654435761u + 1;
  for (std::size_t i = 0; i < n; ++i) {
    s = s * 1664525u + 1013904223u;
    const float noise = (static_cast<float>(s >> 8) / 16777216.0f - 0.5f) * 0.02f;
    w[i] = 0.05f * std::sin(static_cast<float>(i) * 0.01f) + noise + drift * static_cast<float>(i % 7);
  }
  return w;
}

std::vector<std::byte> as_bf16(const std::vector<float>& w) {
  std::vector<std::byte> out(w.size() * 2);
  for (std::size_t i = 0; i < w.size(); ++i) {
    std::uint32_t u;
    std::memcpy(&u, &w[i], 4);
    const std::uint16_t h = static_cast<std::uint16_t>(u >> 16);
    std::memcpy(out.data() + 2 * i, &h, 2);
  }
  return out;
}

std::vector<std::byte> as_f32(const std::vector<float>& w) {
  std::vector<std::byte> out(w.size() * 4);
  std::memcpy(out.data(), w.data(), out.size());
  return out;
}

void write(const std::filesystem::path& out, float drift, int level, const std::optional<std::filesystem::path>& base) {
  const auto bf = as_bf16(weights(3000, 1, drift));
  const auto f32 = as_f32(weights(1500, 2, drift));
  std::vector<std::byte> i8(700);
  for (std::size_t i = 0; i < i8.size(); ++i) i8[i] = std::byte(static_cast<std::uint8_t>(i * 7 % 13));
  std::vector<TensorData> t{{"layer.weight", "BF16", {60, 50}, bf},
                            {"layer.bias", "F32", {1500}, f32},
                            {"mask", "I8", {700}, i8}};
  CompressOptions o;
  o.level = level;
  o.threads = 1;
  o.chunk_size = 4096;
  o.sync = false;
  o.force = true;
  o.base = base;
  (void)compress_tensors(t, {{"note", "fuzz"}}, out, o);
}

// 64 KiB of BF16 whose runs of 64 are scaled by 1/4, 1 or 4 (rows of a
// trained matrix): its exponent plane, one 64 KiB plane of one chunk, is
// coded in pairs (plane codec 5).
void write_pairs(const std::filesystem::path& out) {
  std::vector<float> w = weights(65536, 3, 0);
  std::uint32_t s = 12345;
  for (std::size_t i = 0; i < w.size(); i += 64) {
    s = s * 1664525u + 1013904223u;
    const float scale = std::array<float, 3>{0.25f, 1.0f, 4.0f}[(s >> 16) % 3];
    for (std::size_t j = i; j < i + 64; ++j) w[j] *= scale;
  }
  const auto bf = as_bf16(w);  // alive while compress_tensors reads it
  std::vector<TensorData> t{{"rows", "BF16", {256, 256}, bf}};
  CompressOptions o;
  o.threads = 1;
  o.sync = false;
  o.force = true;
  (void)compress_tensors(t, {}, out, o);
}

// Format 1.1: twelve small BF16 tensors and three small F32 ones, which
// share chunks of up to 4 KiB (checkpoint::share_small_chunks).
void write_shared(const std::filesystem::path& out) {
  std::vector<std::vector<std::byte>> keep;
  std::vector<TensorData> t;
  for (unsigned i = 0; i < 12; ++i) {
    keep.push_back(as_bf16(weights(400, 10 + i, 0)));
    t.push_back({"s." + std::to_string(10 + i), "BF16", {20, 20}, keep.back()});
  }
  for (unsigned i = 0; i < 3; ++i) {
    keep.push_back(as_f32(weights(100, 30 + i, 0)));
    t.push_back({"t." + std::to_string(i), "F32", {100}, keep.back()});
  }
  CompressOptions o;
  o.threads = 1;
  o.chunk_size = 4096;
  o.sync = false;
  o.force = true;
  (void)compress_tensors(t, {}, out, o);
}

// 64K F16 weights at level 1: the high-byte plane, 64 KiB, is split (plane
// codec 6: exponent bits in pairs, three mantissa bits stored).
void write_split(const std::filesystem::path& out) {
  const std::vector<float> w = weights(65536, 4, 0);
  std::vector<std::byte> f16(w.size() * 2);
  for (std::size_t i = 0; i < w.size(); ++i) {
    std::uint32_t x;
    std::memcpy(&x, &w[i], 4);
    const int e = static_cast<int>((x >> 23) & 0xff) - 127 + 15;  // truncated: any F16 bits do
    const auto h = static_cast<std::uint16_t>(((x >> 16) & 0x8000u) |
                                              (e >= 1 && e <= 30 ? (static_cast<std::uint32_t>(e) << 10) | ((x >> 13) & 0x3ffu) : 0u));
    std::memcpy(f16.data() + 2 * i, &h, 2);
  }
  std::vector<TensorData> t{{"half", "F16", {256, 256}, f16}};
  CompressOptions o;
  o.level = 1;
  o.threads = 1;
  o.sync = false;
  o.force = true;
  (void)compress_tensors(t, {}, out, o);
}

Corpus& corpus() {
  static Corpus c = [] {
    Corpus k;
    const auto dir = fuzz::scratch_dir();
    write(dir / "l3.mcp", 0, 3, std::nullopt);
    write(dir / "l19.mcp", 0, 19, std::nullopt);
    write(dir / "delta.mcp", 1e-4f, 19, dir / "l3.mcp");
    write_pairs(dir / "pairs.mcp");
    write_shared(dir / "shared.mcp");
    write_split(dir / "split.mcp");
    for (const char* n : {"l3.mcp", "l19.mcp", "delta.mcp", "pairs.mcp", "shared.mcp", "split.mcp"})
      k.files.push_back(read_all(dir / n));
    k.base = std::make_unique<checkpoint::BaseSource>(dir / "l3.mcp", 1);
    return k;
  }();
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)corpus();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  auto& c = corpus();
  const std::size_t which = (data[0] & 0x7f) % c.files.size();
  util::ByteVector file = c.files[which];
  bool cut = (data[0] & 0x80) != 0;
  std::size_t pos = 1;
  while (pos + 5 <= size) {
    std::uint32_t off;
    std::memcpy(&off, data + pos, 4);
    std::size_t len = data[pos + 4];
    pos += 5;
    len = std::min(len, size - pos);
    if (file.empty()) break;
    off %= file.size();
    if (cut) {
      file.resize(off);
      cut = false;
    }
    for (std::size_t i = 0; i < len && off + i < file.size(); ++i) file[off + i] = std::byte(data[pos + i]);
    pos += len;
  }
  const bool is_delta = which == Corpus::k_delta;
  fuzz::exercise_container(file, is_delta ? c.base.get() : nullptr);
  return 0;
}
