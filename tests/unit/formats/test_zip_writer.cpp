#include "formats/zip_writer.hpp"

#include <gtest/gtest.h>

#include "formats/zip_reader.hpp"
#include "mithril/error.hpp"
#include "test_helpers.hpp"

namespace mithril::formats {
namespace {

util::ByteVector write(const std::vector<std::pair<std::string, util::ByteVector>>& records, ZipWriterOptions o = {}) {
  util::ByteVector out;
  ZipWriter w([&](util::ByteSpan b) { out.insert(out.end(), b.begin(), b.end()); }, o);
  for (const auto& [name, data] : records) w.add(name, data);
  w.finish();
  EXPECT_EQ(w.size(), out.size());
  return out;
}

const std::vector<std::pair<std::string, util::ByteVector>> k_records = {
    {"archive/data.pkl", test::random_bytes(300, 1)},
    {"archive/empty", {}},
    {"archive/data/0", test::random_bytes(4096 + 7, 2)},
    {"archive/d\xc3\xa9j\xc3\xa0", test::random_bytes(5, 3)},  // UTF-8 name
};

void check_reads_back(const util::ByteVector& file, bool zip64, std::uint32_t alignment) {
  const ZipReader z(file, "w.zip");
  EXPECT_EQ(z.zip64(), zip64);
  EXPECT_EQ(z.prefix_size(), 0u);
  ASSERT_EQ(z.entries().size(), k_records.size());
  for (std::size_t i = 0; i < k_records.size(); ++i) {
    const auto& e = z.entries()[i];
    EXPECT_EQ(e.name, k_records[i].first);
    EXPECT_TRUE(e.stored());
    EXPECT_EQ(e.flags & 0x0008, 0) << "sizes are in the local header, no data descriptor";
    EXPECT_EQ(z.extract(e, 1 << 20), k_records[i].second);  // CRC-checked
    EXPECT_EQ(e.crc32, zip_crc32(k_records[i].second));
    if (alignment > 1) {
      EXPECT_EQ(e.data_offset % alignment, 0u) << e.name;
    }
  }
}

TEST(ZipWriter, WritesWhatTheReaderReads) {
  check_reads_back(write(k_records), false, 64);
  check_reads_back(write(k_records, {0, false}), false, 1);
  check_reads_back(write(k_records, {4096, false}), false, 4096);
}

TEST(ZipWriter, Zip64RecordsAndEnd) {
  const auto f = write(k_records, {64, true});
  check_reads_back(f, true, 64);
  // The classic end record defers every field to the ZIP64 one.
  const auto eocd = f.size() - 22;
  EXPECT_EQ(util::load_le<std::uint32_t>(f.data() + eocd), 0x06054b50u);
  EXPECT_EQ(util::load_le<std::uint16_t>(f.data() + eocd + 10), 0xFFFFu);
  EXPECT_EQ(util::load_le<std::uint32_t>(f.data() + eocd + 16), 0xFFFFFFFFu);
}

TEST(ZipWriter, DeterministicAndPiecewise) {
  EXPECT_EQ(write(k_records), write(k_records));
  // One record from several pieces equals the same record written whole.
  const auto& big = k_records[2].second;
  util::ByteVector a, b;
  {
    ZipWriter w([&](util::ByteSpan s) { a.insert(a.end(), s.begin(), s.end()); });
    const util::ByteSpan all(big);
    w.add("x", std::vector<util::ByteSpan>{all.first(10), all.subspan(10, 0), all.subspan(10)});
    w.finish();
  }
  {
    ZipWriter w([&](util::ByteSpan s) { b.insert(b.end(), s.begin(), s.end()); });
    w.add("x", big);
    w.finish();
  }
  EXPECT_EQ(a, b);
}

TEST(ZipWriter, RefusesMisuse) {
  auto code = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return e.code();
    }
    return Errc::internal;
  };
  auto sink = [](util::ByteSpan) {};
  EXPECT_EQ(code([&] { ZipWriter w(sink, {48, false}); }), Errc::invalid_argument);
  EXPECT_EQ(code([&] {
              ZipWriter w(sink);
              w.add("a", util::ByteSpan{});
              w.add("a", util::ByteSpan{});
            }),
            Errc::invalid_argument);
  EXPECT_EQ(code([&] {
              ZipWriter w(sink);
              w.add("", util::ByteSpan{});
            }),
            Errc::invalid_argument);
  EXPECT_EQ(code([&] {
              ZipWriter w(sink);
              w.finish();
              w.add("a", util::ByteSpan{});
            }),
            Errc::invalid_argument);
}

}  // namespace
}  // namespace mithril::formats
