#include <gtest/gtest.h>

#include "mithril/error.hpp"
#include "storage/s3_backend.hpp"
#include "storage/url.hpp"

namespace mithril::storage {
namespace {

TEST(Url, RecognisesOnlyKnownSchemes) {
  EXPECT_TRUE(is_url("s3://b/k"));
  EXPECT_TRUE(is_url("redis://localhost"));
  EXPECT_TRUE(is_url("file:///tmp/x"));
  EXPECT_FALSE(is_url("/tmp/x.mcp"));
  EXPECT_FALSE(is_url("x.mcp"));
  EXPECT_FALSE(is_url("http://example.com/x"));
  EXPECT_FALSE(is_url("S3://b/k"));
}

TEST(Url, S3BucketKeyAndQuery) {
  const auto u = parse_url("s3://my-bucket/ckpt/step%20100.mcp?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=eu-west-1");
  EXPECT_EQ(u.scheme, "s3");
  EXPECT_EQ(u.host, "my-bucket");
  EXPECT_EQ(u.key, "ckpt/step 100.mcp");
  EXPECT_EQ(u.query.at("endpoint"), "http://127.0.0.1:9000");
  EXPECT_EQ(u.query.at("region"), "eu-west-1");
  EXPECT_EQ(parse_url("s3://b").key, "");
  EXPECT_EQ(parse_url("s3://b/").key, "");
  // An unescaped endpoint works too.
  EXPECT_EQ(parse_url("s3://b/k?endpoint=http://h:1").query.at("endpoint"), "http://h:1");
}

TEST(Url, RedisHostPortDbKeyPassword) {
  auto u = parse_url("redis://127.0.0.1:6380/3/mithril/cache");
  EXPECT_EQ(u.host, "127.0.0.1");
  EXPECT_EQ(u.port, 6380);
  EXPECT_EQ(u.db, 3);
  EXPECT_EQ(u.key, "mithril/cache");
  EXPECT_EQ(u.redacted(), "redis://127.0.0.1:6380/3/mithril/cache");

  u = parse_url("redis://:s3cr%40t@cache.local");
  EXPECT_EQ(u.host, "cache.local");
  EXPECT_EQ(u.port, 0);
  EXPECT_EQ(u.db, 0);
  EXPECT_EQ(u.password, "s3cr@t");
  EXPECT_EQ(u.redacted().find("s3cr"), std::string::npos);

  u = parse_url("redis://[::1]:7000/1");
  EXPECT_EQ(u.host, "::1");
  EXPECT_EQ(u.port, 7000);
  EXPECT_EQ(u.db, 1);
  EXPECT_EQ(parse_url("redis://").host, "127.0.0.1");
}

TEST(Url, FileKeepsThePath) {
  EXPECT_EQ(parse_url("file:///srv/cache").key, "/srv/cache");
  EXPECT_EQ(parse_url("file://relative/dir").key, "relative/dir");
}

TEST(Url, RejectsMalformedUrls) {
  for (const char* bad : {"s3://", "s3:///key", "redis://h:notaport/0", "redis://h:99999/0", "redis://h/x",
                          "redis://h/-1", "s3://b/k?bogus=1", "redis://h/0?endpoint=x", "file://", "ftp://x",
                          "redis://[::1/0"}) {
    try {
      parse_url(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::invalid_argument) << bad;
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
}

TEST(Url, ErrorsNeverEchoThePassword) {
  for (const char* bad : {"redis://:hunter2@h:notaport/0", "redis://user:hunter2@h/x", "redis://:hunter2@[::1/0",
                          "redis://:hunter2@h/0?endpoint=x"}) {
    try {
      parse_url(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).find("hunter2"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("redis://:***@"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(redact_url("redis://:pw@h:1/0/k"), "redis://:***@h:1/0/k");
  EXPECT_EQ(redact_url("s3://bucket/a@b"), "s3://bucket/a@b");  // '@' in the key is not user information
  EXPECT_EQ(redact_url("/local/path"), "/local/path");
}

TEST(Url, PercentDecodeKeepsMalformedEscapes) {
  EXPECT_EQ(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
  EXPECT_EQ(percent_decode("%41%62"), "Ab");
}

TEST(S3Xml, ValuesAndEntities) {
  const std::string xml =
      "<ListBucketResult><KeyCount>2</KeyCount><Contents><Key>a&amp;b</Key></Contents>"
      "<Contents><Key>c&lt;d&#x20;&#233;</Key></Contents><IsTruncated>false</IsTruncated></ListBucketResult>";
  EXPECT_EQ(xml_values(xml, "Key"), (std::vector<std::string>{"a&b", "c<d \xc3\xa9"}));
  EXPECT_EQ(xml_value(xml, "KeyCount"), "2");
  EXPECT_EQ(xml_value(xml, "IsTruncated"), "false");
  EXPECT_EQ(xml_value(xml, "Missing"), "");
  EXPECT_EQ(xml_value("<A>unterminated", "A"), "");
}

}  // namespace
}  // namespace mithril::storage
