// container/writer.hpp — streaming writer of an .mcp file.
//
// Payloads are appended in chunk order as they finish; finish() writes the
// index and footer. The writer never seeks back, so the sink may be a pipe or
// an object-store multipart upload.
//
// Thread-safety: single-threaded (the pipeline's in-order stage calls it).
#pragma once

#include <functional>

#include "container/format.hpp"

namespace mithril::container {

class Writer {
 public:
  // The sink receives every byte of the file in order.
  using Sink = std::function<void(util::ByteSpan)>;
  explicit Writer(Sink sink);

  // Appends a payload; returns its file offset.
  std::uint64_t append(util::ByteSpan payload);
  // Writes index (zstd-compressed when that pays) and footer. Returns the
  // total file size.
  std::uint64_t finish(const Index& index);

  std::uint64_t offset() const noexcept { return m_offset; }

 private:
  Sink m_sink;
  std::uint64_t m_offset = 0;
};

}  // namespace mithril::container
