// One conformance suite for every backend. It always runs on file://; the
// integration tests (tests/integration/test_remote_storage.py) start real
// redis-server and moto S3 servers and run it again with
// MITHRIL_TEST_STORAGE_URLS="redis://...,s3://..." (each URL a prefix that
// the test may fill and empty).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <random>

#include "mithril/error.hpp"
#include "storage/backend.hpp"
#include "test_helpers.hpp"

namespace mithril::storage {
namespace {

std::vector<std::string> urls_under_test() {
  std::vector<std::string> out{"file"};
  if (const char* env = std::getenv("MITHRIL_TEST_STORAGE_URLS")) {
    std::string_view s(env);
    while (!s.empty()) {
      const auto c = s.find(',');
      if (c != 0) out.emplace_back(s.substr(0, c));
      s = c == std::string_view::npos ? std::string_view{} : s.substr(c + 1);
    }
  }
  return out;
}

class BackendTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    Options o;
    o.part_size = 5 << 20;
    o.retry.attempts = 2;
    o.io_timeout = std::chrono::milliseconds(10000);
    o = options_from_env(o);
    std::string url = GetParam() == "file" ? "file://" + m_dir.path().string() : GetParam();
    std::random_device rd;
    m_loc = open(url, o);
    m_prefix = m_loc.key;
    if (!m_prefix.empty() && m_prefix.back() != '/') m_prefix += '/';
    m_prefix += "t" + std::to_string(rd()) + "/";
  }
  void TearDown() override {
    if (!m_loc.backend) return;
    try {
      for (const auto& k : m_loc.backend->list(m_prefix)) m_loc.backend->remove(k);
    } catch (const Error&) {
    }
  }
  Backend& b() { return *m_loc.backend; }
  std::string key(const std::string& k) { return m_prefix + k; }

  test::TempDir m_dir;
  Location m_loc;
  std::string m_prefix;
};

TEST_P(BackendTest, MissIsNotAnError) {
  EXPECT_FALSE(b().get(key("absent")));
  EXPECT_FALSE(b().get_range(key("absent"), 0, 10));
  EXPECT_FALSE(b().stat(key("absent")));
  EXPECT_FALSE(b().exists(key("absent")));
  EXPECT_NO_THROW(b().remove(key("absent")));
  EXPECT_TRUE(b().list(key("absent")).empty());
}

TEST_P(BackendTest, PutGetRangeStatRemove) {
  const auto data = test::random_bytes(100000, 1);
  b().put(key("a/obj"), data);
  EXPECT_EQ(*b().get(key("a/obj")), data);
  EXPECT_EQ(b().stat(key("a/obj"))->size, data.size());
  auto r = b().get_range(key("a/obj"), 1000, 5000);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, util::ByteVector(data.begin() + 1000, data.begin() + 6000));
  r = b().get_range(key("a/obj"), 99990, 100);  // clipped at the end
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, util::ByteVector(data.end() - 10, data.end()));
  r = b().get_range(key("a/obj"), 200000, 10);  // past the end
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->empty());
  // Replace, then an empty object.
  b().put(key("a/obj"), util::as_bytes("short"));
  EXPECT_EQ(*b().get(key("a/obj")), util::ByteVector(util::as_bytes("short").begin(), util::as_bytes("short").end()));
  b().put(key("empty"), {});
  ASSERT_TRUE(b().get(key("empty")));
  EXPECT_TRUE(b().get(key("empty"))->empty());
  EXPECT_EQ(b().stat(key("empty"))->size, 0u);
  b().remove(key("a/obj"));
  EXPECT_FALSE(b().get(key("a/obj")));
}

TEST_P(BackendTest, GetTailGivesTheEndAndTheSize) {
  const auto data = test::random_bytes(100000, 2);
  b().put(key("obj"), data);
  auto t = b().get_tail(key("obj"), 4000);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->size, data.size());
  EXPECT_EQ(t->bytes, util::ByteVector(data.end() - 4000, data.end()));
  t = b().get_tail(key("obj"), 100000);  // exactly the object
  ASSERT_TRUE(t);
  EXPECT_EQ(t->size, data.size());
  EXPECT_EQ(t->bytes, data);
  t = b().get_tail(key("obj"), 1 << 20);  // more than the object: all of it
  ASSERT_TRUE(t);
  EXPECT_EQ(t->size, data.size());
  EXPECT_EQ(t->bytes, data);
  t = b().get_tail(key("obj"), 0);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->size, data.size());
  EXPECT_TRUE(t->bytes.empty());
  b().put(key("empty"), {});
  t = b().get_tail(key("empty"), 4000);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->size, 0u);
  EXPECT_TRUE(t->bytes.empty());
  EXPECT_FALSE(b().get_tail(key("absent"), 4000));
}

