// mithril/triton_cache.hpp — Triton's cache-manager protocol on a Store.
//
// Triton (triton/runtime/cache.py) asks a CacheManager, one per kernel key,
// for files and for a *group*: the files of one compiled kernel, listed by a
// `__grp__NAME` file. Its compiler calls get_group() first (a hit when it
// returns the group), else compiles, put()s each file and put_group()s last.
// TritonKernelCache implements that protocol on STORE/triton/<key>/, the same
// directory layout that TRITON_CACHE_DIR=STORE/triton gives, so everything
// else the store does (sync, eviction, bundles, relocation) applies as is.
// What it adds over Triton's own FileCacheManager:
//   - atomic group publish: a group is written (by rename) only once every
//     child is in place, and is handed out only when every child still is —
//     never a partial kernel;
//   - exact statistics: every get_group() is a hit or a miss in the store's
//     counters (kind "triton-kernel"), put_group() indexes the entry at once
//     (a put), and the store's own reads never look like framework reads.
//
// Thread-safety: like the Store it uses (one thread at a time).
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "mithril/cache.hpp"

namespace mithril::cache {

class TritonKernelCache {
 public:
  // Creates STORE/triton/<key>. Throws Error(invalid_argument) unless `key`
  // is one safe path component (Triton's keys are base32 digests).
  // REQUIRES: `store` outlives this object.
  TritonKernelCache(Store& store, std::string key);

  const std::filesystem::path& directory() const noexcept { return m_dir; }

  // The path of file `name` of this kernel when it exists, else nullopt.
  // Counted as "file_hits" / "file_misses" of kind triton-kernel.
  std::optional<std::filesystem::path> get_file(std::string_view name);

  // Writes `data` as file `name` (temporary + rename: readers see the old
  // file or the new one) and returns its path. Throws Error(invalid_argument)
  // for a name that is not one safe path component.
  std::filesystem::path put(std::string_view name, std::span<const std::byte> data);

  // The group `name` (its file is `__grp__<name>`): child name -> absolute
  // path, when the group exists, is valid, and every child is present; that
  // is a hit. Anything else is a miss (nullopt).
  std::optional<std::map<std::string, std::string>> get_group(std::string_view name);

  // Publishes group `name`: every child path must be a file of this kernel's
  // directory (as put() returned it, or its bare file name). Writes the group
  // file atomically, indexes the kernel as a store entry, enforces the size
  // limit, and returns the group file's path. Throws Error(invalid_argument)
  // naming a child that is missing or lies outside the directory.
  std::filesystem::path put_group(std::string_view name, const std::map<std::string, std::string>& children);

 private:
  Store* m_store;
  std::string m_key;
  std::filesystem::path m_dir;
};

}  // namespace mithril::cache
