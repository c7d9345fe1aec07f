#include "storage/remote_io.hpp"

#include <filesystem>
#include <mutex>
#include <vector>

#include "mithril/error.hpp"
#include "storage/file_backend.hpp"
#include "storage/url.hpp"
#include "util/interrupt.hpp"

namespace mithril::storage {
namespace {

// Concurrent reads (the decoder's workers) each borrow a connection from a
// pool that grows on demand; the prototype only answers the first request
// and is cloned for the pool.
//
// Opening reads the object's last k_open_tail bytes and its size in one
// request (Backend::get_tail) and keeps them: an .mcp's footer and index lie
// there (a few KiB for a checkpoint of tens of MiB), so a reader opened by
// URL costs one request and the header's read, not a HEAD and three ranged
// GETs, and an object no larger than the tail is read whole by that request.
// Every later read is of the version that answered then (S3: If-Match its
// ETag): an object replaced meanwhile is an error that says so, not chunks
// of two objects.
// The first read within the object's first k_head bytes fetches all of them
// and keeps them too: an .mcp's header is read by each of several callers
// (the magic check, the reader), and each would cost a request.
class RemoteSource final : public util::ByteSource {
 public:
  static constexpr std::uint64_t k_open_tail = 64 << 10;
  static constexpr std::uint64_t k_head = 4 << 10;

  explicit RemoteSource(Location loc) : m_name(loc.url), m_key(std::move(loc.key)), m_prototype(std::move(loc.backend)) {
    auto tail = m_prototype->get_tail(m_key, k_open_tail);
    if (!tail) throw Error(Errc::not_found, m_name + ": no such object (at " + m_prototype->endpoint() + ")");
    m_size = tail->size;
    m_version = std::move(tail->version);
    m_tail = std::move(tail->bytes);
    m_tail_offset = m_size - m_tail.size();
    m_bytes_read += m_tail.size();
  }

  std::uint64_t size() const noexcept override { return m_size; }
  const std::string& name() const noexcept override { return m_name; }

  util::ByteSpan read(std::uint64_t offset, std::size_t length, util::ByteVector& scratch) const override {
    if (offset > m_size || length > m_size - offset) throw_truncated(offset, length);
    if (length == 0) return {};
    if (offset >= m_tail_offset)  // held since the open
      return util::ByteSpan(m_tail.data() + (offset - m_tail_offset), length);
    if (offset + length <= std::min(k_head, m_tail_offset)) {
      std::call_once(m_head_once, [&] { m_head = fetch(0, static_cast<std::size_t>(std::min(k_head, m_tail_offset))); });
      return util::ByteSpan(m_head.data() + offset, length);
    }
    scratch = fetch(offset, length);
    return scratch;
  }

 private:
  util::ByteVector fetch(std::uint64_t offset, std::size_t length) const {
    auto backend = acquire();
    std::optional<util::ByteVector> got;
    try {
      got = backend->get_range_if(m_key, offset, length, m_version);
    } catch (...) {
      release(std::move(backend));
      throw;
    }
    release(std::move(backend));
    if (!got) throw Error(Errc::not_found, m_name + ": the object disappeared while it was being read");
    if (got->size() != length)
      throw Error(Errc::corrupt, m_name + ": short read at offset " + std::to_string(offset) + " (the object changed?)");
    m_bytes_read += length;
    return std::move(*got);
  }

  std::unique_ptr<Backend> acquire() const {
    {
      std::lock_guard lock(m_mutex);
      if (!m_idle.empty()) {
        auto b = std::move(m_idle.back());
        m_idle.pop_back();
        return b;
      }
    }
    return m_prototype->clone();
  }
  void release(std::unique_ptr<Backend> b) const {
    std::lock_guard lock(m_mutex);
    m_idle.push_back(std::move(b));
  }

