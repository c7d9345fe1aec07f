// cache/manifest.hpp — an entry's description: key → files → blob digests.
//
// A manifest is canonical JSON (keys sorted, no whitespace), stored as a blob
// in the ContentStore; the index maps the entry to the manifest's digest.
//
//   {"files":[{"digest":HEX64,"exec":BOOL,"path":REL,"size":N,
//              "transform":"triton-group"?}, ...],     (sorted by path)
//    "format":"mithril-manifest","id":ENTRY_ID,"key":STR,"kind":KIND,
//    "root":REL_OR_EMPTY,"version":1}
//
// id    — the entry's identity in the index (e.g. "triton/ABC", or
//         "inductor/ab/cabc" for a module group, or "cas/megacache/NAME");
// root  — directory (relative to the store root) that file paths are
//         relative to; empty for CAS entries, whose bytes live in the CAS;
// digest— BLAKE3 of the file's bytes; for "triton-group" files, of the
//         normalised group JSON (child paths relative to the Triton root),
//         so the digest does not depend on where the store lives.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/blake3.hpp"
#include "util/bytes.hpp"

namespace mithril::cache {

enum class EntryKind {
  inductor_fxgraph,     // inductor/fxgraph/<xy>/<key>/            (directory)
  inductor_aotautograd, // inductor/aotautograd/<key>/             (directory)
  inductor_module,      // inductor/<xy>/<stem>.{py,cpp,so,...}     (file group)
  inductor_other,       // inductor/<name> not recognised          (file or directory)
  inductor_precompile,  // inductor/dynamo/<key>/ (Dynamo caching precompile) (directory)
  triton_kernel,        // triton/<key>/ with __grp__*.json         (directory)
  megacache,            // torch.compiler.save_cache_artifacts bytes (CAS)
  blob,                 // generic library entry                    (CAS)
};

std::string_view kind_name(EntryKind kind) noexcept;
std::optional<EntryKind> parse_kind(std::string_view name) noexcept;
// Entries whose bytes live in the CAS rather than in a framework directory.
bool is_cas_kind(EntryKind kind) noexcept;
inline constexpr EntryKind k_all_kinds[] = {
    EntryKind::inductor_fxgraph, EntryKind::inductor_aotautograd, EntryKind::inductor_module,
    EntryKind::inductor_other,   EntryKind::triton_kernel,        EntryKind::megacache,
    EntryKind::blob,             EntryKind::inductor_precompile};

enum class Transform { none, triton_group };

struct ManifestFile {
  std::string path;  // relative to the manifest root; safe relative path
  std::uint64_t size = 0;
  util::Digest digest{};
  bool executable = false;
  Transform transform = Transform::none;
};

struct Manifest {
  EntryKind kind = EntryKind::blob;
  std::string id;
  std::string root;
  std::string key;
  std::vector<ManifestFile> files;

  std::uint64_t total_size() const noexcept;
  // Canonical bytes (sorts files by path first).
  util::ByteVector serialize() const;
  // Parses and validates (safe paths, root consistent with kind, no duplicate
  // paths). Throws Error(corrupt) naming `what` on anything malformed.
  static Manifest parse(util::ByteSpan bytes, std::string_view what);
};

// True when `root`/`id` follow the layout of `kind` (see EntryKind); import
// relies on this to keep bundle entries inside the framework directories.
bool layout_matches_kind(EntryKind kind, std::string_view root, std::string_view id) noexcept;

}  // namespace mithril::cache
