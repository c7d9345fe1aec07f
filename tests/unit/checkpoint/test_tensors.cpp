// compress_tensors() and CheckpointReader, checked against the independent
// file path: write_safetensors() + compress_file() / decompress_file().
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <thread>

#include "container/reader.hpp"
#include "formats/safetensors.hpp"
#include "mithril/checkpoint.hpp"
#include "mithril/error.hpp"
#include "mithril/tensors.hpp"
#include "test_helpers.hpp"
#include "util/cold_memory.hpp"
#include "util/mapped_file.hpp"

namespace mithril {
namespace {

using test::code_of;
using test::random_bytes;
using test::read_file;
using test::smooth_f32;
using test::TempDir;

struct Owned {
  std::string name, dtype;
  std::vector<std::uint64_t> shape;
  util::ByteVector bytes;
};

std::vector<Owned> sample_tensors(float phase = 0.0f) {
  std::vector<Owned> t;
  t.push_back({"layer.0.weight", "F32", {64, 48}, smooth_f32(64 * 48, phase)});
  t.push_back({"layer.0.bias", "BF16", {300}, random_bytes(600, 7)});
  t.push_back({"mask", "BOOL", {5, 3}, random_bytes(15, 8)});
  for (auto& b : t.back().bytes) b = static_cast<std::byte>(static_cast<unsigned>(b) & 1);
  t.push_back({"step", "I64", {}, random_bytes(8, 9)});                // 0-dim
  t.push_back({"empty", "F16", {0, 4}, {}});                           // no elements
  t.push_back({"fp8", "F8_E4M3", {33}, random_bytes(33, 10)});
  t.push_back({"big.U16", "U16", {5000}, random_bytes(10000, 11)});
  return t;
}

std::vector<TensorData> views_of(const std::vector<Owned>& owned) {
  std::vector<TensorData> v;
  for (const auto& o : owned) v.push_back({o.name, o.dtype, o.shape, o.bytes});
  return v;
}

std::vector<formats::TensorView> format_views(const std::vector<Owned>& owned) {
  std::vector<formats::TensorView> v;
  for (const auto& o : owned) v.push_back({o.name, *formats::parse_dtype(o.dtype), o.shape, o.bytes});
  return v;
}

CompressOptions small_chunks(unsigned threads = 2) {
  CompressOptions o;
  o.chunk_size = 256;  // many chunks per tensor
  o.threads = threads;
  return o;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(Tensors, SameBytesAsCompressingTheSafetensorsFile) {
  TempDir dir;
  const auto owned = sample_tensors();
  const std::map<std::string, std::string> meta{{"format", "pt"}};
  formats::write_safetensors(dir / "m.safetensors", format_views(owned), meta, util::Overwrite::refuse);
  compress_file(dir / "m.safetensors", dir / "via_file.mcp", small_chunks());
  const auto r = compress_tensors(views_of(owned), meta, dir / "m.mcp", small_chunks());
  EXPECT_EQ(r.source_kind, "safetensors");
  EXPECT_EQ(r.tensors, owned.size());
  EXPECT_GT(r.chunks, owned.size());
  EXPECT_EQ(read_file(dir / "m.mcp"), read_file(dir / "via_file.mcp"));

  decompress_file(dir / "m.mcp", dir / "restored.safetensors", {});
  EXPECT_EQ(read_file(dir / "restored.safetensors"), read_file(dir / "m.safetensors"));
  EXPECT_EQ(describe_file(dir / "m.mcp").source_name, "m.safetensors");
}

TEST(Tensors, OutputIndependentOfThreadCount) {
  TempDir dir;
  const auto owned = sample_tensors();
  // Same file name: the index records the source name derived from it.
  std::filesystem::create_directory(dir / "a");
  std::filesystem::create_directory(dir / "b");
  compress_tensors(views_of(owned), {}, dir / "a/m.mcp", small_chunks(1));
  compress_tensors(views_of(owned), {}, dir / "b/m.mcp", small_chunks(4));
  EXPECT_EQ(read_file(dir / "a/m.mcp"), read_file(dir / "b/m.mcp"));
}

void expect_reads_back(const CheckpointReader& reader, const std::vector<Owned>& owned) {
  ASSERT_EQ(reader.tensors().size(), owned.size());
  for (const auto& o : owned) {
    const auto i = reader.find(o.name);
    ASSERT_TRUE(i) << o.name;
    const auto& e = reader.tensors()[*i];
    EXPECT_EQ(e.dtype, o.dtype);
    EXPECT_EQ(e.shape, o.shape);
    ASSERT_EQ(e.bytes, o.bytes.size());
    util::ByteVector out(e.bytes, std::byte{0xAA});
    reader.read_tensor(*i, out);
    EXPECT_EQ(out, o.bytes) << o.name;
  }
  EXPECT_FALSE(reader.find("nope"));
}

TEST(Tensors, ReaderDecodesEachTensorOfMcpAndSafetensors) {
  TempDir dir;
  const auto owned = sample_tensors();
  const std::map<std::string, std::string> meta{{"epoch", "3"}};
  CompressOptions o = small_chunks();
  o.metadata = {{"step", "100"}};
  compress_tensors(views_of(owned), meta, dir / "m.mcp", o);
  formats::write_safetensors(dir / "m.safetensors", format_views(owned), meta, util::Overwrite::refuse);

  CheckpointReader mcp(dir / "m.mcp");
  EXPECT_TRUE(mcp.is_mcp());
  EXPECT_EQ(mcp.header_metadata(), meta);
  EXPECT_EQ(mcp.metadata().at("step"), "100");
  expect_reads_back(mcp, owned);

  CheckpointReader plain(dir / "m.safetensors", {std::nullopt, 3});
  EXPECT_FALSE(plain.is_mcp());
  EXPECT_EQ(plain.header_metadata(), meta);
  expect_reads_back(plain, owned);

  // Both list tensors in the same (data) order.
  for (std::size_t i = 0; i < owned.size(); ++i) EXPECT_EQ(mcp.tensors()[i].name, plain.tensors()[i].name);
}

// The header's __metadata__ comes back from an .mcp exactly, escapes and
// UTF-8 included, as from the plain file.
TEST(Tensors, ReaderKeepsHeaderMetadataStringsExactly) {
  TempDir dir;
  const auto owned = sample_tensors();
  const std::map<std::string, std::string> meta{{"epoch", "3"},
                                                {"note", "a \"quoted\" \\ value\nnext line\ttab \x01"},
                                                {"\xc3\xbc" "n" "\xc3\xaf" "code \xe2\x9c\x93", "\xf0\x9f\x94\xa5"},
                                                {"", "empty key"},
                                                {"format", "pt"}};
  compress_tensors(views_of(owned), meta, dir / "m.mcp", small_chunks());
  formats::write_safetensors(dir / "m.safetensors", format_views(owned), meta, util::Overwrite::refuse);
  EXPECT_EQ(CheckpointReader(dir / "m.mcp").header_metadata(), meta);
  EXPECT_EQ(CheckpointReader(dir / "m.safetensors").header_metadata(), meta);
}

TEST(Tensors, ConcurrentReadsFromOneReader) {
  TempDir dir;
  const auto owned = sample_tensors();
  compress_tensors(views_of(owned), {}, dir / "m.mcp", small_chunks());
  const CheckpointReader reader(dir / "m.mcp", {std::nullopt, 2});
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      bool all = true;
      for (int round = 0; round < 5; ++round) {
        for (const auto& o : owned) {
          util::ByteVector out(o.bytes.size());
          reader.read_tensor(*reader.find(o.name), out);
          all = all && out == o.bytes;
        }
      }
      ok[static_cast<std::size_t>(t)] = all ? 1 : 0;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok, std::vector<int>(4, 1));
}

TEST(Tensors, ReadAllWithDigestAndRefusesPartialDigest) {
  TempDir dir;
  const auto owned = sample_tensors();
  compress_tensors(views_of(owned), {}, dir / "m.mcp", small_chunks());
  CheckpointReader reader(dir / "m.mcp", {std::nullopt, 4});
  std::vector<util::ByteVector> outs;
  std::vector<CheckpointReader::Target> targets;
  for (std::size_t i = 0; i < reader.tensors().size(); ++i) outs.emplace_back(reader.tensors()[i].bytes);
  for (std::size_t i = 0; i < reader.tensors().size(); ++i) targets.push_back({i, outs[i]});
  reader.read_tensors(targets, true);
  for (std::size_t i = 0; i < reader.tensors().size(); ++i) {
    const auto& name = reader.tensors()[i].name;
    const auto it = std::find_if(owned.begin(), owned.end(), [&](const Owned& o) { return o.name == name; });
    EXPECT_EQ(outs[i], it->bytes) << name;
  }
  targets.pop_back();
  EXPECT_EQ(code_of([&] { reader.read_tensors(targets, true); }), Errc::invalid_argument);
}

// Tensors read into memory just allocated (never touched, as mithril.load's
// torch.empty) go through util::FreshMemory: their pages mapped a piece at a
// time before they are written. The same bytes as into a buffer that holds
// old data, at any thread count.
TEST(Tensors, ReadIntoFreshMemoryIsTheSameBytes) {
  TempDir dir;
  std::vector<Owned> owned;
  owned.push_back({"a", "F32", {1000, 700}, smooth_f32(700000, 0.25f)});  // 2.7 MB
  owned.push_back({"b", "BF16", {300, 1000}, random_bytes(600000, 3)});
  CompressOptions o;
  o.chunk_size = 1 << 20;  // several chunks per tensor
  compress_tensors(views_of(owned), {}, dir / "m.mcp", o);
  for (unsigned threads : {1u, 3u}) {
    CheckpointReader reader(dir / "m.mcp", {std::nullopt, threads});
    std::size_t total = 0;
    for (const auto& t : reader.tensors()) total += t.bytes + 64;
    void* map = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(map, MAP_FAILED);
    std::vector<CheckpointReader::Target> targets;
    auto* at = static_cast<std::byte*>(map) + 64;  // past a header's worth, like malloc's blocks
    for (std::size_t i = 0; i < reader.tensors().size(); ++i) {
      targets.push_back({i, std::span<std::byte>(at, reader.tensors()[i].bytes)});
      at += reader.tensors()[i].bytes + 64;
    }
    ASSERT_TRUE(util::residency(map, total).mostly_untouched());
    reader.read_tensors(targets, true);
    for (const auto& t : targets) {
      const auto& name = reader.tensors()[t.tensor].name;
      const auto& want = std::find_if(owned.begin(), owned.end(), [&](const Owned& x) { return x.name == name; })->bytes;
      EXPECT_TRUE(std::equal(t.out.begin(), t.out.end(), want.begin(), want.end())) << name << " " << threads;
    }
    ::munmap(map, total);
  }
}

TEST(Tensors, DeltaAgainstBaseNeedsThatBase) {
  TempDir dir;
  const auto base = sample_tensors(0.0f);
  auto next = sample_tensors(0.0f);
  next[0].bytes = smooth_f32(64 * 48, 0.5f);  // one tensor changed
  compress_tensors(views_of(base), {}, dir / "base.mcp", small_chunks());
  formats::write_safetensors(dir / "other.safetensors", format_views(next), {}, util::Overwrite::refuse);
  CompressOptions o = small_chunks();
  o.base = dir / "base.mcp";
  compress_tensors(views_of(next), {}, dir / "delta.mcp", o);
  const auto info = describe_file(dir / "delta.mcp");
  ASSERT_TRUE(info.base);
  EXPECT_EQ(info.base->name, "base.safetensors");

  EXPECT_EQ(code_of([&] { CheckpointReader r(dir / "delta.mcp"); }), Errc::invalid_argument);
  EXPECT_EQ(code_of([&] { CheckpointReader r(dir / "delta.mcp", {dir / "other.safetensors", 0}); }),
            Errc::invalid_argument);
  CheckpointReader reader(dir / "delta.mcp", {dir / "base.mcp", 2});
  expect_reads_back(reader, next);
  // The delta restores to the file the tensors make.
  DecompressOptions d;
  d.base = dir / "base.mcp";
  decompress_file(dir / "delta.mcp", dir / "restored.safetensors", d);
  EXPECT_EQ(read_file(dir / "restored.safetensors"), read_file(dir / "other.safetensors"));
}

// bf16 values ~ N(0, scale) (sums of four uniforms), as trained weights look.
util::ByteVector normal_bf16(std::size_t n, float scale, std::uint64_t seed) {
  util::ByteVector out(2 * n);
  std::uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (std::size_t i = 0; i < n; ++i) {
    float sum = 0;
    for (int k = 0; k < 4; ++k) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      sum += static_cast<float>(x >> 40) / static_cast<float>(1 << 24) - 0.5f;
    }
    const float v = sum * scale * 1.7320508f;
    std::uint32_t u;
    std::memcpy(&u, &v, 4);
    const auto h = static_cast<std::uint16_t>(u >> 16);
    std::memcpy(out.data() + 2 * i, &h, 2);
  }
  return out;
}

// `count` small bf16 tensors; every other one `scale_b` instead of 0.02.
std::vector<Owned> small_bf16_tensors(std::size_t count, float scale_b = 0.02f, std::uint64_t rows = 16) {
  std::vector<Owned> t;
  for (std::size_t i = 0; i < count; ++i)
    t.push_back({"layers." + std::to_string(100 + i) + ".w", "BF16", {rows, 24},
                 normal_bf16(rows * 24, i % 2 ? scale_b : 0.02f, i + 1)});
  return t;
}

TEST(Tensors, SmallTensorsShareChunksAndReadBackOneByOne) {
  TempDir dir;
  auto owned = small_bf16_tensors(40);
  owned.push_back({"big", "F32", {64, 48}, smooth_f32(64 * 48, 0.0f)});  // 12 KiB: one chunk of its own
  owned.push_back({"z.after", "BF16", {8}, normal_bf16(8, 0.02f, 99)});
  formats::write_safetensors(dir / "m.safetensors", format_views(owned), {}, util::Overwrite::refuse);
  CompressOptions o;
  o.threads = 2;
  o.chunk_size = 4096;  // a shared chunk holds at most 4 KiB: 5 tensors of 768 bytes
  const auto r = compress_file(dir / "m.safetensors", dir / "m.mcp", o);
  // 1 header chunk, 3 chunks of the F32 tensor (first: the wider dtype),
  // 8 shared chunks of 5 small tensors, the last one holding "z.after" too.
  EXPECT_EQ(r.chunks, 1u + 3u + 8u);
  // The same bytes from the tensors themselves (gathered from their buffers),
  // on any number of threads.
  std::filesystem::create_directory(dir / "t1");
  std::filesystem::create_directory(dir / "t4");
  compress_tensors(views_of(owned), {}, dir / "t1/m.mcp", [&] { auto p = o; p.threads = 1; return p; }());
  compress_tensors(views_of(owned), {}, dir / "t4/m.mcp", [&] { auto p = o; p.threads = 4; return p; }());
  EXPECT_EQ(read_file(dir / "t1/m.mcp"), read_file(dir / "m.mcp"));
  EXPECT_EQ(read_file(dir / "t4/m.mcp"), read_file(dir / "m.mcp"));

  decompress_file(dir / "m.mcp", dir / "restored.safetensors", {});
  EXPECT_EQ(read_file(dir / "restored.safetensors"), read_file(dir / "m.safetensors"));
  const auto v = verify_file(dir / "m.mcp", {});
  EXPECT_TRUE(v.problems.empty());

  // Each tensor's stored bytes: a share of its chunk; all of them add up.
  const auto info = describe_file(dir / "m.mcp");
  std::uint64_t stored = info.other_stored_bytes.value_or(0);
  for (const auto& t : info.tensors) {
    EXPECT_GT(t.stored_bytes.value_or(0), 0u) << t.name;
    EXPECT_EQ(t.chunks, 1u + 2u * (t.name == "big")) << t.name;
    stored += t.stored_bytes.value_or(0);
  }
  const container::Reader mcp(dir / "m.mcp");
  std::uint64_t payloads = 0;
  for (const auto& c : mcp.index().chunks) payloads += c.stored_size;
  EXPECT_EQ(stored, payloads);
  EXPECT_EQ(mcp.index().chunks.size(), 12u);
  std::size_t shared = 0;
  for (const auto& c : mcp.index().chunks) shared += c.shared();
  EXPECT_EQ(shared, 8u);

  {
    // One at a time, in file order: each shared chunk is fetched (and
    // decoded) once, not once per tensor of it.
    CheckpointReader one(dir / "m.mcp", {std::nullopt, 2});
    const std::uint64_t at_open = one.bytes_read();
    for (std::size_t i = 0; i < one.tensors().size(); ++i) {
      util::ByteVector out(one.tensors()[i].bytes);
      one.read_tensor(i, out);
    }
    std::uint64_t tensor_payloads = 0;
    for (const auto& c : mcp.index().chunks)
      if (c.segment > 0) tensor_payloads += c.stored_size;
    EXPECT_EQ(one.bytes_read() - at_open, tensor_payloads);
  }
  CheckpointReader reader(dir / "m.mcp", {std::nullopt, 2});
  expect_reads_back(reader, owned);  // one at a time, by name
  // All at once (each shared chunk decoded once), with the whole-file digest.
  std::vector<util::ByteVector> outs;
  std::vector<CheckpointReader::Target> targets;
  for (std::size_t i = 0; i < reader.tensors().size(); ++i) outs.emplace_back(reader.tensors()[i].bytes);
  for (std::size_t i = 0; i < reader.tensors().size(); ++i) targets.push_back({i, outs[i]});
  reader.read_tensors(targets, true);
  const auto owned_bytes = [&](std::size_t i) -> const util::ByteVector& {
    const auto& name = reader.tensors()[i].name;
    return std::find_if(owned.begin(), owned.end(), [&](const Owned& x) { return x.name == name; })->bytes;
  };
  for (std::size_t i = 0; i < outs.size(); ++i) EXPECT_EQ(outs[i], owned_bytes(i)) << reader.tensors()[i].name;
  // Some of them, in another order.
  std::vector<CheckpointReader::Target> some{{17, outs[17]}, {13, outs[13]}, {14, outs[14]}};
  for (auto& t : some) std::fill(t.out.begin(), t.out.end(), std::byte{0});
  reader.read_tensors(some);
  for (const auto& t : some) EXPECT_EQ(outs[t.tensor], owned_bytes(t.tensor));
  // A range inside a tensor that shares its chunk.
  const auto i = *reader.find("layers.106.w");
  util::ByteVector part(100);
  reader.read_tensor_range(i, 300, part);
  EXPECT_TRUE(std::equal(part.begin(), part.end(), owned[6].bytes.begin() + 300));
}

TEST(Tensors, SharedChunksGatheredFromSeparateBuffersAtAnyThreadCount) {
  // Random integers: the shared chunks are stored raw, their payloads views
  // of the gathered bytes, which must outlive the chunk's writing.
  TempDir dir;
  std::vector<Owned> owned;
  for (unsigned i = 0; i < 40; ++i) owned.push_back({"r." + std::to_string(100 + i), "U32", {50}, random_bytes(200, i)});
  formats::write_safetensors(dir / "m.safetensors", format_views(owned), {}, util::Overwrite::refuse);
  for (unsigned threads : {1u, 2u, 4u}) {
    CompressOptions o;
    o.threads = threads;
    o.chunk_size = 1024;
    o.force = true;
    const auto r = compress_tensors(views_of(owned), {}, dir / "m.mcp", o);
    EXPECT_LT(r.chunks, 1u + 20u) << threads;  // up to 5 tensors of 200 bytes a chunk (the samples of 50 differ)
    compress_file(dir / "m.safetensors", dir / "f.mcp", o);
    EXPECT_EQ(read_file(dir / "m.mcp"), read_file(dir / "f.mcp")) << threads;
    DecompressOptions d;
    d.force = true;
    decompress_file(dir / "m.mcp", dir / "back.safetensors", d);
    EXPECT_EQ(read_file(dir / "back.safetensors"), read_file(dir / "m.safetensors")) << threads;
  }
}

TEST(Tensors, SharedChunksMakeAVersion11File) {
  TempDir dir;
  compress_tensors(views_of(small_bf16_tensors(10)), {}, dir / "shared.mcp", {});
  const std::vector<Owned> one{{"w", "F32", {64, 48}, smooth_f32(64 * 48, 0.0f)}};
  compress_tensors(views_of(one), {}, dir / "plain.mcp", {});
  EXPECT_EQ(describe_file(dir / "shared.mcp").format_version, "1.1");
  EXPECT_EQ(describe_file(dir / "plain.mcp").format_version, "1.0");
  // A file that says 1.0 (header and footer) but holds a shared chunk is damaged.
  auto bytes = read_file(dir / "shared.mcp");
  bytes[10] = std::byte{0};
  bytes[bytes.size() - 48 + 34] = std::byte{0};
  {
    std::ofstream f(dir / "says10.mcp", std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  const auto why = message_of([&] { describe_file(dir / "says10.mcp"); });
  EXPECT_NE(why.find("shared chunks in a version 1.0 file"), std::string::npos) << why;
  EXPECT_EQ(code_of([&] { decompress_file(dir / "says10.mcp", dir / "out", {}); }), Errc::corrupt);
}

TEST(Tensors, SmallTensorsOfDifferentScalesKeepTheirOwnChunks) {
  TempDir dir;
  // Alternating N(0, 0.02) and N(0, 0.0002): their exponents lie ~7 binades
  // apart, and one table for both would cost more than it saves (~1 bit an
  // element: far more than a chunk's own table and lanes).
  const auto apart = small_bf16_tensors(20, 0.0002f, 128);
  const auto alike = small_bf16_tensors(20, 0.02f, 128);
  const auto r_apart = compress_tensors(views_of(apart), {}, dir / "apart.mcp", {});
  const auto r_alike = compress_tensors(views_of(alike), {}, dir / "alike.mcp", {});
  EXPECT_EQ(r_apart.chunks, 21u);
  EXPECT_EQ(r_alike.chunks, 2u);
  CheckpointReader reader(dir / "apart.mcp");
  expect_reads_back(reader, apart);
}

TEST(Tensors, SmallTensorsMatchedInADeltaBaseKeepTheirOwnChunks) {
  TempDir dir;
  const auto base = small_bf16_tensors(20);
  auto next = small_bf16_tensors(20);
  next[3].bytes = normal_bf16(16 * 24, 0.02f, 1234);
  next.push_back({"new.tensor", "BF16", {16, 24}, normal_bf16(16 * 24, 0.02f, 77)});
  next.push_back({"new.tensor2", "BF16", {16, 24}, normal_bf16(16 * 24, 0.02f, 78)});
  compress_tensors(views_of(base), {}, dir / "base.mcp", {});
  CompressOptions o;
  o.base = dir / "base.mcp";
  const auto r = compress_tensors(views_of(next), {}, dir / "delta.mcp", o);
  // The matched ones each code against their base bytes; the two new ones share.
  EXPECT_EQ(r.chunks, 1u + 20u + 1u);
  CheckpointReader reader(dir / "delta.mcp", {dir / "base.mcp", 2});
  expect_reads_back(reader, next);
}

TEST(Tensors, BadInputsAreClearErrors) {
  TempDir dir;
  auto owned = sample_tensors();
  auto bad_dtype = views_of(owned);
  bad_dtype[0].dtype = "float32";
  EXPECT_EQ(code_of([&] { compress_tensors(bad_dtype, {}, dir / "a.mcp", {}); }), Errc::invalid_argument);
  EXPECT_NE(message_of([&] { compress_tensors(bad_dtype, {}, dir / "a.mcp", {}); }).find("unknown dtype 'float32'"),
            std::string::npos);
  auto bad_size = views_of(owned);
  bad_size[1].data = bad_size[1].data.first(10);
  EXPECT_NE(message_of([&] { compress_tensors(bad_size, {}, dir / "a.mcp", {}); }).find("layer.0.bias"),
            std::string::npos);
  auto dup = views_of(owned);
  dup[1].name = dup[0].name;
  EXPECT_EQ(code_of([&] { compress_tensors(dup, {}, dir / "a.mcp", {}); }), Errc::invalid_argument);
  EXPECT_FALSE(std::filesystem::exists(dir / "a.mcp"));

  compress_tensors(views_of(owned), {}, dir / "a.mcp", {});
  EXPECT_EQ(code_of([&] { compress_tensors(views_of(owned), {}, dir / "a.mcp", {}); }), Errc::exists);
  CompressOptions force;
  force.force = true;
  compress_tensors(views_of(owned), {}, dir / "a.mcp", force);

  CheckpointReader reader(dir / "a.mcp");
  util::ByteVector small(3);
  EXPECT_EQ(code_of([&] { reader.read_tensor(0, small); }), Errc::invalid_argument);
  EXPECT_EQ(code_of([&] { reader.read_tensor(99, small); }), Errc::invalid_argument);

  // An .mcp of a file that is not safetensors.
  test::write_file(dir / "notes.txt", util::as_bytes("just some text, not tensors"));
  compress_file(dir / "notes.txt", dir / "notes.mcp", {});
  EXPECT_EQ(code_of([&] { CheckpointReader r(dir / "notes.mcp"); }), Errc::unsupported);
  EXPECT_EQ(code_of([&] { CheckpointReader r(dir / "notes.txt"); }), Errc::unsupported);
  EXPECT_EQ(code_of([&] { CheckpointReader r(dir / "missing.mcp"); }), Errc::not_found);
}

TEST(Tensors, DamagedChunkIsCorruptAndNamesTheTensor) {
  TempDir dir;
  std::vector<Owned> owned{{"w", "F32", {4096}, smooth_f32(4096, 0.0f)}};
  compress_tensors(views_of(owned), {}, dir / "m.mcp", small_chunks());
  const auto info = describe_file(dir / "m.mcp");
  ASSERT_EQ(info.tensors.size(), 1u);
  // Payloads follow the 16-byte file header in chunk order: the safetensors
  // header's chunks, then the tensor's. Flip a byte in the middle of those.
  auto bytes = read_file(dir / "m.mcp");
  const std::size_t at = 16 + *info.other_stored_bytes + *info.tensors[0].stored_bytes / 2;
  bytes[at] ^= std::byte{0x40};
  test::write_file(dir / "m.mcp", bytes);
  CheckpointReader reader(dir / "m.mcp");
  util::ByteVector out(owned[0].bytes.size());
  const auto msg = message_of([&] { reader.read_tensor(0, out); });
  EXPECT_NE(msg.find("'w'"), std::string::npos) << msg;
  EXPECT_EQ(code_of([&] { reader.read_tensor(0, out); }), Errc::corrupt);
}

// An .mcp cut by another process after it was mapped but before its header,
// footer and index were read: with the SIGBUS recovery of the Python module
// the reads find zeros, and the open says the file shrank (the cause)
// instead of the parse error the zeros would give.
TEST(Tensors, AnMcpCutBeforeItsIndexIsReadSaysItShrank) {
  util::install_bus_error_recovery();
  const TempDir dir;
  formats::write_safetensors(dir / "m.safetensors", format_views(sample_tensors()), {}, util::Overwrite::refuse);
  compress_file(dir / "m.safetensors", dir / "m.mcp", small_chunks());
  const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  ASSERT_GT(std::filesystem::file_size(dir / "m.mcp"), 2 * page);
  // Cut to nothing (the header read finds zeros), and to its first page (the
  // header is whole, the footer and index read find zeros).
  for (const std::uint64_t keep : {std::uint64_t{0}, page}) {
    SCOPED_TRACE(keep);
    std::filesystem::copy_file(dir / "m.mcp", dir / "cut.mcp", std::filesystem::copy_options::overwrite_existing);
    const auto source = std::make_shared<util::MappedSource>(dir / "cut.mcp");
    ASSERT_EQ(::truncate((dir / "cut.mcp").c_str(), static_cast<off_t>(keep)), 0);
    try {
      const container::Reader reader(source);
      ADD_FAILURE() << "the open did not throw";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::io);
      EXPECT_EQ(std::string(e.what()), (dir / "cut.mcp").string() +
                                           ": shrank while it was being read (truncated or rewritten by another process?)");
    }
  }
  // The whole file still opens.
  EXPECT_NO_THROW(container::Reader(std::make_shared<util::MappedSource>(dir / "m.mcp")));
}

}  // namespace
}  // namespace mithril
