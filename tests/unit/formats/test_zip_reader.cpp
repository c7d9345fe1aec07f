#include "formats/zip_reader.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "mithril/error.hpp"
#include "torch_fixtures.hpp"

namespace mithril::formats {
namespace {

using test::read_torch_fixture;
using test::torch_expected;

// Finds every occurrence of a 4-byte signature, independently of the reader.
std::vector<std::size_t> find_sig(const util::ByteVector& f, std::uint32_t sig) {
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i + 4 <= f.size(); ++i)
    if (util::load_le<std::uint32_t>(f.data() + i) == sig) out.push_back(i);
  return out;
}
constexpr std::uint32_t k_cd_sig = 0x02014b50, k_local_sig = 0x04034b50, k_eocd_sig = 0x06054b50;

template <typename T>
void poke(util::ByteVector& f, std::size_t at, T v) {
  util::store_le<T>(f.data() + at, v);
}

Errc error_code(const util::ByteVector& f) {
  try {
    ZipReader z(f, "t.zip");
    for (const auto& e : z.entries()) (void)z.extract(e, 1 << 20);
  } catch (const Error& e) {
    return e.code();
  }
  return Errc::internal;  // "no error"
}

TEST(ZipReader, Crc32CheckValue) {
  // The CRC-32/ISO-HDLC check value of "123456789" (Rocksoft catalogue).
  EXPECT_EQ(zip_crc32(util::as_bytes("123456789")), 0xCBF43926u);
  EXPECT_EQ(zip_crc32(util::as_bytes("6789"), zip_crc32(util::as_bytes("12345"))), 0xCBF43926u);
  EXPECT_EQ(zip_crc32({}), 0u);
}

TEST(ZipReader, MatchesPythonZipfileOnTorchFiles) {
  for (const char* name : {"dtypes.pt", "training.pt", "views.pt", "params.pt", "bare_tensor.pt", "zip64.pt",
                           "old_layout.pt", "deflated.pt"}) {
    SCOPED_TRACE(name);
    const auto file = read_torch_fixture(name);
    const ZipReader z(file, name);
    const auto& exp = torch_expected().at(name);
    for (const auto& s : exp.at("storages")) {
      const auto* e = z.find(s.at("record").get<std::string>());
      ASSERT_NE(e, nullptr) << s.at("record");
      EXPECT_EQ(e->data_offset, s.at("data_offset").get<std::uint64_t>());
      EXPECT_EQ(e->stored(), s.at("stored").get<bool>());
      EXPECT_EQ(e->crc32, s.at("crc32").get<std::uint32_t>());
      const auto bytes = z.extract(*e, 1 << 20);
      EXPECT_EQ(zip_crc32(bytes), e->crc32);
      if (e->stored()) {
        EXPECT_EQ(e->size, s.at("size").get<std::uint64_t>());
        EXPECT_EQ(e->data_offset % 64, 0u) << "torch aligns stored data to 64 bytes";
      }
    }
    EXPECT_EQ(z.prefix_size(), 0u);
  }
}

TEST(ZipReader, Zip64PrefixAndDeflateReadTheSameRecords) {
  const auto base_file = read_torch_fixture("training.pt");
  const ZipReader base(base_file, "training.pt");
  const auto z64_file = read_torch_fixture("zip64.pt");
  const ZipReader z64(z64_file, "zip64.pt");
  const auto pre_file = read_torch_fixture("prefixed.pt");
  const ZipReader pre(pre_file, "prefixed.pt");
  const auto dfl_file = read_torch_fixture("deflated.pt");
  const ZipReader dfl(dfl_file, "deflated.pt");
  // torch (miniz) always ends its archives with ZIP64 end records; the
  // hand-written deflated fixture does not.
  EXPECT_TRUE(base.zip64());
  EXPECT_TRUE(z64.zip64());
  EXPECT_FALSE(dfl.zip64());
  EXPECT_EQ(pre.prefix_size(), torch_expected().at("prefixed.pt").at("prefix_size").get<std::uint64_t>());
  for (const auto* other : {&z64, &pre, &dfl}) {
    ASSERT_EQ(other->entries().size(), base.entries().size());
    for (const auto& e : base.entries()) {
      const auto* o = other->find(e.name);
      ASSERT_NE(o, nullptr) << e.name;
      EXPECT_EQ(other->extract(*o, 1 << 20), base.extract(e, 1 << 20)) << e.name;
    }
  }
  // Deflated records cannot be viewed in place.
  const auto& d0 = dfl.entries().front();
  EXPECT_EQ(d0.method, k_zip_deflated);
  try {
    (void)dfl.stored_data(d0);
    FAIL() << "stored_data on a deflated record";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::unsupported);
  }
  // Prefixed offsets are absolute in the file: the same archive without its
  // prefix has every record exactly prefix_size() bytes earlier.
  const util::ByteVector stripped(pre_file.begin() + static_cast<std::ptrdiff_t>(pre.prefix_size()), pre_file.end());
  const ZipReader bare(stripped, "stripped.pt");
  EXPECT_EQ(bare.prefix_size(), 0u);
  ASSERT_EQ(bare.entries().size(), pre.entries().size());
  for (const auto& e : bare.entries()) {
    EXPECT_EQ(pre.find(e.name)->data_offset, e.data_offset + pre.prefix_size()) << e.name;
    EXPECT_EQ(pre.find(e.name)->header_offset, e.header_offset + pre.prefix_size()) << e.name;
  }
  EXPECT_EQ(pre.central_directory_offset(), bare.central_directory_offset() + pre.prefix_size());
}

