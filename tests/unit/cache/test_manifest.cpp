#include "cache/manifest.hpp"

#include <gtest/gtest.h>

#include "mithril/error.hpp"
#include "util/bytes.hpp"

using namespace mithril;
using namespace mithril::cache;

namespace {

Manifest sample_manifest() {
  Manifest m;
  m.kind = EntryKind::triton_kernel;
  m.id = "triton/ABC";
  m.root = "triton/ABC";
  m.key = "ABC";
  ManifestFile a{"k.cubin", 10, {}, false, Transform::none};
  a.digest.fill(0x11);
  ManifestFile g{"__grp__k.json", 40, {}, false, Transform::triton_group};
  g.digest.fill(0x22);
  m.files = {a, g};
  return m;
}

Manifest parse_text(const std::string& s) { return Manifest::parse(util::as_bytes(s), "test"); }

std::string with(const std::string& kind, const std::string& id, const std::string& root, const std::string& files) {
  return R"({"format":"mithril-manifest","version":1,"kind":")" + kind + R"(","id":")" + id + R"(","root":")" + root +
         R"(","key":"k","files":[)" + files + "]}";
}

std::string file(const std::string& path) {
  return R"({"path":")" + path + R"(","size":1,"digest":")" + std::string(64, 'a') + R"(","exec":false})";
}

}  // namespace

TEST(Manifest, CanonicalRoundTrip) {
  const auto m = sample_manifest();
  const auto bytes = m.serialize();
  // Files sorted by path, keys sorted, no whitespace: an independent spelling.
  const std::string expected =
      R"({"files":[{"digest":")" + std::string(64, '2') +
      R"(","exec":false,"path":"__grp__k.json","size":40,"transform":"triton-group"},{"digest":")" +
      std::string(64, '1') +
      R"(","exec":false,"path":"k.cubin","size":10}],"format":"mithril-manifest","id":"triton/ABC","key":"ABC","kind":"triton-kernel","root":"triton/ABC","version":1})";
  EXPECT_EQ(std::string(util::as_chars(bytes)), expected);
  const auto back = Manifest::parse(bytes, "test");
  EXPECT_EQ(back.serialize(), bytes);
  EXPECT_EQ(back.total_size(), 50u);
  EXPECT_EQ(back.files[0].transform, Transform::triton_group);
}

TEST(Manifest, LayoutsPerKind) {
  EXPECT_NO_THROW(parse_text(with("inductor-fxgraph", "inductor/fxgraph/ab/fabc", "inductor/fxgraph/ab/fabc", file("e1"))));
  EXPECT_NO_THROW(parse_text(with("inductor-module", "inductor/ab/cabc", "inductor/ab", file("cabc.py"))));
  EXPECT_NO_THROW(parse_text(with("inductor-aotautograd", "inductor/aotautograd/aabc", "inductor/aotautograd/aabc", file("e"))));
  EXPECT_NO_THROW(parse_text(with("inductor-other", "inductor/dynamo", "inductor/dynamo", file("x/y"))));
  EXPECT_NO_THROW(parse_text(with("inductor-other", "inductor/file.bin", "inductor", file("file.bin"))));
  EXPECT_NO_THROW(parse_text(with("megacache", "cas/megacache/m1", "", file("a.bin"))));
  // Mismatches and escapes.
  EXPECT_THROW(parse_text(with("triton-kernel", "triton/../x", "triton/../x", file("a"))), Error);
  EXPECT_THROW(parse_text(with("triton-kernel", "/etc", "/etc", file("a"))), Error);
  EXPECT_THROW(parse_text(with("triton-kernel", "inductor/ab", "inductor/ab", file("a"))), Error);
  EXPECT_THROW(parse_text(with("triton-kernel", "triton/a/b", "triton/a/b", file("a"))), Error);
  EXPECT_THROW(parse_text(with("triton-kernel", "triton/.hidden", "triton/.hidden", file("a"))), Error);
  EXPECT_THROW(parse_text(with("inductor-fxgraph", "inductor/fxgraph/abc/f", "inductor/fxgraph/abc/f", file("e"))), Error);
  EXPECT_THROW(parse_text(with("inductor-module", "inductor/ab/cabc", "inductor/ab", file("sub/cabc.py"))), Error);
  EXPECT_THROW(parse_text(with("inductor-other", "inductor/fxgraph", "inductor/fxgraph", file("x"))), Error);
  EXPECT_THROW(parse_text(with("megacache", "cas/megacache/../x", "", file("a"))), Error);
  EXPECT_THROW(parse_text(with("megacache", "cas/blob/x", "", file("a"))), Error);
}

