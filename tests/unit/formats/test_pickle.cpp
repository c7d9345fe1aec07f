#include "formats/pickle.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <limits>

#include "formats/zip_reader.hpp"
#include "mithril/error.hpp"
#include "torch_fixtures.hpp"

namespace mithril::formats {
namespace {

using namespace std::string_literals;

using test::read_torch_fixture;

// Pickles in these tests are spelled out opcode by opcode (encodings from
// CPython's Lib/pickletools.py), so expected trees are known by construction.
std::string p2(const std::string& body) { return std::string("\x80\x02", 2) + body + "."; }
std::string u32(std::uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); }
std::string binunicode(const std::string& s) { return "X" + u32(static_cast<std::uint32_t>(s.size())) + s; }

std::string from_hex(std::string_view hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    out += static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16));
  return out;
}

PickleTree parse(const std::string& bytes, const UnpickleLimits& limits = {}) {
  return unpickle(util::as_bytes(bytes), "t.pkl", limits);
}

struct Refusal {
  Errc code;
  std::string message;
};
Refusal refusal(const std::string& bytes, const UnpickleLimits& limits = {}) {
  try {
    (void)parse(bytes, limits);
  } catch (const Error& e) {
    return {e.code(), e.what()};
  }
  return {Errc::internal, "(accepted)"};
}

#define EXPECT_CODE(expected_code, ...)              \
  do {                                               \
    const auto r_ = refusal(__VA_ARGS__);            \
    EXPECT_EQ(r_.code, expected_code) << r_.message; \
  } while (0)

TEST(Pickle, Scalars) {
  const auto t = parse(p2(std::string("(NK\x07M\x34\x12J\xfe\xff\xff\xff\x88\x89") + binunicode("h\xc3\xa9") +
                          "C\x02\x00\xff"s + "G\x3f\xf8\x00\x00\x00\x00\x00\x00"s + "t"));
  const auto& root = t.node(t.root());
  ASSERT_EQ(root.kind, PickleKind::tuple);
  ASSERT_EQ(root.items.size(), 9u);
  EXPECT_EQ(t.node(root.items[0]).kind, PickleKind::none);
  EXPECT_EQ(t.node(root.items[1]).integer, 7);
  EXPECT_EQ(t.node(root.items[2]).integer, 0x1234);
  EXPECT_EQ(t.node(root.items[3]).integer, -2);
  EXPECT_EQ(t.node(root.items[4]).kind, PickleKind::boolean);
  EXPECT_EQ(t.node(root.items[4]).integer, 1);
  EXPECT_EQ(t.node(root.items[5]).integer, 0);
  EXPECT_EQ(t.node(root.items[6]).text, "h\xc3\xa9");
  EXPECT_EQ(t.node(root.items[7]).kind, PickleKind::bytes);
  EXPECT_EQ(t.node(root.items[7]).text, "\x00\xff"s);
  EXPECT_EQ(t.node(root.items[8]).real, 1.5);
  EXPECT_EQ(t.protocol(), 2);
}

TEST(Pickle, Long1AndLong4) {
  struct Case {
    std::string bytes;
    std::int64_t value;
  };
  // Values per pickletools.encode_long: little-endian two's complement.
  const Case cases[] = {
      {"", 0},
      {"\xff", -1},
      {"\x80\x00"s, 128},
      {"\x7f", 127},
      {"\x80", -128},
      {"\x00\x00\x00\x00\x00\x00\x00\x80"s, std::numeric_limits<std::int64_t>::min()},
      {"\xff\xff\xff\xff\xff\xff\xff\x7f", std::numeric_limits<std::int64_t>::max()},
      {"\x00\x00\x00\x00\x00\xff\xff\xff\xff"s, -(std::int64_t{1} << 40)},  // redundant sign byte
  };
  for (const auto& c : cases) {
    const auto t = parse(p2("\x8a" + std::string(1, static_cast<char>(c.bytes.size())) + c.bytes));
    EXPECT_EQ(t.node(t.root()).kind, PickleKind::integer);
    EXPECT_EQ(t.node(t.root()).integer, c.value);
    const auto t4 = parse(p2("\x8b" + u32(static_cast<std::uint32_t>(c.bytes.size())) + c.bytes));
    EXPECT_EQ(t4.node(t4.root()).integer, c.value);
  }
  // 2**70 and -2**70 do not fit: kept as bytes, rendered as Python does.
  const auto big = parse(p2("\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x40"s));
  EXPECT_EQ(big.node(big.root()).kind, PickleKind::big_integer);
  EXPECT_EQ(pickle_repr(big, big.root()), "1180591620717411303424");
  const auto neg = parse(p2("\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\xc0"s));
  EXPECT_EQ(pickle_repr(neg, neg.root()), "-1180591620717411303424");
}

