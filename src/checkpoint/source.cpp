#include "checkpoint/source.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>

#include <fmt/format.h>

#include "checkpoint/parallel.hpp"
#include "codec/chunk_codec.hpp"
#include "mithril/error.hpp"
#include "util/blake3.hpp"
#include "storage/remote_io.hpp"
#include "storage/url.hpp"
#include "util/posix.hpp"

namespace mithril::checkpoint {
namespace {

bool has_mcp_magic(util::ByteSpan b) {
  return b.size() >= 8 && std::memcmp(b.data(), container::k_magic.data(), 8) == 0;
}

}  // namespace

storage::Options storage_options(const RemoteOptions& remote) {
  storage::Options o;
  o.endpoint = remote.endpoint;
  return storage::options_from_env(o);
}

std::shared_ptr<const util::ByteSource> open_container_source(const std::filesystem::path& path_or_url,
                                                              const RemoteOptions& remote) {
  return storage::open_source(path_or_url.string(), storage_options(remote));
}

namespace {

// An unlinked temporary file of `size` bytes: lives as long as its fd/map.
util::UniqueFd make_unlinked_temporary(std::uint64_t size, const std::filesystem::path& dir) {
  util::UniqueFd fd(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (!fd) util::throw_errno(dir, "cannot create a temporary file for the base");
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) util::throw_errno(dir, "cannot size temporary file");
  return fd;
}

}  // namespace

BaseSource::BaseSource(const std::filesystem::path& path, unsigned threads, const RemoteOptions& remote)
    : m_path(path) {
  static std::atomic<std::uint64_t> serials{0};
  m_serial = ++serials;
  const bool remote_base = storage::is_url(path.string());
  std::shared_ptr<const util::ByteSource> source = open_container_source(path, remote);
  util::ByteVector scratch;
  const util::ByteSpan magic = source->read(0, std::min<std::uint64_t>(8, source->size()), scratch);
  const auto dir = std::filesystem::temp_directory_path();
  util::UniqueFd fd;
  std::uint64_t size = 0;
  if (has_mcp_magic(magic)) {
    // Nothing decoded now: chunk_base() decodes the chunks it needs.
    m_container.emplace(source);
    const auto& index = m_container->index();
    if (index.base)
      throw Error(Errc::unsupported,
                  fmt::format("{}: is itself a delta; use its restored checkpoint or a keyframe as the base",
                              path.string()));
    m_identity = index.source;
    m_size = index.source.size;
    m_plan.kind = index.source_kind;
    m_plan.segments = index.segments;
    m_chunk_starts.reserve(index.chunks.size());
    for (std::size_t c = 0; c < index.chunks.size(); ++c) m_chunk_starts.emplace_back(index.chunks[c].source_offset, c);
    std::sort(m_chunk_starts.begin(), m_chunk_starts.end());
    return;
  } else if (remote_base) {
    // A plain checkpoint in an object store: downloaded in pieces.
    size = source->size();
    fd = make_unlinked_temporary(size, dir);
    constexpr std::uint64_t k_piece = 64 << 20;
    for (std::uint64_t off = 0; off < size; off += k_piece) {
      const auto n = static_cast<std::size_t>(std::min(k_piece, size - off));
      const auto bytes = source->read(off, n, scratch);
      util::pwrite_all(fd.get(), bytes.data(), bytes.size(), off, dir);
    }
  } else {
    m_file.emplace(path);
    m_bytes = m_file->bytes();
    m_identity.name = path.filename().string();
    m_identity.size = m_bytes.size();
    m_identity.blake3 = util::blake3_parallel(m_bytes, threads);
  }
  if (fd) {
    if (size > 0) {
      void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd.get(), 0);
      if (p == MAP_FAILED) util::throw_errno(dir, "cannot map the base's temporary file");
      m_decoded = p;
      m_decoded_size = size;
      m_bytes = util::ByteSpan(static_cast<const std::byte*>(p), size);
    }
    m_identity.name = path.filename().string();
    m_identity.size = size;
    m_identity.blake3 = util::blake3_parallel(m_bytes, threads);
  }
  m_size = m_bytes.size();
  m_plan = util::read_then_check([&] { return plan_source(m_bytes, path.string(), k_max_plan_chunk); },
                                 [this] { check_intact(); });
}

void check_read_intact(const util::MappedFile* plain, const container::Reader* mcp, const BaseSource* base) {
  if (plain) plain->check_intact();
  if (mcp) mcp->source().check_intact();
  if (base) base->check_intact();
}

void BaseSource::check_intact() const {
  if (m_file) m_file->check_intact();
  if (m_container) m_container->source().check_intact();
}

BaseSource::~BaseSource() {
  if (m_decoded) ::munmap(m_decoded, m_decoded_size);
}

