#include "formats/torch_checkpoint.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <optional>

#include "formats/zip_reader.hpp"
#include "mithril/error.hpp"
#include "torch_fixtures.hpp"

namespace mithril::formats {
namespace {

using nlohmann::json;
using test::read_torch_fixture;
using test::torch_expected;

// Row-major gather of a view's elements from its storage bytes, then the
// lazy conjugate applied (negate every imaginary part), so the result can be
// compared with torch's own values (expected.json: CRC of resolve_conj()).
util::ByteVector gather(const TorchTensor& t, util::ByteSpan storage) {
  util::ByteVector out;
  const auto n = t.numel();
  out.reserve(n * t.element_size);
  std::vector<std::uint64_t> idx(t.shape.size(), 0);
  for (std::uint64_t k = 0; k < n; ++k) {
    std::uint64_t e = t.storage_offset;
    for (std::size_t d = 0; d < idx.size(); ++d) e += idx[d] * t.stride[d];
    const auto src = storage.subspan(e * t.element_size, t.element_size);
    out.insert(out.end(), src.begin(), src.end());
    for (std::size_t d = idx.size(); d-- > 0;) {
      if (++idx[d] < t.shape[d]) break;
      idx[d] = 0;
    }
  }
  if (t.conj) {
    const std::size_t half = t.element_size / 2;  // complex: (re, im) pairs
    for (std::size_t i = 0; i < out.size(); i += t.element_size) out[i + 2 * half - 1] ^= std::byte{0x80};
  }
  return out;
}

// Checks a reader result against what torch and zipfile said (expected.json).
// `shift`: added to the expected offsets; nullopt skips the offset checks.
void check_against_torch(const TorchCheckpoint& ck, util::ByteSpan file, const json& exp,
                         std::optional<std::uint64_t> shift = 0) {
  EXPECT_EQ(ck.archive_prefix, exp.at("prefix").get<std::string>());
  EXPECT_EQ(ck.byteorder, exp.at("byteorder").get<std::string>());

  // Storages: the same records, at the same offsets, in file order.
  const auto& es = exp.at("storages");
  ASSERT_EQ(ck.storages.size(), es.size());
  for (std::size_t i = 0; i < es.size(); ++i) {
    const auto& s = ck.storages[i];
    EXPECT_EQ(s.record, es[i].at("record").get<std::string>());
    if (shift) {
      EXPECT_EQ(s.data_offset, es[i].at("data_offset").get<std::uint64_t>() + *shift);
    }
    EXPECT_EQ(s.stored, es[i].at("stored").get<bool>());
    EXPECT_EQ(s.crc32, es[i].at("crc32").get<std::uint32_t>());
    EXPECT_EQ(s.numel * s.element_size, s.data_size);
    if (s.stored) {
      EXPECT_EQ(s.data_size, es[i].at("size").get<std::uint64_t>());
    }
  }

  // Storage bytes: in place when stored, extracted otherwise.
  const ZipReader zip(file, "t.pt");
  std::vector<util::ByteVector> bytes;
  for (const auto& s : ck.storages) {
    if (s.stored) {
      const auto b = torch_storage_bytes(file, s);
      bytes.emplace_back(b.begin(), b.end());
      EXPECT_EQ(zip_crc32(b), s.crc32);
    } else {
      bytes.push_back(zip.extract(*zip.find(s.record), 1 << 20));
    }
  }

  const auto& et = exp.at("tensors");
  ASSERT_EQ(ck.tensors.size(), et.size());
  std::map<int, std::uint32_t> group_to_storage;
  std::map<std::uint32_t, int> storage_to_group;
  for (std::size_t i = 0; i < et.size(); ++i) {
    const auto& t = ck.tensors[i];
    const auto& e = et[i];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.name, e.at("name").get<std::string>());
    EXPECT_EQ(t.torch_dtype, e.at("dtype").get<std::string>());
    EXPECT_EQ(t.shape, e.at("shape").get<std::vector<std::uint64_t>>());
    EXPECT_EQ(t.stride, e.at("stride").get<std::vector<std::uint64_t>>());
    EXPECT_EQ(t.storage_offset, e.at("storage_offset").get<std::uint64_t>());
    EXPECT_EQ(t.requires_grad, e.at("requires_grad").get<bool>());
    EXPECT_EQ(t.is_parameter, e.at("is_parameter").get<bool>());
    EXPECT_EQ(t.conj, e.at("conj").get<bool>());
    ASSERT_LT(t.storage, ck.storages.size());
    EXPECT_EQ(ck.storages[t.storage].data_size, e.at("storage_nbytes").get<std::uint64_t>());
    // Sharing: torch's storage groups and ours are the same partition. Empty
    // storages all have data_ptr 0 in torch, so their groups say nothing.
    const int g = e.at("storage_group").get<int>();
    if (e.at("storage_nbytes").get<std::uint64_t>() == 0) continue;
    auto [it1, new1] = group_to_storage.emplace(g, t.storage);
    auto [it2, new2] = storage_to_group.emplace(t.storage, g);
    EXPECT_EQ(it1->second, t.storage);
    EXPECT_EQ(it2->second, g);
    // Values: the view gathered from our byte range equals torch's tensor.
    const auto values = gather(t, bytes[t.storage]);
    EXPECT_EQ(zip_crc32(values), e.at("crc32").get<std::uint32_t>());
  }

