// cache/explain.cpp — run records and miss explanations (`cache explain`,
// the last-run part of `cache stats`).
//
// Processes under the store (mithril/_runlog.py) write
//   STORE/runs/<start ns>-<pid>.json   {"format":"mithril-run","events":[{kind,key,state,reason?}]}
//   STORE/keys/<kind>/<key>.json       {"kind","key","components":["[hash] name: value", ...]}
// The components are PyTorch's own hash details of the key
// (FxGraphCachePickler.debug_lines: one line per attribute, dict attributes
// such as inductor_config one line per flag), or for precompile entries
// "name: value" lines. A miss is explained by the nearest recorded key of the
// same kind whose entry is still in the store: most equal components.
#include <algorithm>
#include <fstream>
#include <map>
#include <set>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "cache/fs_util.hpp"
#include "cache/store_impl.hpp"

namespace mithril::cache {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr std::string_view k_run_start_meta = "run_start_ns";

std::optional<json> read_json(const fs::path& p) {
  try {
    const auto bytes = read_file(p);
    return json::parse(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  } catch (const std::exception&) {
    return std::nullopt;  // a record being written, or damaged: ignored
  }
}

bool safe_name(const std::string& s) {
  return !s.empty() && s.size() < 200 && s.find('/') == std::string::npos && s.front() != '.';
}

// Entry id of a recorded key, to check it is still in the store.
std::string entry_id(const std::string& kind, const std::string& key) {
  if (kind == "fxgraph" && key.size() > 3) return "inductor/fxgraph/" + key.substr(1, 2) + "/" + key;
  if (kind == "aotautograd") return "inductor/aotautograd/" + key;
  if (kind == "precompile") return "inductor/dynamo/" + key;
  return {};
}

struct Component {
  std::string hash, value;
};

// "[hash] name: value" (torch's debug_lines) or "name: value".
std::map<std::string, Component> parse_components(const json& lines) {
  std::map<std::string, Component> out;
  if (!lines.is_array()) return out;
  for (const auto& l : lines) {
    if (!l.is_string()) continue;
    std::string s = l.get<std::string>();
    Component c;
    if (s.size() > 2 && s[0] == '[') {
      const auto close = s.find("] ");
      if (close != std::string::npos) {
        c.hash = s.substr(1, close - 1);
        s = s.substr(close + 2);
      }
    }
    const auto colon = s.find(": ");
    const std::string name = colon == std::string::npos ? s : s.substr(0, colon);
    c.value = colon == std::string::npos ? "" : s.substr(colon + 2);
    out[name] = c;
  }
  return out;
}

bool same(const Component& a, const Component& b) {
  return !a.hash.empty() && !b.hash.empty() ? a.hash == b.hash : a.value == b.value;
}

std::string category(const std::string& name, const std::string& a, const std::string& b) {
  auto has = [&](std::string_view s) { return name.find(s) != std::string::npos; };
  if (has("torch_version") || has("python_version")) return "torch/Python version";
  if (has("system_info")) return "system (device, compiler, Triton/CUDA version)";
  if (has("example_inputs") || has("inputs_to_check")) return "input shapes/dtypes";
  if (has("config") || has("fx_kwargs") || has("settings")) return "config flag";
  if (name == "code" || name == "first_line" || name == "function") return "the function's code";
  if (name == "gm" || has("graph")) return "the graph (code, or shapes/dtypes traced into it)";
  if (a.find('/') != std::string::npos || b.find('/') != std::string::npos) return "paths";
  return "other";
}

std::string clip(std::string s) {
  if (s.size() > 240) s = s.substr(0, 237) + "...";
  return s;
}

}  // namespace

KindCounts RunRecord::counts() const {
  KindCounts out;
  for (const auto& l : lookups) ++out[l.kind][l.state];
  return out;
}

void Store::begin_run() { m_impl->index.set_meta(k_run_start_meta, std::to_string(now_ns())); }

RunRecord Store::last_run() {
  auto& im = *m_impl;
  const auto dir = im.root / "runs";
  std::vector<std::pair<std::int64_t, fs::path>> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const auto name = e.path().filename().string();
    if (name.size() < 6 || name.substr(name.size() - 5) != ".json" || name.front() == '.') continue;
    try {
      files.emplace_back(std::stoll(name.substr(0, name.find('-'))), e.path());
    } catch (const std::exception&) {
    }
  }
  std::sort(files.begin(), files.end());
  RunRecord r;
  if (files.empty()) return r;
  std::int64_t since = files.back().first;
  if (auto m = im.index.meta(k_run_start_meta)) {
    try {
      const auto mark = std::stoll(*m);
      if (mark <= files.back().first) since = mark;
    } catch (const std::exception&) {
    }
  }
  for (const auto& [start, path] : files) {
    if (start < since) continue;
    auto j = read_json(path);
    if (!j || !j->is_object() || j->value("format", "") != "mithril-run") continue;
    r.files.push_back(path.string());
    for (const auto& e : j->value("events", json::array())) {
      if (!e.is_object()) continue;
      Lookup l;
      l.kind = e.value("kind", "");
      l.key = e.value("key", "");
      l.state = e.value("state", "");
      l.reason = e.value("reason", "");
      if (!l.kind.empty()) r.lookups.push_back(std::move(l));
    }
  }
  return r;
}

