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
  std::vector<std::string> remotes;  // --remote (replaces MITHRIL_CACHE_REMOTE)
  bool read_only = false;            // --read-only
  std::string endpoint;              // --endpoint
};

cache::CacheConfig config_for(const CacheOptions& o) {
  auto cfg = cache::load_config(o.dir.empty() ? std::nullopt : std::optional<std::filesystem::path>(o.dir));
  if (!o.remotes.empty()) cfg.remotes = o.remotes;
  if (o.read_only) cfg.remote_read_only = true;
  if (!o.endpoint.empty()) cfg.remote_endpoint = o.endpoint;
  return cfg;
}

cache::Store open_store(const CacheOptions& o) { return cache::Store(config_for(o)); }

void print_remote_session(const cache::Store& store, const GlobalOptions& g) {
  if (!store.has_remote() || g.quiet) return;
  const auto r = store.remote_session();
  if (r.hits + r.misses + r.uploads + r.errors == 0) return;
  fmt::print(stderr, "mithril cache: remote: {} fetched ({}), {} uploaded ({}){}\n", r.hits,
             format_size(static_cast<std::uint64_t>(r.bytes_down)), r.uploads,
             format_size(static_cast<std::uint64_t>(r.bytes_up)),
             r.errors ? fmt::format(", {} error{}", r.errors, r.errors == 1 ? "" : "s") : "");
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

std::string rate_text(std::int64_t hits, std::int64_t misses) {
  return hits + misses ? fmt::format("{:.1f}%", 100.0 * static_cast<double>(hits) / static_cast<double>(hits + misses)) : "-";
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
  const auto& r = s.remote;
  if (r.hits + r.misses + r.errors + r.uploads > 0)
    fmt::print("remote:    {} hits, {} misses, {} errors; {} uploads; {} up, {} down\n", r.hits, r.misses, r.errors,
               r.uploads, format_size(static_cast<std::uint64_t>(r.bytes_up)),
               format_size(static_cast<std::uint64_t>(r.bytes_down)));
  fmt::print("\n{:<22} {:>8} {:>11} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}\n", "kind", "entries", "size", "hits", "misses",
             "puts", "evictions", "hit rate", "last run");
  for (const auto& [kind, k] : s.kinds) {
    if (k.entries == 0 && k.counters.empty()) continue;
    const auto h = get(k.counters, "hits"), m = get(k.counters, "misses");
    std::string last = "-";
    if (auto it = s.last_sync.find(kind); it != s.last_sync.end()) last = rate_text(get(it->second, "hits"), get(it->second, "misses"));
    fmt::print("{:<22} {:>8} {:>11} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}\n", kind, k.entries, format_size(k.bytes), h, m,
               get(k.counters, "puts"), get(k.counters, "evictions"), rate_text(h, m), last);
  }
  if (!s.last_run.empty()) {
    // What torch itself reported for the last run: exact, per lookup.
    fmt::print("\nlast run, torch's lookups (mithril cache explain: why each missed)\n");
    fmt::print("{:<22} {:>8} {:>8} {:>8} {:>9}\n", "lookup", "hits", "misses", "bypass", "hit rate");
    for (const auto& [kind, c] : s.last_run)
      fmt::print("{:<22} {:>8} {:>8} {:>8} {:>9}\n", kind, get(c, "hit"), get(c, "miss"), get(c, "bypass"),
                 rate_text(get(c, "hit"), get(c, "miss") + get(c, "bypass")));
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
    const auto h = k.counters.count("hits") ? k.counters.at("hits") : 0;
    const auto m = k.counters.count("misses") ? k.counters.at("misses") : 0;
    if (h + m) jk["hit_rate"] = static_cast<double>(h) / static_cast<double>(h + m);
    kinds[kind] = std::move(jk);
  }
  j["kinds"] = std::move(kinds);
  j["last_sync"] = s.last_sync;
  auto last_run = nlohmann::json::object();
  for (const auto& entry : s.last_run) {  // (clang 14 cannot capture structured bindings)
    const auto& kind = entry.first;
    const auto& c = entry.second;
    nlohmann::json jk = c;
    const auto get = [&](const char* k) { return c.count(k) ? c.at(k) : 0; };
    const auto n = get("hit") + get("miss") + get("bypass");
    if (n) jk["hit_rate"] = static_cast<double>(get("hit")) / static_cast<double>(n);
    last_run[kind] = std::move(jk);
  }
  j["last_run"] = std::move(last_run);
  j["remote"] = {{"hits", s.remote.hits},         {"misses", s.remote.misses},     {"errors", s.remote.errors},
                 {"uploads", s.remote.uploads},   {"bytes_up", s.remote.bytes_up}, {"bytes_down", s.remote.bytes_down}};
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
  cache_cmd->add_option("--remote", opts->remotes,
                        "Remote tier URL, redis://HOST:PORT/DB[/PREFIX] or s3://BUCKET[/PREFIX] (repeatable; "
                        "default: $MITHRIL_CACHE_REMOTE, comma-separated)");
  cache_cmd->add_flag("--read-only", opts->read_only, "Fetch from the remote tiers, never upload ($MITHRIL_CACHE_REMOTE_READONLY)");
  cache_cmd->add_option("--endpoint", opts->endpoint, "S3 endpoint URL for s3:// remotes (default: $AWS_ENDPOINT_URL)");

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
    if (store.has_remote()) {
      try {
        store.pull_remote();
      } catch (const Error& e) {
        fmt::print(stderr, "mithril cache: warning: fetching from the remote tiers failed: {}\n", e.what());
      }
    }
    store.begin_run();
    const int status = cache::run_command(argv, store.environment());
    try {
      auto report = store.sync();
      auto gc = store.enforce_limit();
      store.flush_remote();  // uploads end with the process, not later
      if (!global.quiet) print_sync_report(report, &gc, store.stats());
      print_remote_session(store, global);
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
    store.flush_remote();
    if (*sync_json_flag) print_json(sync_json(report), 2);
    else if (!global.quiet) print_sync_report(report, &gc, store.stats());
    if (!*sync_json_flag) print_remote_session(store, global);
  });

  // pull / push
  auto* pull = cache_cmd->add_subcommand("pull", "Fetch the Inductor/Triton entries the remote tiers hold and the store lacks");
  pull->callback([opts, &global] {
    auto store = open_store(*opts);
    if (!store.has_remote()) throw Error(Errc::invalid_argument, "cache pull: no remote tier (set MITHRIL_CACHE_REMOTE or --remote)");
    const auto r = store.pull_remote();
    if (!global.quiet)
      fmt::print("fetched {} entries ({}); {} not placed\n", r.entries, format_size(r.bytes), r.skipped);
  });
  auto* push = cache_cmd->add_subcommand("push", "Upload every entry the remote tiers lack");
  push->callback([opts, &global] {
    auto store = open_store(*opts);
    if (!store.has_remote()) throw Error(Errc::invalid_argument, "cache push: no remote tier (set MITHRIL_CACHE_REMOTE or --remote)");
    store.sync();
    const auto queued = store.push_remote();
    store.flush_remote();
    const auto r = store.remote_session();
    if (!global.quiet)
      fmt::print("uploaded {} of {} entries ({}){}\n", r.uploads, queued, format_size(static_cast<std::uint64_t>(r.bytes_up)),
                 r.errors ? fmt::format("; {} errors", r.errors) : "");
  });

  // stats
  auto stats_as_json = std::make_shared<bool>(false);
  auto* stats = cache_cmd->add_subcommand("stats", "Show entries, size, hits, misses and evictions");
  stats->add_flag("--json", *stats_as_json, "Machine-readable output");
  stats->callback([opts, stats_as_json] {
    auto store = open_store(*opts);
    const auto s = store.stats();
    if (*stats_as_json) print_json(stats_json(s), 2);
    else print_stats_text(s);
  });

  // explain
  auto explain_key = std::make_shared<std::string>();
  auto explain_json = std::make_shared<bool>(false);
  auto* explain = cache_cmd->add_subcommand("explain", "Why torch.compile's cache lookups missed in the last run (or why KEY differs)");
  explain->add_option("key", *explain_key, "A recorded FX-graph / AOTAutograd / precompile key (default: the last run's misses)");
  explain->add_flag("--json", *explain_json, "Machine-readable output");
  explain->callback([opts, explain_key, explain_json] {
    auto store = open_store(*opts);
    const auto run = store.last_run();
    const auto xs = store.explain(*explain_key);
    if (*explain_json) {
      auto arr = nlohmann::json::array();
      for (const auto& x : xs) {
        auto diffs = nlohmann::json::array();
        for (const auto& d : x.differences)
          diffs.push_back({{"component", d.component}, {"ours", d.ours}, {"nearest", d.nearest}, {"category", d.category}});
        arr.push_back({{"kind", x.lookup.kind}, {"key", x.lookup.key}, {"state", x.lookup.state}, {"reason", x.lookup.reason},
                       {"nearest", x.nearest}, {"same", x.same}, {"total", x.total}, {"differences", diffs}, {"note", x.note}});
      }
      nlohmann::json j = {{"run_files", run.files}, {"counts", run.counts()}, {"explanations", arr}};
      print_json(j, 2);
      return;
    }
    if (explain_key->empty()) {
      if (run.files.empty()) {
        fmt::print("no run recorded in this store yet (runs are recorded by Python processes under "
                   "`mithril cache exec` or `mithril.cache.init()`)\n");
        return;
      }
      std::string counts;
      for (const auto& [kind, c] : run.counts())
        for (const auto& [state, n] : c) counts += fmt::format("{}{} {} {}", counts.empty() ? "" : ", ", n, kind, state);
      fmt::print("last run ({} process{}): {}\n", run.files.size(), run.files.size() == 1 ? "" : "es", counts);
      if (xs.empty()) fmt::print("every lookup hit\n");
    }
    for (const auto& x : xs) {
      fmt::print("\n{} {} {}\n", x.lookup.kind, x.lookup.key, x.lookup.state);
      if (!x.note.empty()) fmt::print("  {}\n", x.note);
      if (x.nearest.empty()) continue;
      fmt::print("  nearest entry in the store: {} ({} of {} key components equal)\n", x.nearest, x.same, x.total);
      for (const auto& d : x.differences)
        fmt::print("  differs: {} [{}]\n    this:    {}\n    nearest: {}\n", d.component, d.category,
                   d.ours.empty() ? "(absent)" : d.ours, d.nearest.empty() ? "(absent)" : d.nearest);
    }
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
    auto cfg = config_for(*opts);
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
    store.flush_remote();
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
