// Cross-checks with the reference implementation (huggingface/safetensors)
// through its Python package: byte-identical output, mutual readability, and
// a differential test of what each refuses. Needs MITHRIL_PYTHON: a Python
// with safetensors 0.8 (earlier ones lack the FNUZ dtypes) and numpy; the
// tests skip without it. CI sets MITHRIL_PYTHON=.venv/bin/python.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

#include "formats/safetensors.hpp"
#include "mithril/error.hpp"
#include "safetensors_fixtures.hpp"
#include "test_helpers.hpp"

using namespace mithril;
using namespace mithril::formats;
using namespace mithril::test::st;
using mithril::test::TempDir;

namespace {

const char* k_reference_script = R"PY(
import json, struct, sys
import numpy as np
from safetensors import TensorSpec, serialize, serialize_file, deserialize, safe_open

SPEC = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16", "U32": "uint32",
        "I32": "int32", "U64": "uint64", "I64": "int64", "F16": "float16", "BF16": "bfloat16", "F32": "float32",
        "F64": "float64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu",
        "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz", "F4": "float4_e2m1fn_x2",
        "C64": "complex64"}
BITS = {"BOOL": 8, "U8": 8, "I8": 8, "U16": 16, "I16": 16, "U32": 32, "I32": 32, "U64": 64, "I64": 64, "F16": 16,
        "BF16": 16, "F32": 32, "F64": 64, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8,
        "F8_E5M2FNUZ": 8, "F4": 4, "C64": 64}
keep = []

def spec(dtype, shape, data):
    buf = np.frombuffer(bytes(data), dtype=np.uint8).copy() if len(data) else np.zeros(1, np.uint8)
    keep.append(buf)
    shape = list(shape)
    if dtype == "F4":
        shape[-1] //= 2  # TensorSpec takes F4's storage shape (two values a byte)
    return TensorSpec(dtype=SPEC[dtype], shape=shape, data_ptr=buf.ctypes.data, data_len=len(data))

def header_of(blob):
    n = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8:8 + n])

def shape_text(shape):
    return ",".join(str(d) for d in shape) if shape else "-"

def cmd_write(out, manifest):
    rng = np.random.default_rng(7)
    cases = [("weight", "F32", [3, 4]), ("bias", "BF16", [5]), ("scalar", "F64", []), ("empty", "I32", [0, 3]),
             ("fp4", "F4", [2, 6]), ("odd \"name\"\\\n\x01/\u00e9", "U8", [2])]
    cases += [("t_" + d.lower(), d, [2, 3]) for d in SPEC if d != "F4"]
    tensors = {}
    for name, dtype, shape in cases:
        count = int(np.prod(shape)) if shape else 1
        data = rng.integers(0, 256, count * BITS[dtype] // 8, dtype=np.uint8).tobytes()
        tensors[name] = spec(dtype, shape, data)
    serialize_file(tensors, out, metadata={"format": "pt"})
    blob = open(out, "rb").read()
    h = header_of(blob)
    n = struct.unpack("<Q", blob[:8])[0]
    data = dict((k, v["data"]) for k, v in deserialize(blob))
    with open(manifest, "w") as f:
        for k, v in h.items():
            if k == "__metadata__":
                for mk, mv in v.items():
                    f.write("M %s %s\n" % (mk.encode().hex(), mv.encode().hex()))
                continue
            b, e = v["data_offsets"]
            f.write("T %s %s %s %d %d %s\n" % (k.encode().hex(), v["dtype"], shape_text(v["shape"]), b, e,
                                              data[k].hex() or "-"))

def cmd_check(path, manifest, identical):
    blob = open(path, "rb").read()
    got = {k: (v["dtype"], list(v["shape"]), bytes(v["data"])) for k, v in deserialize(blob)}
    with safe_open(path, "np") as f:
        meta = f.metadata() or {}
    want, want_meta = {}, {}
    for line in open(manifest):
        p = line.split()
        if p[0] == "M":
            want_meta[bytes.fromhex(p[1]).decode()] = bytes.fromhex(p[2]).decode() if p[2] != "-" else ""
        else:
            shape = [] if p[3] == "-" else [int(x) for x in p[3].split(",")]
            want[bytes.fromhex(p[1]).decode()] = (p[2], shape, bytes.fromhex(p[4]) if p[4] != "-" else b"")
    if got != want:
        print("tensors differ:", sorted(set(got) ^ set(want)), [k for k in want if got.get(k) != want[k]][:5])
        return 2
    if meta != want_meta:
        print("metadata differs:", meta, want_meta)
        return 3
    if identical:
        again = serialize({k: spec(d, s, b) for k, (d, s, b) in got.items()}, metadata=meta or None)
        if bytes(again) != blob:
            n = struct.unpack("<Q", blob[:8])[0]
            print("reference bytes differ\nours: %r\nref:  %r" % (blob[:8 + n], bytes(again)[:8 + n]))
            return 4
    return 0

def cmd_verdicts(directory, count):
    for i in range(count):
        blob = open("%s/case_%d.bin" % (directory, i), "rb").read()
        try:
            deserialize(blob)
            print("ok")
        except BaseException as e:  # a Rust panic surfaces as a BaseException
            print("err", " ".join(str(e).split())[:200])

if sys.argv[1] == "write":
    cmd_write(sys.argv[2], sys.argv[3])
elif sys.argv[1] == "verdicts":
    cmd_verdicts(sys.argv[2], int(sys.argv[3]))
else:
    sys.exit(cmd_check(sys.argv[2], sys.argv[3], sys.argv[4] == "identical"))
)PY";

