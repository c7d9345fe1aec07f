#include "container/reader.hpp"

#include <fmt/format.h>

#include "codec/zstd_codec.hpp"
#include "mithril/error.hpp"
#include "util/mapped_file.hpp"
#include "util/xxh3.hpp"

namespace mithril::container {

Reader::Reader(const std::filesystem::path& path) : Reader(std::make_shared<util::MappedSource>(path)) {}

Reader::Reader(std::shared_ptr<const util::ByteSource> source) : m_source(std::move(source)) {
  util::read_then_check([this] { open(); }, [this] { m_source->check_intact(); });
}

void Reader::open() {
  const std::string& name = m_source->name();
  const std::uint64_t size = m_source->size();
  util::ByteVector scratch;
  if (size < k_header_size + k_footer_size) {
    if (size >= 8) check_header(m_source->read(0, static_cast<std::size_t>(std::min<std::uint64_t>(size, k_header_size)), scratch), name);
    throw Error(Errc::corrupt, fmt::format("{}: too short to be an .mcp file ({} bytes; truncated?)", name, size));
  }
  util::ByteVector header(k_header_size);
  {
    const auto h = m_source->read(0, k_header_size, scratch);
    std::copy(h.begin(), h.end(), header.begin());
  }
  check_header(header, name);
  m_footer = decode_footer(m_source->read(size - k_footer_size, k_footer_size, scratch), name);
  const std::uint64_t index_end = size - k_footer_size;
  if (m_footer.index_offset < k_header_size || m_footer.index_offset > index_end ||
      m_footer.index_stored_size != index_end - m_footer.index_offset)
    throw Error(Errc::corrupt, fmt::format("{}: footer points outside the file (truncated or damaged)", name));
  // Version 1.0 defines no header flags and no footer reserved bytes: they
  // must be zero, and header and footer must agree, so that damage to any
  // byte of the file is detected.
  const auto h_minor = util::load_le<std::uint16_t>(header.data() + 10);
  const auto h_flags = util::load_le<std::uint32_t>(header.data() + 12);
  if (h_minor != m_footer.minor)
    throw Error(Errc::corrupt, fmt::format("{}: header says version 1.{}, footer 1.{}", name, h_minor, m_footer.minor));
  if (m_footer.minor <= k_minor_shared_chunks && (h_flags != 0 || m_footer.reserved != 0))
    throw Error(Errc::corrupt, fmt::format("{}: reserved header/footer bytes are not zero (damaged)", name));
  const util::ByteSpan stored =
      m_source->read(m_footer.index_offset, static_cast<std::size_t>(m_footer.index_stored_size), scratch);
  if (util::xxh3_64(stored) != m_footer.index_xxh3)
    throw Error(Errc::corrupt, fmt::format("{}: index checksum mismatch (the index is damaged)", name));
  // The index is the footer's word too: bounded by what its stored bytes can
  // hold (chunk records carry random checksums: real indexes compress a few
  // times, never k_max_index_ratio times) and by an absolute cap.
  if (m_footer.index_raw_size > k_max_index_raw_size ||
      m_footer.index_raw_size > m_footer.index_stored_size * k_max_index_ratio + 4096)
    throw Error(Errc::corrupt, fmt::format("{}: footer declares an index of {} bytes from {} stored bytes (damaged)",
                                           name, m_footer.index_raw_size, m_footer.index_stored_size));
  if (m_footer.index_codec == IndexCodec::zstd) {
    util::ByteVector raw;
    try {
      raw = codec::zstd_decompress_bounded(stored, m_footer.index_raw_size);
    } catch (const Error& e) {
      throw Error(Errc::corrupt, fmt::format("{}: index: {}", name, e.what()));
    }
    if (raw.size() != m_footer.index_raw_size) throw Error(Errc::corrupt, fmt::format("{}: index size mismatch", name));
    m_index = decode_index(raw, m_footer.index_offset, name);
  } else {
    if (stored.size() != m_footer.index_raw_size) throw Error(Errc::corrupt, fmt::format("{}: index size mismatch", name));
    m_index = decode_index(stored, m_footer.index_offset, name);
  }
  if (minor_version_for(m_index) > m_footer.minor)
    throw Error(Errc::corrupt, fmt::format("{}: shared chunks in a version 1.{} file (they are 1.{}): damaged", name,
                                           m_footer.minor, k_minor_shared_chunks));
}

util::ByteSpan Reader::payload(std::size_t chunk, util::ByteVector& scratch) const {
  const auto& r = m_index.chunks.at(chunk);
  return m_source->read(r.file_offset, r.stored_size, scratch);
}

}  // namespace mithril::container