TEST_P(BackendTest, RangesOfTheVersionOpenedOnly) {
  const auto first = test::random_bytes(10000, 3), second = test::random_bytes(10000, 4);
  b().put(key("obj"), first);
  const auto t = b().get_tail(key("obj"), 100);
  ASSERT_TRUE(t);
  if (GetParam().starts_with("s3://")) EXPECT_FALSE(t->version.empty()) << "no ETag from S3";
  auto r = b().get_range_if(key("obj"), 10, 20, t->version);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, util::ByteVector(first.begin() + 10, first.begin() + 30));
  b().put(key("obj"), second);  // replaced: same size, other bytes
  if (t->version.empty()) {  // a store without versions reads what is there
    r = b().get_range_if(key("obj"), 10, 20, t->version);
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, util::ByteVector(second.begin() + 10, second.begin() + 30));
    return;
  }
  try {
    b().get_range_if(key("obj"), 10, 20, t->version);
    FAIL() << "read a replaced object as the version opened";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::corrupt);
    EXPECT_NE(std::string(e.what()).find("replaced while it was being read"), std::string::npos) << e.what();
  }
  const auto again = b().get_tail(key("obj"), 100);
  ASSERT_TRUE(again);
  EXPECT_NE(again->version, t->version);
  r = b().get_range_if(key("obj"), 10, 20, again->version);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, util::ByteVector(second.begin() + 10, second.begin() + 30));
}

TEST_P(BackendTest, ListByPrefixSorted) {
  for (const char* k : {"x/2", "x/1", "x/sub/3", "y/1", "xz"}) b().put(key(k), util::as_bytes(k));
  EXPECT_EQ(b().list(key("x/")), (std::vector<std::string>{key("x/1"), key("x/2"), key("x/sub/3")}));
  EXPECT_EQ(b().list(key("x")), (std::vector<std::string>{key("x/1"), key("x/2"), key("x/sub/3"), key("xz")}));
  EXPECT_EQ(b().list(key("y/")).size(), 1u);
}

TEST_P(BackendTest, MultipartUploadAppearsWholeOnlyAtComplete) {
  const auto data = test::random_bytes((11 << 20) + 12345, 2);  // three parts of 5 MiB
  auto up = b().begin_upload(key("big"));
  for (std::size_t off = 0; off < data.size(); off += 777777)
    up->write(util::ByteSpan(data).subspan(off, std::min<std::size_t>(777777, data.size() - off)));
  EXPECT_EQ(up->size(), data.size());
  EXPECT_FALSE(b().exists(key("big")));
  up->complete();
  EXPECT_EQ(*b().get(key("big")), data);
  EXPECT_EQ(*b().get_range(key("big"), 6 << 20, 100),
            util::ByteVector(data.begin() + (6 << 20), data.begin() + (6 << 20) + 100));
}

TEST_P(BackendTest, SmallUploadAndEmptyUpload) {
  auto up = b().begin_upload(key("small"));
  up->write(util::as_bytes("hello "));
  up->write(util::as_bytes("world"));
  up->complete();
  EXPECT_EQ(b().get(key("small"))->size(), 11u);
  auto empty = b().begin_upload(key("nothing"));
  empty->complete();
  EXPECT_EQ(b().stat(key("nothing"))->size, 0u);
}

TEST_P(BackendTest, AbortedUploadLeavesNoObject) {
  const auto data = test::random_bytes((6 << 20), 3);
  {
    auto up = b().begin_upload(key("aborted"));
    up->write(data);  // at least one part sent
    up->abort();
  }
  {
    auto up = b().begin_upload(key("dropped"));
    up->write(data);
  }  // destroyed without complete()
  EXPECT_FALSE(b().exists(key("aborted")));
  EXPECT_FALSE(b().exists(key("dropped")));
  EXPECT_TRUE(b().list(m_prefix).empty());
}

TEST_P(BackendTest, DetachedUploadAppearsOnlyWhenCompletedFromItsToken) {
  const auto data = test::random_bytes((11 << 20) + 99, 4);  // three parts of 5 MiB
  std::string big, small;
  {
    auto up = b().begin_upload(key("big"));
    up->write(data);
    big = up->detach();
  }  // destroyed: a detached upload is not aborted
  {
    auto up = b().begin_upload(key("small"));
    up->write(util::as_bytes("hello"));
    small = up->detach();  // one short part: still not published
  }
  EXPECT_FALSE(b().exists(key("big")));
  EXPECT_FALSE(b().exists(key("small")));
  EXPECT_TRUE(b().list(m_prefix).empty());
  // Another connection (another process would do) completes them.
  auto other = b().clone();
  other->complete_detached(key("big"), big);
  other->complete_detached(key("small"), small);
  EXPECT_EQ(*b().get(key("big")), data);
  EXPECT_EQ(b().get(key("small"))->size(), 5u);
  other->complete_detached(key("big"), big);  // again: nothing changes
  EXPECT_EQ(b().stat(key("big"))->size, data.size());
  // A token for another key, or no token at all.
  EXPECT_THROW(b().complete_detached(key("other"), big), Error);
  EXPECT_THROW(b().complete_detached(key("big"), "{}"), Error);
}

