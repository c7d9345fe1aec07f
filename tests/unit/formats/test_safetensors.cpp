#include "formats/safetensors.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <random>

#include "mithril/error.hpp"
#include "safetensors_fixtures.hpp"
#include "test_helpers.hpp"

using namespace mithril;
using namespace mithril::formats;
using namespace mithril::test::st;
using mithril::test::TempDir;

namespace {

// The order in which the reference writer lays out dtypes: its Dtype enum
// (safetensors 0.8) in declaration order, written out independently here.
constexpr const char* k_reference_order[] = {
    "BOOL", "F4",  "F6_E2M3", "F6_E3M2", "U8",  "I8",  "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ",
    "I16",  "U16", "F16",     "BF16",    "I32", "U32", "F32",     "C64",     "F64",     "I64",         "U64"};

int reference_position(DType t) {
  const auto name = dtype_info(t).name;
  for (int i = 0; i < static_cast<int>(std::size(k_reference_order)); ++i) {
    if (name == k_reference_order[i]) return i;
  }
  return -1;
}

std::string std_string(util::ByteSpan s) { return std::string(util::as_chars(s)); }

}  // namespace

// ---- official test vectors ----------------------------------------------
// Byte strings from the reference's own unit tests (safetensors/src/tensor.rs,
// tests test_serialization, test_serialization_forced_alignement, test_empty,
// test_empty_shapes_allowed, test_zero_sized_tensor, test_whitespace_padded_header).

namespace {
const std::string k_attn_json = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
const std::string k_attn0_json = R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})";

util::ByteVector floats_0_to_5() {
  util::ByteVector v;
  for (int i = 0; i < 6; ++i) util::append_le<float>(v, static_cast<float>(i));
  return v;
}
}  // namespace

TEST(Safetensors, ReferenceVectorSerialization) {
  const auto data = floats_0_to_5();
  auto file = st_file(k_attn_json, util::as_chars(data));
  ASSERT_EQ(file.size(), 96u);
  EXPECT_EQ(file[0], std::byte{64});
  const auto h = parse_safetensors(file, "attn.safetensors");
  EXPECT_EQ(h.header_size, 64u);
  EXPECT_EQ(h.data_offset, 72u);
  ASSERT_EQ(h.tensors.size(), 1u);
  EXPECT_EQ(h.tensors[0].name, "attn.0");
  EXPECT_EQ(h.tensors[0].dtype, DType::F32);
  EXPECT_EQ(h.tensors[0].shape, (std::vector<std::uint64_t>{1, 2, 3}));
  EXPECT_EQ(h.tensors[0].begin, 0u);
  EXPECT_EQ(h.tensors[0].end, 24u);
  EXPECT_TRUE(h.metadata.empty());

  // And the writer reproduces the vector exactly.
  const auto header = build_safetensors_header({{"attn.0", DType::F32, {1, 2, 3}, data}}, {});
  EXPECT_EQ(std_string(header), std_string(util::ByteSpan(file).first(72)));
}

TEST(Safetensors, ReferenceVectorForcedAlignment) {
  const auto data = floats_0_to_5();
  const auto header = build_safetensors_header({{"attn0", DType::F32, {1, 1, 2, 3}, data}}, {});
  EXPECT_EQ(std_string(header), std_string(st_file(k_attn0_json + "       ", {}, 72)));
  util::ByteVector file = header;
  util::append_bytes(file, data);
  const auto h = parse_safetensors(file, "attn0.safetensors");
  EXPECT_EQ(h.data_offset, 80u);
  EXPECT_EQ(h.tensors.at(0).shape, (std::vector<std::uint64_t>{1, 1, 2, 3}));
}

TEST(Safetensors, ReferenceVectorEmpty) {
  const auto empty = build_safetensors_header({}, {});
  EXPECT_EQ(std_string(empty), std_string(raw(std::string("\x08\0\0\0\0\0\0\0{}      ", 16))));
  const auto with_meta = build_safetensors_header({}, {{"framework", "pt"}});
  EXPECT_EQ(std_string(with_meta),
            std_string(raw(cat(std::string("\x28\0\0\0\0\0\0\0", 8), R"({"__metadata__":{"framework":"pt"}})", "     "))));
  const auto h = parse_safetensors(with_meta, "m.safetensors");
  EXPECT_TRUE(h.tensors.empty());
  EXPECT_EQ(h.metadata, (std::map<std::string, std::string>{{"framework", "pt"}}));
  EXPECT_TRUE(parse_safetensors(empty, "e.safetensors").tensors.empty());
}

TEST(Safetensors, ReferenceVectorRankZeroAndZeroSized) {
  const auto scalar = parse_safetensors(
      st_file(R"({"test":{"dtype":"I32","shape":[],"data_offsets":[0,4]}})", std::string_view("\0\0\0\0", 4)), "s");
  ASSERT_EQ(scalar.tensors.size(), 1u);
  EXPECT_TRUE(scalar.tensors[0].shape.empty());
  EXPECT_EQ(scalar.tensors[0].size(), 4u);

  const auto zero = parse_safetensors(st_file(R"({"test":{"dtype":"I32","shape":[2,0],"data_offsets":[0, 0]}})"), "z");
  ASSERT_EQ(zero.tensors.size(), 1u);
  EXPECT_EQ(zero.tensors[0].shape, (std::vector<std::uint64_t>{2, 0}));
  EXPECT_EQ(zero.tensors[0].size(), 0u);
}

