// mithril/cache.hpp — the compile cache: a bounded, shareable, verifiable
// store for torch.compile's on-disk caches (TorchInductor, Triton) and for
// opaque artifacts (PyTorch Mega-Cache bytes, generic blobs).
//
// Store layout (docs/cache.md has the details):
//   ROOT/index.sqlite       entries, LRU, statistics (SQLite, WAL)
//   ROOT/cas/xy/<blake3>    content-addressed blobs: manifests, CAS entries
//   ROOT/inductor/          TORCHINDUCTOR_CACHE_DIR, in Inductor's own layout
//   ROOT/triton/            TRITON_CACHE_DIR, in Triton's own layout
//   ROOT/tmp, trash, quarantine
//   ROOT/config             optional "key = value" settings
//
// The frameworks read and write their directories directly; the store tracks
// what they leave there as whole entries (sync), detects which entries were
// read (hits) from access times, evicts least-recently-used entries whole,
// and moves everything as portable bundles.
//
// Remote tiers (docs/cache.md, "Remote tiers"): with CacheConfig::remotes
// set, a local miss of a CAS entry asks the remotes (read-through, verified,
// backfilled locally), pull_remote() fetches the framework entries a remote
// holds, and new entries are uploaded by a background thread. A remote that
// fails is switched off for the rest of the process with one warning; no
// Store call fails because a remote is down.
//
// Errors: every function throws mithril::Error (error.hpp) with context.
// Thread-safety: a Store is used by one thread at a time; any number of
// Stores — in one or many processes — may share a root.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mithril/error.hpp"

