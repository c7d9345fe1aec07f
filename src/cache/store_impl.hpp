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
#include "cache/scanner.hpp"
#include "mithril/cache.hpp"

namespace mithril::cache {

struct Store::Impl {
  explicit Impl(CacheConfig c);

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
};

std::string id_for_cas(std::string_view kind, std::string_view name);

}  // namespace mithril::cache