std::string hex(std::string_view s) {
  static constexpr char k_digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += k_digits[c >> 4];
    out += k_digits[c & 15];
  }
  return out.empty() ? "-" : out;
}

std::string unhex(const std::string& h) {
  if (h == "-") return {};
  std::string out;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2) out += static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16));
  return out;
}

std::string shape_field(const std::vector<std::uint64_t>& shape) {
  if (shape.empty()) return "-";
  std::string s;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(shape[i]);
  }
  return s;
}

class SafetensorsCompat : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* py = std::getenv("MITHRIL_PYTHON");
    if (!py || !*py) GTEST_SKIP() << "MITHRIL_PYTHON is not set (a Python with safetensors and numpy)";
    m_python = py;
    m_script = m_dir / "reference.py";
    std::ofstream(m_script) << k_reference_script;
  }

  // Runs the reference script; returns its exit status, output in `log`.
  int run(const std::string& args, std::string& log) {
    const auto log_path = m_dir / "log.txt";
    const std::string cmd = cat("'", m_python, "' '", m_script.string(), "' ", args, " > '", log_path.string(), "' 2>&1");
    const int status = std::system(cmd.c_str());
    std::ifstream in(log_path);
    std::stringstream ss;
    ss << in.rdbuf();
    log = ss.str();
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  void write_manifest(const std::filesystem::path& path, const std::vector<OwnedTensor>& ts,
                      const std::map<std::string, std::string>& meta) {
    std::ofstream out(path);
    for (const auto& t : ts) {
      out << "T " << hex(t.name) << ' ' << dtype_info(t.dtype).name << ' ' << shape_field(t.shape) << ' '
          << hex(util::as_chars(t.data)) << '\n';
    }
    for (const auto& [k, v] : meta) out << "M " << hex(k) << ' ' << hex(v) << '\n';
  }

  TempDir m_dir;
  std::string m_python;
  std::filesystem::path m_script;
};

}  // namespace

TEST_F(SafetensorsCompat, ReadsWhatTheReferenceWrites) {
  const auto ref = m_dir / "ref.safetensors";
  const auto manifest = m_dir / "ref.txt";
  std::string log;
  ASSERT_EQ(run(cat("write '", ref.string(), "' '", manifest.string(), "'"), log), 0) << log;

  const auto file = test::read_file(ref);
  const auto h = parse_safetensors(file, ref.string());
  std::map<std::string, std::string> want_meta;
  std::size_t tensors = 0;
  std::ifstream in(manifest);
  std::string kind;
  while (in >> kind) {
    if (kind == "M") {
      std::string k, v;
      in >> k >> v;
      want_meta[unhex(k)] = unhex(v);
      continue;
    }
    std::string name_hex, dtype, shape, data_hex;
    std::uint64_t begin = 0, end = 0;
    in >> name_hex >> dtype >> shape >> begin >> end >> data_hex;
    const auto name = unhex(name_hex);
    SCOPED_TRACE(name);
    ++tensors;
    const auto it = std::find_if(h.tensors.begin(), h.tensors.end(), [&](const TensorInfo& t) { return t.name == name; });
    ASSERT_NE(it, h.tensors.end());
    EXPECT_EQ(dtype_info(it->dtype).name, dtype);
    EXPECT_EQ(shape_field(it->shape), shape);
    EXPECT_EQ(it->begin, begin);
    EXPECT_EQ(it->end, end);
    EXPECT_EQ(hex(util::as_chars(util::ByteSpan(file).subspan(h.data_offset + it->begin, it->size()))), data_hex);
  }
  EXPECT_GE(tensors, 20u);
  EXPECT_EQ(h.tensors.size(), tensors);
  EXPECT_EQ(h.metadata, want_meta);

  // Writing the same tensors back gives the reference's bytes exactly.
  std::vector<TensorView> vs;
  for (const auto& t : h.tensors) vs.push_back({t.name, t.dtype, t.shape, util::ByteSpan(file).subspan(h.data_offset + t.begin, t.size())});
  std::reverse(vs.begin(), vs.end());  // input order must not matter
  const auto mine = m_dir / "mine.safetensors";
  write_safetensors(mine, vs, h.metadata, util::Overwrite::refuse);
  EXPECT_TRUE(test::read_file(mine) == file) << "our writer's bytes differ from safetensors' for the same tensors";
}

