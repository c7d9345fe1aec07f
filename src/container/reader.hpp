// container/reader.hpp — random-access reader of an .mcp file.
//
// Reads and checks header and footer, loads and validates the index — three
// reads at known offsets (a remote source answers them with two requests:
// storage/remote_io.cpp keeps the object's first and last bytes). Chunk
// payloads are then read by number: a local file hands out its memory map,
// a remote one fetches exactly the chunk's bytes.
//
// Thread-safety: immutable after construction; payload() may be called from
// any number of threads (each with its own scratch buffer).
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "container/format.hpp"
#include "util/byte_io.hpp"

namespace mithril::container {

class Reader {
 public:
  // Throws Error(not_found/io/remote_unavailable) if unreadable,
  // Error(corrupt) if not a valid .mcp, Error(unsupported) for an unknown
  // major version; Error(io) for a mapped file that shrank while its header,
  // footer or index were read (util::MappedFile::check_intact()), rather
  // than the parse error the zeros read in its place would give.
  explicit Reader(std::shared_ptr<const util::ByteSource> source);
  // A local file, memory-mapped.
  explicit Reader(const std::filesystem::path& path);

  const Index& index() const noexcept { return m_index; }
  const Footer& footer() const noexcept { return m_footer; }
  const std::string& name() const noexcept { return m_source->name(); }
  std::uint64_t file_size() const noexcept { return m_source->size(); }
  const util::ByteSource& source() const noexcept { return *m_source; }

  // The stored bytes of a chunk: a view of the mapped file, or fetched into
  // `scratch` (valid until its next use).
  util::ByteSpan payload(std::size_t chunk, util::ByteVector& scratch) const;

 private:
  void open();  // reads and checks header, footer and index

  std::shared_ptr<const util::ByteSource> m_source;
  Footer m_footer;
  Index m_index;
};

}  // namespace mithril::container