TEST(Pickle, ContainersMemoAndSharing) {
  // d = {}; l = [1, 2]; d['a'] = l; d[3] = l (shared through the memo);
  // l.append(5) after memoization: both references see it.
  const auto t = parse(p2("}q\x00("s + binunicode("a") + "]q\x01(K\x01K\x02" "e" + "K\x03h\x01u" + "h\x01K\x05" "a0"));
  const auto& d = t.node(t.root());
  ASSERT_EQ(d.kind, PickleKind::dict);
  ASSERT_EQ(d.items.size(), 4u);
  EXPECT_EQ(t.node(d.items[0]).text, "a");
  EXPECT_EQ(t.node(d.items[2]).integer, 3);
  EXPECT_EQ(d.items[1], d.items[3]);
  const auto& l = t.node(d.items[1]);
  ASSERT_EQ(l.items.size(), 3u);
  EXPECT_EQ(t.node(l.items[2]).integer, 5);
}

TEST(Pickle, Protocol4Opcodes) {
  // FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL, EMPTY_SET/ADDITEMS, FROZENSET.
  const std::string body = "\x95\x10\x00\x00\x00\x00\x00\x00\x00"s + "\x8c\x05hello\x94" +
                           "\x8f\x94(K\x01K\x02\x90" + "(K\x03\x91" + "\x87";
  const auto t = parse(std::string("\x80\x04", 2) + body + ".");
  EXPECT_EQ(t.protocol(), 4);
  const auto& r = t.node(t.root());
  ASSERT_EQ(r.kind, PickleKind::tuple);
  ASSERT_EQ(r.items.size(), 3u);
  EXPECT_EQ(t.node(r.items[0]).text, "hello");
  EXPECT_EQ(t.node(r.items[1]).items.size(), 2u);
  EXPECT_EQ(t.node(r.items[2]).kind, PickleKind::set);
  // Containers of containers render by kind and length; scalars in full.
  EXPECT_EQ(pickle_repr(t, t.root()), "tuple(3)");
  EXPECT_EQ(pickle_repr(t, r.items[1]), "{1, 2}");
  EXPECT_EQ(pickle_repr(t, r.items[2]), "{3}");
}

TEST(Pickle, AllowedGlobalsBuildTypedNodes) {
  const std::string od = "ccollections\nOrderedDict\n)R";
  const std::string body =
      "(" + od + "(" + binunicode("k") + "K\x01u" + "}" + binunicode("version") + "K\x02sb" +  // OrderedDict + BUILD
      "ctorch\nbfloat16\n" +                                                                      // dtype
      "ctorch\nSize\nK\x02K\x03\x86\x85R" +                                                       // torch.Size
      "ctorch\ndevice\n" + binunicode("cuda") + "K\x01\x86R" +                                    // torch.device
      "c_codecs\nencode\n" + binunicode("a\xc3\xbf") + binunicode("latin1") + "\x86R" +           // bytes
      "c__builtin__\nset\n]K\x07" "a\x85R" +                                                       // set
      "cbuiltins\ncomplex\nG\x3f\xf0\x00\x00\x00\x00\x00\x00G\xc0\x00\x00\x00\x00\x00\x00\x00\x86R"s + "t";
  const auto t = parse(p2(body));
  const auto& r = t.node(t.root());
  ASSERT_EQ(r.items.size(), 7u);
  const auto& o = t.node(r.items[0]);
  EXPECT_EQ(o.kind, PickleKind::ordered_dict);
  ASSERT_EQ(o.items.size(), 2u);
  ASSERT_NE(o.state, k_no_pickle_node);
  EXPECT_EQ(t.node(o.state).kind, PickleKind::dict);
  EXPECT_EQ(pickle_repr(t, r.items[1]), "torch.bfloat16");
  EXPECT_EQ(pickle_repr(t, r.items[2]), "torch.Size([2, 3])");
  EXPECT_EQ(pickle_repr(t, r.items[3]), "device(type='cuda', index=1)");
  EXPECT_EQ(t.node(r.items[4]).text, std::string("a\xff"));
  EXPECT_EQ(pickle_repr(t, r.items[4]), "b'a\\xff'");
  EXPECT_EQ(pickle_repr(t, r.items[5]), "{7}");
  EXPECT_EQ(pickle_repr(t, r.items[6]), "(1-2j)");
}

