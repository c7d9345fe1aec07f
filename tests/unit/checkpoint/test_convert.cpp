// convert_file(): values are checked against torch's own (CRC-32 of each
// tensor's resolve_conj() bytes, recorded in expected.json by torch 2.13).
#include "mithril/convert.hpp"

#include <gtest/gtest.h>

#include "formats/safetensors.hpp"
#include "formats/torch_checkpoint.hpp"
#include "formats/torch_fixtures.hpp"
#include "formats/zip_reader.hpp"
#include "mithril/error.hpp"

namespace mithril {
namespace {

using test::torch_expected;
using test::torch_fixture;

Errc error_code(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  return Errc::internal;
}

TEST(Convert, TorchToSafetensorsMatchesTorchValues) {
  test::TempDir dir;
  for (const char* name : {"views.pt", "training.pt", "params.pt", "deflated.pt", "bare_tensor.pt"}) {
    SCOPED_TRACE(name);
    const auto out = dir / (std::string(name) + ".safetensors");
    std::vector<std::string> notes;
    ConvertOptions o;
    o.note = [&](const std::string& n) { notes.push_back(n); };
    const auto r = convert_file(torch_fixture(name), out, o);
    EXPECT_EQ(r.from, "torch");
    EXPECT_EQ(r.to, "safetensors");
    const auto file = test::read_file(out);
    EXPECT_EQ(r.output_bytes, file.size());
    const auto header = formats::parse_safetensors(file, "out");
    const auto& exp = torch_expected().at(name).at("tensors");
    ASSERT_EQ(header.tensors.size(), exp.size());
    EXPECT_EQ(r.tensors, exp.size());
    std::map<int, int> group_size;
    for (const auto& e : exp) ++group_size[e.at("storage_group").get<int>()];
    std::size_t shared = 0;
    for (const auto& e : exp) {
      auto want_name = e.at("name").get<std::string>();
      if (want_name.empty()) want_name = "tensor";
      const auto it = std::find_if(header.tensors.begin(), header.tensors.end(),
                                   [&](const formats::TensorInfo& t) { return t.name == want_name; });
      ASSERT_NE(it, header.tensors.end()) << want_name;
      EXPECT_EQ(it->shape, e.at("shape").get<std::vector<std::uint64_t>>());
      const auto bytes = util::ByteSpan(file).subspan(header.data_offset + it->begin, it->size());
      EXPECT_EQ(formats::zip_crc32(bytes), e.at("crc32").get<std::uint32_t>()) << want_name;
      if (group_size[e.at("storage_group").get<int>()] > 1 && e.at("storage_nbytes").get<std::uint64_t>() > 0)
        ++shared;
    }
    EXPECT_EQ(r.shared_copies, shared);
    if (shared) {
      EXPECT_TRUE(std::any_of(notes.begin(), notes.end(),
                              [](const std::string& n) { return n.find("own copy") != std::string::npos; }));
    }
  }
}

TEST(Convert, SafetensorsToTorchRoundTrips) {
  test::TempDir dir;
  const auto st1 = dir / "a.safetensors";
  const auto pt = dir / "a.pt";
  const auto st2 = dir / "b.safetensors";
  (void)convert_file(torch_fixture("training.pt"), st1, {});
  const auto r = convert_file(st1, pt, {});
  EXPECT_EQ(r.from, "safetensors");
  EXPECT_EQ(r.to, "torch");
  const auto pt_bytes = test::read_file(pt);
  const auto ck = formats::read_torch_checkpoint(pt_bytes, "a.pt");
  EXPECT_EQ(ck.tensors.size(), 26u);
  (void)convert_file(pt, st2, {});
  EXPECT_EQ(test::read_file(st1), test::read_file(st2)) << "safetensors -> pt -> safetensors is the identity";
}

TEST(Convert, RefusalsLeaveNoOutput) {
  test::TempDir dir;
  const auto out = dir / "x.safetensors";
  const std::string canary = "/tmp/mithril-canary-DO-NOT-CREATE";
  std::filesystem::remove(canary);
  EXPECT_EQ(error_code([&] { (void)convert_file(torch_fixture("evil/os_system.pt"), out, {}); }), Errc::unsupported);
  EXPECT_EQ(error_code([&] { (void)convert_file(torch_fixture("legacy.pt"), out, {}); }), Errc::unsupported);
  EXPECT_EQ(error_code([&] { (void)convert_file(torch_fixture("dtypes.pt"), out, {}); }), Errc::unsupported);  // complex128
  EXPECT_EQ(error_code([&] { (void)convert_file(torch_fixture("views.pt"), dir / "x.npz", {}); }),
            Errc::invalid_argument);
  EXPECT_EQ(error_code([&] { (void)convert_file(torch_fixture("views.pt"), dir / "x.pt", {}); }),
            Errc::invalid_argument);  // already torch
  EXPECT_FALSE(std::filesystem::exists(canary));
  EXPECT_TRUE(std::filesystem::is_empty(dir.path())) << "no output, no temporaries";
}

TEST(Convert, RefusesToOverwriteWithoutForce) {
  test::TempDir dir;
  const auto out = dir / "x.safetensors";
  test::write_file(out, util::as_bytes("keep me"));
  EXPECT_EQ(error_code([&] { (void)convert_file(torch_fixture("views.pt"), out, {}); }), Errc::exists);
  EXPECT_EQ(std::string(util::as_chars(test::read_file(out))), "keep me");
  ConvertOptions o;
  o.force = true;
  (void)convert_file(torch_fixture("views.pt"), out, o);
  EXPECT_NO_THROW((void)formats::parse_safetensors(test::read_file(out), "x"));
}

}  // namespace
}  // namespace mithril