TEST(Manifest, RejectsUnsafeOrInconsistentFiles) {
  const std::string id = "triton/K";
  EXPECT_THROW(parse_text(with("triton-kernel", id, id, file("../x"))), Error);
  EXPECT_THROW(parse_text(with("triton-kernel", id, id, file("/abs"))), Error);
  EXPECT_THROW(parse_text(with("triton-kernel", id, id, file("a//b"))), Error);
  EXPECT_THROW(parse_text(with("triton-kernel", id, id, file("a/./b"))), Error);
  EXPECT_THROW(parse_text(with("triton-kernel", id, id, file("a") + "," + file("a"))), Error);
  EXPECT_THROW(parse_text(with("triton-kernel", id, id, file("a") + "," + file("a/b"))), Error);
  EXPECT_THROW(parse_text(with("no-such-kind", id, id, file("a"))), Error);
  EXPECT_THROW(parse_text("not json"), Error);
  EXPECT_THROW(parse_text(R"({"format":"other"})"), Error);
  try {
    parse_text(R"({"format":"mithril-manifest","version":9})");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::unsupported);
  }
}

TEST(Manifest, FilesStayInsideTheirOwnEntry) {
  const auto refused = [](const std::string& text, const std::string& why) {
    try {
      parse_text(text);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::corrupt);
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
  };
  // A single-file inductor-other entry holds exactly its own name.
  refused(with("inductor-other", "inductor/evil", "inductor", file("fxgraph/ab/fvictim/zz_planted")), "lies outside entry");
  refused(with("inductor-other", "inductor/evil", "inductor", file("fxgraph")), "lies outside entry");
  refused(with("inductor-other", "inductor/evil", "inductor", file("locks")), "lies outside entry");
  refused(with("inductor-other", "inductor/evil", "inductor", file("evil") + "," + file("other")), "lies outside entry");
  // A module group holds only files of its own stem.
  refused(with("inductor-module", "inductor/ab/cabc", "inductor/ab", file("cvictim.py")), "does not belong to module");
  EXPECT_NO_THROW(parse_text(with("inductor-module", "inductor/ab/cabc", "inductor/ab",
                                  file("cabc.py") + "," + file("cabc.so") + "," + file("cabc.main.so"))));
  // Hidden names are framework temporaries, never entry files.
  refused(with("inductor-fxgraph", "inductor/fxgraph/ab/fabc", "inductor/fxgraph/ab/fabc", file(".tmp")), "hidden file name");
  refused(with("triton-kernel", "triton/K", "triton/K", file("sub/.x")), "hidden file name");
  // Triton group files must say what they are (then placement checks their children), and only they may.
  refused(with("triton-kernel", "triton/K", "triton/K", file("__grp__k.json")), "is not marked as one");
  const auto marked = [](const std::string& path) {
    return R"({"path":")" + path + R"(","size":1,"digest":")" + std::string(64, 'a') +
           R"(","exec":false,"transform":"triton-group"})";
  };
  EXPECT_NO_THROW(parse_text(with("triton-kernel", "triton/K", "triton/K", marked("__grp__k.json"))));
  refused(with("triton-kernel", "triton/K", "triton/K", marked("k.json")), "is not a Triton group file");
  refused(with("inductor-other", "inductor/d", "inductor/d", marked("__grp__k.json")), "is not a Triton group file");
}

// Numbers are JSON integers in range, or the manifest is refused: a float like
// 1e300 used to reach nlohmann's static_cast (undefined behaviour, found by the
// manifest fuzz target) and a negative size wrapped to 2^64 - 5.
TEST(Manifest, NumbersMustBeIntegersInRange) {
  const std::string id = "triton/K";
  const auto sized = [&](const std::string& size) {
    return with("triton-kernel", id, id,
                R"({"path":"a","size":)" + size + R"(,"digest":")" + std::string(64, 'a') + R"(","exec":false})");
  };
  EXPECT_EQ(parse_text(sized("18446744073709551615")).files.at(0).size, 18446744073709551615ull);
  for (const char* bad : {"1e300", "-5", "1.5", "10.0", "\"10\"", "null"}) {
    try {
      parse_text(sized(bad));
      ADD_FAILURE() << "accepted size " << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::corrupt) << bad;
      EXPECT_NE(std::string(e.what()).find("size"), std::string::npos) << e.what();
    }
  }
  for (const char* version : {"1.88889e44", "1.0", "-1", "\"1\""}) {
    std::string text = with("triton-kernel", id, id, file("a"));
    text.replace(text.find("\"version\":1"), 11, std::string("\"version\":") + version);
    try {
      parse_text(text);
      ADD_FAILURE() << "accepted version " << version;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::unsupported) << version;
    }
  }
}
