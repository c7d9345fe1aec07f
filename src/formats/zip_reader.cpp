#include "formats/zip_reader.hpp"

#include <zlib.h>

#include <algorithm>
#include <limits>
#include <numeric>

#include <fmt/format.h>

#include "mithril/error.hpp"

namespace mithril::formats {
namespace {

constexpr std::uint64_t k_max_deflate_ratio = 1032;
constexpr std::size_t k_local_size = 30;
constexpr std::size_t k_central_size = 46;
constexpr std::size_t k_eocd_size = 22;
constexpr std::size_t k_zip64_eocd_size = 56;
constexpr std::size_t k_zip64_locator_size = 20;
constexpr std::uint16_t k_zip64_extra_id = 0x0001;
constexpr std::uint16_t k_flag_encrypted = 0x0001;
constexpr std::uint16_t k_flag_strong_encryption = 0x0040;

std::uint16_t u16(util::ByteSpan f, std::uint64_t at) { return util::load_le<std::uint16_t>(f.data() + at); }
std::uint32_t u32(util::ByteSpan f, std::uint64_t at) { return util::load_le<std::uint32_t>(f.data() + at); }
std::uint64_t u64(util::ByteSpan f, std::uint64_t at) { return util::load_le<std::uint64_t>(f.data() + at); }

// True if [at, at + n) lies inside [0, limit), without overflow.
bool fits(std::uint64_t at, std::uint64_t n, std::uint64_t limit) { return at <= limit && n <= limit - at; }

}  // namespace

std::uint32_t zip_crc32(util::ByteSpan data, std::uint32_t crc) noexcept {
  // zlib's crc32 takes a uInt length; feed it in pieces.
  uLong c = crc;
  const auto* p = reinterpret_cast<const Bytef*>(data.data());
  std::size_t left = data.size();
  while (left > 0) {
    const auto n = static_cast<uInt>(std::min<std::size_t>(left, 1u << 30));
    c = ::crc32(c, p, n);
    p += n;
    left -= n;
  }
  return static_cast<std::uint32_t>(c);
}

bool looks_like_zip(util::ByteSpan file) noexcept {
  if (file.size() < 4) return false;
  const auto sig = util::load_le<std::uint32_t>(file.data());
  if (sig == k_sig_local || sig == k_sig_eocd) return true;
  // A prefixed archive: an end record within the last 64 KiB + 22 bytes.
  if (file.size() < k_eocd_size) return false;
  const std::uint64_t size = file.size();
  const std::uint64_t lowest = size - k_eocd_size > 0xFFFF ? size - k_eocd_size - 0xFFFF : 0;
  for (std::uint64_t pos = size - k_eocd_size + 1; pos-- > lowest;)
    if (u32(file, pos) == k_sig_eocd && pos + k_eocd_size + u16(file, pos + 20) == size) return true;
  return false;
}

ZipReader::ZipReader(util::ByteSpan file, std::string_view file_name) : m_file(file), m_name(file_name) {
  std::uint64_t cd_offset = 0, cd_size = 0, count = 0;
  locate_end(cd_offset, cd_size, count);
  m_cd_offset = cd_offset;
  parse_central_directory(cd_size, count);
  check_local_headers();
}

void ZipReader::locate_end(std::uint64_t& cd_offset, std::uint64_t& cd_size, std::uint64_t& count) {
  const std::uint64_t size = m_file.size();
  if (size < k_eocd_size)
    throw Error(Errc::corrupt, fmt::format("{}: not a zip archive ({} bytes, no end of central directory)", m_name, size));

  // The end record is followed only by its comment (at most 65535 bytes); the
  // last signature whose comment reaches exactly the end of the file wins.
  std::uint64_t eocd = std::numeric_limits<std::uint64_t>::max();
  const std::uint64_t lowest = size - k_eocd_size > 0xFFFF ? size - k_eocd_size - 0xFFFF : 0;
  for (std::uint64_t pos = size - k_eocd_size + 1; pos-- > lowest;) {
    if (u32(m_file, pos) == k_sig_eocd && pos + k_eocd_size + u16(m_file, pos + 20) == size) {
      eocd = pos;
      break;
    }
  }
  if (eocd == std::numeric_limits<std::uint64_t>::max())
    throw Error(Errc::corrupt, fmt::format("{}: not a zip archive (no end of central directory record)", m_name));

  const std::uint16_t disk = u16(m_file, eocd + 4), cd_disk = u16(m_file, eocd + 6);
  const std::uint16_t n_disk = u16(m_file, eocd + 8), n_total = u16(m_file, eocd + 10);
  std::uint64_t end_of_cd = eocd;
  cd_size = u32(m_file, eocd + 12);
  cd_offset = u32(m_file, eocd + 16);
  count = n_total;

  const bool has_locator = eocd >= k_zip64_locator_size &&
                           u32(m_file, eocd - k_zip64_locator_size) == k_sig_zip64_locator;
  if (has_locator) {
    const std::uint64_t loc = eocd - k_zip64_locator_size;
    const std::uint64_t declared = u64(m_file, loc + 8);
    if (u32(m_file, loc + 4) != 0 || u32(m_file, loc + 16) > 1)
      throw Error(Errc::unsupported, fmt::format("{}: multi-disk zip archives are not supported", m_name));
    // The ZIP64 end record normally sits right before its locator; with
    // extensible data it is only found at its declared offset.
    std::uint64_t z64 = std::numeric_limits<std::uint64_t>::max();
    if (loc >= k_zip64_eocd_size && u32(m_file, loc - k_zip64_eocd_size) == k_sig_zip64_eocd)
      z64 = loc - k_zip64_eocd_size;
    else if (fits(declared, k_zip64_eocd_size, loc) && u32(m_file, declared) == k_sig_zip64_eocd)
      z64 = declared;
    else
      throw Error(Errc::corrupt, fmt::format("{}: ZIP64 end of central directory record not found (locator says offset {})",
                                             m_name, declared));
    if (u32(m_file, z64 + 16) != 0 || u32(m_file, z64 + 20) != 0 || u64(m_file, z64 + 24) != u64(m_file, z64 + 32))
      throw Error(Errc::unsupported, fmt::format("{}: multi-disk zip archives are not supported", m_name));
    if ((disk != 0 && disk != 0xFFFF) || (cd_disk != 0 && cd_disk != 0xFFFF))
      throw Error(Errc::unsupported, fmt::format("{}: multi-disk zip archives are not supported", m_name));
    const std::uint64_t count64 = u64(m_file, z64 + 32), size64 = u64(m_file, z64 + 40);
    const std::uint64_t offset64 = u64(m_file, z64 + 48);
    // Each classic field either saturates (defers to ZIP64) or must say the
    // same thing: two end records that disagree are two different archives.
    auto agrees = [](std::uint64_t narrow, std::uint64_t saturated, std::uint64_t wide) {
      return narrow == saturated || narrow == wide;
    };
    if (!agrees(n_total, 0xFFFF, count64) || !agrees(n_disk, 0xFFFF, count64) ||
        !agrees(cd_size, 0xFFFFFFFF, size64) || !agrees(cd_offset, 0xFFFFFFFF, offset64))
      throw Error(Errc::corrupt,
                  fmt::format("{}: end of central directory record disagrees with the ZIP64 end record", m_name));
    count = count64;
    cd_size = size64;
    cd_offset = offset64;
    end_of_cd = z64;
    m_zip64 = true;
  } else {
    if (disk != 0 || cd_disk != 0 || n_disk != n_total)
      throw Error(Errc::unsupported, fmt::format("{}: multi-disk zip archives are not supported", m_name));
    if (n_total == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF)
      throw Error(Errc::corrupt, fmt::format("{}: end of central directory asks for ZIP64 but has no ZIP64 locator", m_name));
  }

  if (cd_size > end_of_cd)
    throw Error(Errc::corrupt, fmt::format("{}: central directory size {} exceeds its space ({} bytes)", m_name, cd_size, end_of_cd));
  const std::uint64_t actual = end_of_cd - cd_size;
  if (cd_offset > actual)
    throw Error(Errc::corrupt, fmt::format("{}: central directory offset {} points past its position {}", m_name,
                                           cd_offset, actual));
  m_shift = actual - cd_offset;
  cd_offset = actual;
  if (count > cd_size / k_central_size)
    throw Error(Errc::corrupt, fmt::format("{}: {} entries cannot fit in a central directory of {} bytes", m_name, count,
                                           cd_size));
}

void ZipReader::parse_central_directory(std::uint64_t cd_size, std::uint64_t count) {
  const std::uint64_t end = m_cd_offset + cd_size;
  std::uint64_t pos = m_cd_offset;
  m_entries.reserve(count);
  for (std::uint64_t i = 0; i < count; ++i) {
    if (!fits(pos, k_central_size, end) || u32(m_file, pos) != k_sig_central)
      throw Error(Errc::corrupt, fmt::format("{}: central directory entry {} at offset {} is missing or truncated", m_name,
                                             i, pos));
    ZipEntry e;
    e.flags = u16(m_file, pos + 8);
    e.method = u16(m_file, pos + 10);
    e.crc32 = u32(m_file, pos + 16);
    e.compressed_size = u32(m_file, pos + 20);
    e.size = u32(m_file, pos + 24);
    const std::uint16_t name_len = u16(m_file, pos + 28), extra_len = u16(m_file, pos + 30);
    const std::uint16_t comment_len = u16(m_file, pos + 32);
    std::uint32_t disk_start = u16(m_file, pos + 34);
    e.header_offset = u32(m_file, pos + 42);
    const std::uint64_t var_len = std::uint64_t{name_len} + extra_len + comment_len;
    if (!fits(pos + k_central_size, var_len, end))
      throw Error(Errc::corrupt, fmt::format("{}: central directory entry {} at offset {} overruns the directory", m_name,
                                             i, pos));
    e.name = std::string(util::as_chars(m_file.subspan(pos + k_central_size, name_len)));

    // ZIP64 extended information: only the fields saturated in the fixed
    // header are present, in this order (APPNOTE 4.5.3).
    const bool need_usize = e.size == 0xFFFFFFFF, need_csize = e.compressed_size == 0xFFFFFFFF;
    const bool need_offset = e.header_offset == 0xFFFFFFFF, need_disk = disk_start == 0xFFFF;
    if (need_usize || need_csize || need_offset || need_disk) {
      std::uint64_t x = pos + k_central_size + name_len;
      const std::uint64_t x_end = x + extra_len;
      bool found = false;
      while (x + 4 <= x_end) {
        const std::uint16_t id = u16(m_file, x), len = u16(m_file, x + 2);
        if (!fits(x + 4, len, x_end)) break;
        if (id == k_zip64_extra_id) {
          std::uint64_t f = x + 4;
          const std::uint64_t f_end = f + len;
          auto take64 = [&](std::uint64_t& out) {
            if (!fits(f, 8, f_end))
              throw Error(Errc::corrupt, fmt::format("{}: {}: ZIP64 extra field too short", m_name, e.name));
            out = u64(m_file, f);
            f += 8;
          };
          if (need_usize) take64(e.size);
          if (need_csize) take64(e.compressed_size);
          if (need_offset) take64(e.header_offset);
          if (need_disk) {
            if (!fits(f, 4, f_end))
              throw Error(Errc::corrupt, fmt::format("{}: {}: ZIP64 extra field too short", m_name, e.name));
            disk_start = u32(m_file, f);
          }
          found = true;
          break;
        }
        x += 4 + len;
      }
      if (!found)
        throw Error(Errc::corrupt, fmt::format("{}: {}: sizes need a ZIP64 extra field, none found", m_name, e.name));
    }
    if (disk_start != 0)
      throw Error(Errc::unsupported, fmt::format("{}: {}: multi-disk zip archives are not supported", m_name, e.name));
    if (e.flags & (k_flag_encrypted | k_flag_strong_encryption))
      throw Error(Errc::unsupported, fmt::format("{}: {}: encrypted zip entries are not supported", m_name, e.name));
    if (e.method == k_zip_stored && e.compressed_size != e.size)
      throw Error(Errc::corrupt, fmt::format("{}: {}: stored entry with compressed size {} != size {}", m_name, e.name,
                                             e.compressed_size, e.size));
    if (e.header_offset > std::numeric_limits<std::uint64_t>::max() - m_shift)
      throw Error(Errc::corrupt, fmt::format("{}: {}: local header offset overflows", m_name, e.name));
    e.header_offset += m_shift;
    m_entries.push_back(std::move(e));
    pos += k_central_size + var_len;
  }
  if (pos != end)
    throw Error(Errc::corrupt, fmt::format("{}: central directory holds {} bytes after its {} entries", m_name, end - pos,
                                           count));
  for (std::size_t i = 0; i < m_entries.size(); ++i) {
    if (!m_by_name.emplace(m_entries[i].name, i).second)
      throw Error(Errc::corrupt, fmt::format("{}: duplicate zip entry '{}'", m_name, m_entries[i].name));
  }
}

void ZipReader::check_local_headers() {
  for (auto& e : m_entries) {
    const std::uint64_t h = e.header_offset;
    if (!fits(h, k_local_size, m_cd_offset) || u32(m_file, h) != k_sig_local)
      throw Error(Errc::corrupt, fmt::format("{}: {}: no local header at offset {}", m_name, e.name, h));
    const std::uint16_t method = u16(m_file, h + 8);
    const std::uint16_t name_len = u16(m_file, h + 26), extra_len = u16(m_file, h + 28);
    if (!fits(h + k_local_size, std::uint64_t{name_len} + extra_len, m_cd_offset))
      throw Error(Errc::corrupt, fmt::format("{}: {}: local header at offset {} overruns the archive", m_name, e.name, h));
    if (util::as_chars(m_file.subspan(h + k_local_size, name_len)) != e.name)
      throw Error(Errc::corrupt, fmt::format("{}: {}: local header at offset {} names a different file", m_name, e.name, h));
    if (method != e.method)
      throw Error(Errc::corrupt, fmt::format("{}: {}: local header method {} != central directory method {}", m_name,
                                             e.name, method, e.method));
    e.data_offset = h + k_local_size + name_len + extra_len;
    if (!fits(e.data_offset, e.compressed_size, m_cd_offset))
      throw Error(Errc::corrupt, fmt::format("{}: {}: {} bytes of data at offset {} run past the central directory",
                                             m_name, e.name, e.compressed_size, e.data_offset));
  }
  // Records must not overlap: overlapping entries let one byte range mean two
  // things (a classic zip-bomb and parser-confusion trick).
  std::vector<std::size_t> order(m_entries.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return m_entries[a].header_offset < m_entries[b].header_offset; });
  for (std::size_t i = 1; i < order.size(); ++i) {
    const auto& prev = m_entries[order[i - 1]];
    const auto& next = m_entries[order[i]];
    if (prev.data_offset + prev.compressed_size > next.header_offset)
      throw Error(Errc::corrupt, fmt::format("{}: zip entries '{}' and '{}' overlap", m_name, prev.name, next.name));
  }
}