TEST(Safetensors, ReferenceVectorWhitespacePadding) {
  EXPECT_TRUE(parse_safetensors(raw(std::string("\x06\0\0\0\0\0\0\0{}\r \t\n", 14)), "w").tensors.empty());
}

// ---- valid files --------------------------------------------------------

TEST(Safetensors, ZeroTensors) {
  const auto h = parse_safetensors(st_file("{}"), k_file);
  EXPECT_TRUE(h.tensors.empty());
  EXPECT_EQ(h.header_size, 2u);
  EXPECT_EQ(h.data_offset, 10u);
}

TEST(Safetensors, TensorsComeBackSortedByOffset) {
  // Header order, name order and offset order all differ.
  const std::string header = obj({entry("a", "U8", "[2]", 5, 7), entry("b", "F32", "[1]", 1, 5), entry("c", "BOOL", "[1]", 0, 1), entry("d", "I16", "[0,4]", 7, 7)});
  const auto h = parse_safetensors(st_file(header, "1234567"), k_file);
  ASSERT_EQ(h.tensors.size(), 4u);
  EXPECT_EQ(h.tensors[0].name, "c");
  EXPECT_EQ(h.tensors[1].name, "b");
  EXPECT_EQ(h.tensors[2].name, "a");
  EXPECT_EQ(h.tensors[3].name, "d");
  EXPECT_EQ(h.tensors[3].begin, 7u);
}

TEST(Safetensors, EmptyTensorsShareAnOffset) {
  const std::string header = obj({entry("z2", "F32", "[0]", 0, 0), entry("z1", "U64", "[3,0,2]", 0, 0), entry("x", "U8", "[1]", 0, 1), entry("z3", "I8", "[0]", 1, 1)});
  const auto h = parse_safetensors(st_file(header, "x"), k_file);
  ASSERT_EQ(h.tensors.size(), 4u);
  EXPECT_EQ(h.tensors[0].name, "z1");  // ties broken by name
  EXPECT_EQ(h.tensors[1].name, "z2");
  EXPECT_EQ(h.tensors[2].name, "x");
  EXPECT_EQ(h.tensors[3].name, "z3");
}

TEST(Safetensors, OnlyEmptyTensorsAndNoData) {
  const auto h = parse_safetensors(st_file(obj({entry("e", "BF16", "[0,1024]", 0, 0)})), k_file);
  ASSERT_EQ(h.tensors.size(), 1u);
  EXPECT_EQ(h.tensors[0].size(), 0u);
}

TEST(Safetensors, MetadataIsReturned) {
  const std::string header = cat(R"({"__metadata__":{"format":"pt","step":"100","":"empty key","é":"\u00e9\n"},)",
                                 entry("w", "F16", "[2]", 0, 4), "}");
  const auto h = parse_safetensors(st_file(header, "abcd"), k_file);
  EXPECT_EQ(h.metadata, (std::map<std::string, std::string>{
                            {"format", "pt"}, {"step", "100"}, {"", "empty key"}, {"é", "é\n"}}));
  ASSERT_EQ(h.tensors.size(), 1u);
}

TEST(Safetensors, NullMetadataMeansNone) {
  const auto h = parse_safetensors(st_file(R"({"__metadata__":null})"), k_file);
  EXPECT_TRUE(h.metadata.empty());
  EXPECT_TRUE(h.tensors.empty());
}

TEST(Safetensors, UnknownFieldsAreIgnoredLikeTheReference) {
  const std::string header =
      R"({"w":{"extra":{"deep":[1,2,{"k":null}]},"dtype":"U8","shape":[2],"data_offsets":[0,2],"dtype2":1}})";
  const auto h = parse_safetensors(st_file(header, "xy"), k_file);
  ASSERT_EQ(h.tensors.size(), 1u);
  EXPECT_EQ(h.tensors[0].dtype, DType::U8);
}

TEST(Safetensors, EntryAsArrayLikeTheReference) {
  // serde reads a struct from the sequence of its fields.
  const auto h = parse_safetensors(st_file(R"({"w":["I16",[3],[0,6]]})", "123456"), k_file);
  ASSERT_EQ(h.tensors.size(), 1u);
  EXPECT_EQ(h.tensors[0].dtype, DType::I16);
  EXPECT_EQ(h.tensors[0].shape, (std::vector<std::uint64_t>{3}));
}

TEST(Safetensors, EscapedAndUnicodeNames) {
  const std::string header = obj({entry(R"(a\"b\\c\u0000d\n\u00e9\ud83d\ude00)", "U8", "[1]", 0, 1)});
  const auto h = parse_safetensors(st_file(header, "x"), k_file);
  ASSERT_EQ(h.tensors.size(), 1u);
  EXPECT_EQ(h.tensors[0].name, std::string("a\"b\\c\0d\n\xc3\xa9\xf0\x9f\x98\x80", 14));
}