std::vector<Explanation> Store::explain(const std::string& key) {
  auto& im = *m_impl;
  std::vector<Lookup> todo;
  if (key.empty()) {
    for (auto& l : last_run().lookups)
      if (l.state != "hit") todo.push_back(std::move(l));
  } else {
    for (const char* kind : {"fxgraph", "aotautograd", "precompile"})
      if (safe_name(key) && fs::exists(im.root / "keys" / kind / (key + ".json")))
        todo.push_back({kind, key, "recorded", ""});
    if (todo.empty()) throw Error(Errc::not_found, "cache explain: no recorded key " + key + " in " + (im.root / "keys").string());
  }
  std::vector<Explanation> out;
  std::map<std::string, std::vector<std::pair<std::string, std::map<std::string, Component>>>> candidates;
  for (const auto& l : todo) {
    Explanation x;
    x.lookup = l;
    if (l.state == "bypass") x.note = "bypassed: " + (l.reason.empty() ? std::string("no reason given") : l.reason);
    const auto kdir = im.root / "keys" / l.kind;
    std::map<std::string, Component> ours;
    if (safe_name(l.key) && safe_name(l.kind))
      if (auto j = read_json(kdir / (l.key + ".json"))) ours = parse_components(j->value("components", json::array()));
    if (ours.empty()) {
      if (x.note.empty()) x.note = "no key components recorded for this lookup";
      out.push_back(std::move(x));
      continue;
    }
    if (!candidates.count(l.kind)) {
      auto& list = candidates[l.kind];
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(kdir, ec)) {
        auto name = e.path().filename().string();
        if (name.size() < 6 || name.substr(name.size() - 5) != ".json") continue;
        name.resize(name.size() - 5);
        const auto id = entry_id(l.kind, name);
        if (id.empty() || !im.index.find(id)) continue;  // evicted or never ingested
        if (auto j = read_json(e.path())) list.emplace_back(name, parse_components(j->value("components", json::array())));
      }
    }
    const std::pair<std::string, std::map<std::string, Component>>* best = nullptr;
    std::size_t best_same = 0;
    for (const auto& c : candidates[l.kind]) {
      if (c.first == l.key) continue;
      std::size_t n = 0;
      for (const auto& [name, comp] : ours)
        if (auto it = c.second.find(name); it != c.second.end() && same(comp, it->second)) ++n;
      if (!best || n > best_same) best = &c, best_same = n;
    }
    if (!best) {
      if (x.note.empty()) x.note = "nothing of this kind in the store to compare with (a first compile)";
      out.push_back(std::move(x));
      continue;
    }
    x.nearest = best->first;
    x.same = best_same;
    std::set<std::string> names;
    for (const auto& [n, c] : ours) names.insert(n);
    for (const auto& [n, c] : best->second) names.insert(n);
    x.total = names.size();
    for (const auto& n : names) {
      auto a = ours.find(n);
      auto b = best->second.find(n);
      if (a != ours.end() && b != best->second.end() && same(a->second, b->second)) continue;
      KeyDifference d;
      d.component = n;
      d.ours = a == ours.end() ? "" : clip(a->second.value);
      d.nearest = b == best->second.end() ? "" : clip(b->second.value);
      d.category = category(n, d.ours, d.nearest);
      x.differences.push_back(std::move(d));
    }
    out.push_back(std::move(x));
  }
  return out;
}

}  // namespace mithril::cache
