// The in-memory API (mithril/memory.hpp) against the file path: the same
// container bytes as compress_file()/compress_tensors() for every thread
// count, bit-exact round trips for every dtype, and damage always detected.
#include <gtest/gtest.h>

#include <cstring>
#include <new>

#include <sys/mman.h>

#include "container/format.hpp"
#include "container/reader.hpp"
#include "formats/dtype.hpp"
#include "mithril/checkpoint.hpp"
#include "mithril/error.hpp"
#include "mithril/memory.hpp"
#include "test_helpers.hpp"
#include "util/blake3.hpp"
#include "util/xxh3.hpp"

namespace mithril {
namespace {

using test::code_of;
using test::random_bytes;
using test::read_file;
using test::TempDir;

// Values with a narrow exponent range, so that the planes really compress.
util::ByteVector varied_f32(std::size_t n) {
  util::ByteVector out(n * 4);
  for (std::size_t i = 0; i < n; ++i) {
    const float v = 0.001f * static_cast<float>((i * 7919) % 1000) - 0.5f;
    std::memcpy(out.data() + 4 * i, &v, 4);
  }
  return out;
}

CompressOptions opts(unsigned threads, std::size_t chunk = 4096) {
  CompressOptions o;
  o.threads = threads;
  o.chunk_size = chunk;
  o.sync = false;
  return o;
}

TEST(Memory, SameContainerAsTheFilePathForAnyThreadCount) {
  TempDir dir;
  util::ByteVector data = varied_f32(300000);
  const auto noise = random_bytes(5000, 3);
  data.insert(data.end(), noise.begin(), noise.end());  // stored chunks too
  test::write_file(dir / "raw.bin", data);
  const CompressResult r = compress_file(dir / "raw.bin", dir / "raw.mcp", opts(1));
  // The result names the digest the index records: the original bytes' BLAKE3.
  EXPECT_EQ(r.source_blake3, util::to_hex(util::blake3(data)));
  EXPECT_EQ(r.source_blake3, describe_file(dir / "raw.mcp").source_blake3);
  const auto want = read_file(dir / "raw.mcp");
  for (unsigned threads : {1u, 2u, 3u, 8u}) {
    std::vector<std::byte> got;
    const auto size = compress_to_memory(data, {}, opts(threads), [&](std::uint64_t bound) {
      got.resize(bound);
      return std::span<std::byte>(got);
    }, "raw.bin");  // the file path records the file's name
    got.resize(size);
    EXPECT_EQ(got, want) << threads;
    EXPECT_EQ(decompress_buffer(got, {}), data);
    compress_file(dir / "raw.bin", dir / "again.mcp", [&] {
      auto o = opts(threads);
      o.force = true;
      return o;
    }());
    EXPECT_EQ(read_file(dir / "again.mcp"), want) << "file output depends on the thread count: " << threads;
  }
}

// The output buffer's two ways in (encode.cpp): pages not mapped yet (an
// untouched mapping: prefaulted piece by piece, ordinary stores) and pages
// already mapped with old contents (non-temporal stores): the same bytes.
// A new output buffer (untouched pages, mapped a piece at a time as huge
// pages where that pays) and a reused one (written by non-temporal stores)
// get the same bytes, for plain float data with stored chunks among them and
// for a safetensors image (header, tensors of 2 and 4 bytes, small ones
// sharing chunks), on one thread and two.
TEST(Memory, FreshAndReusedOutputBuffersGetTheSameBytes) {
  util::ByteVector floats = varied_f32(600000);
  const auto noise = random_bytes(300000, 5);
  floats.insert(floats.end(), noise.begin(), noise.end());
  TempDir dir;
  const auto w = varied_f32(200000);
  util::ByteVector h(w.begin(), w.begin() + 300000);  // as bf16: the f32s' halves
  const auto b = random_bytes(600, 5);
  const auto n = varied_f32(25);  // TensorData holds a view: the bytes must outlive it
  const std::vector<TensorData> tensors = {
      {"w", "F32", {200000}, w}, {"b", "BF16", {300}, b}, {"h", "BF16", {150000}, h}, {"n", "F32", {25}, n}};
  compress_tensors(tensors, {{"k", "v"}}, dir / "t.mcp", opts(1));
  DecompressOptions d;
  decompress_file(dir / "t.mcp", dir / "t.safetensors", d);
  const util::ByteVector image = read_file(dir / "t.safetensors");
  struct Case {
    const util::ByteVector* data;
    std::string_view dtype;
  };
  for (const Case& c : {Case{&floats, "F32"}, Case{&image, ""}}) {
    for (unsigned threads : {1u, 2u}) {
      SCOPED_TRACE(::testing::Message() << "dtype '" << c.dtype << "', threads " << threads);
      std::vector<std::byte> reused;
      const auto reused_size = compress_to_memory(*c.data, c.dtype, opts(threads, 1 << 18), [&](std::uint64_t bound) {
        reused.assign(bound, std::byte{0xab});  // resident, holding something else
        return std::span<std::byte>(reused);
      });
      void* fresh = MAP_FAILED;
      std::size_t fresh_bytes = 0;
      const auto fresh_size = compress_to_memory(*c.data, c.dtype, opts(threads, 1 << 18), [&](std::uint64_t bound) {
        fresh_bytes = bound;
        fresh = ::mmap(nullptr, bound, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (fresh == MAP_FAILED) throw std::bad_alloc();
        return std::span<std::byte>(static_cast<std::byte*>(fresh), bound);
      });
      ASSERT_NE(fresh, MAP_FAILED);
      ASSERT_EQ(fresh_size, reused_size);
      EXPECT_EQ(std::memcmp(fresh, reused.data(), reused_size), 0);
      EXPECT_EQ(decompress_buffer(std::span<const std::byte>(static_cast<const std::byte*>(fresh), fresh_size), {}),
                *c.data);
      ::munmap(fresh, fresh_bytes);
    }
  }
}

// Compression keeps its encoders (and their grown buffers) between calls:
// nothing of an earlier call, however large its chunks or whatever its level
// and data, may show in a later call's bytes.
TEST(Memory, EncodersKeptBetweenCallsLeaveNoTraceForAnyThreadCount) {
  const util::ByteVector small = varied_f32(20000);
  const auto compress = [](const util::ByteVector& data, std::string_view dtype, CompressOptions o) {
    std::vector<std::byte> got;
    got.resize(compress_to_memory(data, dtype, o, [&](std::uint64_t bound) {
      got.resize(bound);
      return std::span<std::byte>(got);
    }));
    return got;
  };
  const auto want = compress(small, "F32", opts(1));
  const auto want16 = compress(small, "BF16", opts(1));
  // Other data in large chunks at two levels, on several threads.
  util::ByteVector big = varied_f32(1 << 20);
  const auto noise = random_bytes(1 << 20, 9);
  big.insert(big.end(), noise.begin(), noise.end());
  for (int level : {3, 19}) {
    auto o = opts(3, std::size_t{1} << 20);
    o.level = level;
    EXPECT_EQ(decompress_buffer(compress(big, "F32", o), {}), big);
  }
  for (unsigned threads : {1u, 2u, 3u}) {
    EXPECT_EQ(compress(small, "F32", opts(threads)), want) << threads;
    EXPECT_EQ(compress(small, "BF16", opts(threads)), want16) << threads;
  }
}

TEST(Memory, RoundTripEveryDtype) {
  for (const char* dtype : {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL",
                            "F8_E4M3", "F8_E5M2", "C64"}) {
    const auto& info = formats::dtype_info(*formats::parse_dtype(dtype));
    const std::size_t width = info.bits / 8;
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{777}, std::size_t{50000}}) {
      util::ByteVector data = n * width == 200000 ? varied_f32(50000) : random_bytes(n * width, n + width);
      if (std::string(dtype) == "BOOL")
        for (auto& b : data) b = static_cast<std::byte>(static_cast<unsigned>(b) & 1);
      for (unsigned threads : {1u, 3u}) {
        const auto mcp = compress_buffer(data, dtype, opts(threads, 1000 + n % 7));
        EXPECT_EQ(decompressed_size(mcp), data.size());
        EXPECT_EQ(decompress_buffer(mcp, {}), data) << dtype << " n=" << n << " threads=" << threads;
      }
    }
  }
}

TEST(Memory, TensorsMatchCompressTensors) {
  TempDir dir;
  const auto w = varied_f32(10000);
  const auto b = random_bytes(600, 5);
  const std::vector<TensorData> tensors = {{"w", "F32", {100, 100}, w}, {"b", "BF16", {300}, b}};
  compress_tensors(tensors, {{"k", "v"}}, dir / "t.mcp", opts(2));
  std::vector<std::byte> mem;
  const auto size = compress_tensors_to_memory(tensors, {{"k", "v"}}, opts(3), [&](std::uint64_t bound) {
    mem.resize(bound);
    return std::span<std::byte>(mem);
  }, "t.safetensors");
  mem.resize(size);
  EXPECT_EQ(mem, read_file(dir / "t.mcp"));
  DecompressOptions d;
  decompress_file(dir / "t.mcp", dir / "t.safetensors", d);
  EXPECT_EQ(decompress_buffer(mem), read_file(dir / "t.safetensors"));
}

TEST(Memory, DamageIsAnErrorNeverWrongBytes) {
  const auto data = varied_f32(40000);
  const auto mcp = compress_buffer(data, "F32", opts(2));
  // Every byte position of a sample, flipped: a mithril error or (for bytes
  // nothing reads, e.g. reserved fields) the exact original.
  for (std::size_t at = 0; at < mcp.size(); at += 1 + mcp.size() / 400) {
    auto bad = mcp;
    bad[at] ^= std::byte{0x41};
    try {
      EXPECT_EQ(decompress_buffer(bad, {}), data) << "wrong bytes restored after damage at " << at;
    } catch (const Error& e) {
      EXPECT_NE(e.code(), Errc::internal) << at << ": " << e.what();
    }
  }
  EXPECT_EQ(code_of([&] { decompress_buffer(std::span(mcp).first(mcp.size() - 1)); }), Errc::corrupt);
  EXPECT_EQ(code_of([&] { decompress_buffer(std::span(mcp).first(10)); }), Errc::corrupt);
  std::vector<std::byte> out(data.size() + 1);
  EXPECT_EQ(code_of([&] { decompress_into(mcp, out); }), Errc::invalid_argument);
}

// The whole-file BLAKE3 is hashed in pieces cut at 512 KiB file offsets
// inside each chunk, with its XXH3 (encode.cpp): chunks that start and end
// anywhere, smaller and larger than a piece, give the digest of the whole
// input and the XXH3 of each chunk.
TEST(Memory, ChecksumsOfChunksCutAnywhere) {
  util::ByteVector data = varied_f32(900001);  // 3.6 MB
  const auto noise = random_bytes(777, 9);
  data.insert(data.end(), noise.begin(), noise.end());
  const auto whole = util::blake3(data);
  const TempDir dir;
  for (std::size_t chunk : {std::size_t{300007}, std::size_t{1} << 20, (std::size_t{1} << 20) + 4,
                            std::size_t{4} << 20}) {
    for (unsigned threads : {1u, 2u}) {
      SCOPED_TRACE(testing::Message() << "chunk " << chunk << " threads " << threads);
      test::write_file(dir / "t.mcp", compress_buffer(data, {}, opts(threads, chunk)));
      const container::Reader reader(dir / "t.mcp");
      EXPECT_EQ(reader.index().source.blake3, whole);
      std::size_t unaligned = 0;
      for (const auto& c : reader.index().chunks) {
        EXPECT_EQ(c.raw_xxh3, util::xxh3_64(util::ByteSpan(data).subspan(c.source_offset, c.raw_size)));
        unaligned += c.source_offset % 1024 != 0;
      }
      if (chunk % 1024 != 0) {
        EXPECT_GT(unaligned, 0u);  // the case the pieces must handle
      }
      DecompressOptions full;
      full.check_digest = true;
      EXPECT_EQ(decompress_buffer(read_file(dir / "t.mcp"), full), data);
    }
  }
}

// `mcp` with intact chunks but an index that records another whole-file
// BLAKE3 (the index's checksum recomputed, as a forger would): only the
// whole-file check notices.
std::vector<std::byte> with_another_blake3(const std::vector<std::byte>& mcp) {
  const TempDir dir;
  test::write_file(dir / "t.mcp", mcp);
  const container::Reader reader(dir / "t.mcp");
  container::Index index = reader.index();
  index.source.blake3[0] ^= 1;
  const auto raw_index = container::encode_index(index);
  container::Footer f = reader.footer();
  f.index_codec = container::IndexCodec::stored;
  f.index_stored_size = f.index_raw_size = raw_index.size();
  f.index_xxh3 = util::xxh3_64(raw_index);
  std::vector<std::byte> forged(mcp.begin(), mcp.begin() + static_cast<std::ptrdiff_t>(f.index_offset));
  forged.insert(forged.end(), raw_index.begin(), raw_index.end());
  const auto footer = container::encode_footer(f);
  forged.insert(forged.end(), footer.begin(), footer.end());
  return forged;
}

// So check_digest decides the outcome.
TEST(Memory, CheckDigestRecomputesTheWholeFileBlake3) {
  const auto data = varied_f32(40000);
  const auto mcp = compress_buffer(data, "F32", opts(2));
  const auto forged = with_another_blake3(mcp);

  DecompressOptions full;
  EXPECT_EQ(decompress_buffer(mcp, full), data);
  try {
    decompress_buffer(forged, full);
    ADD_FAILURE() << "a wrong whole-file BLAKE3 passed check_digest";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::corrupt);
    EXPECT_NE(std::string(e.what()).find("BLAKE3"), std::string::npos) << e.what();
  }
  DecompressOptions chunks;
  chunks.check_digest = false;
  for (unsigned threads : {1u, 2u}) {
    chunks.threads = threads;
    EXPECT_EQ(decompress_buffer(forged, chunks), data);
    EXPECT_EQ(decompress_buffer(mcp, chunks), data);
  }
  // Chunk damage is caught without the digest too.
  auto bad = mcp;
  bad[container::k_header_size + 40] ^= std::byte{0x41};
  EXPECT_EQ(code_of([&] { decompress_buffer(bad, chunks); }), Errc::corrupt);
}