TEST(Safetensors, NestingUpTo127IsAccepted) {
  // Top object and entry are two levels; 125 more make 127 (serde's limit is 128).
  const std::string deep = std::string(125, '[') + std::string(125, ']');
  const auto ok = st_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"z":)" + deep + "}}", "x");
  EXPECT_EQ(parse_safetensors(ok, k_file).tensors.size(), 1u);
}

TEST(Safetensors, SubByteDtypesThatFillBytes) {
  const std::string header = obj({entry("a", "F4", "[2,3]", 0, 3), entry("b", "F6_E2M3", "[4]", 3, 6), entry("c", "F6_E3M2", "[2,2,2]", 6, 12)});
  const auto h = parse_safetensors(st_file(header, "123456789012"), k_file);
  ASSERT_EQ(h.tensors.size(), 3u);
  EXPECT_EQ(h.tensors[2].dtype, DType::F6_E3M2);
}

TEST(Safetensors, HugeButValidShapes) {
  // The count folds left to right: a zero first keeps it at zero.
  const auto h = parse_safetensors(st_file(obj({entry("e", "U8", "[0,4294967296,4294967296]", 0, 0)})), k_file);
  EXPECT_EQ(h.tensors.at(0).size(), 0u);
  // A shape claiming 2^61-1 bytes (the most U8 allows): size checks pass, the data is missing.
  EXPECT_CORRUPT(st_file(obj({entry("big", "U8", "[2305843009213693951]", 0, 2305843009213693951ull)})),
                 "header: incomplete data", "2305843009213693951");
  // 2^62 F4 elements: 2^64 bits overflow by one.
  EXPECT_CORRUPT(st_file(obj({entry("f", "F4", "[4611686018427387904]", 0, 0)})), "tensor 'f'", "size overflow");
  // 2^61 U64 elements = 2^67 bits: overflows even though the count fits.
  EXPECT_CORRUPT(st_file(obj({entry("b", "U64", "[2305843009213693952]", 0, 0)})), "tensor 'b'",
                 "size overflow");
}

TEST(Safetensors, EveryDtypeParses) {
  for (std::size_t i = 0; i < k_dtype_count; ++i) {
    const auto t = static_cast<DType>(i);
    const auto& info = dtype_info(t);
    SCOPED_TRACE(std::string(info.name));
    const std::uint64_t bytes = 8 * info.bits / 8;  // 8 elements
    const auto h = parse_safetensors(
        st_file(obj({entry("t", info.name, "[2,4]", 0, bytes)}), std::string(bytes, 'x')), k_file);
    ASSERT_EQ(h.tensors.size(), 1u);
    EXPECT_EQ(h.tensors[0].dtype, t);
  }
}

TEST(Safetensors, ManyTensorsParseInLinearTime) {
  // 50k tensors: well under a second when linear, minutes if each entry
  // rescanned the ones before it (as nlohmann's callback parser does).
  constexpr std::uint64_t k_count = 50'000;
  std::string header = "{";
  for (std::uint64_t i = 0; i < k_count; ++i) {
    if (i) header += ',';
    header += entry(cat("model.layers.", std::to_string(i), ".weight"), "BF16", "[2]", 4 * i, 4 * i + 4);
  }
  header += '}';
  const auto start = std::chrono::steady_clock::now();
  const auto h = parse_safetensors(st_file(header, std::string(4 * k_count, 'x')), k_file);
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(h.tensors.size(), k_count);
  EXPECT_EQ(h.tensors.back().end, 4 * k_count);
  EXPECT_LT(took.count(), 10.0);
}

// ---- one test per rule ----------------------------------------------------

TEST(SafetensorsRules, FileTooSmall) {
  for (std::size_t n = 0; n < 8; ++n) EXPECT_CORRUPT(util::ByteVector(n), "header: file too small");
}

TEST(SafetensorsRules, HeaderTooLarge) {
  EXPECT_CORRUPT(st_file("{}", {}, 100'000'001), "header: header too large", "100000001");
  EXPECT_CORRUPT(st_file("{}", {}, UINT64_MAX), "header: header too large");
  // Reference vector test_header_too_large.
  EXPECT_CORRUPT(raw(std::string("<\0\0\0\0\xff\xff\xff", 8) + k_attn_json), "header too large");
}

TEST(SafetensorsRules, HeaderLengthPastEndOfFile) {
  EXPECT_CORRUPT(st_file("{}", {}, 3), "header: invalid header length", "N = 3");
  EXPECT_CORRUPT(raw(std::string("<\0\0\0\0\0\0\0", 8)), "invalid header length");  // reference vector
  EXPECT_CORRUPT(st_file("{}", {}, 100'000'000), "invalid header length");
}

