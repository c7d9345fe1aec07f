// cache/store_impl.hpp — Store's private state, shared by the files that
// implement it (store.cpp: open, stats, CAS entries, gc, clear, verify;
// sync.cpp: scanning and ingest; bundle.cpp: export and import).
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "cache/content_store.hpp"
#include "cache/index.hpp"
#include "cache/manifest.hpp"
#include "cache/remote_tier.hpp"
#include "cache/scanner.hpp"
#include "mithril/cache.hpp"
#include "util/posix.hpp"

namespace mithril::cache {

// A work directory in tmp/ where an entry that came from elsewhere is
// assembled ("<work>/entry/<file path>") before it is renamed into place;
// removed with everything left in it on destruction.
struct StagedEntry {
  explicit StagedEntry(const std::filesystem::path& tmp);
  ~StagedEntry();
  StagedEntry(const StagedEntry&) = delete;
  StagedEntry& operator=(const StagedEntry&) = delete;
  // Creates the staged file rel (a safe relative path) and its directories,
  // never through a symbolic link.
  util::UniqueFd create(const std::string& rel, bool executable);

  std::filesystem::path work, dir;
};

struct Store::Impl {
  explicit Impl(CacheConfig c);
  // Flushes uploads and records the remote counters.
  ~Impl();

  CacheConfig config;
  std::filesystem::path root;
  std::filesystem::path inductor, triton, cas_dir, tmp, trash, quarantine;
  Index index;
  ContentStore cas;
  bool hit_tracking = false;

  // Manifest of an indexed entry; nullopt when its blob is missing/corrupt.
  std::optional<Manifest> load_manifest(const EntryRow& row);
  // Builds the manifest of a framework entry from the files on disk.
  // nullopt when the entry is incomplete (a file vanished, a Triton group
  // names a missing child) or points out of the store (foreign).
  std::optional<Manifest> build_manifest(const Candidate& c, bool& foreign);
  // Bytes of a framework file as stored in manifests and bundles (Triton
  // groups normalised). Throws when the file cannot be read.
  util::ByteVector portable_bytes(const Manifest& m, const ManifestFile& f);

  // Deletes the files of rows already removed from the index.
  void remove_entry_files(const EntryRow& row);
  void remove_orphan_blobs(const std::vector<std::string>& digests);
  // Moves an entry's files to quarantine/ and unindexes it.
  void quarantine_entry(const EntryRow& row, std::string_view why);
  GcReport enforce(std::uint64_t max_size, std::int64_t older_than_ns);

  void relocate_if_moved();
  void detect_hit_tracking();

  // Checks the files of an entry that came from elsewhere (sizes, Triton
  // groups naming only files of their own entry); returns a problem.
  std::optional<std::string> check_entry_files(const Manifest& m, const std::vector<util::ByteVector>& data);
  // The check of one Triton group file (portable form): valid, normalised,
  // naming only files of its own entry.
  std::optional<std::string> check_group_file(const Manifest& m, const ManifestFile& f, util::ByteSpan bytes);
  // Adds a complete, checked entry (files in manifest order, portable form):
  // CAS entries into the CAS, framework entries assembled in tmp/ and
  // renamed into place. Counts `counter` for its kind. False when the entry
  // (or an untracked copy) is already there.
  bool place_entry(const Manifest& m, const std::vector<util::ByteVector>& data, std::string_view counter);
  // The same for an entry whose files are already staged (on-disk form:
  // Triton groups materialised; CAS entries: raw bytes). A group of files
  // (module, single inductor file) lands whole or not at all.
  bool place_staged(const Manifest& m, StagedEntry& staged, std::string_view counter);
  // Indexes a CAS entry whose blobs are stored.
  bool index_cas_entry(const Manifest& m, std::string_view counter);

  // A local miss of a CAS entry: read-through to the remotes, backfilling
  // the local store.
  std::optional<NamedFiles> remote_get(const std::string& id);
  // Moves the remote tier's counters into the index.
  void persist_remote_counters();
  RemoteStats remote_session;

  // Last: destroyed first, while the CAS its uploader reads still exists.
  std::unique_ptr<RemoteTier> remote;
};

// Bytes of a framework file as stored in manifests, bundles and remotes
// (Triton groups normalised). Throws when the file cannot be read.
util::ByteVector portable_file_bytes(const std::filesystem::path& root, const std::filesystem::path& triton,
                                     const Manifest& m, const ManifestFile& f);

std::string id_for_cas(std::string_view kind, std::string_view name);

// The `kind` under which remote-tier counters live in the stats table.
inline constexpr std::string_view k_remote_stats_kind = "remote";

}  // namespace mithril::cache
