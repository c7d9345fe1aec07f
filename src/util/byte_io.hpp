// util/byte_io.hpp — where a container's bytes come from and go to.
//
// The .mcp writer streams into a ByteSink and the reader pulls ranges from a
// ByteSource, so the same checkpoint code serves local files (a memory map,
// an AtomicFile) and object stores (ranged GETs, a multipart upload; see
// storage/remote_io.hpp).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "util/atomic_file.hpp"
#include "util/bytes.hpp"
#include "util/mapped_file.hpp"

namespace mithril::util {

// Random-access bytes of known size.
// Thread-safety: read() may be called from any number of threads at once.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual std::uint64_t size() const noexcept = 0;
  // The file or URL, for messages.
  virtual const std::string& name() const noexcept = 0;
  // Bytes [offset, offset + length): a span into the source's own memory (a
  // mapped file) or into `scratch` (fetched bytes), valid until the next
  // read into the same scratch. Throws Error(corrupt) naming the source when
  // the range passes the end, Error(remote_unavailable / io) when it cannot
  // be read.
  virtual ByteSpan read(std::uint64_t offset, std::size_t length, ByteVector& scratch) const = 0;
  // Bytes handed out by read() so far (what a remote source fetched).
  std::uint64_t bytes_read() const noexcept { return m_bytes_read.load(); }
  // True when read() costs no I/O call (a memory map): callers skip read-ahead.
  virtual bool memory_resident() const noexcept { return false; }
  // The caller is done with bytes [offset, offset + length) (spans read()
  // returned for them must not be used any more): a memory map drops their
  // pages from the process (RSS); other sources ignore it.
  virtual void release(std::uint64_t /*offset*/, std::uint64_t /*length*/) const noexcept {}
  // Throws Error(io) when bytes read were not the source's (a mapped file
  // that shrank under its reader: MappedFile::check_intact()).
  virtual void check_intact() const {}

 protected:
  [[noreturn]] void throw_truncated(std::uint64_t offset, std::size_t length) const;
  mutable std::atomic<std::uint64_t> m_bytes_read{0};
};

// A local file, memory-mapped (read() never copies).
class MappedSource final : public ByteSource {
 public:
  // Throws Error(not_found) / Error(io).
  explicit MappedSource(const std::filesystem::path& path);
  std::uint64_t size() const noexcept override { return m_file.size(); }
  const std::string& name() const noexcept override { return m_name; }
  ByteSpan read(std::uint64_t offset, std::size_t length, ByteVector& scratch) const override;
  bool memory_resident() const noexcept override { return true; }
  void release(std::uint64_t offset, std::uint64_t length) const noexcept override { m_file.release(offset, length); }
  void check_intact() const override { m_file.check_intact(); }
  // The whole mapping (local-only fast paths).
  ByteSpan bytes() const noexcept { return m_file.bytes(); }

 private:
  MappedFile m_file;
  std::string m_name;
};

// Bytes already in memory (the caller's, which must outlive it and not
// change): an in-memory container, or one read whole from a pipe.
class SpanSource final : public ByteSource {
 public:
  SpanSource(ByteSpan bytes, std::string name) : m_bytes(bytes), m_name(std::move(name)) {}
  std::uint64_t size() const noexcept override { return m_bytes.size(); }
  const std::string& name() const noexcept override { return m_name; }
  ByteSpan read(std::uint64_t offset, std::size_t length, ByteVector&) const override {
    if (offset > m_bytes.size() || length > m_bytes.size() - offset) throw_truncated(offset, length);
    m_bytes_read += length;
    return m_bytes.subspan(static_cast<std::size_t>(offset), length);
  }
  bool memory_resident() const noexcept override { return true; }

 private:
  ByteSpan m_bytes;
  std::string m_name;
};

// Large windows in front of a source that is scanned roughly in order by
// several threads (decoding every chunk of a remote container): each window
// is fetched once with one read of the inner source, up to `max_windows` are
// kept (memory: max_windows x window), and readers of a window being fetched
// wait for it instead of fetching their own piece. Windows needed by
// different threads are fetched in parallel. Windows never overlap (a read
// across a window's end is served from two), and the first to be dropped is
// one read to its end.
class ReadAheadSource final : public ByteSource {
 public:
  ReadAheadSource(const ByteSource& inner, std::size_t window, std::size_t max_windows);
  std::uint64_t size() const noexcept override { return m_inner.size(); }
  const std::string& name() const noexcept override { return m_inner.name(); }
  // Copies into scratch (a window may be dropped once read).
  ByteSpan read(std::uint64_t offset, std::size_t length, ByteVector& scratch) const override;
  void check_intact() const override { m_inner.check_intact(); }

 private:
  struct Window {
    std::uint64_t begin = 0, end = 0;
    std::uint64_t consumed = 0;  // bytes handed out from it
    ByteVector data;
    bool ready = false;
    std::exception_ptr error;
  };
  const ByteSource& m_inner;
  std::size_t m_window, m_max_windows;
  mutable std::mutex m_mutex;
  mutable std::condition_variable m_cv;
  mutable std::deque<std::shared_ptr<Window>> m_windows;  // oldest first
};

// A sequential output that appears whole at commit() or not at all.
// Thread-safety: one thread at a time, except write_at() (below).
class ByteSink {
 public:
  virtual ~ByteSink() = default;  // discards everything unless committed
  virtual void write(ByteSpan data) = 0;
  // Sinks that can write at any offset (a local file) say so; write_at() may
  // then be called from several threads at once for disjoint ranges, in
  // place of write() (one sink uses one or the other). The default throws.
  virtual bool can_write_at() const noexcept { return false; }
  virtual void write_at(std::uint64_t offset, ByteSpan data);
  // A hint before write_at() calls: at most `bound` bytes will be written,
  // at offsets below it (AtomicFile::preallocate). The default ignores it.
  virtual void preallocate(std::uint64_t bound) { (void)bound; }
  // Publishes the output. Throws Error(exists) when it appeared meanwhile
  // and overwriting was refused, or when it cannot be stored.
  virtual void commit() = 0;
  // Stores everything written without publishing it; returns the token that
  // publishes it later (storage::Backend::complete_detached). Only uploads to
  // an object store can; the default throws Error(invalid_argument).
  virtual std::string detach();
  virtual std::uint64_t size() const noexcept = 0;
  virtual const std::string& name() const noexcept = 0;
};

// A local file written through an AtomicFile.
class FileSink final : public ByteSink {
 public:
  FileSink(const std::filesystem::path& path, Overwrite overwrite, Durability durability = Durability::sync)
      : m_file(path, overwrite, durability), m_name(path.string()) {}
  void write(ByteSpan data) override { m_file.write(data); }
  bool can_write_at() const noexcept override { return true; }
  void write_at(std::uint64_t offset, ByteSpan data) override { m_file.write_at(offset, data); }
  void preallocate(std::uint64_t bound) override { m_file.preallocate(bound); }
  void commit() override { m_file.commit(); }
  // The temporary, kept unrenamed (AtomicFile::release()).
  std::filesystem::path release() { return m_file.release(); }
  std::uint64_t size() const noexcept override { return m_file.size(); }
  const std::string& name() const noexcept override { return m_name; }

 private:
  AtomicFile m_file;
  std::string m_name;
};

}  // namespace mithril::util