TEST(SafetensorsRules, HeaderNotUtf8) {
  EXPECT_CORRUPT(raw(std::string("\x01\0\0\0\0\0\0\0\xff", 9)), "header: not valid UTF-8", "byte 0");  // reference
  EXPECT_CORRUPT(st_file("{\"\xff\":1}"), "not valid UTF-8", "byte 2");
  EXPECT_CORRUPT(st_file("{\"\xc0\x80\":1}"), "not valid UTF-8");          // overlong NUL
  EXPECT_CORRUPT(st_file("{\"\xed\xa0\x80\":1}"), "not valid UTF-8");      // surrogate
  EXPECT_CORRUPT(st_file("{\"\xf4\x90\x80\x80\":1}"), "not valid UTF-8");  // past U+10FFFF
  EXPECT_CORRUPT(st_file("{\"\xe2\x82"), "not valid UTF-8");               // truncated
}

TEST(SafetensorsRules, HeaderMustStartWithBrace) {
  EXPECT_CORRUPT(st_file(" {}"), "header: must start with '{'", "' '");
  EXPECT_CORRUPT(st_file("\t\n{}"), "must start with '{'");
  EXPECT_CORRUPT(st_file("\xef\xbb\xbf{}"), "must start with '{'");  // UTF-8 byte order mark
  EXPECT_CORRUPT(st_file("[]"), "must start with '{'");
  EXPECT_CORRUPT(st_file(""), "must start with '{'", "empty");
}

TEST(SafetensorsRules, InvalidJson) {
  EXPECT_CORRUPT(raw(std::string("\x01\0\0\0\0\0\0\0{", 9)), "header: invalid JSON");  // reference vector
  EXPECT_CORRUPT(st_file("{}x"), "invalid JSON");
  EXPECT_CORRUPT(st_file(std::string("{}\0\0", 4)), "invalid JSON", "NUL byte at byte 2");  // NUL is not padding
  EXPECT_CORRUPT(st_file(std::string("{}\0{\"x\":1}", 10)), "invalid JSON", "NUL");
  EXPECT_CORRUPT(st_file(R"({"a":1,})"), "invalid JSON");
  EXPECT_CORRUPT(st_file("{} {}"), "invalid JSON");
  EXPECT_CORRUPT(st_file(R"({"\ud800":{}})"), "invalid JSON");  // lone surrogate escape
  EXPECT_CORRUPT(st_file("{/* c */}"), "invalid JSON");
}

TEST(SafetensorsRules, NestedTooDeep) {
  const std::string deep = std::string(126, '[') + std::string(126, ']');
  EXPECT_CORRUPT(st_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"z":)" + deep + "}}", "x"),
                 "header: invalid JSON: nested deeper than 127");
}

TEST(SafetensorsRules, EntryNotAnObject) {
  EXPECT_CORRUPT(st_file(R"({"w":5})"), "tensor 'w'", "entry must be an object", "an integer");
  EXPECT_CORRUPT(st_file(R"({"w":"F32"})"), "tensor 'w'", "entry must be an object");
  EXPECT_CORRUPT(st_file(R"({"w":null})"), "tensor 'w'", "entry must be an object");
  EXPECT_CORRUPT(st_file(R"({"w":["U8",[1]]})", "x"), "tensor 'w'", "an array of 2 elements");
  EXPECT_CORRUPT(st_file(R"({"w":["U8",[1],[0,1],4]})", "x"), "tensor 'w'", "an array of 4 elements");
}

TEST(SafetensorsRules, MissingField) {
  EXPECT_CORRUPT(st_file(R"({"w":{"shape":[1],"data_offsets":[0,1]}})", "x"), "tensor 'w'", "missing field 'dtype'");
  EXPECT_CORRUPT(st_file(R"({"w":{"dtype":"U8","data_offsets":[0,1]}})", "x"), "tensor 'w'", "missing field 'shape'");
  EXPECT_CORRUPT(st_file(R"({"w":{"dtype":"U8","shape":[1],"offsets":[0,1]}})", "x"), "tensor 'w'",
                 "missing field 'data_offsets'");
}

TEST(SafetensorsRules, BadDtype) {
  EXPECT_CORRUPT(st_file(obj({entry("w", "u8", "[1]", 0, 1)}), "x"), "tensor 'w'", "unknown dtype 'u8'");
  EXPECT_CORRUPT(st_file(obj({entry("w", "float32", "[1]", 0, 4)}), "xxxx"), "tensor 'w'", "unknown dtype");
  EXPECT_CORRUPT(st_file(R"({"w":{"dtype":7,"shape":[1],"data_offsets":[0,1]}})", "x"), "tensor 'w'",
                 "field 'dtype' must be a string");
  // serde also takes the enum as {"U8":null}; refused here.
  EXPECT_CORRUPT(st_file(R"({"w":{"dtype":{"U8":null},"shape":[1],"data_offsets":[0,1]}})", "x"), "tensor 'w'",
                 "field 'dtype' must be a string");
}

