// compress_torch_object() and TorchObjectReader, checked against the
// independent file path: write_torch_checkpoint() + compress_file().
#include <gtest/gtest.h>

#include <cstring>

#include "formats/torch_writer.hpp"
#include "mithril/checkpoint.hpp"
#include "mithril/error.hpp"
#include "mithril/torch_object.hpp"
#include "test_helpers.hpp"

namespace mithril {
namespace {

using test::random_bytes;
using test::read_file;
using test::smooth_f32;
using test::TempDir;

struct OwnedObjectTensor {
  std::string name;
  formats::DType dtype;
  std::vector<std::uint64_t> shape;
  util::ByteVector bytes;
};

std::vector<OwnedObjectTensor> sample() {
  std::vector<OwnedObjectTensor> t;
  t.push_back({"w", formats::DType::F32, {64, 48}, smooth_f32(64 * 48)});
  t.push_back({"b", formats::DType::BF16, {300}, random_bytes(600, 7)});
  t.push_back({"e", formats::DType::F16, {0}, {}});
  t.push_back({"u", formats::DType::U16, {50}, random_bytes(100, 8)});
  return t;
}

std::vector<formats::TensorView> views(const std::vector<OwnedObjectTensor>& owned) {
  std::vector<formats::TensorView> v;
  for (const auto& o : owned) v.push_back({o.name, o.dtype, o.shape, o.bytes});
  return v;
}

std::vector<StorageData> storages(const std::vector<OwnedObjectTensor>& owned) {
  std::vector<StorageData> s;
  for (std::size_t i = 0; i < owned.size(); ++i) s.push_back({std::to_string(i), owned[i].bytes});
  return s;
}

CompressOptions object_options() {
  CompressOptions o;
  o.chunk_size = 512;
  o.threads = 2;
  o.sync = false;
  return o;
}

TEST(TorchObject, SameBytesAsCompressingTheTorchSaveFile) {
  TempDir dir;
  const auto owned = sample();
  const auto pkl = formats::torch_state_dict_pickle(views(owned));
  formats::write_torch_checkpoint(dir / "m.pt", views(owned), util::Overwrite::refuse);
  std::filesystem::create_directory(dir / "a");
  std::filesystem::create_directory(dir / "b");
  const auto r1 = compress_file(dir / "m.pt", dir / "a" / "m.mcp", object_options());
  const auto r2 = compress_torch_object(pkl, storages(owned), dir / "b" / "m.mcp", object_options());
  EXPECT_EQ(r2.source_kind, "torch");
  EXPECT_EQ(r1.source_bytes, r2.source_bytes);
  EXPECT_EQ(read_file(dir / "a" / "m.mcp"), read_file(dir / "b" / "m.mcp"));
}

TEST(TorchObject, ReaderGivesTheTreeAndTheStoragesOfMcpAndPlainFiles) {
  TempDir dir;
  const auto owned = sample();
  formats::write_torch_checkpoint(dir / "m.pt", views(owned), util::Overwrite::refuse);
  compress_torch_object(formats::torch_state_dict_pickle(views(owned)), storages(owned), dir / "m.mcp", object_options());
  for (const auto* name : {"m.pt", "m.mcp"}) {
    const TorchObjectReader r(dir / name);
    EXPECT_EQ(r.is_mcp(), std::string(name) == "m.mcp");
    ASSERT_EQ(r.storages().size(), owned.size());
    ASSERT_EQ(r.tensors().size(), owned.size());
    EXPECT_EQ(r.nodes().at(r.root()).kind, "ordered_dict");
    EXPECT_EQ(r.tensors()[0].dtype, "float32");
    EXPECT_EQ(r.tensors()[0].shape, (std::vector<std::uint64_t>{64, 48}));
    EXPECT_EQ(r.tensors()[0].stride, (std::vector<std::uint64_t>{48, 1}));
    std::vector<util::ByteVector> out;
    std::vector<TorchObjectReader::Target> targets;
    for (std::size_t i = 0; i < owned.size(); ++i) out.emplace_back(r.storages()[i].bytes);
    for (std::size_t i = 0; i < owned.size(); ++i) targets.push_back({i, out[i]});
    std::uint64_t last = 0, total = 0;
    r.read_storages(targets, [&](std::uint64_t done, std::uint64_t t) {
      EXPECT_GE(done, last);
      last = done;
      total = t;
    });
    EXPECT_EQ(last, total);
    for (std::size_t i = 0; i < owned.size(); ++i) EXPECT_EQ(out[i], owned[i].bytes) << name << " storage " << i;
  }
}

TEST(TorchObject, RefusesWhatTheRestrictedUnpicklerRefusesAndWritesNothing) {
  TempDir dir;
  const std::string evil = "\x80\x02" "cos\nsystem\n" "X\x02\x00\x00\x00ls" "\x85R.";
  try {
    compress_torch_object(util::as_bytes(evil), {}, dir / "e.mcp", object_options());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::unsupported);
    EXPECT_NE(std::string(e.what()).find("refused global 'os.system'"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "e.mcp"));
}

TEST(TorchObject, StoragesMustMatchThePickle) {
  TempDir dir;
  auto owned = sample();
  const auto pkl = formats::torch_state_dict_pickle(views(owned));
  auto extra = storages(owned);
  const auto more = random_bytes(16, 3);
  extra.push_back({"99", more});  // not named by the pickle
  EXPECT_THROW(compress_torch_object(pkl, extra, dir / "x.mcp", object_options()), Error);
  auto missing = storages(owned);
  missing.pop_back();  // named by the pickle, not given
  EXPECT_THROW(compress_torch_object(pkl, missing, dir / "y.mcp", object_options()), Error);
  EXPECT_FALSE(std::filesystem::exists(dir / "x.mcp"));
  EXPECT_FALSE(std::filesystem::exists(dir / "y.mcp"));
}

TEST(TorchObject, ReaderRefusesOtherSources) {
  TempDir dir;
  test::write_file(dir / "n.txt", util::as_bytes(std::string("not a checkpoint")));
  compress_file(dir / "n.txt", dir / "n.mcp", object_options());
  try {
    TorchObjectReader r(dir / "n.mcp");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::unsupported);
    EXPECT_NE(std::string(e.what()).find("holds a raw file"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mithril
