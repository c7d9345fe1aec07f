// The torch.save writer is checked against the reader (itself checked
// against torch), against opcode-level expectations, and in
// tests/integration/test_cli_torch.py against torch.load itself.
#include "formats/torch_writer.hpp"

#include <gtest/gtest.h>

#include "formats/torch_checkpoint.hpp"
#include "formats/torch_dtype.hpp"
#include "mithril/error.hpp"
#include "test_helpers.hpp"

namespace mithril::formats {
namespace {

util::ByteVector to_memory(const std::vector<TensorView>& tensors) {
  util::ByteVector out;
  write_torch_checkpoint(tensors, [&](util::ByteSpan b) { out.insert(out.end(), b.begin(), b.end()); });
  return out;
}

TEST(TorchWriter, EveryTorchDtypeReadsBack) {
  std::vector<util::ByteVector> data;
  std::vector<TensorView> tensors;
  const DType all[] = {DType::BOOL, DType::U8,   DType::I8,  DType::U16,     DType::I16,     DType::U32,
                       DType::I32,  DType::U64,  DType::I64, DType::F16,     DType::BF16,    DType::F32,
                       DType::F64,  DType::F8_E4M3, DType::F8_E5M2, DType::F8_E8M0, DType::C64};
  std::size_t seed = 0;
  for (DType d : all) {
    const auto* info = torch_dtype_for(d);
    ASSERT_NE(info, nullptr) << dtype_info(d).name;
    data.push_back(test::random_bytes(6 * info->element_size, ++seed));
  }
  for (std::size_t i = 0; i < std::size(all); ++i)
    tensors.push_back({std::string("t.") + std::string(dtype_info(all[i]).name), all[i], {2, 3}, data[i]});
  // Shapes of every rank, an empty tensor and a scalar.
  const auto scalar = test::random_bytes(4, 99);
  tensors.push_back({"scalar", DType::F32, {}, scalar});
  tensors.push_back({"empty", DType::BF16, {0, 3}, {}});
  const auto r5 = test::random_bytes(2 * 2 * 1 * 3 * 2 * 2, 98);
  tensors.push_back({"rank5", DType::F16, {2, 2, 1, 3, 2}, r5});

  const auto file = to_memory(tensors);
  const auto ck = read_torch_checkpoint(file, "w.pt");
  EXPECT_EQ(ck.archive_prefix, "archive/");
  EXPECT_EQ(ck.byteorder, "little");
  EXPECT_TRUE(ck.values.empty());
  ASSERT_EQ(ck.tensors.size(), tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = ck.tensors[i];
    SCOPED_TRACE(tensors[i].name);
    EXPECT_EQ(t.name, tensors[i].name);
    ASSERT_TRUE(t.dtype.has_value());
    EXPECT_EQ(*t.dtype, tensors[i].dtype);
    EXPECT_EQ(t.shape, tensors[i].shape);
    EXPECT_TRUE(t.contiguous());
    EXPECT_EQ(t.storage_offset, 0u);
    EXPECT_FALSE(t.requires_grad);
    const auto bytes = torch_storage_bytes(file, ck.storages[t.storage]);
    EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), tensors[i].data.begin(), tensors[i].data.end()));
    EXPECT_EQ(bytes.data() - file.data(), static_cast<std::ptrdiff_t>(ck.storages[t.storage].data_offset));
    EXPECT_EQ(ck.storages[t.storage].data_offset % 64, 0u);
  }
  // torch's strides for [2, 2, 1, 3, 2].
  EXPECT_EQ(ck.tensors.back().stride, (std::vector<std::uint64_t>{12, 6, 6, 2, 1}));
  EXPECT_EQ(ck.tensors[ck.tensors.size() - 2].stride, (std::vector<std::uint64_t>{3, 1}));
}

TEST(TorchWriter, PickleUsesTheDocumentedOpcodes) {
  const auto d = test::random_bytes(4, 1);
  const auto pkl = torch_state_dict_pickle({{"w", DType::F32, {1}, d}});
  const std::string got(util::as_chars(pkl));
  // Spelled out from pickletools: PROTO 2, OrderedDict(), MARK, 'w',
  // _rebuild_tensor_v2((persid), 0, (1,), (1,), False, OrderedDict()), SETITEMS, STOP.
  using namespace std::string_literals;
  const std::string want = "\x80\x02"s + "ccollections\nOrderedDict\n)R(" + "X\x01\x00\x00\x00w"s +
                           "ctorch._utils\n_rebuild_tensor_v2\n((" + "X\x07\x00\x00\x00storage"s +
                           "ctorch\nFloatStorage\n" + "X\x01\x00\x00\x00" "0"s + "X\x03\x00\x00\x00" "cpu"s +
                           "K\x01tQ" + "K\x00"s + "K\x01\x85" + "K\x01\x85" + "\x89" +
                           "ccollections\nOrderedDict\n)R" + "tR" + "u.";
  EXPECT_EQ(got, want);
}

TEST(TorchWriter, LargeDimensionsUseLong1) {
  // numel 0, so no data, but strides past 2**31 need LONG1.
  const auto ck_file = to_memory({{"big", DType::U8, {0, 3'000'000'000ull, 70'000}, {}}});
  const auto ck = read_torch_checkpoint(ck_file, "big.pt");
  ASSERT_EQ(ck.tensors.size(), 1u);
  EXPECT_EQ(ck.tensors[0].shape, (std::vector<std::uint64_t>{0, 3'000'000'000ull, 70'000}));
  EXPECT_EQ(ck.tensors[0].stride, (std::vector<std::uint64_t>{210'000'000'000'000ull, 70'000, 1}));
}

TEST(TorchWriter, RefusesWhatTorchCannotHold) {
  auto code = [](const std::vector<TensorView>& t) {
    try {
      (void)to_memory(t);
    } catch (const Error& e) {
      return e.code();
    }
    return Errc::internal;
  };
  const auto d = test::random_bytes(8, 1);
  EXPECT_EQ(code({{"x", DType::F4, {16}, d}}), Errc::unsupported);
  EXPECT_EQ(code({{"x", DType::F32, {3}, d}}), Errc::invalid_argument);  // 8 bytes for 3 floats
  EXPECT_EQ(code({{"x", DType::U8, {8}, d}, {"x", DType::U8, {8}, d}}), Errc::invalid_argument);
  EXPECT_EQ(code({{"\xff", DType::U8, {8}, d}}), Errc::invalid_argument);
}

TEST(TorchWriter, ManyTensorsBatchSetitems) {
  std::vector<TensorView> t;
  const auto d = test::random_bytes(2, 5);
  for (int i = 0; i < 2500; ++i) {
    std::string name = "w";  // (appending avoids a GCC 12 -Wrestrict false positive)
    name += std::to_string(i);
    t.push_back({name, DType::I16, {1}, d});
  }
  const auto file = to_memory(t);
  const auto ck = read_torch_checkpoint(file, "many.pt");
  ASSERT_EQ(ck.tensors.size(), 2500u);
  EXPECT_EQ(ck.tensors[2499].name, "w2499");
  EXPECT_EQ(to_memory(t), file) << "deterministic";
}

}  // namespace
}  // namespace mithril::formats