TEST(SafetensorsRules, BadShape) {
  for (const char* shape : {"[1.0]", "[-1]", "[-0]", "[1e0]", "[\"1\"]", "[null]", "[18446744073709551616]", "[[1]]"}) {
    EXPECT_CORRUPT(st_file(obj({entry("w", "U8", shape, 0, 1)}), "x"), "tensor 'w'",
                   "field 'shape' must hold non-negative integers");
  }
  EXPECT_CORRUPT(st_file(R"({"w":{"dtype":"U8","shape":1,"data_offsets":[0,1]}})", "x"), "tensor 'w'",
                 "field 'shape' must be an array");
  EXPECT_CORRUPT(st_file(R"({"w":{"dtype":"U8","shape":null,"data_offsets":[0,0]}})"), "tensor 'w'",
                 "field 'shape' must be an array");
}

TEST(SafetensorsRules, BadDataOffsets) {
  EXPECT_CORRUPT(st_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", "x"), "tensor 'w'",
                 "field 'data_offsets' must be an array [begin, end]", "of 1 elements");
  EXPECT_CORRUPT(st_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}})", "x"), "tensor 'w'",
                 "of 3 elements");
  EXPECT_CORRUPT(st_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":{"0":0,"1":1}}})", "x"), "tensor 'w'",
                 "field 'data_offsets' must be an array", "an object");
  EXPECT_CORRUPT(st_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1.0]}})", "x"), "tensor 'w'",
                 "field 'data_offsets' must hold non-negative integers");
  EXPECT_CORRUPT(st_file(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[0,18446744073709551616]}})"),
                 "tensor 'w'", "field 'data_offsets' must hold non-negative integers");
}

TEST(SafetensorsRules, DuplicateTensorName) {
  // The reference keeps the last one silently; two readers could disagree.
  const std::string header = obj({entry("w", "U8", "[1]", 0, 1), entry("w", "U8", "[2]", 0, 2)});
  EXPECT_CORRUPT(st_file(header, "xy"), "tensor 'w'", "duplicate name");
  // Even when both entries are identical.
  const std::string same = obj({entry("w", "U8", "[1]", 0, 1), entry("w", "U8", "[1]", 0, 1)});
  EXPECT_CORRUPT(st_file(same, "x"), "tensor 'w'", "duplicate name");
  // Spelled differently, decoded the same.
  const std::string escaped = obj({entry("w", "U8", "[1]", 0, 1), entry("\\u0077", "U8", "[1]", 1, 2)});
  EXPECT_CORRUPT(st_file(escaped, "xy"), "tensor 'w'", "duplicate name");
}

TEST(SafetensorsRules, DuplicateMetadataAndFields) {
  EXPECT_CORRUPT(st_file(R"({"__metadata__":{},"__metadata__":{}})"), "header: duplicate key '__metadata__'");
  EXPECT_CORRUPT(st_file(R"({"__metadata__":{"a":"1","a":"2"}})"), "header: __metadata__: duplicate key 'a'");
  EXPECT_CORRUPT(st_file(R"({"w":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "x"), "tensor 'w'",
                 "duplicate field 'dtype'");
  // Duplicates deep inside an ignored field do not matter (as in the reference).
  EXPECT_EQ(corrupt_message(st_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"z":{"k":1,"k":2}}})", "x")),
            "<accepted>");
}

