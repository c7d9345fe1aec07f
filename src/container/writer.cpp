#include "container/writer.hpp"

#include "codec/zstd_codec.hpp"
#include "util/xxh3.hpp"

namespace mithril::container {

Writer::Writer(Sink sink) : m_sink(std::move(sink)) {
  const auto header = encode_header();
  m_sink(header);
  m_offset = header.size();
}

std::uint64_t Writer::append(util::ByteSpan payload) {
  const std::uint64_t at = m_offset;
  if (!payload.empty()) m_sink(payload);
  m_offset += payload.size();
  return at;
}

std::uint64_t Writer::finish(const Index& index) {
  const util::ByteVector raw = encode_index(index);
  util::ByteVector packed;
  codec::ZstdCompressor z(9);
  z.compress_append(raw, packed);
  Footer f;
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
  m_sink(*stored);
  m_offset += stored->size();
  const auto footer = encode_footer(f);
  m_sink(footer);
  m_offset += footer.size();
  return m_offset;
}

}  // namespace mithril::container
