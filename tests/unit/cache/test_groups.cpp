// Eviction units (graph + the kernels it runs) and miss explanations, on a
// simulated Inductor layout written the way Inductor writes it: kernel
// sources passed as r'''...''' strings in the graph's output code, each
// compiled from "<source>\n// Python bindings to call kernel():..." into
// inductor/<xy>/<stem>.main.cpp + .main.so.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "cache/groups.hpp"
#include "mithril/cache.hpp"
#include "test_helpers.hpp"

using namespace mithril;
using namespace mithril::cache;
using mithril::test::TempDir;
using mithril::test::write_text;
namespace fs = std::filesystem;

namespace {

std::string pad(std::string s, std::size_t n) {
  while (s.size() < n) s += '.';
  return s;
}

std::string kernel_source(const std::string& name) {
  return "\n#include <torch/csrc/inductor/cpp_prefix.h>\nextern \"C\" void kernel(float* p) { /* " + name + " */ }\n";
}

// A kernel module group as CppPythonBindingsCodeCache leaves it.
void kernel(const fs::path& root, const std::string& stem, const std::string& name) {
  const auto dir = root / "inductor" / stem.substr(1, 2);
  write_text(dir / (stem + ".main.cpp"), kernel_source(name) + "\n// Python bindings to call kernel():\n#include <Python.h>\n");
  write_text(dir / (stem + ".main.so"), pad("ELF " + stem, 4000));
}

// An FX-graph entry whose (pickled) output code uses the given kernels.
void graph(const fs::path& root, const std::string& key, const std::vector<std::string>& kernels) {
  std::string code = "\x80\x05pickle-ish output code\n";
  for (const auto& k : kernels) code += "cpp_fused_" + k + " = async_compile.cpp_pybinding(['float*'], r'''" + kernel_source(k) + "''')\n";
  write_text(root / "inductor" / "fxgraph" / key.substr(1, 2) / key / "entry", pad(code, 3000));
}

std::string fx_key(char c) { return "f" + std::string(51, c); }

std::set<std::string> remaining(const fs::path& root) {
  std::set<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(root / "inductor"))
    if (e.is_regular_file()) out.insert(e.path().filename().string());
  return out;
}

}  // namespace

TEST(Groups, GraphAndItsKernelsFormOneUnit) {
  TempDir dir;
  const auto root = dir.path();
  kernel(root, "caaa1", "a1");
  kernel(root, "caaa2", "a2");
  kernel(root, "cbbb1", "b1");
  kernel(root, "czzz9", "isa-probe");  // used by no graph
  graph(root, fx_key('a'), {"a1", "a2"});
  graph(root, fx_key('b'), {"b1"});
  // An AOTAutograd entry naming graph a's key joins its unit, as torch's
  // pickle names it: SHORT_BINUNICODE (0x8c), length 52 (the byte '4').
  write_text(root / "inductor" / "aotautograd" / "aqqq" / "entry",
             pad(std::string("\x80\x04\x95\x8c") + "4" + fx_key('a') + "\x94.", 500));

  CacheConfig c;
  c.root = root;
  Store store(c);
  store.sync();
  // Through the public surface: gc to a size that forces one unit out.
  const auto total = store.stats().bytes;
  GcOptions o;
  o.max_size = total - 1;  // anything evicted must go whole
  store.gc(o);
  const auto left = remaining(root);
  const bool a_alive = left.count("caaa1.main.so") > 0;
  // Whole units only: a graph never outlives its kernels and vice versa.
  EXPECT_EQ(left.count("caaa1.main.so"), left.count("caaa2.main.so"));
  EXPECT_EQ(a_alive, fs::exists(root / "inductor" / "fxgraph" / "aa" / fx_key('a')));
  EXPECT_EQ(a_alive, fs::exists(root / "inductor" / "aotautograd" / "aqqq"));
  const bool b_alive = left.count("cbbb1.main.so") > 0;
  EXPECT_EQ(b_alive, fs::exists(root / "inductor" / "fxgraph" / "bb" / fx_key('b')));
  EXPECT_FALSE(a_alive && b_alive);  // something was evicted
}