namespace mithril::cache {

struct CacheConfig {
  std::filesystem::path root;
  std::uint64_t max_size = std::uint64_t{10} << 30;    // bytes of entries kept
  std::uint64_t max_entries = 0;                      // 0 = no count limit
  std::uint64_t max_import_member = std::uint64_t{4} << 30;  // bundle member limit
  std::int64_t eviction_grace_s = 0;  // entries used this recently are never evicted
  int bundle_level = 3;               // zstd level for export
  // Remote tiers: "redis://host:port/db[/prefix]", "s3://bucket[/prefix]",
  // "file:///dir"; reads ask them in order (first hit wins), uploads go to all.
  std::vector<std::string> remotes;
  bool remote_read_only = false;  // fetch, never upload (CI consumers)
  std::string remote_endpoint;    // S3 endpoint URL for s3:// remotes (else AWS_ENDPOINT_URL)
};

// Settings, lowest precedence first: built-in defaults; ROOT/config
// ("max_size = 20G", "max_entries = 100000", "max_import_member = 1G",
// "eviction_grace = 60s", "bundle_level = 9", "remote = redis://h/0,s3://b/p",
// "remote_read_only = true"; '#' comments); the environment
// (MITHRIL_CACHE_MAX_SIZE, MITHRIL_CACHE_REMOTE as a comma-separated list,
// MITHRIL_CACHE_REMOTE_READONLY = 1/true/yes or 0/false/no). ROOT is `root` when given, else
// $MITHRIL_CACHE_DIR, else $XDG_CACHE_HOME/mithril, else ~/.cache/mithril.
CacheConfig load_config(const std::optional<std::filesystem::path>& root = std::nullopt);

// Canonical form and BLAKE3 key of a cache-key spec in JSON (see
// src/cache/cache_key.hpp for the fields and the frozen v1 format).
struct KeyInfo {
  std::string canonical;
  std::string hex;
};
KeyInfo compute_key(std::string_view json_spec);

struct KindStats {
  std::uint64_t entries = 0, bytes = 0;
  std::map<std::string, std::int64_t> counters;  // hits, misses, puts, bytes_put, evictions, ...
};

// Remote-tier counters: persisted in the index (StoreStats::remote) and per
// Store object (Store::remote_session()).
struct RemoteStats {
  std::int64_t hits = 0;        // entries fetched from a remote (read-through or pull)
  std::int64_t misses = 0;      // read-through lookups no remote could answer
  std::int64_t errors = 0;      // failed calls, corrupt remote objects
  std::int64_t uploads = 0;     // entries uploaded
  std::int64_t bytes_up = 0;    // bytes sent (blob images and manifests)
  std::int64_t bytes_down = 0;  // bytes received
};

// Hits and misses by kind, e.g. {"inductor-fxgraph": {"hits": 1, "misses": 0}}.
using KindCounts = std::map<std::string, std::map<std::string, std::int64_t>>;

struct StoreStats {
  KindCounts last_sync;   // what the last sync (e.g. the last `cache exec`) counted, by entry kind
  KindCounts last_run;    // the lookups torch reported in the last run (fxgraph, aotautograd,
                          // precompile: hit / miss / bypass), from the run records
  std::string root;
  std::uint64_t entries = 0, bytes = 0, max_size = 0, max_entries = 0;
  bool hit_tracking = false;  // access times work on this file system
  std::map<std::string, KindStats> kinds;
  std::map<std::string, std::int64_t> totals;  // counters summed over kinds
  RemoteStats remote;                          // all remote tiers, all processes
};

struct SyncReport {
  std::map<std::string, std::int64_t> hits;     // by kind: entries read since the last sync
  std::map<std::string, std::int64_t> misses;   // by kind: new entries
  std::map<std::string, std::int64_t> updated;  // by kind: entries whose files changed
  std::int64_t vanished = 0;                    // indexed entries gone from disk
  std::int64_t incomplete = 0;                  // framework entries still being written
  std::vector<std::string> unrecognised;        // inductor/<name> of unknown kinds
  std::vector<std::string> foreign;             // Triton groups pointing out of the store
  bool hit_tracking = false;
};

struct GcOptions {
  std::optional<std::uint64_t> max_size;    // default: the configured limit
  std::optional<std::int64_t> older_than_s; // also evict entries unused this long
};

struct GcReport {
  std::uint64_t evicted = 0, evicted_bytes = 0, orphan_blobs = 0;
  std::uint64_t entries = 0, bytes = 0;  // what remains
};

struct VerifyReport {
  std::uint64_t entries = 0, files = 0, bytes = 0;
  std::vector<std::string> corrupt;  // entry ids, now quarantined
};

struct BundleReport {
  std::uint64_t entries = 0, files = 0, bytes = 0;
  std::uint64_t bundle_bytes = 0;
  std::uint64_t skipped = 0;  // export: corrupt entries left out; import: already present
  std::vector<std::string> problems;
};

struct PullReport {
  std::uint64_t entries = 0, bytes = 0;  // fetched and placed
  std::uint64_t skipped = 0;             // not placed (present, invalid, over the size limit)
};

using NamedFiles = std::vector<std::pair<std::string, std::vector<std::byte>>>;

// One cache lookup torch reported in a process under the store (written by
// the Python package, mithril/_runlog.py, to STORE/runs/).
struct Lookup {
  std::string kind;   // "fxgraph", "aotautograd", "precompile"
  std::string key;
  std::string state;  // "hit", "miss", "bypass"
  std::string reason; // bypasses: why
};

struct RunRecord {
  std::vector<std::string> files;  // STORE/runs/*.json of the run (one per process)
  std::vector<Lookup> lookups;
  KindCounts counts() const;       // kind -> state -> n
};

// A key component that differs from the nearest recorded key of the same kind.
struct KeyDifference {
  std::string component;  // e.g. "inductor_config[max_autotune]", "example_inputs[0]"
  std::string ours, nearest;  // values ("" when absent on that side)
  std::string category;   // "input shapes/dtypes", "config flag", "torch version", "paths", ...
};

struct Explanation {
  Lookup lookup;
  std::string nearest;  // key of the nearest entry in the store ("" if none recorded)
  std::size_t same = 0, total = 0;  // components equal / compared
  std::vector<KeyDifference> differences;
  std::string note;     // when there is nothing to compare against
};

class TritonKernelCache;  // triton_cache.hpp

class Store {
 public:
  // Opens (creating if needed) the store at config.root. If the store was
  // moved or copied since it was last opened, rewrites Triton group files
  // for the new location first.
  explicit Store(CacheConfig config);
  ~Store();
  Store(Store&&) noexcept;
  Store& operator=(Store&&) noexcept;

