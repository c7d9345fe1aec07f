#include "container/writer.hpp"

#include "codec/zstd_codec.hpp"
#include "mithril/error.hpp"
#include "util/xxh3.hpp"

namespace mithril::container {

Writer::Writer(Sink sink, std::uint16_t minor) : m_sink(std::move(sink)), m_minor(minor) { emit(encode_header(minor)); }

Writer Writer::positional(PositionalSink sink, std::uint16_t minor) {
  Writer w;
  w.m_at = std::move(sink);
  w.m_minor = minor;
  w.emit(encode_header(minor));
  return w;
}

void Writer::emit(util::ByteSpan bytes) {
  if (bytes.empty()) return;
  if (m_at)
    m_at(m_offset, bytes);
  else
    m_sink(bytes);
  m_offset += bytes.size();
}

std::uint64_t Writer::append(util::ByteSpan payload) {
  const std::uint64_t at = m_offset;
  emit(payload);
  return at;
}

std::uint64_t Writer::reserve(std::size_t size) {
  if (!m_at) throw Error(Errc::internal, "container writer: reserve() needs a positional sink");
  const std::uint64_t at = m_offset;
  m_offset += size;
  return at;
}

void Writer::write_at(std::uint64_t offset, util::ByteSpan payload) const {
  if (!m_at) throw Error(Errc::internal, "container writer: write_at() needs a positional sink");
  if (!payload.empty()) m_at(offset, payload);
}

std::uint64_t Writer::max_tail_size(const Index& index, const PreparedIndex* prepared) {
  return (prepared ? encoded_index_size(*prepared) : encode_index(index).size()) + k_footer_size;
}

std::uint64_t Writer::finish(const Index& index, const PreparedIndex* prepared) {
  const util::ByteVector raw = prepared ? encode_index(index, *prepared) : encode_index(index);
  util::ByteVector packed;
  // Level 1: on MiniLM's 20.9 KB index 4430 bytes in 0.04 ms, level 9 4307
  // in 0.24 ms — a serial step of every compression, for 0.0002% of it.
  codec::ZstdCompressor z(1);
  z.compress_append(raw, packed);
  if (minor_version_for(index) > m_minor)
    throw Error(Errc::internal, "container writer: the index needs a later minor version than the header says");
  Footer f;
  f.minor = m_minor;
  f.index_offset = m_offset;
  f.index_raw_size = raw.size();
  const util::ByteVector* stored = &packed;
  f.index_codec = IndexCodec::zstd;
  if (packed.size() >= raw.size()) {
    stored = &raw;
    f.index_codec = IndexCodec::stored;
  }
  f.index_stored_size = stored->size();
  f.index_xxh3 = util::xxh3_64(*stored);
  emit(*stored);
  emit(encode_footer(f));
  return m_offset;
}

}  // namespace mithril::container
