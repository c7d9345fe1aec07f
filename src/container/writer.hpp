// container/writer.hpp — writer of an .mcp file.
//
// Two ways to reach the output:
//  * a sequential Sink (a pipe, an object-store multipart upload): payloads
//    are appended in chunk order with append(); the writer never seeks back;
//  * a PositionalSink (a local file, caller memory): the in-order stage only
//    reserves each payload's offset (cheap), and the workers write their
//    payloads there concurrently with write_at() — no serial copy.
// finish() writes the index and footer after the last payload.
//
// Thread-safety: reserve(), append() and finish() from one thread at a time
// (the pipeline's in-order stage); write_at() from any thread, for disjoint
// reserved ranges.
#pragma once

#include <functional>

#include "container/format.hpp"

namespace mithril::container {

class Writer {
 public:
  // Receives every byte of the file in order.
  using Sink = std::function<void(util::ByteSpan)>;
  // Receives bytes for [offset, offset + size); called concurrently for
  // disjoint ranges.
  using PositionalSink = std::function<void(std::uint64_t offset, util::ByteSpan)>;

  // `minor`: the file's minor version (minor_version_for() its index), in
  // the header written now and in the footer.
  explicit Writer(Sink sink, std::uint16_t minor = k_minor);
  static Writer positional(PositionalSink sink, std::uint16_t minor = k_minor);

  bool is_positional() const noexcept { return static_cast<bool>(m_at); }
  // Appends a payload; returns its file offset.
  std::uint64_t append(util::ByteSpan payload);
  // Positional only: the offset of the next payload of `size` bytes, which
  // the caller then writes with write_at().
  std::uint64_t reserve(std::size_t size);
  void write_at(std::uint64_t offset, util::ByteSpan payload) const;
  // Writes index (zstd-compressed when that pays) and footer. Returns the
  // total file size. `prepared` (prepare_index() of the same index, made
  // before the coding) spares this serial step the index's JSON.
  std::uint64_t finish(const Index& index, const PreparedIndex* prepared = nullptr);
  // Bytes finish() writes for `index` at most (the index stored raw).
  static std::uint64_t max_tail_size(const Index& index, const PreparedIndex* prepared = nullptr);

  std::uint64_t offset() const noexcept { return m_offset; }

 private:
  Writer() = default;
  void emit(util::ByteSpan bytes);

  Sink m_sink;
  PositionalSink m_at;
  std::uint64_t m_offset = 0;
  std::uint16_t m_minor = k_minor;
};

}  // namespace mithril::container