// The same for files (`mithril decompress --no-check`): restored into a new
// file or handed to a writer in order, the whole-file BLAKE3 is recomputed
// unless check_digest is off; chunk damage fails either way, and a failed
// restore leaves no file.
TEST(Memory, FileRestoresCheckTheWholeFileBlake3UnlessTold) {
  const auto data = varied_f32(40000);
  const auto mcp = compress_buffer(data, "F32", opts(2));
  const TempDir dir;
  test::write_file(dir / "good.mcp", mcp);
  test::write_file(dir / "forged.mcp", with_another_blake3(mcp));
  auto bad = mcp;
  bad[container::k_header_size + 40] ^= std::byte{0x41};
  test::write_file(dir / "bad.mcp", bad);

  for (unsigned threads : {1u, 2u}) {
    SCOPED_TRACE(threads);
    for (const bool check : {true, false}) {
      SCOPED_TRACE(check);
      DecompressOptions o;
      o.threads = threads;
      o.check_digest = check;
      o.force = true;
      decompress_file(dir / "good.mcp", dir / "good.out", o);
      EXPECT_EQ(read_file(dir / "good.out"), data);

      const auto forged_out = dir / "forged.out";
      std::filesystem::remove(forged_out);
      if (check) {
        try {
          decompress_file(dir / "forged.mcp", forged_out, o);
          ADD_FAILURE() << "a wrong whole-file BLAKE3 passed";
        } catch (const Error& e) {
          EXPECT_EQ(e.code(), Errc::corrupt);
          EXPECT_NE(std::string(e.what()).find("BLAKE3"), std::string::npos) << e.what();
        }
        EXPECT_FALSE(std::filesystem::exists(forged_out));
      } else {
        decompress_file(dir / "forged.mcp", forged_out, o);
        EXPECT_EQ(read_file(forged_out), data);
      }
      std::vector<std::byte> streamed;
      const OrderedWriter to_memory = [&](std::span<const std::byte> b) { streamed.insert(streamed.end(), b.begin(), b.end()); };
      if (check) {
        EXPECT_EQ(code_of([&] { decompress_file(dir / "forged.mcp", to_memory, o); }), Errc::corrupt);
      } else {
        decompress_file(dir / "forged.mcp", to_memory, o);
        EXPECT_EQ(streamed, data);
      }

      const auto bad_out = dir / "bad.out";
      EXPECT_EQ(code_of([&] { decompress_file(dir / "bad.mcp", bad_out, o); }), Errc::corrupt);
      EXPECT_FALSE(std::filesystem::exists(bad_out));
    }
  }
}

