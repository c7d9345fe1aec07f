// storage/remote_libs: libcurl and libcrypto, in libmithril_remote.so,
// opened on first use. The S3 tests (unit Backends/* and
// tests/integration/test_remote_*.py against moto) run every request
// through these tables; here, the tables themselves, where the shim is
// found, and the error when it is not.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "mithril/error.hpp"
#include "storage/remote_libs.hpp"

namespace mithril::storage::libs {
namespace {

TEST(RemoteLibs, CryptoTableComputesSha256AndHmac) {
  const Crypto& c = crypto();
  EXPECT_EQ(&c, &crypto());  // loaded once
  // FIPS 180-2 example "abc" and RFC 4231 test case 2.
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  ASSERT_EQ(c.digest("abc", 3, md, &len, c.sha256(), nullptr), 1);
  ASSERT_EQ(len, 32u);
  EXPECT_EQ(md[0], 0xba);
  EXPECT_EQ(md[31], 0xad);
  const std::string key = "Jefe", msg = "what do ya want for nothing?";
  ASSERT_NE(c.hmac(c.sha256(), key.data(), static_cast<int>(key.size()),
                   reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), md, &len),
            nullptr);
  ASSERT_EQ(len, 32u);
  EXPECT_EQ(md[0], 0x5b);
  EXPECT_EQ(md[31], 0x43);
}

TEST(RemoteLibs, CurlTableMakesAndFreesHandles) {
  const Curl& c = curl();
  CURL* h = c.easy_init();
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(c.easy_setopt(h, CURLOPT_URL, "http://127.0.0.1:1/"), CURLE_OK);
  c.easy_cleanup(h);
  EXPECT_NE(std::string(c.easy_strerror(CURLE_COULDNT_CONNECT)), "");
  curl_slist* l = c.slist_append(nullptr, "X-Test: 1");
  ASSERT_NE(l, nullptr);
  c.slist_free_all(l);
}

TEST(RemoteLibs, ShimIsFoundBesideTheProgram) {
  const auto candidates = detail::shim_candidates();
  ASSERT_FALSE(candidates.empty());
  // The test binary sits in the build tree's root, like build/mithril.
  EXPECT_TRUE(std::filesystem::exists(candidates.front())) << candidates.front();
  EXPECT_EQ(std::filesystem::path(candidates.front()).filename(), "libmithril_remote.so");
  // The first candidate that loads wins.
  const std::string missing = ::testing::TempDir() + "/no-such-dir/libmithril_remote.so";
  auto [handle, path] = detail::open_first({missing, candidates.front()}, "test");
  EXPECT_NE(handle, nullptr);
  EXPECT_EQ(path, candidates.front());
}

TEST(RemoteLibs, NoShimIsAClearErrorNamingEveryPlaceTried) {
  const std::string a = ::testing::TempDir() + "/no-such-dir/libmithril_remote.so";
  const std::string b = ::testing::TempDir() + "/nor-here/libmithril_remote.so";
  try {
    detail::open_first({a, b}, "S3 access");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::unsupported);
    const std::string what = e.what();
    EXPECT_NE(what.find("S3 access needs libmithril_remote.so (libcurl and libcrypto, loaded on first use), which "
                        "could not be loaded from:"),
              std::string::npos)
        << what;
    EXPECT_NE(what.find("\n  " + a + ": "), std::string::npos) << what;
    EXPECT_NE(what.find("\n  " + b + ": "), std::string::npos) << what;
    EXPECT_NE(what.find("No such file"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace mithril::storage::libs