  const auto& ev = exp.at("values");
  ASSERT_EQ(ck.values.size(), ev.size());
  for (std::size_t i = 0; i < ev.size(); ++i) {
    EXPECT_EQ(ck.values[i].name, ev[i].at("name").get<std::string>());
    EXPECT_EQ(ck.values[i].repr, ev[i].at("repr").get<std::string>()) << ck.values[i].name;
  }
}

class TorchFixture : public ::testing::TestWithParam<const char*> {};

TEST_P(TorchFixture, MatchesTorch) {
  const auto file = read_torch_fixture(GetParam());
  const auto ck = read_torch_checkpoint(file, GetParam());
  check_against_torch(ck, file, torch_expected().at(GetParam()));
}

INSTANTIATE_TEST_SUITE_P(Golden, TorchFixture,
                         ::testing::Values("dtypes.pt", "training.pt", "views.pt", "params.pt", "bare_tensor.pt",
                                           "zip64.pt", "deflated.pt", "old_layout.pt"),
                         [](const auto& param_info) {
                           std::string n = param_info.param;
                           for (auto& c : n)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

TEST(TorchCheckpoint, PrefixedArchiveShiftsOffsets) {
  const auto file = read_torch_fixture("prefixed.pt");
  const auto ck = read_torch_checkpoint(file, "prefixed.pt");
  const auto shift = torch_expected().at("prefixed.pt").at("prefix_size").get<std::uint64_t>();
  // The records are training.pt's, laid out by the fixture script's zip
  // writer: same tensors and values, offsets of their own.
  check_against_torch(ck, file, torch_expected().at("training.pt"), std::nullopt);
  // Without its prefix the same archive has every storage `shift` bytes earlier.
  const util::ByteVector stripped(file.begin() + static_cast<std::ptrdiff_t>(shift), file.end());
  const auto bare = read_torch_checkpoint(stripped, "stripped.pt");
  ASSERT_EQ(bare.storages.size(), ck.storages.size());
  for (std::size_t i = 0; i < ck.storages.size(); ++i) {
    EXPECT_EQ(ck.storages[i].data_offset, bare.storages[i].data_offset + shift);
    EXPECT_EQ(torch_storage_bytes(file, ck.storages[i]).size(), ck.storages[i].data_size);
  }
}

TEST(TorchCheckpoint, Protocol4) {
  const auto file = read_torch_fixture("protocol4.pt");
  const auto ck = read_torch_checkpoint(file, "protocol4.pt");
  EXPECT_EQ(ck.pickle.protocol(), 4);
  const auto& exp = torch_expected().at("protocol4.pt");
  ASSERT_EQ(ck.tensors.size(), exp.at("tensors").size());
  for (std::size_t i = 0; i < ck.tensors.size(); ++i) {
    const auto& e = exp.at("tensors")[i];
    EXPECT_EQ(ck.tensors[i].name, e.at("name").get<std::string>());
    EXPECT_EQ(ck.tensors[i].torch_dtype, e.at("dtype").get<std::string>());
    EXPECT_EQ(ck.tensors[i].shape, e.at("shape").get<std::vector<std::uint64_t>>());
    const auto values = gather(ck.tensors[i], torch_storage_bytes(file, ck.storages[ck.tensors[i].storage]));
    EXPECT_EQ(zip_crc32(values), e.at("crc32").get<std::uint32_t>());
  }
  ASSERT_EQ(ck.values.size(), exp.at("values").size());
  for (std::size_t i = 0; i < ck.values.size(); ++i) {
    EXPECT_EQ(ck.values[i].name, exp.at("values")[i].at("name").get<std::string>());
    EXPECT_EQ(ck.values[i].repr, exp.at("values")[i].at("repr").get<std::string>());
  }
}

TEST(TorchCheckpoint, DTypeMapping) {
  const auto file = read_torch_fixture("dtypes.pt");
  const auto ck = read_torch_checkpoint(file, "dtypes.pt");
  // Tensor name (= torch dtype name in this fixture) -> Mithril dtype.
  const std::map<std::string, std::optional<DType>> want{
      {"float32", DType::F32},      {"float64", DType::F64},        {"float16", DType::F16},
      {"bfloat16", DType::BF16},    {"bool", DType::BOOL},          {"uint8", DType::U8},
      {"int8", DType::I8},          {"int16", DType::I16},          {"int32", DType::I32},
      {"int64", DType::I64},        {"uint16", DType::U16},         {"uint32", DType::U32},
      {"uint64", DType::U64},       {"float8_e4m3fn", DType::F8_E4M3}, {"float8_e5m2", DType::F8_E5M2},
      {"float8_e8m0fnu", DType::F8_E8M0}, {"complex64", DType::C64}, {"complex128", std::nullopt},
  };
  std::size_t seen = 0;
  for (const auto& t : ck.tensors) {
    const auto it = want.find(t.name);
    if (it == want.end()) continue;
    ++seen;
    EXPECT_EQ(t.dtype, it->second) << t.name;
    const auto& s = ck.storages[t.storage];
    EXPECT_EQ(s.dtype, it->second) << t.name << ": the storage takes the dtype of its views";
    EXPECT_EQ(s.torch_dtype, t.name);
    EXPECT_EQ(s.numel, 6u) << t.name;
    EXPECT_TRUE(t.contiguous());
  }
  EXPECT_EQ(seen, want.size());
}

TEST(TorchCheckpoint, ViewHelpers) {
  const auto file = read_torch_fixture("views.pt");
  const auto ck = read_torch_checkpoint(file, "views.pt");
  std::map<std::string, const TorchTensor*> by;
  for (const auto& t : ck.tensors) by[t.name] = &t;
  EXPECT_TRUE(by.at("base")->contiguous());
  EXPECT_TRUE(by.at("row")->contiguous());
  EXPECT_FALSE(by.at("t")->contiguous());
  EXPECT_FALSE(by.at("col")->contiguous());
  EXPECT_FALSE(by.at("expand")->contiguous());
  EXPECT_EQ(by.at("block")->byte_extent(), std::make_pair(std::uint64_t{8 * 4}, std::uint64_t{(8 + 6 + 2 + 1) * 4}));
  EXPECT_EQ(by.at("tail")->byte_extent(), std::make_pair(std::uint64_t{80}, std::uint64_t{96}));
}

struct Bad {
  const char* file;
  Errc code;
  const char* message;
};

TEST(TorchCheckpoint, RefusesHostileAndBrokenFiles) {
  const std::string canary = "/tmp/mithril-canary-DO-NOT-CREATE";
  std::filesystem::remove(canary);
  const Bad cases[] = {
      {"legacy.pt", Errc::unsupported,
       "legacy.pt: legacy torch.save format (torch < 1.6) is not supported; re-save with torch >= 1.6"},
      {"evil/os_system.pt", Errc::unsupported, "evil/os_system.pt: archive/data.pkl: refused global 'os.system' at offset 2"},
      {"evil/nested_lists.pt", Errc::corrupt, "nested deeper than 1000 levels"},
      {"evil/lying_numel.pt", Errc::corrupt, "storage '0' declares 9 float32 elements (36 bytes) but record "
                                             "archive/data/0 holds 24 bytes"},
      {"evil/short_record.pt", Errc::corrupt, "holds 20 bytes"},
      {"evil/view_past_end.pt", Errc::corrupt, "tensor 'w' reaches byte 36 of storage '0', which holds 24 bytes"},
      {"evil/missing_storage.pt", Errc::corrupt, "storage '0' has no record archive/data/0"},
      {"evil/torchscript.pt", Errc::unsupported, "TorchScript archive"},
      {"make_fixtures.py", Errc::corrupt, "not a zip archive"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.file);
    const auto file = read_torch_fixture(c.file);
    try {
      (void)read_torch_checkpoint(file, c.file);
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), c.code) << e.what();
      EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << e.what();
    }
  }
  EXPECT_FALSE(std::filesystem::exists(canary));
  EXPECT_TRUE(looks_like_legacy_torch_save(read_torch_fixture("legacy.pt")));
  EXPECT_FALSE(looks_like_legacy_torch_save(read_torch_fixture("training.pt")));
}

TEST(TorchCheckpoint, DeflatedStorageCannotBeViewedInPlace) {
  const auto file = read_torch_fixture("deflated.pt");
  const auto ck = read_torch_checkpoint(file, "deflated.pt");
  ASSERT_FALSE(ck.storages.empty());
  try {
    (void)torch_storage_bytes(file, ck.storages[0]);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::unsupported);
  }
}

// Single-byte corruption anywhere in a real checkpoint: parsed or refused
// with mithril::Error, never a crash or another exception.
TEST(TorchCheckpoint, SurvivesByteFlips) {
  const auto good = read_torch_fixture("training.pt");
  std::size_t accepted = 0;
  for (std::size_t i = 0; i < good.size(); ++i) {
    auto f = good;
    f[i] ^= std::byte{0xFF};
    try {
      (void)read_torch_checkpoint(f, "flip.pt");
      ++accepted;
    } catch (const Error&) {
    }
  }
  EXPECT_GT(accepted, 0u);  // tensor data and padding are not checked by the reader
}

}  // namespace
}  // namespace mithril::formats
