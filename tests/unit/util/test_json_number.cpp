#include "util/json_number.hpp"

#include <gtest/gtest.h>

using mithril::util::json_has_u64;
using mithril::util::json_i64;
using mithril::util::json_u64;
using nlohmann::json;

TEST(JsonNumber, UnsignedTakesOnlyNonNegativeIntegers) {
  EXPECT_EQ(json_u64(json::parse("0")), 0u);
  EXPECT_EQ(json_u64(json::parse("18446744073709551615")), 18446744073709551615ull);
  for (const char* text : {"-1", "1.0", "1e300", "-1e300", "\"1\"", "true", "null", "[1]", "{}"})
    EXPECT_FALSE(json_u64(json::parse(text)).has_value()) << text;
}

TEST(JsonNumber, SignedTakesIntegersThatFit) {
  EXPECT_EQ(json_i64(json::parse("-9223372036854775808")), INT64_MIN);
  EXPECT_EQ(json_i64(json::parse("9223372036854775807")), INT64_MAX);
  for (const char* text : {"9223372036854775808", "18446744073709551615", "2.5", "-1e300", "\"3\"", "false"})
    EXPECT_FALSE(json_i64(json::parse(text)).has_value()) << text;
}

TEST(JsonNumber, MemberChecks) {
  const auto j = json::parse(R"({"version":1,"float":1.0,"big":1.88889e44})");
  EXPECT_TRUE(json_has_u64(j, "version", 1));
  EXPECT_FALSE(json_has_u64(j, "version", 2));
  EXPECT_FALSE(json_has_u64(j, "float", 1));
  EXPECT_FALSE(json_has_u64(j, "big", 1));
  EXPECT_FALSE(json_has_u64(j, "missing", 0));
  EXPECT_FALSE(json_u64(json::parse("[1]"), "version").has_value());
}