TEST_F(SafetensorsCompat, ReferenceReadsWhatWeWriteByteForByte) {
  // Every dtype the Python writer knows (all but F6), one metadata key: the
  // reference writes several keys in hash order, so only one is comparable.
  std::vector<OwnedTensor> ts;
  for (const auto& t : every_dtype_tensors()) {
    if (t.dtype != DType::F6_E2M3 && t.dtype != DType::F6_E3M2) ts.push_back(t);
  }
  const std::map<std::string, std::string> meta{{"format", "pt"}};
  const auto path = m_dir / "ours.safetensors";
  const auto manifest = m_dir / "ours.txt";
  write_safetensors(path, views(ts), meta, util::Overwrite::refuse);
  write_manifest(manifest, ts, meta);
  std::string log;
  EXPECT_EQ(run(cat("check '", path.string(), "' '", manifest.string(), "' identical"), log), 0) << log;

  // Without metadata too.
  const auto bare = m_dir / "bare.safetensors";
  write_safetensors(bare, views(ts), {}, util::Overwrite::refuse);
  write_manifest(manifest, ts, {});
  EXPECT_EQ(run(cat("check '", bare.string(), "' '", manifest.string(), "' identical"), log), 0) << log;
}

TEST_F(SafetensorsCompat, ReferenceReadsEveryDtypeAndMetadata) {
  const auto ts = every_dtype_tensors();  // F6 included: the reader knows it
  const std::map<std::string, std::string> meta{{"a", "1"}, {"b", "two\n"}, {"format", "pt"}, {"é", "ü"}};
  const auto path = m_dir / "all.safetensors";
  const auto manifest = m_dir / "all.txt";
  write_safetensors(path, views(ts), meta, util::Overwrite::refuse);
  write_manifest(manifest, ts, meta);
  std::string log;
  EXPECT_EQ(run(cat("check '", path.string(), "' '", manifest.string(), "' semantic"), log), 0) << log;
}

namespace {

// Headers at the edges of the grammar, for the differential test below.
std::vector<util::ByteVector> edge_cases() {
  std::vector<util::ByteVector> v;
  const auto add = [&](std::string_view header, std::string_view data = {}) { v.push_back(st_file(header, data)); };
  add("{}");
  add(" {}");
  add("{}\t\r\n ");
  add(std::string_view("{}\0", 3));
  add("[]");
  add("");
  add(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", "xx");
  add(R"({"__metadata__":{},"__metadata__":{}})");
  add(R"({"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "x");
  add(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"zz":[1,{}]}})", "x");
  add(R"({"a":{"dtype":"U8","shape":[1]}})", "x");
  add(R"({"__metadata__":null})");
  add(R"({"__metadata__":{"a":1}})");
  add(R"({"__metadata__":{"a":"1","a":"2"}})");
  add(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}})", "x");
  add(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1.0]}})", "x");
  add(R"({"a":{"dtype":"U8","shape":[-0],"data_offsets":[0,0]}})");
  add(R"({"a":{"dtype":"U8","shape":[1e0],"data_offsets":[0,1]}})", "x");
  add(R"({"a":{"dtype":"u8","shape":[1],"data_offsets":[0,1]}})", "x");
  add(R"({"a":{"dtype":{"U8":null},"shape":[1],"data_offsets":[0,1]}})", "x");
  add(R"({"a":5})");
  add(R"({"a":["U8",[1],[0,1]]})", "x");
  add(R"({"a":["U8",[1]]})", "x");
  add(R"({"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})", "xxxx");
  add(R"({"a":{"dtype":"F32","shape":[0,5],"data_offsets":[0,0]},"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "x");
  add(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})", "xx");
  add(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})", "xx");
  add(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "xx");
  add(R"({"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}})", "x");
  add(R"({"a":{"dtype":"F6_E3M2","shape":[4],"data_offsets":[0,3]}})", "xxx");
  add(R"({"a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}})");
  add(R"({"a":{"dtype":"U8","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}})");
  add(R"({"a":{"dtype":"U64","shape":[2305843009213693952],"data_offsets":[0,0]}})");
  add(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[18446744073709551615,18446744073709551615]}})");
  add(R"({"\u0000":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "x");
  add(R"({"\ud800":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "x");
  add("\xef\xbb\xbf{}");
  add("{\"\xff\":1}");
  add(R"({"a":{"dtype":"F8_E4M3FNUZ","shape":[1],"data_offsets":[0,1]}})", "x");
  for (int depth : {126, 127, 128}) {
    add(cat(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"z":)", std::string(depth - 2, '['),
            std::string(depth - 2, ']'), "}}"),
        "x");
  }
  v.push_back(util::ByteVector(5));
  v.push_back(st_file("{}", {}, 100'000'001));
  v.push_back(st_file("{}", {}, 3));
  return v;
}