TEST(ZipReader, ExtractRefusesToAllocateMoreThanAsked) {
  const auto file = read_torch_fixture("training.pt");
  const ZipReader z(file, "training.pt");
  const auto& e = z.entries().front();
  try {
    (void)z.extract(e, e.size - 1);
    FAIL();
  } catch (const Error& err) {
    EXPECT_EQ(err.code(), Errc::unsupported);
  }
}

TEST(ZipReader, EmptyArchiveAndComment) {
  util::ByteVector f(22);
  poke<std::uint32_t>(f, 0, k_eocd_sig);
  EXPECT_TRUE(ZipReader(f, "e.zip").entries().empty());
  // Same with a 5-byte comment.
  poke<std::uint16_t>(f, 20, 5);
  for (char c : std::string("hello")) f.push_back(static_cast<std::byte>(c));
  EXPECT_TRUE(ZipReader(f, "e.zip").entries().empty());
  // A comment length that does not reach the end of the file: no valid record.
  poke<std::uint16_t>(f, 20, 4);
  EXPECT_EQ(error_code(f), Errc::corrupt);
}

TEST(ZipReader, RefusesNonZip) {
  EXPECT_EQ(error_code({}), Errc::corrupt);
  EXPECT_EQ(error_code(util::ByteVector(100, std::byte{'x'})), Errc::corrupt);
  EXPECT_FALSE(looks_like_zip(util::as_bytes("hello")));
  EXPECT_TRUE(looks_like_zip(read_torch_fixture("bare_tensor.pt")));
  EXPECT_TRUE(looks_like_zip(read_torch_fixture("prefixed.pt")));
  EXPECT_FALSE(looks_like_zip(read_torch_fixture("legacy.pt")));
}

TEST(ZipReader, RefusesTamperedEndRecords) {
  // A classic archive (no ZIP64 records): old_layout.pt was written by the
  // fixture script's own zip writer.
  const auto good = read_torch_fixture("old_layout.pt");
  ASSERT_FALSE(ZipReader(good, "g").zip64());
  const auto eocd = find_sig(good, k_eocd_sig).back();
  {
    SCOPED_TRACE("central directory offset past its position");
    auto f = good;
    poke<std::uint32_t>(f, eocd + 16, util::load_le<std::uint32_t>(f.data() + eocd + 16) + 1);
    EXPECT_EQ(error_code(f), Errc::corrupt);
  }
  {
    SCOPED_TRACE("entry count larger than the directory");
    auto f = good;
    poke<std::uint16_t>(f, eocd + 8, 0xFFF0);
    poke<std::uint16_t>(f, eocd + 10, 0xFFF0);
    EXPECT_EQ(error_code(f), Errc::corrupt);
  }
  {
    SCOPED_TRACE("ZIP64 markers without a locator");
    auto f = good;
    poke<std::uint32_t>(f, eocd + 16, 0xFFFFFFFF);
    EXPECT_EQ(error_code(f), Errc::corrupt);
  }
  {
    SCOPED_TRACE("multi-disk");
    auto f = good;
    poke<std::uint16_t>(f, eocd + 4, 1);
    EXPECT_EQ(error_code(f), Errc::unsupported);
  }
}

TEST(ZipReader, RefusesTamperedZip64EndRecords) {
  // torch's own files carry both end records; they must agree.
  const auto good = read_torch_fixture("bare_tensor.pt");
  ASSERT_TRUE(ZipReader(good, "g").zip64());
  const auto eocd = find_sig(good, k_eocd_sig).back();
  const auto z64 = find_sig(good, 0x06064b50).back();
  {
    SCOPED_TRACE("classic offset disagrees with the ZIP64 one");
    auto f = good;
    poke<std::uint32_t>(f, eocd + 16, util::load_le<std::uint32_t>(f.data() + eocd + 16) + 1);
    EXPECT_EQ(error_code(f), Errc::corrupt);
  }
  {
    SCOPED_TRACE("saturated classic fields defer to ZIP64");
    auto f = good;
    poke<std::uint32_t>(f, eocd + 16, 0xFFFFFFFF);
    poke<std::uint32_t>(f, eocd + 12, 0xFFFFFFFF);
    poke<std::uint16_t>(f, eocd + 8, 0xFFFF);
    poke<std::uint16_t>(f, eocd + 10, 0xFFFF);
    EXPECT_EQ(error_code(f), Errc::internal);  // parses
  }
  {
    SCOPED_TRACE("ZIP64 central directory offset past its position");
    auto f = good;
    poke<std::uint64_t>(f, z64 + 48, util::load_le<std::uint64_t>(f.data() + z64 + 48) + 1);
    poke<std::uint32_t>(f, eocd + 16, 0xFFFFFFFF);
    EXPECT_EQ(error_code(f), Errc::corrupt);
  }
  {
    SCOPED_TRACE("ZIP64 multi-disk");
    auto f = good;
    poke<std::uint32_t>(f, z64 + 16, 1);
    EXPECT_EQ(error_code(f), Errc::unsupported);
  }
}

