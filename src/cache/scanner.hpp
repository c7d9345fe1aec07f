// cache/scanner.hpp — finds the entries that torch.compile left in the
// framework directories of a store, in the frameworks' own layout:
//
//   inductor/fxgraph/<xy>/<key>/<entry files>   one entry per <key> directory
//   inductor/aotautograd/<key>/<entry files>    one entry per <key> directory
//   inductor/<xy>/<stem>.py|.cpp|.so|.json|...  one entry per stem (a module
//                                               and its companions)
//   inductor/locks/                             skipped (lock files)
//   inductor/<anything else>                    inductor-other, one entry per
//                                               top-level name (reported as
//                                               unrecognised)
//   triton/<key>/ with __grp__*.json            one entry per kernel directory
//
// Hidden names (".pid.tid.tmp") and Triton's "tmp.*" directories are writers'
// temporaries and never part of an entry. A Triton directory without a group
// file is incomplete (a writer is still at work, or crashed) and is skipped.
//
// Change detection is by stamps: a directory entry's stamp is its mtime (its
// files are renamed into place, which updates it); a module group's stamp
// hashes its files' names, sizes and mtimes. Directories of module groups
// whose mtime is unchanged since the last scan are not listed again.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <unordered_map>
#include <vector>

#include "cache/manifest.hpp"

namespace mithril::cache {

struct Candidate {
  EntryKind kind = EntryKind::blob;
  std::string id;                  // entry id (see manifest.hpp)
  std::string root;                // manifest root, relative to the store root
  std::vector<std::string> files;  // relative to root, sorted
  std::int64_t stamp = 0;
  std::string probe;               // relative to the store root; "" = none
};

struct KnownEntry {
  std::int64_t stamp = 0;
};

struct ScanResult {
  std::vector<Candidate> changed;           // new or changed since the index saw them
  std::vector<std::string> vanished;        // indexed entries no longer on disk
  std::vector<std::string> unchanged;       // indexed entries still as indexed
  std::vector<std::pair<std::string, std::int64_t>> dir_stamps;  // to record once ingested
  std::vector<std::string> unrecognised;    // inductor/<name> of an unknown kind
  std::size_t incomplete = 0;               // Triton directories without a group file
};

class DirStampSource {
 public:
  virtual ~DirStampSource() = default;
  virtual std::optional<std::int64_t> dir_stamp(const std::string& path) = 0;
};

// Scans store_root/inductor and store_root/triton. `known` maps indexed
// framework entry ids to their stamps. With full = false, module directories
// whose recorded stamp (from `stamps`) matches are skipped. Never throws for
// files that vanish meanwhile (concurrent eviction).
ScanResult scan_store(const std::filesystem::path& store_root,
                      const std::unordered_map<std::string, KnownEntry>& known, DirStampSource& stamps,
                      bool full);

// Stamps, computed as the scanner does (import uses them so that the next
// scan sees an imported entry as unchanged).
std::int64_t directory_stamp(const std::filesystem::path& dir);
std::int64_t group_stamp(const std::filesystem::path& dir, const std::vector<std::string>& names);
// Probe file for hit detection, relative to the store root.
std::string choose_probe(EntryKind kind, const std::string& root, const std::vector<std::string>& files);

// Files (relative to dir, sorted) of a directory entry, skipping temporaries.
std::vector<std::string> list_entry_files(const std::filesystem::path& dir);
// The stem of an inductor module file name: its leading run of [a-z0-9].
std::string module_stem(std::string_view name);

}  // namespace mithril::cache
