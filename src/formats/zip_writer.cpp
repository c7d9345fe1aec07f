#include "formats/zip_writer.hpp"

#include <fmt/format.h>

#include "formats/zip_reader.hpp"
#include "mithril/error.hpp"

namespace mithril::formats {
namespace {

constexpr std::uint16_t k_flag_utf8 = 0x0800;       // APPNOTE 4.4.4 bit 11
constexpr std::uint16_t k_dos_date_1980 = 0x0021;   // 1980-01-01, the earliest DOS date
constexpr std::uint16_t k_version_classic = 20;     // 2.0: stored/deflated
constexpr std::uint16_t k_version_zip64 = 45;       // 4.5: ZIP64
constexpr std::uint16_t k_extra_zip64 = 0x0001;
constexpr std::uint16_t k_extra_padding = 0x4246;   // "FB", the id torch (miniz) pads with
constexpr std::uint32_t k_u32_max = 0xFFFFFFFF;
constexpr std::uint16_t k_u16_max = 0xFFFF;

}  // namespace

ZipWriter::ZipWriter(Sink sink, ZipWriterOptions options) : m_sink(std::move(sink)), m_options(options) {
  const auto a = m_options.alignment;
  if (a > 4096 || (a > 1 && (a & (a - 1)) != 0))
    throw Error(Errc::invalid_argument, fmt::format("zip alignment {} is not a power of two up to 4096", a));
}

void ZipWriter::emit(util::ByteSpan bytes) {
  if (!bytes.empty()) m_sink(bytes);
  m_offset += bytes.size();
}

void ZipWriter::add(std::string_view name, const std::vector<util::ByteSpan>& pieces) {
  if (m_finished) throw Error(Errc::invalid_argument, "zip writer: add() after finish()");
  if (name.empty() || name.size() > k_u16_max)
    throw Error(Errc::invalid_argument, fmt::format("zip writer: record name of {} bytes", name.size()));
  if (m_names.contains(name))
    throw Error(Errc::invalid_argument, fmt::format("zip writer: duplicate record '{}'", name));
  Record r;
  r.name = std::string(name);
  r.header_offset = m_offset;
  for (const auto& p : pieces) {
    r.crc32 = zip_crc32(p, r.crc32);
    r.size += p.size();
  }
  const bool zip64 = m_options.force_zip64 || r.size >= k_u32_max;

  util::ByteVector extra;
  if (zip64) {
    // The local ZIP64 field holds both sizes (APPNOTE 4.5.3).
    util::append_le<std::uint16_t>(extra, k_extra_zip64);
    util::append_le<std::uint16_t>(extra, 16);
    util::append_le<std::uint64_t>(extra, r.size);
    util::append_le<std::uint64_t>(extra, r.size);
  }
  const auto align = m_options.alignment;
  if (align > 1) {
    const std::uint64_t unpadded = m_offset + 30 + name.size() + extra.size() + 4;
    const auto pad = static_cast<std::uint16_t>((align - unpadded % align) % align);
    util::append_le<std::uint16_t>(extra, k_extra_padding);
    util::append_le<std::uint16_t>(extra, pad);
    extra.resize(extra.size() + pad, std::byte{'Z'});
  }

  util::ByteVector h;
  h.reserve(30 + name.size() + extra.size());
  util::append_le<std::uint32_t>(h, k_sig_local);
  util::append_le<std::uint16_t>(h, zip64 ? k_version_zip64 : k_version_classic);
  util::append_le<std::uint16_t>(h, k_flag_utf8);
  util::append_le<std::uint16_t>(h, k_zip_stored);
  util::append_le<std::uint16_t>(h, 0);  // time 00:00:00
  util::append_le<std::uint16_t>(h, k_dos_date_1980);
  util::append_le<std::uint32_t>(h, r.crc32);
  util::append_le<std::uint32_t>(h, zip64 ? k_u32_max : static_cast<std::uint32_t>(r.size));
  util::append_le<std::uint32_t>(h, zip64 ? k_u32_max : static_cast<std::uint32_t>(r.size));
  util::append_le<std::uint16_t>(h, static_cast<std::uint16_t>(name.size()));
  util::append_le<std::uint16_t>(h, static_cast<std::uint16_t>(extra.size()));
  util::append_bytes(h, util::as_bytes(name));
  util::append_bytes(h, extra);
  emit(h);
  for (const auto& p : pieces) emit(p);
  m_names.insert(r.name);
  m_records.push_back(std::move(r));
}

void ZipWriter::finish() {
  if (m_finished) throw Error(Errc::invalid_argument, "zip writer: finish() called twice");
  m_finished = true;
  const std::uint64_t cd_offset = m_offset;
  util::ByteVector cd;
  for (const auto& r : m_records) {
    const bool big_size = m_options.force_zip64 || r.size >= k_u32_max;
    const bool big_offset = m_options.force_zip64 || r.header_offset >= k_u32_max;
    util::ByteVector extra;
    if (big_size || big_offset) {
      // Only the saturated fields, in the order size, compressed size, offset.
      util::append_le<std::uint16_t>(extra, k_extra_zip64);
      util::append_le<std::uint16_t>(extra, static_cast<std::uint16_t>((big_size ? 16 : 0) + (big_offset ? 8 : 0)));
      if (big_size) {
        util::append_le<std::uint64_t>(extra, r.size);
        util::append_le<std::uint64_t>(extra, r.size);
      }
      if (big_offset) util::append_le<std::uint64_t>(extra, r.header_offset);
    }
    const bool zip64 = !extra.empty();
    util::append_le<std::uint32_t>(cd, k_sig_central);
    util::append_le<std::uint16_t>(cd, zip64 ? k_version_zip64 : k_version_classic);  // made by (MS-DOS host)
    util::append_le<std::uint16_t>(cd, zip64 ? k_version_zip64 : k_version_classic);  // needed to extract
    util::append_le<std::uint16_t>(cd, k_flag_utf8);
    util::append_le<std::uint16_t>(cd, k_zip_stored);
    util::append_le<std::uint16_t>(cd, 0);
    util::append_le<std::uint16_t>(cd, k_dos_date_1980);
    util::append_le<std::uint32_t>(cd, r.crc32);
    util::append_le<std::uint32_t>(cd, big_size ? k_u32_max : static_cast<std::uint32_t>(r.size));
    util::append_le<std::uint32_t>(cd, big_size ? k_u32_max : static_cast<std::uint32_t>(r.size));
    util::append_le<std::uint16_t>(cd, static_cast<std::uint16_t>(r.name.size()));
    util::append_le<std::uint16_t>(cd, static_cast<std::uint16_t>(extra.size()));
    util::append_le<std::uint16_t>(cd, 0);  // comment
    util::append_le<std::uint16_t>(cd, 0);  // disk
    util::append_le<std::uint16_t>(cd, 0);  // internal attributes
    util::append_le<std::uint32_t>(cd, 0);  // external attributes
    util::append_le<std::uint32_t>(cd, big_offset ? k_u32_max : static_cast<std::uint32_t>(r.header_offset));
    util::append_bytes(cd, util::as_bytes(r.name));
    util::append_bytes(cd, extra);
  }
  emit(cd);
  const std::uint64_t cd_size = cd.size();
  const std::uint64_t count = m_records.size();
  const bool zip64_end = m_options.force_zip64 || count >= k_u16_max || cd_size >= k_u32_max || cd_offset >= k_u32_max;

  util::ByteVector end;
  if (zip64_end) {
    const std::uint64_t z64 = m_offset;
    util::append_le<std::uint32_t>(end, k_sig_zip64_eocd);
    util::append_le<std::uint64_t>(end, 44);  // size of the rest of this record
    util::append_le<std::uint16_t>(end, k_version_zip64);
    util::append_le<std::uint16_t>(end, k_version_zip64);
    util::append_le<std::uint32_t>(end, 0);  // this disk
    util::append_le<std::uint32_t>(end, 0);  // disk of the central directory
    util::append_le<std::uint64_t>(end, count);
    util::append_le<std::uint64_t>(end, count);
    util::append_le<std::uint64_t>(end, cd_size);
    util::append_le<std::uint64_t>(end, cd_offset);
    util::append_le<std::uint32_t>(end, k_sig_zip64_locator);
    util::append_le<std::uint32_t>(end, 0);
    util::append_le<std::uint64_t>(end, z64);
    util::append_le<std::uint32_t>(end, 1);  // total disks
  }
  util::append_le<std::uint32_t>(end, k_sig_eocd);
  util::append_le<std::uint16_t>(end, 0);
  util::append_le<std::uint16_t>(end, 0);
  const auto count16 = zip64_end ? k_u16_max : static_cast<std::uint16_t>(count);
  util::append_le<std::uint16_t>(end, count16);
  util::append_le<std::uint16_t>(end, count16);
  util::append_le<std::uint32_t>(end, zip64_end ? k_u32_max : static_cast<std::uint32_t>(cd_size));
  util::append_le<std::uint32_t>(end, zip64_end ? k_u32_max : static_cast<std::uint32_t>(cd_offset));
  util::append_le<std::uint16_t>(end, 0);  // comment length
  emit(end);
}

}  // namespace mithril::formats