  const CacheConfig& config() const noexcept;

  // Variables that point torch.compile at this store (TORCHINDUCTOR_CACHE_DIR,
  // TRITON_CACHE_DIR, the FX-graph and AOTAutograd cache switches).
  std::vector<std::pair<std::string, std::string>> environment() const;

  // Tracks what the frameworks left: new and changed entries become indexed
  // entries (a miss each), entries read since the last sync count as hits.
  // full = true lists every directory (default: skips unchanged ones).
  SyncReport sync(bool full = false);

  // Evicts least-recently-used entries, whole, to the size limit (and the
  // age limit when given); removes orphan blobs and stale temporaries.
  GcReport gc(const GcOptions& options = {});
  // Only the size/count limit, without a full scan (what `exec` runs after CMD).
  GcReport enforce_limit();
  // Removes every entry (statistics are kept).
  void clear();
  // Re-hashes every entry; corrupt ones are quarantined and unindexed.
  VerifyReport verify();

  // Portable bundle (.tar.zst) of every entry; written atomically.
  BundleReport export_bundle(const std::filesystem::path& bundle);
  // Imports a bundle. Refuses (Error corrupt) path traversal, links, members
  // over config().max_import_member and digests that do not match; entries
  // already present are skipped. Each entry appears whole or not at all.
  BundleReport import_bundle(const std::filesystem::path& bundle);

  StoreStats stats();

  // Run records (`cache explain`). begin_run() marks the start of a run
  // (`cache exec` calls it): the run records written after it form the last
  // run; without a mark, the newest record is.
  void begin_run();
  RunRecord last_run();
  // Why the last run's lookups missed (key empty), or why `key` differs from
  // the nearest other entry: the components PyTorch hashed into each key,
  // compared with the nearest recorded key of the same kind still in the store.
  std::vector<Explanation> explain(const std::string& key = {});

  // CAS entries, for opaque artifacts: kind is "megacache" or "blob", name a
  // plain file-name-like identifier (e.g. a cache-key hex). put() replaces an
  // existing entry of that name and then enforces the size limit.
  void put(std::string_view kind, std::string_view name, const NamedFiles& files);
  // The verified files of an entry, recording a hit; nullopt (a miss) when
  // absent or when any blob is corrupt (the entry is then quarantined).
  // A local miss asks the remote tiers; an entry found there is verified,
  // stored locally and returned.
  std::optional<NamedFiles> get(std::string_view kind, std::string_view name);

  // Remote tiers. Without configured remotes these do nothing.
  bool has_remote() const noexcept;
  // Fetches the framework entries (Inductor, Triton) the remotes hold and
  // this store lacks, up to the size limit; what `cache exec` runs first.
  PullReport pull_remote();
  // Queues every local entry for upload (entries a remote holds are skipped
  // there); returns how many were queued. No-op when read-only.
  std::uint64_t push_remote();
  // Waits until queued uploads are done (or their remote is switched off)
  // and records the remote counters. The destructor does the same.
  void flush_remote();
  // What this Store object moved through its remotes so far.
  RemoteStats remote_session() const;

 private:
  friend class TritonKernelCache;
  struct Impl;
  std::unique_ptr<Impl> m_impl;
};

// Runs argv[0] (searched in PATH) with `extra_env` added to this process's
// environment and waits for it. Returns its exit status, or 128 + N when
// killed by signal N, or 127 when it cannot be started. SIGINT and SIGQUIT
// reach the child (same process group); this process ignores them while
// waiting so that it can still ingest what the child produced.
int run_command(const std::vector<std::string>& argv,
                const std::vector<std::pair<std::string, std::string>>& extra_env);

// Helpers for the CLI.
std::uint64_t parse_size(std::string_view text);
std::int64_t parse_age_seconds(std::string_view text);
std::string format_size(std::uint64_t bytes);

}  // namespace mithril::cache