TEST(Groups, UnitsFromFiles) {
  TempDir dir;
  const auto root = dir.path();
  kernel(root, "caaa1", "a1");
  kernel(root, "cbbb1", "b1");
  kernel(root, "cccc1", "shared");
  graph(root, fx_key('a'), {"a1", "shared"});
  graph(root, fx_key('b'), {"b1"});
  graph(root, fx_key('c'), {"shared"});
  std::vector<EntryRow> rows;
  auto row = [&](EntryKind k, std::string id, std::int64_t last_use) {
    EntryRow r;
    r.kind = k;
    r.id = std::move(id);
    r.size = 100;
    r.last_use = last_use;
    rows.push_back(r);
  };
  row(EntryKind::inductor_module, "inductor/aa/caaa1", 1);
  row(EntryKind::inductor_module, "inductor/bb/cbbb1", 2);
  row(EntryKind::inductor_module, "inductor/cc/cccc1", 3);
  row(EntryKind::inductor_fxgraph, "inductor/fxgraph/aa/" + fx_key('a'), 4);
  row(EntryKind::inductor_fxgraph, "inductor/fxgraph/bb/" + fx_key('b'), 5);
  row(EntryKind::inductor_fxgraph, "inductor/fxgraph/cc/" + fx_key('c'), 9);
  const auto units = eviction_units(root, rows);
  // {a1, shared, graph a, graph c} (through the shared kernel), {b1, graph b}
  ASSERT_EQ(units.size(), 2u);
  std::set<std::size_t> u0(units[0].begin(), units[0].end()), u1(units[1].begin(), units[1].end());
  const std::set<std::size_t> ac{0, 2, 3, 5}, b{1, 4};
  EXPECT_TRUE((u0 == ac && u1 == b) || (u0 == b && u1 == ac));
  // LRU by the unit's most recent use: {b} (5) goes before {a, c} (9).
  const auto v = choose_unit_victims(rows, units, 450, 0, 0, INT64_MAX);
  EXPECT_EQ(std::set<std::size_t>(v.begin(), v.end()), b);
  // Protected units are never taken.
  EXPECT_TRUE(choose_unit_victims(rows, units, 0, 0, 0, 5).empty());
}

TEST(Explain, NamesTheDifferingComponents) {
  TempDir dir;
  const auto root = dir.path();
  CacheConfig c;
  c.root = root;
  Store store(c);
  const auto old_key = fx_key('o'), new_key = fx_key('n');
  graph(root, old_key, {"k"});
  store.sync();
  auto record = [&](const std::string& key, const std::string& rows) {
    nlohmann::json j;
    j["kind"] = "fxgraph";
    j["key"] = key;
    j["components"] = {"[h1] gm: graph", "[s" + rows + "] example_inputs[0]: TensorMetadata(dtype=torch.float32, shape=torch.Size([" + rows + ", 64]))",
                       "[c0] inductor_config[max_autotune]: False", "[t1] torch_version: 2.13.0"};
    write_text(root / "keys" / "fxgraph" / (key + ".json"), j.dump());
  };
  record(old_key, "8");
  record(new_key, "9");
  nlohmann::json run;
  run["format"] = "mithril-run";
  run["events"] = {{{"kind", "fxgraph"}, {"key", new_key}, {"state", "miss"}}};
  write_text(root / "runs" / "100-1.json", run.dump());
  const auto xs = store.explain();
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_EQ(xs[0].nearest, old_key);
  EXPECT_EQ(xs[0].same, 3u);
  ASSERT_EQ(xs[0].differences.size(), 1u);
  EXPECT_EQ(xs[0].differences[0].component, "example_inputs[0]");
  EXPECT_EQ(xs[0].differences[0].category, "input shapes/dtypes");
  EXPECT_NE(xs[0].differences[0].ours.find("[9, 64]"), std::string::npos);
  const auto counts = store.last_run().counts();
  EXPECT_EQ(counts.at("fxgraph").at("miss"), 1);
  EXPECT_THROW(store.explain("nosuchkey"), Error);
}
