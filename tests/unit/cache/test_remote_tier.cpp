// The remote tier's logic with a shared directory (file://) as the remote:
// read-through and backfill, pull of framework entries, read-only mode,
// corrupt remote objects, a remote that fails. The same behaviours against
// real Redis and S3 servers are covered by tests/integration/test_remote_cache.py.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "mithril/cache.hpp"
#include "mithril/error.hpp"
#include "test_helpers.hpp"

using namespace mithril;
using namespace mithril::cache;
using mithril::test::TempDir;
namespace fs = std::filesystem;

namespace {

CacheConfig with_remote(const fs::path& root, const std::string& remote, bool read_only = false) {
  CacheConfig c;
  c.root = root;
  c.remotes = {remote};
  c.remote_read_only = read_only;
  return c;
}

NamedFiles files(const std::string& text) {
  const auto b = util::as_bytes(text);
  return {{"payload.bin", util::ByteVector(b.begin(), b.end())}};
}

std::string text_of(const NamedFiles& f) { return std::string(util::as_chars(f.front().second)); }

std::vector<fs::path> files_under(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out.push_back(e.path());
  return out;
}

TEST(RemoteTier, ReadThroughBackfillsTheLocalStore) {
  TempDir dir;
  const auto remote = "file://" + (dir / "remote").string();
  {
    Store a(with_remote(dir / "a", remote));
    a.put("blob", "k1", files("hello remote"));
    a.flush_remote();
    EXPECT_EQ(a.remote_session().uploads, 1);
    EXPECT_GT(a.remote_session().bytes_up, 0);
  }
  EXPECT_TRUE(fs::exists(dir / "remote" / "v1" / "entries" / "cas" / "blob" / "k1"));
  {
    Store b(with_remote(dir / "b", remote));
    auto got = b.get("blob", "k1");
    ASSERT_TRUE(got);
    EXPECT_EQ(text_of(*got), "hello remote");
    EXPECT_FALSE(b.get("blob", "absent"));
    const auto s = b.remote_session();
    EXPECT_EQ(s.hits, 1);
    EXPECT_EQ(s.misses, 1);
    EXPECT_EQ(s.uploads, 0);  // fetched entries are not sent back
  }
  // Backfilled: found locally with no remote at all.
  CacheConfig local;
  local.root = dir / "b";
  Store b(local);
  auto got = b.get("blob", "k1");
  ASSERT_TRUE(got);
  EXPECT_EQ(text_of(*got), "hello remote");
  const auto st = b.stats();
  EXPECT_EQ(st.remote.hits, 1);  // persisted
  EXPECT_EQ(st.remote.misses, 1);
  EXPECT_EQ(st.totals.count("hits") ? st.totals.at("hits") : 0, 1);  // remote counters stay out of the kinds
}

TEST(RemoteTier, PullPlacesFrameworkEntriesAndReadOnlyNeverUploads) {
  TempDir dir;
  const auto remote = "file://" + (dir / "remote").string();
  {
    Store a(with_remote(dir / "a", remote));
    const auto kdir = dir / "a" / "inductor" / "fxgraph" / "ab" / "fabcdef";
    fs::create_directories(kdir);
    std::ofstream(kdir / "entry") << "compiled graph";
    const auto rep = a.sync();
    EXPECT_EQ(rep.misses.at("inductor-fxgraph"), 1);
    a.flush_remote();
    EXPECT_EQ(a.remote_session().uploads, 1);
  }
  Store c(with_remote(dir / "c", remote, /*read_only=*/true));
  const auto pulled = c.pull_remote();
  EXPECT_EQ(pulled.entries, 1u);
  std::ifstream in(dir / "c" / "inductor" / "fxgraph" / "ab" / "fabcdef" / "entry");
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "compiled graph");
  EXPECT_EQ(c.stats().entries, 1u);
  EXPECT_EQ(c.pull_remote().entries, 0u);  // nothing left to fetch
  const auto before = files_under(dir / "remote").size();
  c.put("blob", "from-ci", files("x"));
  EXPECT_EQ(c.push_remote(), 0u);
  c.flush_remote();
  EXPECT_EQ(files_under(dir / "remote").size(), before);
  EXPECT_EQ(c.remote_session().uploads, 0);
}

