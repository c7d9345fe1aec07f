// formats/zip_writer.hpp — writes STORED zip archives laid out as torch.save
// lays them out (PKWARE APPNOTE 6.3.10 structures; see zip_reader.hpp):
//
//   file   := (local_header data)* central_directory [zip64_eocd zip64_locator] eocd
//   local_header := PK\3\4, 30 bytes + name + [ZIP64 extra] + "FB" padding extra
//
// Every record is STORED with its CRC-32 and sizes in the local header (no
// data descriptor), names flagged UTF-8, a fixed 1980-01-01 timestamp (so
// output is deterministic), and its data padded to start at a multiple of
// `alignment` (torch >= 2.5 memory-maps storages at 64-byte boundaries).
// ZIP64 fields and end records are written only where a size, offset or
// count does not fit the classic fields (or always, with force_zip64).
//
// Thread-safety: one writer, one thread. Bytes go to the sink in order; the
// sink's exceptions propagate.
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "util/bytes.hpp"

namespace mithril::formats {

struct ZipWriterOptions {
  std::uint32_t alignment = 64;  // 0 or 1: no padding; else a power of two <= 4096
  bool force_zip64 = false;      // ZIP64 fields everywhere (tests of the large-file path)
};

class ZipWriter {
 public:
  using Sink = std::function<void(util::ByteSpan)>;

  // Throws Error(invalid_argument) for a bad alignment.
  explicit ZipWriter(Sink sink, ZipWriterOptions options = {});

  // Appends one STORED record holding the concatenation of `pieces` (a tensor
  // can be written from several buffers without joining them first).
  // Throws Error(invalid_argument) for an empty, over-long or duplicate name,
  // or after finish().
  void add(std::string_view name, const std::vector<util::ByteSpan>& pieces);
  void add(std::string_view name, util::ByteSpan data) { add(name, std::vector<util::ByteSpan>{data}); }

  // Writes the central directory and end records. Call once, last.
  void finish();

  // Bytes handed to the sink so far.
  std::uint64_t size() const noexcept { return m_offset; }

 private:
  struct Record {
    std::string name;
    std::uint32_t crc32 = 0;
    std::uint64_t size = 0;
    std::uint64_t header_offset = 0;
  };
  void emit(util::ByteSpan bytes);

  Sink m_sink;
  ZipWriterOptions m_options;
  std::vector<Record> m_records;
  std::set<std::string, std::less<>> m_names;
  std::uint64_t m_offset = 0;
  bool m_finished = false;
};

}  // namespace mithril::formats
