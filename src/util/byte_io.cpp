#include "util/byte_io.hpp"

#include "mithril/error.hpp"

namespace mithril::util {

void ByteSource::throw_truncated(std::uint64_t offset, std::size_t length) const {
  throw Error(Errc::corrupt, name() + ": bytes " + std::to_string(offset) + ".." + std::to_string(offset + length) +
                                 " lie past its end (" + std::to_string(size()) + " bytes; truncated?)");
}

MappedSource::MappedSource(const std::filesystem::path& path) : m_file(path), m_name(path.string()) {}

ByteSpan MappedSource::read(std::uint64_t offset, std::size_t length, ByteVector&) const {
  if (offset > m_file.size() || length > m_file.size() - offset) throw_truncated(offset, length);
  m_bytes_read += length;
  return m_file.bytes().subspan(static_cast<std::size_t>(offset), length);
}

}  // namespace mithril::util
