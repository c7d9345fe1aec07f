// cache/remote_tier.hpp — the store's shared remote tiers (Redis, S3, a
// directory): read-through with local backfill, background upload.
//
// Remote layout, under the URL's key prefix P:
//   P/v1/entries/<entry id>   the entry's manifest (canonical JSON, manifest.hpp)
//   P/v1/blobs/<64 hex>       one file's bytes as a blob image (content_store.hpp:
//                             "MTHB" header, zstd when it pays), named by the
//                             BLAKE3 of the raw bytes
// Blobs are uploaded before their manifest, so a reader never finds a
// manifest whose blobs were not stored yet. Everything downloaded is checked:
// the manifest is parsed and validated like a bundle's, every blob is
// decoded and verified against its BLAKE3 digest; a corrupt object is a miss
// (and counted as an error), never handed out.
//
// Several remotes may be configured: reads ask them in order and the first
// valid copy wins; uploads go to every remote (none in read-only mode). A
// remote whose call fails after its retries (down, timing out, refusing our
// credentials) is switched off for the rest of the process with one warning
// on stderr; the store carries on without it, so a job never fails because
// a remote is down, and never waits longer than one call's timeouts.
//
// Thread-safety: fetch(), list_ids(), enqueue(), flush() and take_counters()
// are called from the store's thread; uploads run on one worker thread with
// connections of its own.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cache/manifest.hpp"
#include "storage/backend.hpp"

namespace mithril::cache {

struct RemoteCounters {
  std::int64_t hits = 0;        // entries fetched from a remote
  std::int64_t misses = 0;      // lookups no remote could answer
  std::int64_t errors = 0;      // failed calls, corrupt objects, remotes switched off
  std::int64_t uploads = 0;     // entries uploaded
  std::int64_t bytes_up = 0;    // blob and manifest bytes sent
  std::int64_t bytes_down = 0;  // blob and manifest bytes received
};

struct FetchedEntry {
  Manifest manifest;
  std::vector<util::ByteVector> files;  // raw (portable) bytes, manifest order, verified
};

enum class RemoteAccess { read_write, read_only };

class RemoteTier {
 public:
  // Reads the portable bytes of one file of an entry (called on the worker
  // thread). Throws Error when the file is gone; the entry is then skipped.
  using FileLoader = std::function<util::ByteVector(const Manifest&, const ManifestFile&)>;
  // Extra validation of a fetched entry (Triton groups); returns a problem.
  using EntryCheck = std::function<std::optional<std::string>(const Manifest&, const std::vector<util::ByteVector>&)>;

  // Connects lazily. A malformed URL is reported on stderr and ignored.
  RemoteTier(const std::vector<std::string>& urls, RemoteAccess access, const storage::Options& options,
             FileLoader loader, EntryCheck check, std::uint64_t max_entry_bytes);
  // Waits for queued uploads (see flush()).
  ~RemoteTier();
  RemoteTier(const RemoteTier&) = delete;
  RemoteTier& operator=(const RemoteTier&) = delete;

  // True while at least one remote is switched on.
  bool active() const noexcept;
  bool read_only() const noexcept { return m_access == RemoteAccess::read_only; }

  // The entry from the first remote holding a valid copy; nullopt when none
  // does (a miss) or every remote is off.
  std::optional<FetchedEntry> fetch(const std::string& id);
  // Entry ids held by the remotes that are on (sorted, without duplicates).
  std::vector<std::string> list_ids();
  // Queues an entry for upload to every remote (no-op when read-only).
  // Entries a remote already holds are not sent again.
  void enqueue(const Manifest& manifest);
  // Blocks until every queued upload is done or abandoned.
  void flush();
  // Counters since the last call (the store persists them).
  RemoteCounters take_counters();

 private:
  struct Remote {
    std::string url;     // redacted, for messages
    std::string prefix;  // "P/v1/" (or "v1/")
    std::unique_ptr<storage::Backend> reader;  // store thread
    std::unique_ptr<storage::Backend> writer;  // worker thread (a clone, made there)
    std::atomic<bool> on{true};
  };

  void switch_off(Remote& r, const Error& why);
  std::optional<FetchedEntry> fetch_from(Remote& r, const std::string& id);
  void upload_to(Remote& r, const Manifest& m);
  void worker();

  std::vector<std::unique_ptr<Remote>> m_remotes;
  RemoteAccess m_access;
  FileLoader m_loader;
  EntryCheck m_check;
  std::uint64_t m_max_entry_bytes;

  std::atomic<std::int64_t> m_hits{0}, m_misses{0}, m_errors{0}, m_uploads{0}, m_bytes_up{0}, m_bytes_down{0};

  std::mutex m_mutex;
  std::condition_variable m_work_cv, m_idle_cv;
  std::deque<Manifest> m_queue;
  bool m_busy = false, m_stopping = false;
  std::thread m_worker;
};

}  // namespace mithril::cache
