#include "cache/tar_stream.hpp"

#include <gtest/gtest.h>
#include <zstd.h>

#include <cstring>

#include "mithril/error.hpp"
#include "test_helpers.hpp"

using namespace mithril;
using namespace mithril::cache;
using mithril::test::TempDir;

namespace {

// A ustar header built by hand from POSIX.1-2001 (pax) field offsets, to
// craft archives our writer would never produce.
std::vector<char> header(const std::string& name, std::uint64_t size, char type, const std::string& link = "") {
  std::vector<char> h(512, 0);
  std::memcpy(h.data(), name.data(), std::min<std::size_t>(name.size(), 100));
  std::snprintf(h.data() + 100, 8, "%07o", 0644);
  std::snprintf(h.data() + 108, 8, "%07o", 0);
  std::snprintf(h.data() + 116, 8, "%07o", 0);
  std::snprintf(h.data() + 124, 12, "%011llo", static_cast<unsigned long long>(size));
  std::snprintf(h.data() + 136, 12, "%011o", 0);
  h[156] = type;
  std::memcpy(h.data() + 157, link.data(), std::min<std::size_t>(link.size(), 100));
  std::memcpy(h.data() + 257, "ustar", 6);
  std::memcpy(h.data() + 263, "00", 2);
  std::memset(h.data() + 148, ' ', 8);
  unsigned sum = 0;
  for (char c : h) sum += static_cast<unsigned char>(c);
  std::snprintf(h.data() + 148, 8, "%06o", sum);
  return h;
}

void write_zst(const std::filesystem::path& p, std::vector<char> tar) {
  tar.resize(tar.size() + 1024, 0);
  std::vector<char> z(ZSTD_compressBound(tar.size()));
  const auto n = ZSTD_compress(z.data(), z.size(), tar.data(), tar.size(), 1);
  ASSERT_FALSE(ZSTD_isError(n));
  test::write_file(p, {reinterpret_cast<const std::byte*>(z.data()), n});
}

void append(std::vector<char>& tar, const std::vector<char>& h, const std::string& data = "") {
  tar.insert(tar.end(), h.begin(), h.end());
  tar.insert(tar.end(), data.begin(), data.end());
  tar.resize(tar.size() + (512 - data.size() % 512) % 512, 0);
}

std::string error_of(const std::filesystem::path& p, std::uint64_t limit = 1 << 20) {
  try {
    TarReader r(p, limit);
    while (auto m = r.next()) r.read_data();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::corrupt);
    return e.what();
  }
  return "";
}

}  // namespace

TEST(TarStream, RoundTrip) {
  TempDir dir;
  const auto path = dir / "b.tar.zst";
  const std::string long_name = "e/1/" + std::string(150, 'x');
  const auto big = test::random_bytes(300000, 9);
  {
    TarWriter w(path, 3);
    w.add_file("a.json", util::as_bytes("{}"));
    w.add_file(long_name, big, true);
    w.add_file("empty", {});
    w.finish();
  }
  TarReader r(path, 1 << 20);
  auto m = r.next();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->name, "a.json");
  EXPECT_EQ(util::as_chars(r.read_data()), "{}");
  m = r.next();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->name, long_name);
  EXPECT_TRUE(m->executable);
  EXPECT_EQ(r.read_data(), big);
  m = r.next();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->size, 0u);
  EXPECT_FALSE(r.next());
}

TEST(TarStream, SkipsUnreadData) {
  TempDir dir;
  const auto path = dir / "b.tar.zst";
  {
    TarWriter w(path, 1);
    w.add_file("a", test::random_bytes(1000, 1));
    w.add_file("b", util::as_bytes("bee"));
    w.finish();
  }
  TarReader r(path, 1 << 20);
  r.next();
  auto m = r.next();
  ASSERT_TRUE(m);
  EXPECT_EQ(util::as_chars(r.read_data()), "bee");
}

TEST(TarStream, ReadsHandMadeArchive) {
  TempDir dir;
  std::vector<char> tar;
  append(tar, header("dir/file.txt", 5, '0'), "hello");
  write_zst(dir / "ok.tar.zst", tar);
  TarReader r(dir / "ok.tar.zst", 100);
  auto m = r.next();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->name, "dir/file.txt");
  EXPECT_EQ(util::as_chars(r.read_data()), "hello");
}

TEST(TarStream, RefusesLinksTraversalAndOversize) {
  TempDir dir;
  struct Case {
    std::vector<char> h;
    std::string data;
    const char* expect;
  };
  const Case cases[] = {
      {header("evil", 0, '2', "/etc/passwd"), "", "link"},
      {header("evil", 0, '1', "other"), "", "link"},
      {header("dev", 0, '3'), "", "only regular files"},
      {header("sub", 0, '5'), "", "only regular files"},
      {header("../../etc/x", 1, '0'), "x", "path traversal"},
      {header("a/../../x", 1, '0'), "x", "path traversal"},
      {header("/abs/x", 1, '0'), "x", "absolute"},
      {header("big", 200, '0'), std::string(200, 'b'), "exceeds the limit"},
  };
  int i = 0;
  for (const auto& c : cases) {
    std::vector<char> tar;
    append(tar, c.h, c.data);
    const auto p = dir / ("t" + std::to_string(i++) + ".tar.zst");
    write_zst(p, tar);
    EXPECT_NE(error_of(p, 100).find(c.expect), std::string::npos) << c.expect << ": " << error_of(p, 100);
  }
}

TEST(TarStream, RefusesPaxLinkpathAndBadChecksum) {
  TempDir dir;
  {
    const std::string rec = "24 linkpath=/etc/passwd\n";
    std::vector<char> tar;
    append(tar, header("pax", rec.size(), 'x'), rec);
    append(tar, header("f", 1, '0'), "x");
    write_zst(dir / "pax.tar.zst", tar);
    EXPECT_NE(error_of(dir / "pax.tar.zst").find("link"), std::string::npos);
  }
  {
    std::vector<char> tar;
    auto h = header("f", 1, '0');
    h[0] = 'g';  // checksum no longer matches
    append(tar, h, "x");
    write_zst(dir / "sum.tar.zst", tar);
    EXPECT_NE(error_of(dir / "sum.tar.zst").find("checksum"), std::string::npos);
  }
}

TEST(TarStream, TruncatedAndGarbageInput) {
  TempDir dir;
  const auto path = dir / "b.tar.zst";
  {
    TarWriter w(path, 3);
    w.add_file("a", test::random_bytes(100000, 3));
    w.finish();
  }
  auto bytes = test::read_file(path);
  bytes.resize(bytes.size() / 2);
  test::write_file(dir / "t.tar.zst", bytes);
  EXPECT_NE(error_of(dir / "t.tar.zst", 1 << 20).find("truncated"), std::string::npos);
  test::write_file(dir / "g.tar.zst", test::random_bytes(5000, 4));
  EXPECT_NE(error_of(dir / "g.tar.zst"), "");
}
