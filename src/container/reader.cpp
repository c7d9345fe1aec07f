#include "container/reader.hpp"

#include <fmt/format.h>

#include "codec/zstd_codec.hpp"
#include "mithril/error.hpp"
#include "util/xxh3.hpp"

namespace mithril::container {

Reader::Reader(const std::filesystem::path& path) : m_file(path), m_name(path.string()) {
  const util::ByteSpan bytes = m_file.bytes();
  if (bytes.size() < k_header_size + k_footer_size) {
    if (bytes.size() >= 8) check_header(bytes.first(std::min(bytes.size(), k_header_size)), m_name);
    throw Error(Errc::corrupt, fmt::format("{}: too short to be an .mcp file ({} bytes; truncated?)", m_name,
                                           bytes.size()));
  }
  check_header(bytes.first(k_header_size), m_name);
  m_footer = decode_footer(bytes.last(k_footer_size), m_name);
  const std::uint64_t index_end = bytes.size() - k_footer_size;
  if (m_footer.index_offset < k_header_size || m_footer.index_offset > index_end ||
      m_footer.index_stored_size != index_end - m_footer.index_offset)
    throw Error(Errc::corrupt, fmt::format("{}: footer points outside the file (truncated or damaged)", m_name));
  // Version 1.0 defines no header flags and no footer reserved bytes: they
  // must be zero, and header and footer must agree, so that damage to any
  // byte of the file is detected.
  const auto h_minor = util::load_le<std::uint16_t>(bytes.data() + 10);
  const auto h_flags = util::load_le<std::uint32_t>(bytes.data() + 12);
  if (h_minor != m_footer.minor)
    throw Error(Errc::corrupt, fmt::format("{}: header says version 1.{}, footer 1.{}", m_name, h_minor, m_footer.minor));
  if (m_footer.minor == 0 && (h_flags != 0 || m_footer.reserved != 0))
    throw Error(Errc::corrupt, fmt::format("{}: reserved header/footer bytes are not zero (damaged)", m_name));
  const util::ByteSpan stored = bytes.subspan(m_footer.index_offset, m_footer.index_stored_size);
  if (util::xxh3_64(stored) != m_footer.index_xxh3)
    throw Error(Errc::corrupt, fmt::format("{}: index checksum mismatch (the index is damaged)", m_name));
  if (m_footer.index_codec == IndexCodec::zstd) {
    util::ByteVector raw;
    try {
      raw = codec::zstd_decompress_bounded(stored, m_footer.index_raw_size);
    } catch (const Error& e) {
      throw Error(Errc::corrupt, fmt::format("{}: index: {}", m_name, e.what()));
    }
    if (raw.size() != m_footer.index_raw_size)
      throw Error(Errc::corrupt, fmt::format("{}: index size mismatch", m_name));
    m_index = decode_index(raw, m_footer.index_offset, m_name);
  } else {
    if (stored.size() != m_footer.index_raw_size)
      throw Error(Errc::corrupt, fmt::format("{}: index size mismatch", m_name));
    m_index = decode_index(stored, m_footer.index_offset, m_name);
  }
}

util::ByteSpan Reader::payload(std::size_t chunk) const {
  const auto& r = m_index.chunks.at(chunk);
  return m_file.bytes().subspan(r.file_offset, r.stored_size);
}

}  // namespace mithril::container