TEST(ZipReader, RefusesTamperedRecords) {
  const auto good = read_torch_fixture("bare_tensor.pt");
  const auto cds = find_sig(good, k_cd_sig);
  ASSERT_GE(cds.size(), 3u);
  {
    SCOPED_TRACE("local header offset points at the wrong header (overlap)");
    auto f = good;
    poke<std::uint32_t>(f, cds[1] + 42, util::load_le<std::uint32_t>(f.data() + cds[0] + 42));
    EXPECT_EQ(error_code(f), Errc::corrupt);
  }
  {
    SCOPED_TRACE("local header offset outside the file");
    auto f = good;
    poke<std::uint32_t>(f, cds[1] + 42, 0x7FFFFFF0);
    EXPECT_EQ(error_code(f), Errc::corrupt);
  }
  {
    SCOPED_TRACE("size runs past the central directory");
    auto f = good;
    poke<std::uint32_t>(f, cds[0] + 20, 0x10000000);
    poke<std::uint32_t>(f, cds[0] + 24, 0x10000000);
    EXPECT_EQ(error_code(f), Errc::corrupt);
  }
  {
    SCOPED_TRACE("stored with compressed size != size");
    auto f = good;
    poke<std::uint32_t>(f, cds[0] + 20, util::load_le<std::uint32_t>(f.data() + cds[0] + 20) - 1);
    EXPECT_EQ(error_code(f), Errc::corrupt);
  }
  {
    SCOPED_TRACE("duplicate names");
    // Two records with names of equal length (data/0, data/1): give the second
    // the first's name in both its central and local headers.
    auto f = read_torch_fixture("views.pt");
    const auto vcds = find_sig(f, k_cd_sig);
    bool done = false;
    for (std::size_t a = 0; a < vcds.size() && !done; ++a)
      for (std::size_t b = a + 1; b < vcds.size() && !done; ++b) {
        const auto na = util::load_le<std::uint16_t>(f.data() + vcds[a] + 28);
        if (na != util::load_le<std::uint16_t>(f.data() + vcds[b] + 28)) continue;
        const auto lb = util::load_le<std::uint32_t>(f.data() + vcds[b] + 42);
        std::memcpy(f.data() + vcds[b] + 46, f.data() + vcds[a] + 46, na);
        std::memcpy(f.data() + lb + 30, f.data() + vcds[a] + 46, na);
        done = true;
      }
    ASSERT_TRUE(done);
    EXPECT_EQ(error_code(f), Errc::corrupt);
  }
  {
    SCOPED_TRACE("central directory name differs from local header name");
    auto f = good;
    f[cds[0] + 46 + 1] ^= std::byte{0x20};
    EXPECT_EQ(error_code(f), Errc::corrupt);
  }
  {
    SCOPED_TRACE("encrypted");
    auto f = good;
    poke<std::uint16_t>(f, cds[0] + 8, 0x0809);
    EXPECT_EQ(error_code(f), Errc::unsupported);
  }
  {
    SCOPED_TRACE("unknown method");
    auto f = good;
    const auto locals = find_sig(good, k_local_sig);
    poke<std::uint16_t>(f, cds[0] + 10, 12);  // bzip2
    poke<std::uint16_t>(f, locals[0] + 8, 12);
    EXPECT_EQ(error_code(f), Errc::unsupported);
  }
  {
    SCOPED_TRACE("CRC mismatch");
    auto f = good;
    const ZipReader z(good, "g");
    f[z.entries().front().data_offset] ^= std::byte{1};
    EXPECT_EQ(error_code(f), Errc::corrupt);
  }
}

// Every truncation and every single-byte corruption either parses or throws
// mithril::Error: no crash, no other exception, no huge allocation.
TEST(ZipReader, SurvivesTruncationAndByteFlips) {
  const auto good = read_torch_fixture("bare_tensor.pt");
  for (std::size_t n = 0; n < good.size(); ++n) {
    util::ByteVector f(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_NE(error_code(f), Errc::internal) << "truncated to " << n;
  }
  std::size_t parsed = 0;
  for (std::size_t i = 0; i < good.size(); ++i) {
    for (std::byte x : {std::byte{0x01}, std::byte{0x80}, std::byte{0xFF}}) {
      auto f = good;
      f[i] ^= x;
      if (error_code(f) == Errc::internal) ++parsed;  // bytes the zip layer does not check (data, padding)
    }
  }
  EXPECT_GT(parsed, 0u);
}

}  // namespace
}  // namespace mithril::formats