TEST(Pickle, TensorRebuildsAndStorages) {
  // The exact shape of torch.save's output for {'w': arange(6)} (torch 2.13).
  const std::string pkl = from_hex(
      "80027d7100580100000077710163746f7263682e5f7574696c730a5f72656275696c645f74656e736f725f76320a7102"
      "2828580700000073746f72616765710363746f7263680a466c6f617453746f726167650a710458010000003071055803"
      "00000063707571064b06747107514b004b068571084b018571098963636f6c6c656374696f6e730a4f72646572656444"
      "6963740a710a2952710b74710c52710d732e");
  const auto t = parse(pkl);
  ASSERT_EQ(t.storages().size(), 1u);
  EXPECT_EQ(t.storages()[0].key, "0");
  EXPECT_EQ(t.storages()[0].storage_type, "FloatStorage");
  EXPECT_EQ(t.storages()[0].location, "cpu");
  EXPECT_EQ(t.storages()[0].numel, 6u);
  ASSERT_EQ(t.tensors().size(), 1u);
  const auto& x = t.tensors()[0];
  EXPECT_EQ(x.dtype, "float32");
  EXPECT_EQ(x.shape, std::vector<std::uint64_t>{6});
  EXPECT_EQ(x.stride, std::vector<std::uint64_t>{1});
  EXPECT_EQ(x.storage_offset, 0u);
  EXPECT_FALSE(x.requires_grad);
  EXPECT_EQ(pickle_repr(t, t.node(t.root()).items[1]), "tensor(float32, [6])");
}

TEST(Pickle, RebuildV3ParameterAndMetadata) {
  const std::string storage = "(" + binunicode("storage") + "ctorch.storage\nUntypedStorage\n" + binunicode("0") +
                              binunicode("cpu") + "K\x04tQ";
  const std::string v3 = "ctorch._utils\n_rebuild_tensor_v3\n(" + storage + "K\x01K\x02\x85K\x01\x85\x88" +
                         "ccollections\nOrderedDict\n)R" + "ctorch\nuint16\n" + "}" + binunicode("neg") + "\x88s" +
                         "tR";
  const std::string param = "ctorch._utils\n_rebuild_parameter\n(" + v3 + "\x89" "ccollections\nOrderedDict\n)RtR";
  const auto t = parse(p2(param));
  ASSERT_EQ(t.tensors().size(), 2u);
  const auto& p = t.tensors()[t.node(t.root()).index];
  EXPECT_EQ(p.dtype, "uint16");
  EXPECT_TRUE(p.is_parameter);
  EXPECT_FALSE(p.requires_grad);  // the Parameter's flag wins over the inner tensor's
  EXPECT_TRUE(p.neg);
  EXPECT_EQ(p.storage_offset, 1u);
  EXPECT_EQ(t.storages()[p.storage].storage_type, "UntypedStorage");
}

TEST(Pickle, ReprMatchesPython) {
  // Expected strings are Python 3.11's repr() of the same values.
  auto r = [](const std::string& body) {
    const auto t = parse(p2(body));
    return pickle_repr(t, t.root());
  };
  auto flt = [](std::uint64_t be) {
    std::string s = "G";
    for (int i = 7; i >= 0; --i) s += static_cast<char>((be >> (8 * i)) & 0xFF);
    return s;
  };
  EXPECT_EQ(r(flt(0x3E45798EE2308C3Aull)), "1e-08");
  EXPECT_EQ(r(flt(0x3F50624DD2F1A9FCull)), "0.001");
  EXPECT_EQ(r(flt(0x4008000000000000ull)), "3.0");
  EXPECT_EQ(r(flt(0x8000000000000000ull)), "-0.0");
  EXPECT_EQ(r(flt(0x4341C37937E08000ull)), "1e+16");
  EXPECT_EQ(r(flt(0x7FF0000000000000ull)), "inf");
  EXPECT_EQ(r(binunicode("it's")), "\"it's\"");
  EXPECT_EQ(r(binunicode("a\nb\\")), "'a\\nb\\\\'");
  EXPECT_EQ(r("N\x85"), "(None,)");
  EXPECT_EQ(r("]"), "[]");
  EXPECT_EQ(r("}"), "{}");
  EXPECT_EQ(r("ccollections\nOrderedDict\n)R"), "OrderedDict()");
  EXPECT_EQ(r("\x8f"), "set()");
}