util::ByteSpan BaseSource::range(std::uint64_t offset, std::uint64_t size) const {
  if (!m_container) return m_bytes.subspan(offset, size);
  // This thread's buffers: the range, and a whole chunk when the range is
  // part of one (chunks of a delta and of its base line up when both were
  // saved with the same chunk size: then the range is one whole chunk).
  thread_local util::ByteVector out, raw, stored;
  thread_local codec::ChunkDecoder decoder;
  // Which chunk `raw` holds: the small tensors of a shared chunk (format
  // 1.1) are asked for one after another, and their chunk is decoded once.
  thread_local std::uint64_t raw_of = 0;  // m_serial of the source, 0: none
  thread_local std::size_t raw_chunk = 0;
  out.resize(size);
  const auto& index = m_container->index();
  auto it = std::upper_bound(m_chunk_starts.begin(), m_chunk_starts.end(),
                             std::pair<std::uint64_t, std::size_t>{offset, SIZE_MAX});
  if (it != m_chunk_starts.begin()) --it;
  std::uint64_t filled = 0;
  for (; filled < size && it != m_chunk_starts.end(); ++it) {
    const auto& r = index.chunks[it->second];
    const std::uint64_t at = offset + filled;
    if (r.source_offset > at || r.source_offset + r.raw_size <= at) continue;
    const std::string what = m_container->name() + ": " + container::describe_chunk(index, it->second);
    const bool whole = r.source_offset == at && r.raw_size <= size - filled;
    const bool held = !whole && raw_of == m_serial && raw_chunk == it->second && raw.size() == r.raw_size;
    if (!held) {
      if (!whole) {
        raw_of = 0;  // until decoded and checked
        raw.resize(r.raw_size);
      }
      const util::MutableByteSpan into = whole ? util::MutableByteSpan(out.data() + filled, r.raw_size)
                                               : util::MutableByteSpan(raw.data(), r.raw_size);
      const util::ByteSpan payload = m_container->payload(it->second, stored);
      codec::ChunkDecoder::check_payload(payload, r, what);
      decoder.decode(payload, r, into, {}, what);
      if (!whole) {
        raw_of = m_serial;
        raw_chunk = it->second;
      }
    }
    const std::uint64_t skip = at - r.source_offset;
    const std::uint64_t n = std::min<std::uint64_t>(r.raw_size - skip, size - filled);
    if (!whole) std::memcpy(out.data() + filled, raw.data() + skip, n);
    filled += n;
  }
  if (filled != size)
    throw Error(Errc::corrupt, fmt::format("{}: its chunks do not cover bytes [{}, {}) of the original",
                                           m_path.string(), offset, offset + size));
  return util::ByteSpan(out.data(), size);
}

util::ByteSpan BaseSource::chunk_base(const container::Segment& seg, const ChunkPlan& chunk) const {
  if (!seg.base_offset) return {};
  return range(*seg.base_offset + (chunk.source_offset - seg.offset), chunk.size);
}

util::ByteSpan BaseSource::chunk_base(const container::Segment& seg, const container::ChunkRecord& chunk) const {
  if (!seg.base_offset) return {};
  const std::uint64_t off = *seg.base_offset + (chunk.source_offset - seg.offset);
  if (off > m_size || chunk.raw_size > m_size - off)
    throw Error(Errc::corrupt, fmt::format("delta chunk refers to bytes past the end of the base ({})", m_path.string()));
  return range(off, chunk.raw_size);
}

std::size_t match_base(SourcePlan& plan, const BaseSource& base) {
  std::map<std::string, const container::Segment*, std::less<>> by_name;
  for (const auto& s : base.plan().segments)
    if (s.kind == container::SegmentKind::tensor) by_name.emplace(s.name, &s);
  std::size_t matched = 0;
  for (auto& s : plan.segments) {
    if (s.kind != container::SegmentKind::tensor || s.size == 0) continue;
    auto it = by_name.find(s.name);
    if (it == by_name.end()) continue;
    const auto& b = *it->second;
    if (b.dtype != s.dtype || b.shape != s.shape || b.size != s.size) continue;
    s.base_offset = b.offset;
    ++matched;
  }
  return matched;
}

std::unique_ptr<BaseSource> open_base_for(const container::Reader& reader,
                                          const std::optional<std::filesystem::path>& base, unsigned threads,
                                          const RemoteOptions& remote) {
  const auto& index = reader.index();
  if (!index.base) return nullptr;
  const auto& want = *index.base;
  if (!base)
    throw Error(Errc::invalid_argument,
                fmt::format("{}: is a delta against '{}' (BLAKE3 {}); pass that checkpoint with --base",
                            reader.name(), want.name, util::to_hex(want.blake3)));
  auto source = std::make_unique<BaseSource>(*base, threads, remote);
  if (source->identity().blake3 != want.blake3 || source->identity().size != want.size)
    throw Error(Errc::invalid_argument,
                fmt::format("{}: wrong base: '{}' has BLAKE3 {}, but this delta was made against '{}' with BLAKE3 {}",
                            reader.name(), base->string(), util::to_hex(source->identity().blake3), want.name,
                            util::to_hex(want.blake3)));
  return source;
}

}  // namespace mithril::checkpoint