TEST_P(BackendTest, DetachedUploadThatWasDiscardedIsNotFound) {
  auto up = b().begin_upload(key("gone"));
  up->write(test::random_bytes(1000, 5));
  const auto token = up->detach();
  up.reset();
  b().abort_uploads(m_prefix);  // S3: what the next save / mithril.dcp.clean do
  if (GetParam() == "file") {  // a local temporary removed (as stale)
    for (const auto& e : std::filesystem::directory_iterator(std::filesystem::path("/") / m_prefix))
      std::filesystem::remove(e.path());
  } else if (GetParam().rfind("redis", 0) == 0) {
    GTEST_SKIP() << "a Redis temporary expires after a day (tests/integration/test_dcp.py deletes one)";
  }
  try {
    b().complete_detached(key("gone"), token);
    FAIL() << "completed a discarded upload";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::not_found) << e.what();
    EXPECT_NE(std::string(e.what()).find(key("gone")), std::string::npos) << e.what();
  }
  EXPECT_FALSE(b().exists(key("gone")));
}

TEST_P(BackendTest, CloneSeesTheSameStore) {
  b().put(key("shared"), util::as_bytes("x"));
  auto other = b().clone();
  EXPECT_TRUE(other->exists(key("shared")));
  EXPECT_EQ(other->endpoint(), b().endpoint());
}

INSTANTIATE_TEST_SUITE_P(Backends, BackendTest, ::testing::ValuesIn(urls_under_test()),
                         [](const ::testing::TestParamInfo<std::string>& p) {
                           return p.param.substr(0, p.param.find(':')) + std::to_string(p.index);
                         });

// Numbers from the environment end up in integer casts: out-of-range, infinite
// or NaN values are refused with the variable's name, not cast (UB).
TEST(BackendOptions, EnvironmentNumbersMustBeInRange) {
  struct Var {
    const char* name;
    std::vector<const char*> bad;
  };
  for (const Var& v : {Var{"MITHRIL_REMOTE_TIMEOUT", {"inf", "nan", "1e30", "-1", "3s"}},
                       Var{"MITHRIL_REMOTE_RETRIES", {"1e30", "inf", "nan"}},
                       Var{"MITHRIL_REMOTE_PART_SIZE", {"1e300", "inf"}}}) {
    for (const char* value : v.bad) {
      ::setenv(v.name, value, 1);
      try {
        options_from_env(Options{});
        ADD_FAILURE() << v.name << "=" << value << " accepted";
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), Errc::invalid_argument);
        EXPECT_NE(std::string(e.what()).find(v.name), std::string::npos) << e.what();
      }
    }
    ::unsetenv(v.name);
  }
  ::setenv("MITHRIL_REMOTE_TIMEOUT", "2.5", 1);
  ::setenv("MITHRIL_REMOTE_RETRIES", "7", 1);
  const Options o = options_from_env(Options{});
  ::unsetenv("MITHRIL_REMOTE_TIMEOUT");
  ::unsetenv("MITHRIL_REMOTE_RETRIES");
  EXPECT_EQ(o.io_timeout, std::chrono::milliseconds(2500));
  EXPECT_EQ(o.retry.attempts, 7);
}

TEST(FileBackend, RefusesKeysThatLeaveTheRoot) {
  test::TempDir dir;
  auto loc = open("file://" + dir.path().string(), Options{});
  EXPECT_THROW(loc.backend->get(loc.key + "/../x"), Error);
  EXPECT_THROW(loc.backend->put("", util::as_bytes("x")), Error);
}

TEST(Open, UnreachableRedisFailsAfterRetriesNamingTheEndpoint) {
  Options o;
  o.retry.attempts = 2;
  o.retry.initial_delay = std::chrono::milliseconds(1);
  o.connect_timeout = std::chrono::milliseconds(500);
  auto loc = open("redis://127.0.0.1:1/0", o);  // port 1: nothing listens
  try {
    loc.backend->get("k");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::remote_unavailable);
    EXPECT_EQ(std::string(e.what()).rfind("redis://127.0.0.1:1/0: GET k: ", 0), 0u) << e.what();
    EXPECT_NE(std::string(e.what()).find("gave up after 2 attempts"), std::string::npos) << e.what();
  }
}

TEST(Open, UnreachableS3FailsAfterRetriesNamingTheEndpoint) {
  Options o;
  o.endpoint = "http://127.0.0.1:1";
  o.retry.attempts = 2;
  o.retry.initial_delay = std::chrono::milliseconds(1);
  auto loc = open("s3://bucket/prefix", o);
  try {
    loc.backend->stat("prefix/x");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::remote_unavailable);
    EXPECT_EQ(std::string(e.what()).rfind("http://127.0.0.1:1/bucket: HEAD prefix/x: ", 0), 0u) << e.what();
  }
}

}  // namespace
}  // namespace mithril::storage