// ---- refusals --------------------------------------------------------------

struct EvilCase {
  const char* file;
  Errc code;
  const char* message;
};

TEST(Pickle, RefusesMaliciousFixtures) {
  const std::string canary = "/tmp/mithril-canary-DO-NOT-CREATE";
  std::filesystem::remove(canary);
  const EvilCase cases[] = {
      {"os_system.pkl", Errc::unsupported, "refused global 'os.system' at offset 2"},
      {"posix_system.pkl", Errc::unsupported, "refused global 'posix.system'"},
      {"builtins_eval.pkl", Errc::unsupported, "refused global 'builtins.eval'"},
      {"builtin_exec.pkl", Errc::unsupported, "refused global 'builtins.exec'"},
      {"subprocess_popen.pkl", Errc::unsupported, "refused global 'subprocess.Popen'"},
      {"stack_global.pkl", Errc::unsupported, "refused global 'os.system'"},
      {"inst.pkl", Errc::unsupported, "refused opcode INST"},
      {"obj.pkl", Errc::unsupported, "refused global 'os.system'"},
      {"qtensor.pkl", Errc::unsupported, "quantized tensors are not supported"},
      {"memo_get_unset.pkl", Errc::corrupt, "memo index 4294967295, which was never stored"},
      {"memo_get_binget.pkl", Errc::corrupt, "memo index 7"},
      {"marks.pkl", Errc::unsupported, "MARK nesting deeper than 1000"},
      {"long_binunicode.pkl", Errc::corrupt, "truncated pickle: BINUNICODE needs 2147483647 more bytes"},
      {"binunicode8_huge.pkl", Errc::corrupt, "truncated pickle: BINUNICODE8"},
      {"frame_huge.pkl", Errc::corrupt, "truncated pickle: FRAME"},
      {"long4_negative.pkl", Errc::corrupt, "LONG4 with a negative length"},
      {"proto0_int.pkl", Errc::unsupported, "refused opcode INT"},
      {"ext1.pkl", Errc::unsupported, "refused opcode EXT1"},
      {"persid_text.pkl", Errc::unsupported, "refused opcode PERSID"},
      {"empty.pkl", Errc::corrupt, "no STOP opcode"},
      {"no_stop.pkl", Errc::corrupt, "no STOP opcode"},
      {"stop_empty.pkl", Errc::corrupt, "STOP with 0 values"},
      {"two_values.pkl", Errc::corrupt, "STOP with 2 values"},
      {"trailing.pkl", Errc::corrupt, "4 bytes after the STOP opcode"},
      {"append_to_dict.pkl", Errc::corrupt, "APPEND to a dict"},
      {"setitem_list_key.pkl", Errc::corrupt, "unhashable dict key of type list"},
      {"bad_utf8.pkl", Errc::corrupt, "not valid UTF-8"},
      {"persid_not_storage.pkl", Errc::unsupported, "persistent id"},
      {"build_on_list.pkl", Errc::unsupported, "BUILD on a list"},
      {"reduce_on_str.pkl", Errc::corrupt, "REDUCE on a str"},
      {"newobj_ordered_dict.pkl", Errc::unsupported, "NEWOBJ of 'collections.OrderedDict'"},
      {"proto9.pkl", Errc::unsupported, "pickle protocol 9"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.file);
    const auto bytes = read_torch_fixture(std::string("evil/") + c.file);
    const auto r = refusal(test::as_string(bytes));
    EXPECT_EQ(r.code, c.code) << r.message;
    EXPECT_NE(r.message.find(c.message), std::string::npos) << r.message;
    EXPECT_EQ(r.message.rfind("t.pkl: ", 0), 0u) << "messages start with the context: " << r.message;
  }
  // Nothing ran: the payloads would have created the canary.
  EXPECT_FALSE(std::filesystem::exists(canary));
}