TEST(SafetensorsRules, MetadataMustBeAMapOfStrings) {
  EXPECT_CORRUPT(st_file(R"({"__metadata__":{"a":1}})"), "header: __metadata__ 'a': value must be a string",
                 "an integer");
  EXPECT_CORRUPT(st_file(R"({"__metadata__":{"a":null}})"), "__metadata__ 'a': value must be a string");
  EXPECT_CORRUPT(st_file(R"({"__metadata__":{"a":{"b":"c"}}})"), "__metadata__ 'a': value must be a string");
  EXPECT_CORRUPT(st_file(R"({"__metadata__":["a","b"]})"), "header: __metadata__ must be an object of strings");
  EXPECT_CORRUPT(st_file(R"({"__metadata__":"pt"})"), "__metadata__ must be an object of strings");
  EXPECT_CORRUPT(st_file(R"({"__metadata__":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "x"),
                 "__metadata__ 'data_offsets': value must be a string");
}

TEST(SafetensorsRules, InvalidOffsets) {
  // A hole before the first tensor.
  EXPECT_CORRUPT(st_file(obj({entry("a", "U8", "[1]", 1, 2)}), "xx"), "tensor 'a'", "invalid offsets [1, 2]",
                 "expected begin 0", "a hole");
  // A hole between two tensors.
  EXPECT_CORRUPT(st_file(obj({entry("a", "U8", "[1]", 0, 1), entry("b", "U8", "[1]", 2, 3)}), "xxx"),
                 "tensor 'b'", "invalid offsets [2, 3]", "expected begin 1");
  // An overlap.
  EXPECT_CORRUPT(st_file(obj({entry("a", "U8", "[2]", 0, 2), entry("b", "U8", "[1]", 1, 2)}), "xx"),
                 "tensor 'b'", "invalid offsets [1, 2]", "an overlap");
  // End before begin.
  EXPECT_CORRUPT(st_file(obj({entry("a", "U8", "[1]", 0, 1), entry("b", "U8", "[1]", 1, 0)}), "x"),
                 "tensor 'b'", "invalid offsets [1, 0]", "end is before begin");
  // Offsets at the top of the range.
  EXPECT_CORRUPT(st_file(obj({entry("a", "U8", "[0]", UINT64_MAX, UINT64_MAX)})), "tensor 'a'", "invalid offsets");
  // Reference test_json_attack: ten tensors all claiming [0, 16].
  std::string attack = "{";
  for (int i = 0; i < 10; ++i) {
    if (i) attack += ',';
    attack += entry(cat("weight_", std::to_string(i)), "F32", "[2,2]", 0, 16);
  }
  EXPECT_CORRUPT(st_file(attack + "}", std::string(16, '\0')), "tensor 'weight_", "invalid offsets [0, 16]");
}

TEST(SafetensorsRules, SizeOverflow) {
  // Reference test_validation_overflow: the element count overflows...
  EXPECT_CORRUPT(st_file(obj({entry("test", "I32", "[2,18446744073709551614]", 0, 16)}), std::string(16, '\0')),
                 "tensor 'test'", "size overflow", "element count");
  // ...or the count fits and count * bits does not.
  EXPECT_CORRUPT(st_file(obj({entry("test", "I32", "[2,9223372036854775807]", 0, 16)}), std::string(16, '\0')),
                 "tensor 'test'", "size overflow", "18446744073709551614 elements of I32");
  // A zero after the overflow does not save it (left-to-right fold, as the reference).
  EXPECT_CORRUPT(st_file(obj({entry("z", "U8", "[4294967296,4294967296,0]", 0, 0)})), "tensor 'z'",
                 "size overflow");
}

TEST(SafetensorsRules, SubByteSizeNotWholeBytes) {
  EXPECT_CORRUPT(st_file(obj({entry("q", "F4", "[3]", 0, 1)}), "x"), "tensor 'q'",
                 "not a whole number of bytes", "3 F4 elements");
  EXPECT_CORRUPT(st_file(obj({entry("q", "F6_E2M3", "[3]", 0, 2)}), "xx"), "tensor 'q'",
                 "not a whole number of bytes");
  EXPECT_CORRUPT(st_file(obj({entry("q", "F6_E3M2", "[]", 0, 1)}), "x"), "tensor 'q'",
                 "not a whole number of bytes");
}

TEST(SafetensorsRules, SizeMismatch) {
  // Reference test_invalid_info.
  EXPECT_CORRUPT(st_file(R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0, 4]}})", "xxxx"), "tensor 'test'",
                 "size mismatch", "hold 4 bytes", "shape [2, 2] of I32 needs 16");
  EXPECT_CORRUPT(st_file(obj({entry("s", "F64", "[]", 0, 4)}), "xxxx"), "tensor 's'", "size mismatch");
  EXPECT_CORRUPT(st_file(obj({entry("e", "F32", "[0]", 0, 4)}), "xxxx"), "tensor 'e'", "size mismatch");
}

TEST(SafetensorsRules, DataNotCoveredExactly) {
  // Reference test_metadata_incomplete_buffer: extra bytes after the data...
  const std::string data(16, '\0');
  EXPECT_CORRUPT(st_file(R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}})",
                         data + "extra_bogus_data_for_polyglot_file"),
                 "header: incomplete data", "cover 16 bytes but 50 follow");
  // ...and bytes missing.
  EXPECT_CORRUPT(st_file(R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}})", data.substr(2)),
                 "incomplete data", "cover 16 bytes but 14 follow");
  EXPECT_CORRUPT(st_file("{}", "x"), "incomplete data");
}

TEST(SafetensorsRules, NamesInMessagesAreQuotedSafely) {
  const std::string m = corrupt_message(st_file(obj({entry("a\\n'b", "U8", "[1]", 1, 2)}), "xx"));
  EXPECT_NE(m.find(R"(tensor 'a\x0a\'b')"), std::string::npos) << m;
  const std::string long_name(1000, 'n');
  const std::string m2 = corrupt_message(st_file(obj({entry(long_name, "U8", "[1]", 1, 2)}), "xx"));
  EXPECT_LT(m2.size(), 400u) << m2;
  EXPECT_NE(m2.find("'..."), std::string::npos) << m2;
}

