#include "cache/triton_group.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "mithril/error.hpp"

using namespace mithril;
using namespace mithril::cache;

namespace {

util::ByteVector bytes(const std::string& s) {
  auto sp = util::as_bytes(s);
  return {sp.begin(), sp.end()};
}

nlohmann::json parse(const util::ByteVector& b) { return nlohmann::json::parse(util::as_chars(b)); }

}  // namespace

TEST(TritonGroup, NormalizesPathsUnderTheRoot) {
  const std::string grp = R"({"child_paths": {"k.json": "/s/triton/KEY/k.json", "k.cubin": "/s/triton/KEY/k.cubin"}})";
  auto g = normalize_triton_group(bytes(grp), "/s/triton", "KEY");
  ASSERT_TRUE(g);
  EXPECT_FALSE(g->foreign);
  EXPECT_EQ(parse(g->normalized)["child_paths"]["k.cubin"], "KEY/k.cubin");
  EXPECT_EQ(g->children.size(), 2u);
  // Materialized for another root: absolute paths there.
  auto m = materialize_triton_group(g->normalized, "/new/place/triton");
  EXPECT_EQ(parse(m)["child_paths"]["k.json"], "/new/place/triton/KEY/k.json");
  // And normalizing that again gives the same portable bytes.
  auto again = normalize_triton_group(m, "/new/place/triton", "KEY");
  EXPECT_EQ(again->normalized, g->normalized);
}

TEST(TritonGroup, MovedStoreKeepsOwnDirectoryChildren) {
  const std::string grp = R"({"child_paths": {"k.json": "/old/store/triton/KEY/k.json"}})";
  auto g = normalize_triton_group(bytes(grp), "/new/triton", "KEY");
  ASSERT_TRUE(g);
  EXPECT_FALSE(g->foreign);
  EXPECT_EQ(g->children, std::vector<std::string>{"KEY/k.json"});
}

TEST(TritonGroup, ForeignChildrenAreFlagged) {
  for (const char* p : {"/etc/passwd", "/s/triton/OTHER/k.json", "/s/triton/KEY/../../x"}) {
    const std::string grp = std::string(R"({"child_paths": {"a": ")") + p + R"("}})";
    auto g = normalize_triton_group(bytes(grp), "/s/triton", "KEY");
    ASSERT_TRUE(g) << p;
    EXPECT_TRUE(g->foreign) << p;
  }
}

TEST(TritonGroup, NotAGroup) {
  EXPECT_FALSE(normalize_triton_group(bytes("not json"), "/s", "K"));
  EXPECT_FALSE(normalize_triton_group(bytes(R"({"x": 1})"), "/s", "K"));
  EXPECT_FALSE(normalize_triton_group(bytes(R"({"child_paths": {"a": 3}})"), "/s", "K"));
  EXPECT_TRUE(is_triton_group_name("__grp__triton_poi_0.json"));
  EXPECT_FALSE(is_triton_group_name("triton_poi_0.json"));
}

TEST(TritonGroup, MaterializeRefusesPathsOutOfTheStore) {
  EXPECT_THROW(materialize_triton_group(bytes(R"({"child_paths": {"a": "/etc/passwd"}})"), "/s"), Error);
  EXPECT_THROW(materialize_triton_group(bytes(R"({"child_paths": {"a": "../x"}})"), "/s"), Error);
  EXPECT_THROW(materialize_triton_group(bytes(R"({"nope": 1})"), "/s"), Error);
}