TEST(RemoteTier, CorruptRemoteBlobIsAMissAndCounted) {
  TempDir dir;
  const auto remote = "file://" + (dir / "remote").string();
  {
    Store a(with_remote(dir / "a", remote));
    const auto noise = test::random_bytes(5000, 7);  // incompressible: stored raw in the blob
    a.put("megacache", "m", {{"payload.bin", noise}});
  }
  for (const auto& p : files_under(dir / "remote" / "v1" / "blobs")) {
    std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(2500);
    const char c = static_cast<char>(f.get());
    f.seekp(2500);
    f.put(static_cast<char>(c ^ 0x01));  // one bit
  }
  Store b(with_remote(dir / "b", remote));
  testing::internal::CaptureStderr();
  EXPECT_FALSE(b.get("megacache", "m"));
  const auto err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("does not match its BLAKE3 digest"), std::string::npos) << err;
  EXPECT_EQ(b.remote_session().errors, 1);
  EXPECT_EQ(b.remote_session().hits, 0);
  EXPECT_EQ(b.stats().entries, 0u);
}

TEST(RemoteTier, FailingRemoteIsSwitchedOffWithOneWarning) {
  TempDir dir;
  std::ofstream(dir / "not-a-dir") << "x";  // the remote's root is a file: every write fails
  const auto bad = "file://" + (dir / "not-a-dir").string();
  const auto good = "file://" + (dir / "remote").string();
  CacheConfig c = with_remote(dir / "a", bad);
  c.remotes.push_back(good);
  testing::internal::CaptureStderr();
  {
    Store a(c);
    for (int i = 0; i < 5; ++i) a.put("blob", "k" + std::to_string(i), files("v" + std::to_string(i)));
    a.flush_remote();
    EXPECT_EQ(a.remote_session().uploads, 5);  // the good remote got everything
    EXPECT_GE(a.remote_session().errors, 1);
  }
  const auto err = testing::internal::GetCapturedStderr();
  std::size_t warnings = 0;
  for (std::size_t at = err.find("switched off"); at != std::string::npos; at = err.find("switched off", at + 1)) ++warnings;
  EXPECT_EQ(warnings, 1u) << err;
  EXPECT_NE(err.find(dir.path().string() + "/not-a-dir"), std::string::npos) << err;
  // The second remote answers reads.
  Store b(with_remote(dir / "b", good));
  EXPECT_TRUE(b.get("blob", "k3"));
}

TEST(RemoteTier, ConfigFromEnvironmentAndFile) {
  TempDir dir;
  std::ofstream(dir / "config") << "remote = redis://h:1/0 , s3://b/p\nremote_read_only = yes\n";
  auto c = load_config(dir.path());
  EXPECT_EQ(c.remotes, (std::vector<std::string>{"redis://h:1/0", "s3://b/p"}));
  EXPECT_TRUE(c.remote_read_only);
  ::setenv("MITHRIL_CACHE_REMOTE", "file:///x", 1);
  ::setenv("MITHRIL_CACHE_REMOTE_READONLY", "0", 1);
  c = load_config(dir.path());
  EXPECT_EQ(c.remotes, (std::vector<std::string>{"file:///x"}));
  EXPECT_FALSE(c.remote_read_only);
  ::setenv("MITHRIL_CACHE_REMOTE_READONLY", "maybe", 1);
  EXPECT_THROW(load_config(dir.path()), Error);
  ::unsetenv("MITHRIL_CACHE_REMOTE");
  ::unsetenv("MITHRIL_CACHE_REMOTE_READONLY");
}

}  // namespace