TEST(SafetensorsRules, TruncationAtEveryLengthFailsCleanly) {
  const auto data = floats_0_to_5();
  auto file = st_file(k_attn_json, util::as_chars(data));
  for (std::size_t n = 0; n < file.size(); ++n) {
    const util::ByteVector cut(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_NE(corrupt_message(cut).find(k_file), std::string::npos) << n;
  }
}

// ---- sniffing -----------------------------------------------------------

TEST(Safetensors, LooksLikeSafetensors) {
  EXPECT_TRUE(looks_like_safetensors(st_file("{}")));
  EXPECT_TRUE(looks_like_safetensors(st_file(k_attn_json, util::as_chars(floats_0_to_5()))));
  EXPECT_FALSE(looks_like_safetensors({}));
  EXPECT_FALSE(looks_like_safetensors(st_file("{")));           // too short to hold "{}"
  EXPECT_FALSE(looks_like_safetensors(st_file(" {}")));         // spec: must start with '{'
  EXPECT_FALSE(looks_like_safetensors(st_file("{}", {}, 3)));   // N past the end
  EXPECT_FALSE(looks_like_safetensors(st_file("{}", {}, UINT64_MAX)));
  EXPECT_FALSE(looks_like_safetensors(raw("PK\x03\x04 a zip file, as torch.save writes")));
  // A sniff is only a hint: this passes it and fails parsing.
  const auto junk = st_file("{garbage");
  EXPECT_TRUE(looks_like_safetensors(junk));
  EXPECT_NE(corrupt_message(junk), "<accepted>");
}

// ---- writer -------------------------------------------------------------

TEST(SafetensorsWriter, RoundTripEveryDtype) {
  TempDir dir;
  const auto path = dir / "out.safetensors";
  const auto ts = every_dtype_tensors();
  const std::map<std::string, std::string> meta{{"format", "pt"}, {"note", "line\nbreak \"quoted\""}};
  write_safetensors(path, views(ts), meta, util::Overwrite::refuse);

  const auto file = test::read_file(path);
  ASSERT_TRUE(looks_like_safetensors(file));
  const auto h = parse_safetensors(file, path.string());
  EXPECT_EQ(h.metadata, meta);
  EXPECT_EQ(h.header_size % 8, 0u);
  ASSERT_EQ(h.tensors.size(), ts.size());
  for (const auto& t : ts) {
    SCOPED_TRACE(t.name);
    const auto it = std::find_if(h.tensors.begin(), h.tensors.end(), [&](const TensorInfo& i) { return i.name == t.name; });
    ASSERT_NE(it, h.tensors.end());
    EXPECT_EQ(it->dtype, t.dtype);
    EXPECT_EQ(it->shape, t.shape);
    ASSERT_EQ(it->size(), t.data.size());
    EXPECT_TRUE(std::equal(t.data.begin(), t.data.end(), file.begin() + static_cast<std::ptrdiff_t>(h.data_offset + it->begin)));
  }
  // Padding is spaces, and the JSON before it parses on its own.
  const auto json = util::as_chars(util::ByteSpan(file).subspan(8, h.header_size));
  const auto last = json.find_last_not_of(' ');
  EXPECT_GE(last + 8, json.size());
  EXPECT_EQ(json[last], '}');
  EXPECT_NO_THROW({
    const auto parsed = nlohmann::json::parse(json);
    EXPECT_TRUE(parsed.is_object());
  });
}

TEST(SafetensorsWriter, LayoutFollowsTheReferenceOrder) {
  const auto ts = every_dtype_tensors();
  std::vector<std::size_t> order;
  const auto header = build_safetensors_header(views(ts), {}, &order);
  ASSERT_EQ(order.size(), ts.size());
  // Independent check: non-increasing reference position, then names ascending.
  for (std::size_t k = 1; k < order.size(); ++k) {
    const auto& a = ts[order[k - 1]];
    const auto& b = ts[order[k]];
    const int pa = reference_position(a.dtype), pb = reference_position(b.dtype);
    ASSERT_GE(pa, 0);
    EXPECT_TRUE(pa > pb || (pa == pb && a.name < b.name)) << a.name << " before " << b.name;
  }
  EXPECT_EQ(ts[order.front()].dtype, DType::U64);
  EXPECT_EQ(ts[order.back()].dtype, DType::BOOL);
  // The offsets in the header follow that order.
  util::ByteVector file = header;
  for (auto i : order) util::append_bytes(file, ts[i].data);
  const auto h = parse_safetensors(file, "layout");
  for (std::size_t k = 0; k < order.size(); ++k) {
    if (ts[order[k]].data.empty()) continue;  // empty tensors tie on offset
    const auto it = std::find_if(h.tensors.begin(), h.tensors.end(),
                                 [&](const TensorInfo& i) { return i.name == ts[order[k]].name; });
    std::uint64_t expect = 0;
    for (std::size_t j = 0; j < k; ++j) expect += ts[order[j]].data.size();
    EXPECT_EQ(it->begin, expect) << it->name;
  }
}

TEST(SafetensorsWriter, NamesSortBytewise) {
  // 'B' < 'a' < 'b' < 'é' (0xC3) bytewise.
  const std::vector<OwnedTensor> ts = {make_tensor("é", DType::F32, {1}, 1), make_tensor("b", DType::F32, {1}, 2),
                                       make_tensor("B", DType::F32, {1}, 3), make_tensor("a", DType::F32, {1}, 4)};
  std::vector<std::size_t> order;
  build_safetensors_header(views(ts), {}, &order);
  EXPECT_EQ(order, (std::vector<std::size_t>{2, 3, 1, 0}));
}

TEST(SafetensorsWriter, JsonEscapingMatchesSerde) {
  // serde_json: \" \\ \b \t \n \f \r, other controls as \u00xx lowercase, DEL and '/' raw.
  const OwnedTensor t = make_tensor("\"\\\b\t\n\f\r\x01\x1f\x7f/\xc3\xa9", DType::U8, {0}, 1);
  const auto header = build_safetensors_header(views({t}), {});
  const std::string json(util::as_chars(util::ByteSpan(header).subspan(8)));
  EXPECT_EQ(json.substr(0, json.find_last_not_of(' ') + 1),
            "{\"\\\"\\\\\\b\\t\\n\\f\\r\\u0001\\u001f\x7f/\xc3\xa9\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}");
}

TEST(SafetensorsWriter, EmptyMetadataIsOmitted) {
  const auto header = build_safetensors_header({}, {});
  EXPECT_EQ(std::string(util::as_chars(header)).find("__metadata__"), std::string::npos);
}

TEST(SafetensorsWriter, RejectsBadInput) {
  const auto expect_invalid = [](const std::vector<OwnedTensor>& ts, const std::map<std::string, std::string>& meta,
                                 std::string_view fragment) {
    try {
      build_safetensors_header(views(ts), meta);
      ADD_FAILURE() << "accepted; expected " << fragment;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::invalid_argument) << e.what();
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  auto short_data = make_tensor("s", DType::F32, {4}, 1);
  short_data.data.pop_back();
  expect_invalid({short_data}, {}, "tensor 's': data is 15 bytes but shape [4] of F32 needs 16");
  expect_invalid({make_tensor("d", DType::U8, {1}, 1), make_tensor("d", DType::I8, {1}, 2)}, {}, "tensor 'd': duplicate name");
  expect_invalid({make_tensor("__metadata__", DType::U8, {1}, 1)}, {}, "reserved");
  expect_invalid({make_tensor("bad\xff", DType::U8, {1}, 1)}, {}, "not valid UTF-8");
  expect_invalid({}, {{"k", "\xc0\x80"}}, "metadata 'k'");
  expect_invalid({{"f4", DType::F4, {3}, util::ByteVector(1)}}, {}, "not a whole number of bytes");
  expect_invalid({{"big", DType::U8, {1ull << 32, 1ull << 32}, {}}}, {}, "overflows 64 bits");
  expect_invalid({}, {{"huge", std::string(k_safetensors_max_header, 'a')}}, "exceeds the limit");
}

TEST(SafetensorsWriter, RefusesToOverwriteAndLeavesNothingOnError) {
  TempDir dir;
  const auto path = dir / "w.safetensors";
  const std::vector<OwnedTensor> ts = {make_tensor("x", DType::F16, {3}, 7)};
  write_safetensors(path, views(ts), {}, util::Overwrite::refuse);
  const auto first = test::read_file(path);
  try {
    write_safetensors(path, views(ts), {{"a", "b"}}, util::Overwrite::refuse);
    ADD_FAILURE() << "overwrote";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::exists);
  }
  EXPECT_EQ(test::read_file(path), first);
  write_safetensors(path, views(ts), {{"a", "b"}}, util::Overwrite::allow);
  EXPECT_EQ(parse_safetensors(test::read_file(path), "w").metadata.at("a"), "b");

  auto bad = ts;
  bad[0].data.push_back(std::byte{0});
  const auto other = dir / "other.safetensors";
  EXPECT_THROW(write_safetensors(other, views(bad), {}, util::Overwrite::refuse), Error);
  std::size_t entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path())) ++entries;
  EXPECT_EQ(entries, 1u);  // no temporary, no partial file
}

