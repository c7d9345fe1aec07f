// cli/cmd_cache.cpp — `mithril cache ...`: the compile-cache commands.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "mithril/cache.hpp"

namespace mithril::cli {
namespace {

using cache::format_size;

struct CacheOptions {
  std::string dir;  // --dir; empty = MITHRIL_CACHE_DIR / default
};

cache::Store open_store(const CacheOptions& o) {
  auto cfg = cache::load_config(o.dir.empty() ? std::nullopt : std::optional<std::filesystem::path>(o.dir));
  return cache::Store(std::move(cfg));
}

std::string kinds_line(const std::map<std::string, std::int64_t>& m) {
  std::string s;
  for (const auto& [k, v] : m) s += fmt::format("{}{} {}", s.empty() ? "" : ", ", v, k);
  return s;
}

std::int64_t sum(const std::map<std::string, std::int64_t>& m) {
  std::int64_t n = 0;
  for (const auto& [k, v] : m) n += v;
  return n;
}

std::vector<std::byte> read_input(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(Errc::not_found, path + ": cannot open");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(s.size());
  std::memcpy(out.data(), s.data(), s.size());
  return out;
}

void print_stats_text(const cache::StoreStats& s) {
  fmt::print("store:     {}\n", s.root);
  fmt::print("entries:   {}\n", s.entries);
  fmt::print("size:      {} of {} ({:.1f}%)\n", format_size(s.bytes), format_size(s.max_size),
             s.max_size ? 100.0 * static_cast<double>(s.bytes) / static_cast<double>(s.max_size) : 0.0);
  auto get = [](const std::map<std::string, std::int64_t>& m, const char* k) {
    auto it = m.find(k);
    return it == m.end() ? std::int64_t{0} : it->second;
  };
  const auto hits = get(s.totals, "hits"), misses = get(s.totals, "misses");
  fmt::print("hits:      {}{}\n", hits, s.hit_tracking ? "" : " (access times not tracked on this file system)");
  fmt::print("misses:    {}\n", misses);
  if (hits + misses > 0) fmt::print("hit rate:  {:.1f}%\n", 100.0 * static_cast<double>(hits) / static_cast<double>(hits + misses));
  fmt::print("evictions: {} ({})\n", get(s.totals, "evictions"), format_size(static_cast<std::uint64_t>(get(s.totals, "evicted_bytes"))));
  if (get(s.totals, "corrupt")) fmt::print("corrupt:   {} (quarantined)\n", get(s.totals, "corrupt"));
  fmt::print("\n{:<22} {:>8} {:>11} {:>8} {:>8} {:>8} {:>9}\n", "kind", "entries", "size", "hits", "misses", "puts", "evictions");
  for (const auto& [kind, k] : s.kinds) {
    if (k.entries == 0 && k.counters.empty()) continue;
    fmt::print("{:<22} {:>8} {:>11} {:>8} {:>8} {:>8} {:>9}\n", kind, k.entries, format_size(k.bytes), get(k.counters, "hits"),
               get(k.counters, "misses"), get(k.counters, "puts"), get(k.counters, "evictions"));
  }
}

nlohmann::json stats_json(const cache::StoreStats& s) {
  nlohmann::json j;
  j["root"] = s.root;
  j["entries"] = s.entries;
  j["bytes"] = s.bytes;
  j["max_size"] = s.max_size;
  j["max_entries"] = s.max_entries;
  j["hit_tracking"] = s.hit_tracking;
  j["totals"] = s.totals;
  auto kinds = nlohmann::json::object();
  for (const auto& [kind, k] : s.kinds) {
    nlohmann::json jk = k.counters;
    jk["entries"] = k.entries;
    jk["bytes"] = k.bytes;
    kinds[kind] = std::move(jk);
  }
  j["kinds"] = std::move(kinds);
  return j;
}

nlohmann::json sync_json(const cache::SyncReport& r) {
  return {{"hits", r.hits}, {"misses", r.misses}, {"updated", r.updated}, {"vanished", r.vanished},
          {"incomplete", r.incomplete}, {"unrecognised", r.unrecognised}, {"foreign", r.foreign},
          {"hit_tracking", r.hit_tracking}};
}

void print_sync_report(const cache::SyncReport& r, const cache::GcReport* gc, const cache::StoreStats& s) {
  std::string hits = r.hit_tracking ? fmt::format("{} hit{}", sum(r.hits), sum(r.hits) == 1 ? "" : "s") : "hits not tracked";
  if (r.hit_tracking && !r.hits.empty()) hits += " (" + kinds_line(r.hits) + ")";
  std::string misses = fmt::format("{} new entr{}", sum(r.misses), sum(r.misses) == 1 ? "y" : "ies");
  if (!r.misses.empty()) misses += " (" + kinds_line(r.misses) + ")";
  fmt::print(stderr, "mithril cache: {}, {}; store {} in {} entries (limit {})\n", hits, misses, format_size(s.bytes),
             s.entries, format_size(s.max_size));
  if (gc && gc->evicted) fmt::print(stderr, "mithril cache: evicted {} entries ({})\n", gc->evicted, format_size(gc->evicted_bytes));
  if (!r.unrecognised.empty()) {
    std::string names;
    for (const auto& u : r.unrecognised) names += (names.empty() ? "" : ", ") + u;
    fmt::print(stderr, "mithril cache: unrecognised artifacts (tracked as inductor-other): {}\n", names);
  }
  if (!r.foreign.empty())
    fmt::print(stderr, "mithril cache: {} Triton group(s) point outside the store; not tracked\n", r.foreign.size());
}

}  // namespace

void register_cache_commands(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  auto opts = std::make_shared<CacheOptions>();
  auto* cache_cmd = app.add_subcommand("cache", "torch.compile cache: a bounded, shareable, verifiable store");
  cache_cmd->require_subcommand(1);
  cache_cmd->add_option("--dir", opts->dir, "Store directory (default: $MITHRIL_CACHE_DIR or ~/.cache/mithril)");

  // exec
  auto* exec = cache_cmd->add_subcommand("exec", "Run CMD with torch.compile's caches in the store, then ingest what it produced");
  // Everything after `--` (or after the first non-option) is the command.
  // CLI11 2.1 files the `--` marker itself among the remaining arguments.
  auto exec_args = std::make_shared<std::vector<std::string>>();
  exec->add_option("command", *exec_args, "Command and its arguments (after --)");
  exec->prefix_command();
  exec->callback([opts, exec_args, exec, &global, &exit_code] {
    std::vector<std::string> argv = *exec_args;
    auto rest = exec->remaining();
    if (!rest.empty() && rest.front() == "--") rest.erase(rest.begin());
    argv.insert(argv.end(), rest.begin(), rest.end());
    if (argv.empty()) throw Error(Errc::invalid_argument, "cache exec: no command given");
    auto store = open_store(*opts);
    const int status = cache::run_command(argv, store.environment());
    try {
      auto report = store.sync();
      auto gc = store.enforce_limit();
      if (!global.quiet) print_sync_report(report, &gc, store.stats());
    } catch (const Error& e) {
      fmt::print(stderr, "mithril cache: warning: ingest failed: {}\n", e.what());
    }
    exit_code = status;
  });

  // env
  auto* env = cache_cmd->add_subcommand("env", "Print export lines that point torch.compile at the store");
  env->callback([opts] {
    auto store = open_store(*opts);
    for (const auto& [k, v] : store.environment()) {
      std::string quoted = "'";
      for (char c : v) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
      quoted += "'";
      fmt::print("export {}={}\n", k, quoted);
    }
  });

  // sync
  auto sync_full = std::make_shared<bool>(false);
  auto sync_json_flag = std::make_shared<bool>(false);
  auto* sync = cache_cmd->add_subcommand("sync", "Ingest what torch.compile left in the store's directories");
  sync->add_flag("--full", *sync_full, "List every directory, not only changed ones");
  sync->add_flag("--json", *sync_json_flag, "Report as JSON");
  sync->callback([opts, sync_full, sync_json_flag, &global] {
    auto store = open_store(*opts);
    auto report = store.sync(*sync_full);
    auto gc = store.enforce_limit();
    if (*sync_json_flag) fmt::print("{}\n", sync_json(report).dump(2));
    else if (!global.quiet) print_sync_report(report, &gc, store.stats());
  });

  // stats
  auto stats_as_json = std::make_shared<bool>(false);
  auto* stats = cache_cmd->add_subcommand("stats", "Show entries, size, hits, misses and evictions");
  stats->add_flag("--json", *stats_as_json, "Machine-readable output");
  stats->callback([opts, stats_as_json] {
    auto store = open_store(*opts);
    const auto s = store.stats();
    if (*stats_as_json) fmt::print("{}\n", stats_json(s).dump(2));
    else print_stats_text(s);
  });

  // gc
  auto gc_max = std::make_shared<std::string>();
  auto gc_age = std::make_shared<std::string>();
  auto* gc = cache_cmd->add_subcommand("gc", "Evict least-recently-used entries to the size limit");
  gc->add_option("--max-size", *gc_max, "Size limit for this run (e.g. 5G); default: the configured one");
  gc->add_option("--older-than", *gc_age, "Also evict entries unused for this long (e.g. 7d)");
  gc->callback([opts, gc_max, gc_age, &global] {
    auto store = open_store(*opts);
    cache::GcOptions o;
    if (!gc_max->empty()) o.max_size = cache::parse_size(*gc_max);
    if (!gc_age->empty()) o.older_than_s = cache::parse_age_seconds(*gc_age);
    const auto r = store.gc(o);
    if (!global.quiet)
      fmt::print("evicted {} entries ({}); {} entries, {} remain\n", r.evicted, format_size(r.evicted_bytes), r.entries,
                 format_size(r.bytes));
  });

  // clear
  auto* clear = cache_cmd->add_subcommand("clear", "Remove every entry (statistics are kept)");
  clear->callback([opts, &global] {
    auto store = open_store(*opts);
    store.clear();
    if (!global.quiet) fmt::print("cleared {}\n", store.config().root.string());
  });

  // verify
  auto* verify = cache_cmd->add_subcommand("verify", "Re-hash every entry; quarantine corrupt ones (exit 1 if any)");
  verify->callback([opts, &global, &exit_code] {
    auto store = open_store(*opts);
    store.sync();
    const auto r = store.verify();
    for (const auto& c : r.corrupt) fmt::print("corrupt: {}\n", c);
    if (!global.quiet)
      fmt::print("verified {} entries, {} files, {}: {} corrupt\n", r.entries, r.files, format_size(r.bytes), r.corrupt.size());
    if (!r.corrupt.empty()) exit_code = 1;
  });

  // export / import
  auto bundle_out = std::make_shared<std::string>();
  auto* exp = cache_cmd->add_subcommand("export", "Write every entry to a portable bundle (.tar.zst)");
  exp->add_option("bundle", *bundle_out, "Output bundle")->required();
  exp->callback([opts, bundle_out, &global] {
    auto store = open_store(*opts);
    store.sync();
    const auto r = store.export_bundle(*bundle_out);
    for (const auto& p : r.problems) fmt::print(stderr, "mithril cache: skipped {}\n", p);
    if (!global.quiet)
      fmt::print("exported {} entries, {} files, {} -> {} ({})\n", r.entries, r.files, format_size(r.bytes), *bundle_out,
                 format_size(r.bundle_bytes));
  });
  auto bundle_in = std::make_shared<std::string>();
  auto member_limit = std::make_shared<std::string>();
  auto* imp = cache_cmd->add_subcommand("import", "Add the entries of a bundle to the store");
  imp->add_option("bundle", *bundle_in, "Bundle to import")->required()->check(CLI::ExistingFile);
  imp->add_option("--max-member-size", *member_limit, "Refuse bundle members larger than this (default 4G)");
  imp->callback([opts, bundle_in, member_limit, &global] {
    auto cfg = cache::load_config(opts->dir.empty() ? std::nullopt : std::optional<std::filesystem::path>(opts->dir));
    if (!member_limit->empty()) cfg.max_import_member = cache::parse_size(*member_limit);
    cache::Store store(std::move(cfg));
    const auto r = store.import_bundle(*bundle_in);
    if (!global.quiet)
      fmt::print("imported {} entries, {} files, {}; {} already present\n", r.entries, r.files, format_size(r.bytes), r.skipped);
  });

  // put / get (Mega-Cache and generic blobs)
  auto put_kind = std::make_shared<std::string>();
  auto put_name = std::make_shared<std::string>();
  auto put_files = std::make_shared<std::vector<std::string>>();
  auto* put = cache_cmd->add_subcommand("put", "Store files as one CAS entry (kind megacache or blob)");
  put->add_option("kind", *put_kind, "megacache or blob")->required();
  put->add_option("name", *put_name, "Entry name (e.g. a cache key)")->required();
  put->add_option("files", *put_files, "Files (stored under their base names)")->required();
  put->callback([opts, put_kind, put_name, put_files] {
    cache::NamedFiles files;
    for (const auto& f : *put_files) files.emplace_back(std::filesystem::path(f).filename().string(), read_input(f));
    auto store = open_store(*opts);
    store.put(*put_kind, *put_name, files);
  });
  auto get_kind = std::make_shared<std::string>();
  auto get_name = std::make_shared<std::string>();
  auto get_out = std::make_shared<std::string>();
  auto* get = cache_cmd->add_subcommand("get", "Fetch a CAS entry's files into a directory (exit 1 on a miss)");
  get->add_option("kind", *get_kind, "megacache or blob")->required();
  get->add_option("name", *get_name, "Entry name")->required();
  get->add_option("-o,--output", *get_out, "Output directory (default: .)");
  get->callback([opts, get_kind, get_name, get_out, &exit_code] {
    auto store = open_store(*opts);
    auto files = store.get(*get_kind, *get_name);
    if (!files) {
      fmt::print(stderr, "mithril cache: miss: {} {}\n", *get_kind, *get_name);
      exit_code = 1;
      return;
    }
    const std::filesystem::path dir = get_out->empty() ? "." : *get_out;
    std::filesystem::create_directories(dir);
    for (const auto& [name, data] : *files) {
      const auto p = dir / name;
      std::filesystem::create_directories(p.parent_path());
      std::ofstream out(p, std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
      if (!out) throw Error(Errc::io, p.string() + ": cannot write");
    }
  });

  // key
  auto key_spec = std::make_shared<std::string>();
  auto key_canonical = std::make_shared<bool>(false);
  auto* key = cache_cmd->add_subcommand("key", "Compute the storage key of a cache-key spec (JSON; - for stdin)");
  key->add_option("spec", *key_spec, "JSON spec file")->required();
  key->add_flag("--canonical", *key_canonical, "Also print the canonical serialization");
  key->callback([key_spec, key_canonical] {
    std::string text;
    if (*key_spec == "-") {
      std::stringstream ss;
      ss << std::cin.rdbuf();
      text = ss.str();
    } else {
      const auto b = read_input(*key_spec);
      text.assign(reinterpret_cast<const char*>(b.data()), b.size());
    }
    const auto k = cache::compute_key(text);
    if (*key_canonical) fmt::print("{}", k.canonical);
    fmt::print("{}\n", k.hex);
  });
}

}  // namespace mithril::cli