TEST(Pickle, DeepStructuresCostNoRecursion) {
  // 100k MARKs: refused at the limit, long before memory matters.
  const auto marks = refusal(p2(std::string(100'000, '(') + "N"));
  EXPECT_EQ(marks.code, Errc::unsupported);
  EXPECT_NE(marks.message.find("MARK nesting deeper than 1000"), std::string::npos);
  // 100k nested lists parse (the tree is flat); walkers bound their depth.
  const auto start = std::chrono::steady_clock::now();
  const auto t = parse(p2(std::string(100'000, ']') + std::string(99'999, 'a')));
  EXPECT_EQ(t.node_count(), 100'000u);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  // A list that contains itself (through the memo) is representable too.
  const auto cyc = parse(p2("]q\x00h\x00"s "a"));
  EXPECT_EQ(cyc.node(cyc.root()).items[0], cyc.root());
}

TEST(Pickle, LimitsAreEnforced) {
  UnpickleLimits small;
  small.max_nodes = 10;
  EXPECT_CODE(Errc::unsupported, p2("(" + std::string(20, 'N') + "NK\x01K\x02K\x03K\x04K\x05K\x06K\x07K\x08K\x09K\x0at"), small);
  UnpickleLimits memo;
  memo.max_memo = 2;
  EXPECT_CODE(Errc::unsupported, p2("Nq\x00q\x01q\x02"s), memo);
  EXPECT_CODE(Errc::internal, p2("Nq\x00q\x01q\x00"s), memo);  // re-storing an index is not growth
  UnpickleLimits items;
  items.max_items = 5;
  EXPECT_CODE(Errc::unsupported, p2("](K\x01K\x02K\x03K\x04K\x05K\x06" "e"), items);
  UnpickleLimits stack;
  stack.max_stack = 3;
  EXPECT_CODE(Errc::unsupported, p2("(NNNNt"), stack);
}

TEST(Pickle, TensorArgumentsAreValidated) {
  const std::string storage = "(" + binunicode("storage") + "ctorch\nFloatStorage\n" + binunicode("0") +
                              binunicode("cpu") + "K\x04tQ";
  auto v2 = [&](const std::string& off, const std::string& size, const std::string& stride, const std::string& hooks) {
    return p2("ctorch._utils\n_rebuild_tensor_v2\n(" + storage + off + size + stride + "\x89" + hooks + "tR");
  };
  const std::string hooks = "ccollections\nOrderedDict\n)R";
  EXPECT_CODE(Errc::internal, v2("K\x00"s, "K\x02\x85", "K\x01\x85", hooks));
  EXPECT_CODE(Errc::corrupt, v2("J\xff\xff\xff\xff", "K\x02\x85", "K\x01\x85", hooks));  // offset -1
  EXPECT_CODE(Errc::corrupt, v2("K\x00"s, "J\xff\xff\xff\xff\x85", "K\x01\x85", hooks));  // size -1
  EXPECT_CODE(Errc::corrupt, v2("K\x00"s, "K\x02\x85", "K\x01K\x01\x86", hooks));         // rank mismatch
  EXPECT_CODE(Errc::unsupported, v2("K\x00"s, "K\x02\x85", "K\x01\x85", "}K\x01Ns"));     // hooks
  EXPECT_CODE(Errc::corrupt, v2("N", "K\x02\x85", "K\x01\x85", hooks));                  // offset None
  // A storage key described twice with different sizes.
  const std::string other = "(" + binunicode("storage") + "ctorch\nFloatStorage\n" + binunicode("0") +
                            binunicode("cpu") + "K\x05tQ";
  EXPECT_CODE(Errc::corrupt, p2(storage + other + "\x86"));
  // Calling something allowed but not callable.
  EXPECT_CODE(Errc::unsupported, p2("ctorch\nFloatStorage\n)R"));
}

// Every truncation of a real data.pkl is refused as corrupt; every single-byte
// change either parses or is refused with mithril::Error.
TEST(Pickle, SurvivesTruncationAndMutationOfRealPickles) {
  const auto file = read_torch_fixture("training.pt");
  const ZipReader z(file, "training.pt");
  const auto* entry = z.find("archive/data.pkl");
  ASSERT_NE(entry, nullptr);
  const auto pkl = test::as_string(z.extract(*entry, 1 << 20));
  ASSERT_NO_THROW((void)parse(pkl));
  for (std::size_t n = 0; n < pkl.size(); ++n) {
    const auto r = refusal(pkl.substr(0, n));
    ASSERT_EQ(r.code, Errc::corrupt) << "prefix " << n << ": " << r.message;
  }
  std::size_t accepted = 0;
  for (std::size_t i = 0; i < pkl.size(); ++i) {
    for (char x : {'\x01', '\x80', '\xff'}) {
      auto m = pkl;
      m[i] = static_cast<char>(m[i] ^ x);
      if (refusal(m).code == Errc::internal) ++accepted;
    }
  }
  EXPECT_GT(accepted, 0u);
}

}  // namespace
}  // namespace mithril::formats