TEST(SafetensorsWriter, RandomTensorSetsRoundTrip) {
  std::mt19937_64 rng(42);
  for (int round = 0; round < 50; ++round) {
    std::vector<OwnedTensor> ts;
    const int n = static_cast<int>(rng() % 12);
    for (int i = 0; i < n; ++i) {
      const auto dtype = static_cast<DType>(rng() % k_dtype_count);
      std::vector<std::uint64_t> shape(rng() % 4);
      for (auto& d : shape) d = rng() % 5;
      const auto bits = dtype_info(dtype).bits;
      if (bits < 8) shape.push_back(8);  // whole bytes for F4/F6
      ts.push_back(make_tensor(cat("n", std::to_string(rng() % 1000), "_", std::to_string(i)), dtype, shape, rng()));
    }
    std::map<std::string, std::string> meta;
    if (rng() % 2) meta[cat("k", std::to_string(rng() % 10))] = std::to_string(rng());
    std::vector<std::size_t> order;
    util::ByteVector file = build_safetensors_header(views(ts), meta, &order);
    for (auto i : order) util::append_bytes(file, ts[i].data);
    const auto h = parse_safetensors(file, "random");
    ASSERT_EQ(h.tensors.size(), ts.size());
    EXPECT_EQ(h.metadata, meta);
    std::uint64_t expect_begin = 0;
    for (const auto& info : h.tensors) {
      EXPECT_EQ(info.begin, expect_begin);
      expect_begin = info.end;
      const auto it = std::find_if(ts.begin(), ts.end(), [&](const OwnedTensor& t) { return t.name == info.name; });
      ASSERT_NE(it, ts.end());
      EXPECT_EQ(it->dtype, info.dtype);
      EXPECT_EQ(it->shape, info.shape);
      EXPECT_TRUE(std::equal(it->data.begin(), it->data.end(),
                             file.begin() + static_cast<std::ptrdiff_t>(h.data_offset + info.begin)));
    }
  }
}
