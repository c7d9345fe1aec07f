// cache/tar_stream.hpp — a minimal tar (POSIX ustar + pax size/path records)
// writer and a strict reader, over zstd streaming compression. Used for
// cache bundles (.tar.zst); any tar + zstd tool can list or unpack a bundle.
//
// Reader policy (bundles come from elsewhere): only regular files are
// accepted — symbolic and hard links, devices, FIFOs and directories are
// refused, as are absolute names, ".." components and members larger than the
// caller's limit. Errors are Error(corrupt) naming the bundle and member.
//
// Thread-safety: none; one object per thread.
#pragma once

#include <zstd.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "util/bytes.hpp"
#include "util/atomic_file.hpp"
#include "util/posix.hpp"

namespace mithril::cache {

class TarWriter {
 public:
  // Writes to a temporary beside `path` (an unpredictable name, created
  // exclusively: a planted file or symbolic link is never written through);
  // finish() renames it into place, replacing `path`. Destroyed unfinished,
  // it leaves nothing.
  TarWriter(const std::filesystem::path& path, int zstd_level);
  ~TarWriter();
  TarWriter(const TarWriter&) = delete;
  TarWriter& operator=(const TarWriter&) = delete;

  void add_file(const std::string& name, util::ByteSpan data, bool executable = false);
  // Writes the end-of-archive blocks and the zstd epilogue, fsyncs and
  // renames the bundle into place.
  void finish();
  std::uint64_t compressed_bytes() const noexcept { return m_out_bytes; }

 private:
  void write_raw(util::ByteSpan data);
  void flush(ZSTD_EndDirective mode);

  util::AtomicFile m_file;
  struct CtxDeleter {
    void operator()(ZSTD_CCtx* c) const noexcept { ZSTD_freeCCtx(c); }
  };
  std::unique_ptr<ZSTD_CCtx, CtxDeleter> m_ctx;
  std::vector<std::byte> m_in;
  std::vector<std::byte> m_out;
  std::uint64_t m_out_bytes = 0;
  bool m_finished = false;
};

struct TarMember {
  std::string name;
  std::uint64_t size = 0;
  bool executable = false;
};

class TarReader {
 public:
  TarReader(const std::filesystem::path& path, std::uint64_t max_member_size);
  ~TarReader();
  TarReader(const TarReader&) = delete;
  TarReader& operator=(const TarReader&) = delete;

  // The next member's header; nullopt at the end of the archive. The data
  // of the previous member is skipped if it was not read.
  std::optional<TarMember> next();
  // Reads the rest of the current member's data (at most max_member_size
  // bytes); memory grows with the bytes read, not with the declared size.
  util::ByteVector read_data();
  // Reads up to max bytes of the current member's data into dst; returns
  // how many (0 at the member's end). Throws Error(corrupt) when the archive
  // ends early.
  std::size_t read_some(std::byte* dst, std::size_t max);

 private:
  void read_exact(std::byte* dst, std::size_t n);
  void skip(std::uint64_t n);
  [[noreturn]] void fail(const std::string& why) const;

  std::filesystem::path m_path;
  std::uint64_t m_max_member;
  util::UniqueFd m_fd;
  struct DCtxDeleter {
    void operator()(ZSTD_DCtx* c) const noexcept { ZSTD_freeDCtx(c); }
  };
  std::unique_ptr<ZSTD_DCtx, DCtxDeleter> m_ctx;
  std::vector<std::byte> m_in;
  std::size_t m_in_pos = 0;
  std::size_t m_in_size = 0;
  std::vector<std::byte> m_out;
  std::size_t m_out_pos = 0;
  std::size_t m_out_size = 0;
  bool m_eof = false;
  bool m_frame_done = true;
  std::uint64_t m_pending = 0;  // unread data + padding of the current member
  std::uint64_t m_data_left = 0;
  std::string m_member;
};

}  // namespace mithril::cache
