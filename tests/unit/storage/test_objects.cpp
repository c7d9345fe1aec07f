// mithril/objects.hpp on file:// URLs (the S3 path, abort_uploads included,
// runs in tests/integration/test_dcp.py against moto).
#include <gtest/gtest.h>

#include "mithril/error.hpp"
#include "mithril/objects.hpp"
#include "test_helpers.hpp"

namespace mithril {
namespace {

std::vector<std::byte> bytes_of(std::string_view s) {
  std::vector<std::byte> out(s.size());
  std::memcpy(out.data(), s.data(), s.size());
  return out;
}

TEST(Objects, PutGetStatListRemove) {
  test::TempDir dir;
  const std::string root = "file://" + dir.path().string() + "/ckpt/";
  EXPECT_FALSE(get_object(root + "manifest").has_value());
  EXPECT_FALSE(stat_object(root + "manifest").has_value());
  put_object(root + "manifest", bytes_of("first"));
  put_object(root + "manifest", bytes_of("second"));  // replaced whole
  put_object(root + "__0_0.mcp", bytes_of("x"));
  EXPECT_EQ(get_object(root + "manifest"), bytes_of("second"));
  EXPECT_EQ(stat_object(root + "manifest"), std::optional<std::uint64_t>(6));
  EXPECT_EQ(list_objects(root), (std::vector<std::string>{"__0_0.mcp", "manifest"}));
  remove_object(root + "manifest");
  remove_object(root + "manifest");  // a missing object is not an error
  EXPECT_FALSE(get_object(root + "manifest").has_value());
  EXPECT_EQ(list_objects(root), (std::vector<std::string>{"__0_0.mcp"}));
}

TEST(Objects, AbortUploadsHasNothingToDoOnFileUrls) {
  test::TempDir dir;
  const std::string root = "file://" + dir.path().string() + "/ckpt/";
  put_object(root + "__0_0.mcp", bytes_of("x"));
  EXPECT_EQ(abort_uploads(root), 0u);  // local temporaries are their writer's
  EXPECT_EQ(list_objects(root), (std::vector<std::string>{"__0_0.mcp"}));
  EXPECT_THROW(abort_uploads("/tmp/not-a-url/"), Error);
}

TEST(Objects, LocalPathIsRefused) {
  try {
    put_object("/tmp/not-a-url", bytes_of("x"));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("/tmp/not-a-url"), std::string::npos);
  }
}

}  // namespace
}  // namespace mithril
