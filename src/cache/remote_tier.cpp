#include "cache/remote_tier.hpp"

#include <algorithm>
#include <cstdio>

#include <fmt/core.h>

#include "cache/content_store.hpp"
#include "mithril/error.hpp"
#include "util/blake3.hpp"

namespace mithril::cache {
namespace {

constexpr std::uint64_t k_max_manifest_bytes = 16 << 20;
constexpr std::uint64_t k_blob_header_bytes = 16;  // content_store.hpp
struct Corrupt {};  // already reported

std::string entry_key(const std::string& prefix, std::string_view id) { return prefix + "entries/" + std::string(id); }
std::string blob_key(const std::string& prefix, const util::Digest& d) { return prefix + "blobs/" + util::to_hex(d); }

}  // namespace

RemoteTier::RemoteTier(const std::vector<std::string>& urls, RemoteAccess access, const storage::Options& options,
                       FileLoader loader, EntryCheck check, std::uint64_t max_entry_bytes)
    : m_access(access), m_loader(std::move(loader)), m_check(std::move(check)), m_max_entry_bytes(max_entry_bytes) {
  for (const auto& url : urls) {
    storage::Location loc;
    try {
      loc = storage::open(url, options);
    } catch (const Error& e) {
      // A typo in a remote's URL must not stop the job either.
      ++m_errors;
      fmt::print(stderr, "mithril: cache: warning: remote ignored: {}\n", e.what());
      continue;
    }
    auto r = std::make_unique<Remote>();
    r->url = loc.url;
    r->prefix = loc.key;
    while (!r->prefix.empty() && r->prefix.back() == '/') r->prefix.pop_back();
    r->prefix += r->prefix.empty() ? "v1/" : "/v1/";
    r->reader = std::move(loc.backend);
    m_remotes.push_back(std::move(r));
  }
}

RemoteTier::~RemoteTier() {
  flush();
  {
    std::lock_guard lock(m_mutex);
    m_stopping = true;
  }
  m_work_cv.notify_all();
  if (m_worker.joinable()) m_worker.join();
}

bool RemoteTier::active() const noexcept {
  return std::any_of(m_remotes.begin(), m_remotes.end(), [](const auto& r) { return r->on.load(); });
}

void RemoteTier::switch_off(Remote& r, const Error& why) {
  ++m_errors;
  if (r.on.exchange(false))
    fmt::print(stderr, "mithril: cache: warning: remote {} switched off for the rest of this process: {}\n", r.url,
               why.what());
}

std::optional<FetchedEntry> RemoteTier::fetch(const std::string& id) {
  for (auto& r : m_remotes) {
    if (!r->on) continue;
    try {
      if (auto e = fetch_from(*r, id)) {
        ++m_hits;
        return e;
      }
    } catch (const Error& e) {
      switch_off(*r, e);
    } catch (const std::bad_alloc&) {
      // The promise holds for memory too: a remote fault is a miss, never an exit.
      ++m_errors;
      fmt::print(stderr, "mithril: cache: warning: {}: entry {}: out of memory reading it; treated as a miss\n", r->url, id);
    } catch (const std::exception& e) {
      switch_off(*r, Error(Errc::internal, e.what()));
    }
  }
  ++m_misses;
  return std::nullopt;
}

std::optional<FetchedEntry> RemoteTier::fetch_from(Remote& r, const std::string& id) {
  auto& b = *r.reader;
  const auto corrupt = [&](const std::string& what) -> std::optional<FetchedEntry> {
    ++m_errors;
    fmt::print(stderr, "mithril: cache: warning: {}: entry {}: {}; treated as a miss\n", r.url, id, what);
    return std::nullopt;
  };
  // Every object is fetched with the bound its context gives it: a remote
  // that answers more than that is corrupt (a miss), not a reason to hold it.
  const auto get = [&](const std::string& key, std::uint64_t max) -> std::optional<util::ByteVector> {
    try {
      return b.get_at_most(key, max);
    } catch (const Error& e) {
      if (e.code() != Errc::corrupt) throw;
      corrupt(e.what());
      throw Corrupt{};
    }
  };
  std::optional<util::ByteVector> mbytes;
  try {
    mbytes = get(entry_key(r.prefix, id), k_max_manifest_bytes);
  } catch (const Corrupt&) {
    return std::nullopt;
  }
  if (!mbytes) return std::nullopt;
  m_bytes_down += static_cast<std::int64_t>(mbytes->size());
  FetchedEntry out;
  try {
    out.manifest = Manifest::parse(*mbytes, r.url + ": manifest of " + id);
  } catch (const Error& e) {
    return corrupt(e.what());
  }
  if (out.manifest.id != id) return corrupt("manifest names another entry (" + out.manifest.id + ")");
  if (out.manifest.total_size() > m_max_entry_bytes) return std::nullopt;  // larger than the whole store
  for (const auto& f : out.manifest.files) {
    std::optional<util::ByteVector> image;
    try {
      // A blob image is its header and at most the raw bytes (zstd only when it pays).
      image = get(blob_key(r.prefix, f.digest), f.size + k_blob_header_bytes);
    } catch (const Corrupt&) {
      return std::nullopt;
    }
    if (!image) return std::nullopt;  // not (yet) complete there
    m_bytes_down += static_cast<std::int64_t>(image->size());
    auto raw = decode_blob(*image, f.digest, f.size);
    if (!raw) return corrupt("blob of '" + f.path + "' does not match its BLAKE3 digest");
    if (raw->size() != f.size) return corrupt("blob of '" + f.path + "' has the wrong size");
    out.files.push_back(std::move(*raw));
  }
  if (m_check)
    if (auto problem = m_check(out.manifest, out.files)) return corrupt(*problem);
  return out;
}

std::vector<std::string> RemoteTier::list_ids() {
  std::vector<std::string> ids;
  for (auto& r : m_remotes) {
    if (!r->on) continue;
    try {
      const auto base = r->prefix + "entries/";
      for (auto& k : r->reader->list(base)) ids.push_back(k.substr(base.size()));
    } catch (const Error& e) {
      switch_off(*r, e);
    } catch (const std::exception& e) {
      switch_off(*r, Error(Errc::internal, e.what()));
    }
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

void RemoteTier::enqueue(const Manifest& manifest) {
  if (m_access == RemoteAccess::read_only || !active()) return;
  std::lock_guard lock(m_mutex);
  if (!m_worker.joinable()) m_worker = std::thread([this] { worker(); });
  m_queue.push_back(manifest);
  m_work_cv.notify_one();
}

void RemoteTier::flush() {
  std::unique_lock lock(m_mutex);
  m_idle_cv.wait(lock, [&] { return m_queue.empty() && !m_busy; });
}

RemoteCounters RemoteTier::take_counters() {
  RemoteCounters c;
  c.hits = m_hits.exchange(0);
  c.misses = m_misses.exchange(0);
  c.errors = m_errors.exchange(0);
  c.uploads = m_uploads.exchange(0);
  c.bytes_up = m_bytes_up.exchange(0);
  c.bytes_down = m_bytes_down.exchange(0);
  return c;
}

void RemoteTier::worker() {
  for (;;) {
    Manifest m;
    {
      std::unique_lock lock(m_mutex);
      m_work_cv.wait(lock, [&] { return m_stopping || !m_queue.empty(); });
      if (m_queue.empty()) return;
      m = std::move(m_queue.front());
      m_queue.pop_front();
      m_busy = true;
    }
    for (auto& r : m_remotes) {
      if (!r->on) continue;
      try {
        upload_to(*r, m);
      } catch (const Error& e) {
        switch_off(*r, e);
      } catch (const std::exception& e) {
        switch_off(*r, Error(Errc::internal, e.what()));
      }
    }
    {
      std::lock_guard lock(m_mutex);
      m_busy = false;
      if (m_queue.empty()) m_idle_cv.notify_all();
    }
  }
}

void RemoteTier::upload_to(Remote& r, const Manifest& m) {
  if (!r.writer) r.writer = r.reader->clone();
  auto& b = *r.writer;
  const auto mkey = entry_key(r.prefix, m.id);
  if (b.exists(mkey)) return;  // someone compiled this already
  for (const auto& f : m.files) {
    const auto key = blob_key(r.prefix, f.digest);
    if (b.exists(key)) continue;
    util::ByteVector raw;
    try {
      raw = m_loader(m, f);
    } catch (const Error&) {
      return;  // evicted or replaced meanwhile: nothing consistent to send
    }
    if (raw.size() != f.size || util::blake3(raw) != f.digest) return;  // changed since it was indexed
    const auto image = encode_blob(raw, Compression::automatic);
    b.put(key, image);
    m_bytes_up += static_cast<std::int64_t>(image.size());
  }
  const auto mbytes = m.serialize();
  b.put(mkey, mbytes);
  m_bytes_up += static_cast<std::int64_t>(mbytes.size());
  ++m_uploads;
}

}  // namespace mithril::cache
