// cache/index.hpp — the store's index: one SQLite database in WAL mode.
//
// Tables:
//   entries(id PK, kind, manifest, size, files, stamp, probe, created,
//           last_use, hits)       one row per published entry
//   refs(digest, id)               CAS blobs referenced by CAS-kind entries
//   dirs(path PK, stamp)           mtimes of framework directories at the
//                                  last scan (skips unchanged ones)
//   stats(kind, counter, value)    persistent counters
//   meta(k PK, v)                  store-wide settings (root path, ...)
//
// An entry becomes visible with one INSERT, after its manifest and blobs are
// stored: no reader ever sees half an entry. Eviction deletes the row first
// (claiming it inside a write transaction) and removes the files afterwards.
//
// Thread-safety: one Index per thread; any number of processes may open the
// same database (SQLite locking, busy timeout 30 s).
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cache/manifest.hpp"

namespace mithril::cache {

struct EntryRow {
  std::string id;
  EntryKind kind = EntryKind::blob;
  std::string manifest;      // hex digest of the manifest blob
  std::uint64_t size = 0;    // bytes of the entry's files
  std::uint32_t files = 0;
  std::int64_t stamp = 0;    // change detector for framework entries (see ingest)
  std::string probe;         // file (relative to store root) watched for reads
  std::int64_t created = 0;  // ns since epoch
  std::int64_t last_use = 0; // ns since epoch
  std::int64_t hits = 0;
};

struct Totals {
  std::uint64_t entries = 0;
  std::uint64_t bytes = 0;
};

class Index {
 public:
  // Opens or creates the database. Throws Error(io) / Error(corrupt).
  explicit Index(const std::filesystem::path& path);
  ~Index();
  Index(const Index&) = delete;
  Index& operator=(const Index&) = delete;

  // BEGIN IMMEDIATE … COMMIT; rolls back when destroyed uncommitted.
  class Transaction {
   public:
    explicit Transaction(Index& index);
    ~Transaction();
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    void commit();

   private:
    Index& m_index;
    bool m_done = false;
  };

  std::optional<EntryRow> find(std::string_view id);
  // A hit: last_use = now, hits + 1. Returns the updated row, nullopt if absent.
  std::optional<EntryRow> touch(std::string_view id, std::int64_t now);
  // Marks a hit on an entry without returning it (batch use inside a transaction).
  void record_hit(std::string_view id, std::int64_t when);
  void upsert(const EntryRow& row);
  bool erase(std::string_view id);
  std::vector<EntryRow> all();
  std::vector<EntryRow> all_framework_entries();

  // Deletes and returns least-recently-used rows until the remaining total
  // is within max_bytes and max_entries (0 = no count limit), plus every row
  // last used before older_than (0 = none). Rows used at or after protect_from
  // are never taken. Call inside a Transaction.
  std::vector<EntryRow> take_victims(std::uint64_t max_bytes, std::uint64_t max_entries,
                                     std::int64_t older_than, std::int64_t protect_from);
  std::vector<EntryRow> take_all();

  Totals totals();
  std::map<std::string, Totals> totals_by_kind();

  void add_stat(std::string_view kind, std::string_view counter, std::int64_t delta);
  // (kind, counter) -> value
  std::map<std::pair<std::string, std::string>, std::int64_t> stats();

  std::optional<std::string> meta(std::string_view key);
  void set_meta(std::string_view key, std::string_view value);

  std::optional<std::int64_t> dir_stamp(std::string_view path);
  void set_dir_stamp(std::string_view path, std::int64_t stamp);
  void forget_dir_stamps();

  // Blob references of CAS-kind entries.
  void add_ref(std::string_view digest_hex, std::string_view id);
  // Drops the refs of id; returns the digests now referenced by nobody.
  std::vector<std::string> drop_refs(std::string_view id);
  bool is_referenced(std::string_view digest_hex);

 private:
  struct StmtDeleter {
    void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
  };
  using Stmt = std::unique_ptr<sqlite3_stmt, StmtDeleter>;
  struct DbDeleter {
    void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
  };

  sqlite3_stmt* prepare(const char* sql);
  void exec(const char* sql);
  [[noreturn]] void fail(std::string_view what);
  EntryRow read_row(sqlite3_stmt* s);
  std::vector<EntryRow> query_rows(const char* sql);

  std::filesystem::path m_path;
  std::unique_ptr<sqlite3, DbDeleter> m_db;
  std::unordered_map<const char*, Stmt> m_stmts;
};

}  // namespace mithril::cache
