// container/reader.hpp — random-access reader of an .mcp file.
//
// Opens the file (memory-mapped), checks header and footer, loads and
// validates the index. After construction, chunk payloads are available by
// number without further I/O calls.
//
// Thread-safety: immutable after construction; payload() may be called from
// any number of threads.
#pragma once

#include <filesystem>
#include <string>

#include "container/format.hpp"
#include "util/mapped_file.hpp"

namespace mithril::container {

class Reader {
 public:
  // Throws Error(not_found/io) if unreadable, Error(corrupt) if not a valid
  // .mcp, Error(unsupported) for an unknown major version.
  explicit Reader(const std::filesystem::path& path);

  const Index& index() const noexcept { return m_index; }
  const Footer& footer() const noexcept { return m_footer; }
  const std::string& name() const noexcept { return m_name; }
  std::uint64_t file_size() const noexcept { return m_file.size(); }

  util::ByteSpan payload(std::size_t chunk) const;

 private:
  util::MappedFile m_file;
  std::string m_name;
  Footer m_footer;
  Index m_index;
};

}  // namespace mithril::container