  std::string m_name, m_key;
  std::unique_ptr<Backend> m_prototype;
  std::uint64_t m_size = 0;
  std::string m_version;    // the object's version at the open: every read is of it
  util::ByteVector m_tail;  // the object's bytes from m_tail_offset to its end
  std::uint64_t m_tail_offset = 0;
  mutable std::once_flag m_head_once;
  mutable util::ByteVector m_head;  // the object's first bytes, once read
  mutable std::mutex m_mutex;
  mutable std::vector<std::unique_ptr<Backend>> m_idle;
};

// A local file (util::FileSink) that can also be detached: its temporary is
// kept, and the token is the one a file:// upload of the absolute path makes
// (complete_detached() renames it through the file backend).
class LocalSink final : public util::ByteSink {
 public:
  LocalSink(const std::filesystem::path& path, util::Overwrite overwrite, util::Durability durability)
      : m_sink(path, overwrite, durability), m_path(path) {}
  void write(util::ByteSpan data) override { m_sink.write(data); }
  bool can_write_at() const noexcept override { return true; }
  void write_at(std::uint64_t offset, util::ByteSpan data) override { m_sink.write_at(offset, data); }
  void preallocate(std::uint64_t bound) override { m_sink.preallocate(bound); }
  void commit() override { m_sink.commit(); }
  std::string detach() override {
    const auto size = m_sink.size();
    return detached_file_token(m_sink.release(), local_key(m_path), size);
  }
  std::uint64_t size() const noexcept override { return m_sink.size(); }
  const std::string& name() const noexcept override { return m_sink.name(); }

 private:
  util::FileSink m_sink;
  std::filesystem::path m_path;
};

class UploadSink final : public util::ByteSink {
 public:
  UploadSink(std::unique_ptr<Backend> backend, std::string key, std::string name)
      : m_backend(std::move(backend)), m_name(std::move(name)) {
    m_upload = m_backend->begin_upload(key);
  }
  ~UploadSink() override {
    if (m_upload && !m_committed) m_upload->abort();
  }
  void write(util::ByteSpan data) override { m_upload->write(data); }
  void commit() override {
    m_upload->complete();
    m_committed = true;
  }
  std::string detach() override {
    auto token = m_upload->detach();
    m_committed = true;
    return token;
  }
  std::uint64_t size() const noexcept override { return m_upload->size(); }
  const std::string& name() const noexcept override { return m_name; }

 private:
  util::DeferSignals m_defer;  // first: lives until the upload is gone
  std::unique_ptr<Backend> m_backend;
  std::unique_ptr<Upload> m_upload;
  std::string m_name;
  bool m_committed = false;
};

}  // namespace

std::string local_key(const std::filesystem::path& path) {
  auto key = std::filesystem::absolute(path).lexically_normal().generic_string();
  while (!key.empty() && key.front() == '/') key.erase(key.begin());
  return key;
}

void complete_detached(std::string_view path_or_url, std::string_view token, const Options& options) {
  if (!is_url(path_or_url)) {
    const auto key = local_key(std::filesystem::path(path_or_url));
    make_file_backend("/")->complete_detached(key, token);
    return;
  }
  auto loc = open(path_or_url, options);
  try {
    loc.backend->complete_detached(loc.key, token);
  } catch (const Error& e) {
    const std::string what = e.what();
    if (what.find(loc.url) != std::string::npos) throw;
    throw Error(e.code(), loc.url + ": " + what);
  }
}

std::unique_ptr<util::ByteSource> open_source(std::string_view path_or_url, const Options& options) {
  if (!is_url(path_or_url)) return std::make_unique<util::MappedSource>(std::filesystem::path(path_or_url));
  return std::make_unique<RemoteSource>(open(path_or_url, options));
}

std::unique_ptr<util::ByteSink> open_sink(std::string_view path_or_url, util::Overwrite overwrite,
                                          const Options& options, util::Durability durability) {
  if (!is_url(path_or_url))
    return std::make_unique<LocalSink>(std::filesystem::path(path_or_url), overwrite, durability);
  auto loc = open(path_or_url, options);
  if (loc.key.empty() || loc.key.back() == '/')
    throw Error(Errc::invalid_argument, loc.url + ": names no object (expected a key after the bucket)");
  if (overwrite == util::Overwrite::refuse && loc.backend->exists(loc.key))
    throw Error(Errc::exists, loc.url + ": already exists (use -f to overwrite)");
  return std::make_unique<UploadSink>(std::move(loc.backend), loc.key, loc.url);
}

}  // namespace mithril::storage
