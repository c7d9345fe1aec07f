#include "cache/index.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <string>

#include "mithril/error.hpp"
#include "util/posix.hpp"

namespace mithril::cache {
namespace {

constexpr const char* k_schema = R"sql(
CREATE TABLE IF NOT EXISTS entries(
  id TEXT PRIMARY KEY NOT NULL,
  kind TEXT NOT NULL,
  manifest TEXT NOT NULL,
  size INTEGER NOT NULL,
  files INTEGER NOT NULL,
  stamp INTEGER NOT NULL,
  probe TEXT NOT NULL,
  created INTEGER NOT NULL,
  last_use INTEGER NOT NULL,
  hits INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_lru ON entries(last_use);
CREATE TABLE IF NOT EXISTS refs(digest TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY(digest, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS refs_id ON refs(id);
CREATE TABLE IF NOT EXISTS dirs(path TEXT PRIMARY KEY NOT NULL, stamp INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stats(kind TEXT NOT NULL, counter TEXT NOT NULL, value INTEGER NOT NULL,
                                 PRIMARY KEY(kind, counter)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY NOT NULL, v TEXT NOT NULL) WITHOUT ROWID;
)sql";

// Binds and resets a cached statement around one use.
class Use {
 public:
  explicit Use(sqlite3_stmt* s) : m_s(s) {}
  ~Use() {
    sqlite3_reset(m_s);
    sqlite3_clear_bindings(m_s);
  }
  Use(const Use&) = delete;
  Use& operator=(const Use&) = delete;
  Use& text(int i, std::string_view v) {
    sqlite3_bind_text(m_s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Use& i64(int i, std::int64_t v) {
    sqlite3_bind_int64(m_s, i, v);
    return *this;
  }
  sqlite3_stmt* get() const noexcept { return m_s; }

 private:
  sqlite3_stmt* m_s;
};

std::string col_text(sqlite3_stmt* s, int i) {
  const auto* p = sqlite3_column_text(s, i);
  return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(s, i))) : std::string();
}

}  // namespace

Index::Index(const std::filesystem::path& path) : m_path(path) {
  // SQLite creates databases 0644 whatever the umask, which locks the group
  // out of a group-shared store (umask 002): create it ourselves, so the
  // umask decides (its -wal and -shm files then copy its mode). Never through
  // a symbolic link.
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0666);
  if (fd < 0) util::throw_errno(path, "cannot open index");
  ::close(fd);
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW,
                                 nullptr);
  m_db.reset(db);
  if (rc != SQLITE_OK) fail("cannot open index");
  sqlite3_busy_timeout(m_db.get(), 30000);
  // WAL: readers never block the writer; NORMAL sync: a crash may lose the
  // last transactions but never corrupts the database — and a lost row only
  // means an untracked entry that the next scan picks up again.
  exec("PRAGMA journal_mode=WAL");
  exec("PRAGMA synchronous=NORMAL");
  exec("PRAGMA foreign_keys=OFF");
  {
    Transaction t(*this);
    exec(k_schema);
    t.commit();
  }
}

Index::~Index() = default;

void Index::fail(std::string_view what) {
  const char* msg = m_db ? sqlite3_errmsg(m_db.get()) : "out of memory";
  const int code = m_db ? sqlite3_errcode(m_db.get()) : SQLITE_NOMEM;
  const Errc e = (code == SQLITE_CORRUPT || code == SQLITE_NOTADB) ? Errc::corrupt : Errc::io;
  throw Error(e, m_path.string() + ": " + std::string(what) + ": " + msg);
}

void Index::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(m_db.get(), sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    const int code = sqlite3_errcode(m_db.get());
    const Errc e = (code == SQLITE_CORRUPT || code == SQLITE_NOTADB) ? Errc::corrupt : Errc::io;
    throw Error(e, m_path.string() + ": " + msg);
  }
}

sqlite3_stmt* Index::prepare(const char* sql) {
  auto it = m_stmts.find(sql);
  if (it != m_stmts.end()) return it->second.get();
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v3(m_db.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK) fail("cannot prepare statement");
  m_stmts.emplace(sql, Stmt(s));
  return s;
}

Index::Transaction::Transaction(Index& index) : m_index(index) { m_index.exec("BEGIN IMMEDIATE"); }

Index::Transaction::~Transaction() {
  if (!m_done) sqlite3_exec(m_index.m_db.get(), "ROLLBACK", nullptr, nullptr, nullptr);
}

void Index::Transaction::commit() {
  m_index.exec("COMMIT");
  m_done = true;
}

EntryRow Index::read_row(sqlite3_stmt* s) {
  EntryRow r;
  r.id = col_text(s, 0);
  r.kind = parse_kind(col_text(s, 1)).value_or(EntryKind::blob);
  r.manifest = col_text(s, 2);
  r.size = static_cast<std::uint64_t>(sqlite3_column_int64(s, 3));
  r.files = static_cast<std::uint32_t>(sqlite3_column_int64(s, 4));
  r.stamp = sqlite3_column_int64(s, 5);
  r.probe = col_text(s, 6);
  r.created = sqlite3_column_int64(s, 7);
  r.last_use = sqlite3_column_int64(s, 8);
  r.hits = sqlite3_column_int64(s, 9);
  return r;
}

#define MITHRIL_ROW_COLUMNS "id, kind, manifest, size, files, stamp, probe, created, last_use, hits"

std::optional<EntryRow> Index::find(std::string_view id) {
  Use u(prepare("SELECT " MITHRIL_ROW_COLUMNS " FROM entries WHERE id = ?1"));
  u.text(1, id);
  const int rc = sqlite3_step(u.get());
  if (rc == SQLITE_ROW) return read_row(u.get());
  if (rc != SQLITE_DONE) fail("lookup failed");
  return std::nullopt;
}

std::optional<EntryRow> Index::touch(std::string_view id, std::int64_t now) {
  Use u(prepare("UPDATE entries SET last_use = max(last_use, ?2), hits = hits + 1 WHERE id = ?1 RETURNING " MITHRIL_ROW_COLUMNS));
  u.text(1, id).i64(2, now);
  const int rc = sqlite3_step(u.get());
  if (rc == SQLITE_ROW) {
    auto row = read_row(u.get());
    while (sqlite3_step(u.get()) == SQLITE_ROW) {
    }
    return row;
  }
  if (rc != SQLITE_DONE) fail("update failed");
  return std::nullopt;
}

void Index::record_hit(std::string_view id, std::int64_t when) {
  Use u(prepare("UPDATE entries SET last_use = max(last_use, ?2), hits = hits + 1 WHERE id = ?1"));
  u.text(1, id).i64(2, when);
  if (sqlite3_step(u.get()) != SQLITE_DONE) fail("update failed");
}

void Index::upsert(const EntryRow& r) {
  Use u(prepare(
      "INSERT INTO entries(" MITHRIL_ROW_COLUMNS ") VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10) "
      "ON CONFLICT(id) DO UPDATE SET kind=excluded.kind, manifest=excluded.manifest, size=excluded.size, "
      "files=excluded.files, stamp=excluded.stamp, probe=excluded.probe, last_use=max(last_use, excluded.last_use)"));
  u.text(1, r.id).text(2, kind_name(r.kind)).text(3, r.manifest).i64(4, static_cast<std::int64_t>(r.size));
  u.i64(5, r.files).i64(6, r.stamp).text(7, r.probe).i64(8, r.created).i64(9, r.last_use).i64(10, r.hits);
  if (sqlite3_step(u.get()) != SQLITE_DONE) fail("insert failed");
}

bool Index::erase(std::string_view id) {
  Use u(prepare("DELETE FROM entries WHERE id = ?1"));
  u.text(1, id);
  if (sqlite3_step(u.get()) != SQLITE_DONE) fail("delete failed");
  return sqlite3_changes(m_db.get()) > 0;
}

std::vector<EntryRow> Index::query_rows(const char* sql) {
  Use u(prepare(sql));
  std::vector<EntryRow> out;
  int rc;
  while ((rc = sqlite3_step(u.get())) == SQLITE_ROW) out.push_back(read_row(u.get()));
  if (rc != SQLITE_DONE) fail("query failed");
  return out;
}

std::vector<EntryRow> Index::all() { return query_rows("SELECT " MITHRIL_ROW_COLUMNS " FROM entries ORDER BY id"); }

std::vector<EntryRow> Index::all_framework_entries() {
  return query_rows("SELECT " MITHRIL_ROW_COLUMNS " FROM entries WHERE kind NOT IN ('megacache','blob')");
}

std::vector<EntryRow> Index::take_victims(std::uint64_t max_bytes, std::uint64_t max_entries, std::int64_t older_than,
                                          std::int64_t protect_from) {
  auto t = totals();
  std::vector<EntryRow> victims;
  {
    Use u(prepare("SELECT " MITHRIL_ROW_COLUMNS " FROM entries ORDER BY last_use, id"));
    int rc;
    while ((rc = sqlite3_step(u.get())) == SQLITE_ROW) {
      const std::int64_t last_use = sqlite3_column_int64(u.get(), 8);
      const bool too_old = older_than > 0 && last_use < older_than;
      const bool over = t.bytes > max_bytes || (max_entries > 0 && t.entries > max_entries);
      if (!too_old && !over) break;
      if (last_use >= protect_from) break;  // everything after is newer still
      auto row = read_row(u.get());
      t.bytes -= std::min(t.bytes, row.size);
      t.entries -= std::min<std::uint64_t>(t.entries, 1);
      victims.push_back(std::move(row));
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) fail("query failed");
  }
  for (const auto& v : victims) erase(v.id);
  return victims;
}

std::vector<EntryRow> Index::take_all() {
  auto rows = all();
  exec("DELETE FROM entries; DELETE FROM refs; DELETE FROM dirs;");
  return rows;
}

Totals Index::totals() {
  Use u(prepare("SELECT count(*), coalesce(sum(size), 0) FROM entries"));
  Totals t;
  if (sqlite3_step(u.get()) == SQLITE_ROW) {
    t.entries = static_cast<std::uint64_t>(sqlite3_column_int64(u.get(), 0));
    t.bytes = static_cast<std::uint64_t>(sqlite3_column_int64(u.get(), 1));
  }
  return t;
}

std::map<std::string, Totals> Index::totals_by_kind() {
  Use u(prepare("SELECT kind, count(*), coalesce(sum(size), 0) FROM entries GROUP BY kind"));
  std::map<std::string, Totals> out;
  while (sqlite3_step(u.get()) == SQLITE_ROW) {
    out[col_text(u.get(), 0)] = {static_cast<std::uint64_t>(sqlite3_column_int64(u.get(), 1)),
                                  static_cast<std::uint64_t>(sqlite3_column_int64(u.get(), 2))};
  }
  return out;
}

void Index::add_stat(std::string_view kind, std::string_view counter, std::int64_t delta) {
  if (delta == 0) return;
  Use u(prepare("INSERT INTO stats(kind, counter, value) VALUES(?1, ?2, ?3) "
                "ON CONFLICT(kind, counter) DO UPDATE SET value = value + excluded.value"));
  u.text(1, kind).text(2, counter).i64(3, delta);
  if (sqlite3_step(u.get()) != SQLITE_DONE) fail("stats update failed");
}

std::map<std::pair<std::string, std::string>, std::int64_t> Index::stats() {
  Use u(prepare("SELECT kind, counter, value FROM stats"));
  std::map<std::pair<std::string, std::string>, std::int64_t> out;
  while (sqlite3_step(u.get()) == SQLITE_ROW)
    out[{col_text(u.get(), 0), col_text(u.get(), 1)}] = sqlite3_column_int64(u.get(), 2);
  return out;
}

std::optional<std::string> Index::meta(std::string_view key) {
  Use u(prepare("SELECT v FROM meta WHERE k = ?1"));
  u.text(1, key);
  if (sqlite3_step(u.get()) == SQLITE_ROW) return col_text(u.get(), 0);
  return std::nullopt;
}

void Index::set_meta(std::string_view key, std::string_view value) {
  Use u(prepare("INSERT INTO meta(k, v) VALUES(?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v"));
  u.text(1, key).text(2, value);
  if (sqlite3_step(u.get()) != SQLITE_DONE) fail("meta update failed");
}

std::optional<std::int64_t> Index::dir_stamp(std::string_view path) {
  Use u(prepare("SELECT stamp FROM dirs WHERE path = ?1"));
  u.text(1, path);
  if (sqlite3_step(u.get()) == SQLITE_ROW) return sqlite3_column_int64(u.get(), 0);
  return std::nullopt;
}

void Index::set_dir_stamp(std::string_view path, std::int64_t stamp) {
  Use u(prepare("INSERT INTO dirs(path, stamp) VALUES(?1, ?2) ON CONFLICT(path) DO UPDATE SET stamp = excluded.stamp"));
  u.text(1, path).i64(2, stamp);
  if (sqlite3_step(u.get()) != SQLITE_DONE) fail("dirs update failed");
}

void Index::forget_dir_stamps() { exec("DELETE FROM dirs"); }

void Index::add_ref(std::string_view digest_hex, std::string_view id) {
  Use u(prepare("INSERT OR IGNORE INTO refs(digest, id) VALUES(?1, ?2)"));
  u.text(1, digest_hex).text(2, id);
  if (sqlite3_step(u.get()) != SQLITE_DONE) fail("refs update failed");
}

std::vector<std::string> Index::drop_refs(std::string_view id) {
  std::vector<std::string> digests;
  {
    Use u(prepare("DELETE FROM refs WHERE id = ?1 RETURNING digest"));
    u.text(1, id);
    while (sqlite3_step(u.get()) == SQLITE_ROW) digests.push_back(col_text(u.get(), 0));
  }
  std::vector<std::string> orphans;
  for (const auto& d : digests)
    if (!is_referenced(d)) orphans.push_back(d);
  return orphans;
}

bool Index::is_referenced(std::string_view digest_hex) {
  Use u(prepare("SELECT 1 FROM refs WHERE digest = ?1 LIMIT 1"));
  u.text(1, digest_hex);
  return sqlite3_step(u.get()) == SQLITE_ROW;
}

}  // namespace mithril::cache