// Random edits of a valid header (byte replaced, dropped or inserted from a
// JSON-heavy alphabet), with N fixed up so most reach the JSON and layout rules.
std::vector<util::ByteVector> mutations(std::size_t count) {
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
      R"("b":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]},"e":{"dtype":"F4","shape":[0,4],"data_offsets":[22,22]},)"
      R"("s":{"dtype":"I8","shape":[],"data_offsets":[22,23]}})";
  const std::string data(23, 'd');
  static constexpr std::string_view k_alphabet = "{}[]\",:0123456789-.eE \\u_FIUBX";
  std::mt19937_64 rng(1234);
  std::vector<util::ByteVector> v;
  for (std::size_t i = 0; i < count; ++i) {
    std::string h = header;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      const std::size_t at = rng() % h.size();
      const char c = k_alphabet[rng() % k_alphabet.size()];
      switch (rng() % 3) {
        case 0: h[at] = c; break;
        case 1: h.erase(at, 1); break;
        default: h.insert(h.begin() + static_cast<std::ptrdiff_t>(at), c); break;
      }
    }
    v.push_back(st_file(h, data));
  }
  return v;
}

}  // namespace

TEST_F(SafetensorsCompat, RefusesEverythingTheReferenceRefuses) {
  auto cases = edge_cases();
  const std::size_t edges = cases.size();
  for (auto& m : mutations(1500)) cases.push_back(std::move(m));
  for (std::size_t i = 0; i < cases.size(); ++i) test::write_file(m_dir / cat("case_", std::to_string(i), ".bin"), cases[i]);
  std::string log;
  ASSERT_EQ(run(cat("verdicts '", m_dir.path().string(), "' ", std::to_string(cases.size())), log), 0) << log;

  std::istringstream lines(log);
  std::string verdict;
  std::size_t refused_by_both = 0, stricter = 0, accepted_by_both = 0;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    ASSERT_TRUE(std::getline(lines, verdict)) << "reference output ends at case " << i << ":\n" << log;
    const bool reference_ok = verdict == "ok";
    const std::string ours = corrupt_message(cases[i]);
    const bool ours_ok = ours == "<accepted>";
    const std::string what = cat(i < edges ? "edge case " : "mutation ", std::to_string(i), ": ",
                                 util::as_chars(util::ByteSpan(cases[i]).subspan(std::min<std::size_t>(8, cases[i].size()))));
    // Refusing what the reference accepts is allowed only for the documented
    // stricter rules; accepting what it refuses never is.
    if (reference_ok && !ours_ok) {
      ++stricter;
      const bool documented = ours.find("must start with '{'") != std::string::npos ||
                              ours.find("duplicate") != std::string::npos ||
                              ours.find("field 'dtype' must be a string") != std::string::npos;
      EXPECT_TRUE(documented) << what << "\nours: " << ours;
    } else if (!reference_ok && ours_ok) {
      ADD_FAILURE() << what << "\naccepted here, refused by the reference: " << verdict;
    } else if (ours_ok) {
      ++accepted_by_both;
    } else {
      ++refused_by_both;
      EXPECT_EQ(ours.find("<wrong code"), std::string::npos) << ours;
    }
  }
  // The mutations must exercise both outcomes to mean anything.
  EXPECT_GT(accepted_by_both, 10u);
  EXPECT_GT(refused_by_both, 500u);
  RecordProperty("stricter", static_cast<int>(stricter));
  std::cout << "differential: " << cases.size() << " cases, " << accepted_by_both << " accepted by both, "
            << refused_by_both << " refused by both, " << stricter << " refused only here (documented)\n";
}