const ZipEntry* ZipReader::find(std::string_view name) const noexcept {
  const auto it = m_by_name.find(name);
  return it == m_by_name.end() ? nullptr : &m_entries[it->second];
}

util::ByteSpan ZipReader::stored_data(const ZipEntry& entry) const {
  if (!entry.stored())
    throw Error(Errc::unsupported, fmt::format("{}: {}: entry is compressed (method {}), not stored", m_name, entry.name,
                                               entry.method));
  return m_file.subspan(entry.data_offset, entry.compressed_size);
}

util::ByteVector ZipReader::extract(const ZipEntry& entry, std::uint64_t max_size) const {
  if (entry.size > max_size)
    throw Error(Errc::unsupported, fmt::format("{}: {}: entry of {} bytes exceeds the limit of {} bytes", m_name,
                                               entry.name, entry.size, max_size));
  util::ByteVector out;
  if (entry.method == k_zip_stored) {
    const auto data = stored_data(entry);
    out.assign(data.begin(), data.end());
  } else if (entry.method == k_zip_deflated) {
    // Deflate expands at most 1032:1 (RFC 1951: a 258-byte match costs at
    // least 2 bits): a record claiming more than that is refused before any
    // allocation, and the buffer grows with what really inflates.
    if (entry.size > entry.compressed_size * k_max_deflate_ratio + 1024)
      throw Error(Errc::corrupt, fmt::format("{}: {}: declares {} bytes from {} compressed bytes (more than deflate "
                                             "can expand)", m_name, entry.name, entry.size, entry.compressed_size));
    z_stream zs{};
    if (inflateInit2(&zs, -MAX_WBITS) != Z_OK)
      throw Error(Errc::internal, fmt::format("{}: {}: inflateInit2 failed", m_name, entry.name));
    auto in = m_file.subspan(entry.data_offset, entry.compressed_size);
    std::byte dummy{};  // zlib wants a valid pointer even for zero-length buffers
    std::size_t in_pos = 0, out_pos = 0;
    int rc = Z_OK;
    for (;;) {
      const auto in_n = static_cast<uInt>(std::min<std::size_t>(in.size() - in_pos, 1u << 30));
      if (out_pos == out.size() && out.size() < entry.size)
        out.resize(static_cast<std::size_t>(
            std::min<std::uint64_t>(entry.size, out.size() + std::max<std::uint64_t>(out.size(), 1u << 16))));
      const auto out_n = static_cast<uInt>(std::min<std::size_t>(out.size() - out_pos, 1u << 30));
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(in_n ? in.data() + in_pos : &dummy));
      zs.avail_in = in_n;
      zs.next_out = reinterpret_cast<Bytef*>(out_n ? out.data() + out_pos : &dummy);
      zs.avail_out = out_n;
      rc = inflate(&zs, Z_NO_FLUSH);
      const std::size_t used = in_n - zs.avail_in, made = out_n - zs.avail_out;
      in_pos += used;
      out_pos += made;
      // Stops at the end of the stream, on an error, or when neither side
      // moves (input exhausted: truncated; output full: more data than the
      // header declares).
      if (rc != Z_OK || (used == 0 && made == 0)) break;
    }
    inflateEnd(&zs);
    if (rc != Z_STREAM_END || out_pos != entry.size)
      throw Error(Errc::corrupt, fmt::format("{}: {}: deflate data is corrupt or does not hold {} bytes", m_name,
                                             entry.name, entry.size));
  } else {
    throw Error(Errc::unsupported, fmt::format("{}: {}: zip compression method {} is not supported (only stored and "
                                               "deflated)", m_name, entry.name, entry.method));
  }
  if (zip_crc32(out) != entry.crc32)
    throw Error(Errc::corrupt, fmt::format("{}: {}: CRC-32 mismatch", m_name, entry.name));
  return out;
}

}  // namespace mithril::formats
