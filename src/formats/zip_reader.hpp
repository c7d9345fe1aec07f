// formats/zip_reader.hpp — a small, strict reader of zip archives held in
// memory, as written by torch.save (PKWARE APPNOTE 6.3.10 structures).
//
//   file   := prefix? record* central_directory zip64_eocd? zip64_locator? eocd
//   record := local_header(PK\3\4, 30 bytes + name + extra) data data_descriptor?
//   central_directory := cd_header(PK\1\2, 46 bytes + name + extra + comment)*
//   zip64_eocd := PK\6\6 (56 bytes + extensible data); zip64_locator := PK\6\7 (20)
//   eocd   := PK\5\6 (22 bytes + comment of at most 65535 bytes)
//
// torch.save (miniz) writes STORED records with bit 3 set (sizes in a data
// descriptor and in the central directory, zeros in the local header) and pads
// the local extra field ("FB" id) so that every record's data starts at a
// multiple of 64. Sizes and offsets are therefore always taken from the central
// directory. A prefix before the archive (e.g. a self-extracting stub) shifts
// every offset: the shift is the distance between where the central directory
// is and where the end record says it is, as unzip and Python's zipfile do.
//
// Refused with Error(corrupt): a missing or inconsistent end record, anything
// that points outside the file, local headers that disagree with the central
// directory, duplicate names, overlapping records, CRC mismatches on extract.
// Refused with Error(unsupported): multi-disk archives, encryption, methods
// other than stored (0) and deflated (8).
//
// Thread-safety: a ZipReader is immutable after construction; concurrent reads
// are safe. It does not own the bytes: the span must outlive it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "util/bytes.hpp"

namespace mithril::formats {

inline constexpr std::uint16_t k_zip_stored = 0;
inline constexpr std::uint16_t k_zip_deflated = 8;
// Record signatures (APPNOTE 4.3.7, 4.3.12, 4.3.14-4.3.16), read and written.
inline constexpr std::uint32_t k_sig_local = 0x04034b50;
inline constexpr std::uint32_t k_sig_central = 0x02014b50;
inline constexpr std::uint32_t k_sig_eocd = 0x06054b50;
inline constexpr std::uint32_t k_sig_zip64_eocd = 0x06064b50;
inline constexpr std::uint32_t k_sig_zip64_locator = 0x07064b50;

struct ZipEntry {
  std::string name;
  std::uint16_t method = k_zip_stored;  // k_zip_stored or k_zip_deflated
  std::uint16_t flags = 0;              // general purpose bits (bit 3: data descriptor)
  std::uint32_t crc32 = 0;              // of the uncompressed bytes
  std::uint64_t compressed_size = 0;    // bytes of data in the file
  std::uint64_t size = 0;               // bytes once extracted
  std::uint64_t header_offset = 0;      // absolute file offset of the local header
  std::uint64_t data_offset = 0;        // absolute file offset of the first data byte
  bool stored() const noexcept { return method == k_zip_stored; }
};

class ZipReader {
 public:
  // Parses and validates the central directory and every local header.
  // `file_name` only prefixes error messages. Throws Error as described above.
  ZipReader(util::ByteSpan file, std::string_view file_name);

  // Entries in central directory order.
  const std::vector<ZipEntry>& entries() const noexcept { return m_entries; }

  // The entry with exactly this name, or nullptr (a miss is not an error).
  const ZipEntry* find(std::string_view name) const noexcept;

  // The raw bytes of a STORED entry inside the file, without copying or CRC
  // check. Throws Error(unsupported) for a deflated entry.
  util::ByteSpan stored_data(const ZipEntry& entry) const;

  // The uncompressed bytes of a stored or deflated entry, CRC-checked.
  // Throws Error(unsupported) if entry.size > max_size (refuses to allocate
  // what a lying header asks for), Error(corrupt) on bad deflate data or CRC.
  util::ByteVector extract(const ZipEntry& entry, std::uint64_t max_size) const;

  // Bytes before the archive proper (0 for a plain zip file).
  std::uint64_t prefix_size() const noexcept { return m_shift; }
  // Absolute offset of the central directory; every record ends before it.
  std::uint64_t central_directory_offset() const noexcept { return m_cd_offset; }
  bool zip64() const noexcept { return m_zip64; }

 private:
  void locate_end(std::uint64_t& cd_offset, std::uint64_t& cd_size, std::uint64_t& count);
  void parse_central_directory(std::uint64_t cd_size, std::uint64_t count);
  void check_local_headers();

  util::ByteSpan m_file;
  std::string m_name;
  std::vector<ZipEntry> m_entries;
  struct NameHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, std::size_t, NameHash, std::equal_to<>> m_by_name;  // index into m_entries
  std::uint64_t m_shift = 0;
  std::uint64_t m_cd_offset = 0;
  bool m_zip64 = false;
};

// CRC-32 (ISO-HDLC, as zip uses) of `data`, continuing from `crc` (0 to start).
std::uint32_t zip_crc32(util::ByteSpan data, std::uint32_t crc = 0) noexcept;

// True if the bytes start with a local file header signature (PK\3\4) or an
// end record (PK\5\6, an empty archive), or end with an end record whose
// comment reaches the end of the file (an archive behind a prefix). A cheap
// sniff (at most 64 KiB scanned); a true result still needs parsing.
bool looks_like_zip(util::ByteSpan file) noexcept;

}  // namespace mithril::formats