TEST(Memory, BadArgumentsAreClearErrors) {
  const auto data = random_bytes(10, 1);
  EXPECT_EQ(code_of([&] { compress_buffer(data, "F32"); }), Errc::invalid_argument);  // 10 % 4 != 0
  EXPECT_EQ(code_of([&] { compress_buffer(data, "NOPE"); }), Errc::invalid_argument);
  CompressOptions o;
  o.level = 99;
  EXPECT_EQ(code_of([&] { compress_buffer(data, {}, o); }), Errc::invalid_argument);
}

}  // namespace
}  // namespace mithril

namespace mithril {
namespace {

// Streams (the CLI's `-` for stdin and stdout): an OrderedWriter gets the
// same container a file holds, and the restored bytes in order, for any
// thread count (the decoder's ordered stage; TSan runs this test).
TEST(Streams, ParallelWritersGetTheFileBytesInOrder) {
  TempDir dir;
  util::ByteVector data = varied_f32(200000);
  const auto noise = random_bytes(30000, 4);
  data.insert(data.end(), noise.begin(), noise.end());
  test::write_file(dir / "raw.bin", data);
  const CompressResult r = compress_file(dir / "raw.bin", dir / "raw.mcp", opts(1));
  // The result names the digest the index records: the original bytes' BLAKE3.
  EXPECT_EQ(r.source_blake3, util::to_hex(util::blake3(data)));
  EXPECT_EQ(r.source_blake3, describe_file(dir / "raw.mcp").source_blake3);
  const auto want = read_file(dir / "raw.mcp");
  for (unsigned threads : {1u, 2u, 4u}) {
    std::vector<std::byte> got;
    std::size_t calls = 0;
    const OrderedWriter collect = [&](std::span<const std::byte> b) {
      got.insert(got.end(), b.begin(), b.end());
      ++calls;
    };
    const auto streamed = compress_file(dir / "raw.bin", collect, opts(threads));
    EXPECT_EQ(got, want) << threads;
    EXPECT_EQ(streamed.output_bytes, want.size());
    EXPECT_GT(calls, 2u);  // written as it was made, not in one piece
    got.clear();
    compress_bytes(data, "raw.bin", collect, opts(threads));  // from memory, named as the file
    EXPECT_EQ(got, want) << threads;

    got.clear();
    DecompressOptions d;
    d.threads = threads;
    const auto dr = decompress_file(dir / "raw.mcp", collect, d);
    EXPECT_EQ(got, data) << threads;
    EXPECT_EQ(dr.output_bytes, data.size());
    got.clear();
    decompress_bytes(want, "raw.mcp", collect, d);
    EXPECT_EQ(got, data) << threads;
  }
  // From memory to a file: the file path's result, and no overwriting without force.
  compress_bytes(data, "raw.bin", dir / "from_memory.mcp", opts(2));
  EXPECT_EQ(read_file(dir / "from_memory.mcp"), want);
  DecompressOptions d;
  decompress_bytes(want, "raw.mcp", dir / "restored.bin", d);
  EXPECT_EQ(read_file(dir / "restored.bin"), data);
  EXPECT_EQ(code_of([&] { decompress_bytes(want, "raw.mcp", dir / "restored.bin", d); }), Errc::exists);
  EXPECT_EQ(code_of([&] { compress_bytes(data, "raw.bin", dir / "from_memory.mcp", opts(2)); }), Errc::exists);
}

TEST(Streams, ParallelDamageStopsTheStreamBeforeAnyWrongByte) {
  const auto data = varied_f32(100000);
  const auto mcp = compress_buffer(data, "F32", opts(2));
  for (std::size_t at = 64; at < mcp.size(); at += 1 + mcp.size() / 60) {
    auto bad = mcp;
    bad[at] ^= std::byte{0x24};
    std::vector<std::byte> got;
    DecompressOptions d;
    d.threads = 3;
    try {
      decompress_bytes(bad, "bad.mcp", [&](std::span<const std::byte> b) { got.insert(got.end(), b.begin(), b.end()); },
                       d);
      EXPECT_EQ(got, data) << "damage at " << at << " passed unnoticed with other bytes";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::corrupt) << at << ": " << e.what();
      ASSERT_LE(got.size(), data.size());
      EXPECT_TRUE(std::equal(got.begin(), got.end(), data.begin())) << "a wrong byte went out; damage at " << at;
    }
  }
}

}  // namespace
}  // namespace mithril
