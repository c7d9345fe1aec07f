// Planning of torch.save files: storages become tensor segments at the byte
// ranges Python's zipfile reports (expected.json), everything else is raw,
// and files the reader refuses are planned as raw bytes with a note.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "checkpoint/plan.hpp"
#include "formats/dtype.hpp"
#include "mithril/checkpoint.hpp"
#include "mithril/error.hpp"
#include "formats/torch_fixtures.hpp"

namespace mithril::checkpoint {
namespace {

using test::read_torch_fixture;
using test::torch_expected;

// Segments tile the file exactly and chunks tile their segments.
void check_tiling(const SourcePlan& plan, std::uint64_t file_size) {
  std::uint64_t pos = 0;
  for (std::size_t i = 0; i < plan.segments.size(); ++i) {
    const auto& s = plan.segments[i];
    EXPECT_EQ(s.offset, pos) << "segment " << i;
    std::uint64_t cpos = s.offset;
    for (std::uint32_t c = s.first_chunk; c < s.first_chunk + s.chunk_count; ++c) {
      EXPECT_EQ(plan.chunks[c].source_offset, cpos);
      EXPECT_EQ(plan.chunks[c].segment, i);
      cpos += plan.chunks[c].size;
    }
    EXPECT_EQ(cpos, s.offset + s.size);
    pos += s.size;
  }
  EXPECT_EQ(pos, file_size);
}

TEST(PlanTorch, StoragesBecomeTensorSegments) {
  for (const char* name : {"training.pt", "dtypes.pt", "views.pt", "params.pt", "zip64.pt", "old_layout.pt"}) {
    SCOPED_TRACE(name);
    const auto file = read_torch_fixture(name);
    const auto plan = plan_source(file, name, 64);
    EXPECT_EQ(plan.kind, "torch");
    EXPECT_TRUE(plan.note.empty()) << plan.note;
    check_tiling(plan, file.size());
    // Exactly the non-empty stored records, at zipfile's offsets.
    std::set<std::pair<std::uint64_t, std::uint64_t>> want;
    for (const auto& s : torch_expected().at(name).at("storages"))
      if (s.at("stored").get<bool>() && s.at("size").get<std::uint64_t>() > 0)
        want.emplace(s.at("data_offset").get<std::uint64_t>(), s.at("size").get<std::uint64_t>());
    std::set<std::pair<std::uint64_t, std::uint64_t>> got;
    for (const auto& s : plan.segments)
      if (s.kind == container::SegmentKind::tensor) got.emplace(s.offset, s.size);
    EXPECT_EQ(got, want);
    EXPECT_EQ(plan.tensor_count, want.size());
  }
}

TEST(PlanTorch, SegmentNamesDtypesAndChunkWidths) {
  const auto file = read_torch_fixture("training.pt");
  const auto plan = plan_source(file, "training.pt", 64);
  std::map<std::string, const container::Segment*> by_name;
  for (const auto& s : plan.segments)
    if (s.kind == container::SegmentKind::tensor) by_name[s.name] = &s;
  // Every tensor of the file is named in exactly one segment: names are
  // "<view>, <view>, ... [storage <key>]".
  auto views_of = [](const std::string& seg_name) {
    std::vector<std::string> out;
    const auto list = seg_name.substr(0, seg_name.rfind(" [storage "));
    for (std::size_t b = 0; b <= list.size();) {
      const auto e = std::min(list.find(", ", b), list.size());
      out.push_back(list.substr(b, e - b));
      b = e + 2;
    }
    return out;
  };
  for (const auto& t : torch_expected().at("training.pt").at("tensors")) {
    const auto name = t.at("name").get<std::string>();
    std::size_t hits = 0;
    for (const auto& [seg_name, seg] : by_name) {
      const auto v = views_of(seg_name);
      hits += static_cast<std::size_t>(std::count(v.begin(), v.end(), name));
    }
    EXPECT_EQ(hits, 1u) << name;
  }
  // bf16 storages are coded 2 bytes wide, fp32 ones 4 wide.
  for (const auto& s : plan.segments) {
    if (s.kind != container::SegmentKind::tensor) continue;
    const auto& c = plan.chunks[s.first_chunk];
    const unsigned want = s.dtype == "BF16" ? 2u : s.dtype == "F32" ? 4u : c.kind.width;
    EXPECT_EQ(c.kind.width, want) << s.name;
    EXPECT_TRUE(c.kind.is_tensor);
    EXPECT_EQ(s.size % c.kind.width, 0u);
  }
  const auto* w = by_name.count("model.0.weight [storage 0]") ? by_name["model.0.weight [storage 0]"] : nullptr;
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->dtype, "F32");
  EXPECT_EQ(w->shape, (std::vector<std::uint64_t>{3, 4}));
}

TEST(PlanTorch, SharedStorageListsEveryView) {
  const auto file = read_torch_fixture("views.pt");
  const auto plan = plan_source(file, "views.pt", 64);
  const auto& exp = torch_expected().at("views.pt").at("tensors");
  // Group expected tensor names by storage group; every group with several
  // views shows all of them in one segment name, with a flat shape.
  std::map<int, std::vector<std::string>> groups;
  for (const auto& t : exp) groups[t.at("storage_group").get<int>()].push_back(t.at("name").get<std::string>());
  std::size_t shared = 0;
  for (const auto& [g, names] : groups) {
    if (names.size() < 2) continue;
    ++shared;
    std::size_t found = 0;
    for (const auto& s : plan.segments) {
      if (s.kind != container::SegmentKind::tensor) continue;
      const bool all = std::all_of(names.begin(), names.end(),
                                   [&](const std::string& n) { return s.name.find(n) != std::string::npos; });
      if (all) {
        ++found;
        EXPECT_EQ(s.shape.size(), 1u) << s.name;
      }
    }
    EXPECT_EQ(found, 1u) << names.front();
  }
  EXPECT_GT(shared, 0u) << "views.pt should hold shared storages";
}

// A file named .safetensors whose first bytes are not even a header (a
// truncated download) is still compressed, as bytes, and the note says why;
// a torch.save file of that name is planned as one, with no note.
TEST(PlanSource, ANamedSafetensorsFileThatIsNotOneGetsANote) {
  struct Case {
    util::ByteVector file;
    const char* why;
  };
  auto with_length = [](std::uint64_t n, std::size_t size, char first) {
    util::ByteVector f(size, std::byte{'x'});
    for (unsigned i = 0; i < 8; ++i) f[i] = static_cast<std::byte>(n >> (8 * i) & 0xff);
    if (size > 8) f[8] = static_cast<std::byte>(first);
    return f;
  };
  for (const Case& c : {Case{with_length(8864, 1000, '{'), "says 8864 bytes, past the end of the 1000-byte file"},
                        Case{with_length(20, 100, '['), "does not start with '{'"},
                        Case{with_length(1ull << 40, 100, '{'), "over the format's limit"},
                        Case{util::ByteVector(5), "5 bytes, too short"}}) {
    SCOPED_TRACE(c.why);
    const auto plan = plan_source(c.file, "model.safetensors", 1 << 20);
    EXPECT_EQ(plan.kind, "raw");
    EXPECT_NE(plan.note.find("model.safetensors: not a safetensors file"), std::string::npos) << plan.note;
    EXPECT_NE(plan.note.find(c.why), std::string::npos) << plan.note;
    EXPECT_NE(plan.note.find("raw bytes"), std::string::npos) << plan.note;
    check_tiling(plan, c.file.size());
    // Under another name the same bytes are just bytes.
    EXPECT_TRUE(plan_source(c.file, "model.bin", 1 << 20).note.empty());
  }
  const auto torch_file = read_torch_fixture("training.pt");
  const auto plan = plan_source(torch_file, "training.safetensors", 1 << 20);
  EXPECT_EQ(plan.kind, "torch");
  EXPECT_TRUE(plan.note.empty()) << plan.note;
}

TEST(PlanTorch, RefusedFilesArePlannedAsRawWithANote) {
  struct Case {
    const char* file;
    const char* note;
  };
  for (const Case& c : {Case{"evil/os_system.pt", "refused global 'os.system'"},
                        Case{"evil/torchscript.pt", "TorchScript"},
                        Case{"evil/lying_numel.pt", "declares 9 float32 elements"},
                        Case{"legacy.pt", "legacy torch.save"}}) {
    SCOPED_TRACE(c.file);
    const auto file = read_torch_fixture(c.file);
    const auto plan = plan_source(file, c.file, 1 << 20);
    EXPECT_EQ(plan.kind, "raw");
    EXPECT_NE(plan.note.find(c.note), std::string::npos) << plan.note;
    EXPECT_NE(plan.note.find("raw bytes"), std::string::npos) << plan.note;
    ASSERT_EQ(plan.segments.size(), 1u);
    EXPECT_EQ(plan.segments[0].kind, container::SegmentKind::raw);
    EXPECT_EQ(plan.segments[0].size, file.size());
  }
}

TEST(PlanTorch, DeflatedStoragesStayRaw) {
  const auto file = read_torch_fixture("deflated.pt");
  const auto plan = plan_source(file, "deflated.pt", 64);
  EXPECT_EQ(plan.kind, "torch");
  EXPECT_EQ(plan.tensor_count, 0u);
  check_tiling(plan, file.size());
}

TEST(PlanTorch, CompressDecompressIsByteExact) {
  test::TempDir dir;
  for (const char* name : {"training.pt", "dtypes.pt", "views.pt", "prefixed.pt", "evil/os_system.pt"}) {
    SCOPED_TRACE(name);
    const auto original = read_torch_fixture(name);
    const auto in = test::torch_fixture(name);
    const auto mcp = dir / "x.mcp";
    const auto back = dir / "x.pt";
    CompressOptions co;
    co.force = true;
    co.chunk_size = 256;
    std::string warning;
    co.warn = [&](const std::string& w) { warning = w; };
    const auto r = compress_file(in, mcp, co);
    EXPECT_EQ(r.source_kind, std::string(name).starts_with("evil/") ? "raw" : "torch");
    DecompressOptions dopt;
    dopt.force = true;
    (void)decompress_file(mcp, back, dopt);
    EXPECT_EQ(test::read_file(back), original);
    EXPECT_TRUE(verify_file(mcp, {}).ok);
    if (std::string(name).starts_with("evil/")) {
      EXPECT_NE(warning.find("os.system"), std::string::npos) << warning;
    }
  }
}

}  // namespace
}  // namespace mithril::checkpoint
