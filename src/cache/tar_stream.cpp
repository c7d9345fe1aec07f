#include "cache/tar_stream.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <fmt/core.h>

#include "cache/fs_util.hpp"
#include "mithril/error.hpp"

namespace mithril::cache {
namespace {

constexpr std::size_t k_block = 512;
constexpr std::uint64_t k_ustar_max_size = 077777777777ULL;  // 11 octal digits
constexpr std::uint64_t k_max_pax_header = 64 * 1024;

void put_octal(std::byte* field, std::size_t width, std::uint64_t v) {
  // width-1 digits, then NUL.
  std::string s = fmt::format("{:0{}o}", v, width - 1);
  std::memcpy(field, s.data(), width - 1);
  field[width - 1] = std::byte{0};
}

std::string pax_record(const std::string& key, const std::string& value) {
  // "LEN key=value\n" where LEN counts the whole record, itself included.
  const std::size_t body = 1 + key.size() + 1 + value.size() + 1;
  std::size_t len = body + 1;
  while (std::to_string(len).size() + body != len) len = std::to_string(len).size() + body;
  return std::to_string(len) + " " + key + "=" + value + "\n";
}

void fill_header(std::byte* h, const std::string& name, std::uint64_t size, char type, unsigned mode) {
  std::memset(h, 0, k_block);
  std::memcpy(h, name.data(), std::min<std::size_t>(name.size(), 100));
  put_octal(h + 100, 8, mode);
  put_octal(h + 108, 8, 0);
  put_octal(h + 116, 8, 0);
  put_octal(h + 124, 12, std::min(size, k_ustar_max_size));
  put_octal(h + 136, 12, 0);  // mtime 0: bundles are reproducible
  h[156] = static_cast<std::byte>(type);
  std::memcpy(h + 257, "ustar", 6);
  std::memcpy(h + 263, "00", 2);
  std::memset(h + 148, ' ', 8);
  unsigned sum = 0;
  for (std::size_t i = 0; i < k_block; ++i) sum += std::to_integer<unsigned>(h[i]);
  std::string s = fmt::format("{:06o}", sum);
  std::memcpy(h + 148, s.data(), 6);
  h[154] = std::byte{0};
  h[155] = std::byte{' '};
}

std::optional<std::uint64_t> parse_number(const std::byte* field, std::size_t width) {
  if (std::to_integer<unsigned>(field[0]) & 0x80) {  // GNU base-256
    std::uint64_t v = std::to_integer<unsigned>(field[0]) & 0x7f;
    for (std::size_t i = 1; i < width; ++i) {
      if (v >> 56) return std::nullopt;
      v = (v << 8) | std::to_integer<unsigned>(field[i]);
    }
    return v;
  }
  std::uint64_t v = 0;
  std::size_t i = 0;
  while (i < width && (field[i] == std::byte{' '})) ++i;
  bool any = false;
  for (; i < width; ++i) {
    const char c = static_cast<char>(field[i]);
    if (c == '\0' || c == ' ') break;
    if (c < '0' || c > '7') return std::nullopt;
    if (v >> 60) return std::nullopt;
    v = v * 8 + static_cast<unsigned>(c - '0');
    any = true;
  }
  if (!any) return 0;
  return v;
}

std::string field_string(const std::byte* f, std::size_t width) {
  const auto* c = reinterpret_cast<const char*>(f);
  return std::string(c, strnlen(c, width));
}

}  // namespace

// ---------------------------------------------------------------- writer

TarWriter::TarWriter(const std::filesystem::path& path, int zstd_level)
    : m_file(path, util::Overwrite::allow, util::Durability::sync) {
  m_ctx.reset(ZSTD_createCCtx());
  if (!m_ctx) throw Error(Errc::internal, "zstd: out of memory");
  ZSTD_CCtx_setParameter(m_ctx.get(), ZSTD_c_compressionLevel, zstd_level);
  ZSTD_CCtx_setParameter(m_ctx.get(), ZSTD_c_checksumFlag, 1);
  m_out.resize(ZSTD_CStreamOutSize());
}

TarWriter::~TarWriter() = default;

void TarWriter::write_raw(util::ByteSpan data) {
  ZSTD_inBuffer in{data.data(), data.size(), 0};
  while (in.pos < in.size) {
    ZSTD_outBuffer out{m_out.data(), m_out.size(), 0};
    const std::size_t rc = ZSTD_compressStream2(m_ctx.get(), &out, &in, ZSTD_e_continue);
    if (ZSTD_isError(rc)) throw Error(Errc::internal, std::string("zstd: ") + ZSTD_getErrorName(rc));
    m_file.write({m_out.data(), out.pos});
    m_out_bytes += out.pos;
  }
}

void TarWriter::flush(ZSTD_EndDirective mode) {
  ZSTD_inBuffer in{nullptr, 0, 0};
  for (;;) {
    ZSTD_outBuffer out{m_out.data(), m_out.size(), 0};
    const std::size_t rc = ZSTD_compressStream2(m_ctx.get(), &out, &in, mode);
    if (ZSTD_isError(rc)) throw Error(Errc::internal, std::string("zstd: ") + ZSTD_getErrorName(rc));
    m_file.write({m_out.data(), out.pos});
    m_out_bytes += out.pos;
    if (rc == 0) break;
  }
}

void TarWriter::add_file(const std::string& name, util::ByteSpan data, bool executable) {
  std::byte h[k_block];
  std::string pax;
  if (name.size() > 99) pax += pax_record("path", name);
  if (data.size() > k_ustar_max_size) pax += pax_record("size", std::to_string(data.size()));
  if (!pax.empty()) {
    fill_header(h, "PaxHeaders/entry", pax.size(), 'x', 0644);
    write_raw({h, k_block});
    write_raw(util::as_bytes(pax));
    const std::size_t pad = (k_block - pax.size() % k_block) % k_block;
    std::byte zeros[k_block] = {};
    write_raw({zeros, pad});
  }
  fill_header(h, name, data.size(), '0', executable ? 0755 : 0644);
  write_raw({h, k_block});
  write_raw(data);
  const std::size_t pad = (k_block - data.size() % k_block) % k_block;
  std::byte zeros[k_block] = {};
  write_raw({zeros, pad});
}

void TarWriter::finish() {
  if (m_finished) return;
  std::byte zeros[2 * k_block] = {};
  write_raw({zeros, sizeof zeros});
  flush(ZSTD_e_end);
  m_file.commit();
  m_finished = true;
}

// ---------------------------------------------------------------- reader

TarReader::TarReader(const std::filesystem::path& path, std::uint64_t max_member_size)
    : m_path(path), m_max_member(max_member_size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) util::throw_errno(path, "cannot open bundle");
  m_fd = util::UniqueFd(fd);
  m_ctx.reset(ZSTD_createDCtx());
  if (!m_ctx) throw Error(Errc::internal, "zstd: out of memory");
  // Bound the decoder's window: a bundle must not make us allocate gigabytes.
  ZSTD_DCtx_setParameter(m_ctx.get(), ZSTD_d_windowLogMax, 27);
  m_in.resize(ZSTD_DStreamInSize());
  m_out.resize(ZSTD_DStreamOutSize());
}

TarReader::~TarReader() = default;

void TarReader::fail(const std::string& why) const {
  throw Error(Errc::corrupt, m_path.string() + (m_member.empty() ? "" : ": member '" + m_member + "'") + ": " + why);
}

void TarReader::read_exact(std::byte* dst, std::size_t n) {
  while (n > 0) {
    if (m_out_pos < m_out_size) {
      const std::size_t k = std::min(n, m_out_size - m_out_pos);
      std::memcpy(dst, m_out.data() + m_out_pos, k);
      m_out_pos += k;
      dst += k;
      n -= k;
      continue;
    }
    if (m_in_pos == m_in_size && !m_eof) {
      ssize_t got;
      do got = ::read(m_fd.get(), m_in.data(), m_in.size());
      while (got < 0 && errno == EINTR);
      if (got < 0) util::throw_errno(m_path, "read failed");
      m_in_pos = 0;
      m_in_size = static_cast<std::size_t>(got);
      if (got == 0) m_eof = true;
    }
    if (m_in_pos == m_in_size && m_eof) fail(m_frame_done ? "truncated archive" : "truncated zstd stream");
    ZSTD_inBuffer in{m_in.data(), m_in_size, m_in_pos};
    ZSTD_outBuffer out{m_out.data(), m_out.size(), 0};
    const std::size_t rc = ZSTD_decompressStream(m_ctx.get(), &out, &in);
    if (ZSTD_isError(rc)) fail(std::string("not a valid zstd stream: ") + ZSTD_getErrorName(rc));
    m_frame_done = rc == 0;
    m_in_pos = in.pos;
    m_out_pos = 0;
    m_out_size = out.pos;
  }
}

void TarReader::skip(std::uint64_t n) {
  std::byte buf[4096];
  while (n > 0) {
    const auto k = static_cast<std::size_t>(std::min<std::uint64_t>(n, sizeof buf));
    read_exact(buf, k);
    n -= k;
  }
}

std::optional<TarMember> TarReader::next() {
  skip(m_pending);
  m_pending = 0;
  m_data_left = 0;
  m_member.clear();
  std::optional<std::string> pax_path;
  std::optional<std::uint64_t> pax_size;
  for (;;) {
    std::byte h[k_block];
    read_exact(h, k_block);
    if (std::all_of(h, h + k_block, [](std::byte b) { return b == std::byte{0}; })) return std::nullopt;
    unsigned sum = 0;
    for (std::size_t i = 0; i < k_block; ++i) sum += (i >= 148 && i < 156) ? ' ' : std::to_integer<unsigned>(h[i]);
    const auto stored = parse_number(h + 148, 8);
    if (!stored || *stored != sum) fail("bad tar header checksum");
    if (std::memcmp(h + 257, "ustar", 5) != 0) fail("not a ustar/pax archive");
    const char type = static_cast<char>(h[156]);
    auto size = parse_number(h + 124, 12);
    if (!size) fail("bad size field");
    std::string name = field_string(h, 100);
    const std::string prefix = field_string(h + 345, 155);
    if (!prefix.empty()) name = prefix + "/" + name;
    m_member = name;
    if (type == 'x' || type == 'g') {
      if (*size > k_max_pax_header) fail("oversized pax header");
      std::string data(static_cast<std::size_t>(*size), '\0');
      read_exact(reinterpret_cast<std::byte*>(data.data()), data.size());
      skip((k_block - *size % k_block) % k_block);
      if (type == 'g') continue;
      std::size_t pos = 0;
      while (pos < data.size()) {
        const auto sp = data.find(' ', pos);
        if (sp == std::string::npos) fail("bad pax record");
        std::size_t len = 0;
        for (std::size_t i = pos; i < sp; ++i) {
          if (data[i] < '0' || data[i] > '9' || len > data.size()) fail("bad pax record length");
          len = len * 10 + static_cast<std::size_t>(data[i] - '0');
        }
        if (len <= sp - pos + 1 || pos + len > data.size() || data[pos + len - 1] != '\n') fail("bad pax record");
        const std::string rec = data.substr(sp + 1, pos + len - sp - 2);
        const auto eq = rec.find('=');
        if (eq == std::string::npos) fail("bad pax record");
        const auto key = rec.substr(0, eq);
        const auto value = rec.substr(eq + 1);
        if (key == "path") pax_path = value;
        else if (key == "size") {
          std::uint64_t v = 0;
          for (char c : value) {
            if (c < '0' || c > '9' || v > (~std::uint64_t{0} / 10 - 9)) fail("bad pax size");
            v = v * 10 + static_cast<unsigned>(c - '0');
          }
          pax_size = v;
        } else if (key == "linkpath") {
          fail("links are not allowed in a bundle");
        }
        pos += len;
      }
      continue;
    }
    if (pax_path) name = *pax_path;
    if (pax_size) size = *pax_size;
    m_member = name;
    if (type == '1' || type == '2') fail("links are not allowed in a bundle (link out of the store)");
    if (type != '0' && type != '\0' && type != '7') fail(fmt::format("member type '{}' is not allowed (only regular files)", type));
    if (name.empty() || name.front() == '/') fail("absolute member name");
    if (!is_safe_relative_path(name)) fail("unsafe member name (path traversal)");
    if (*size > m_max_member) fail(fmt::format("member of {} bytes exceeds the limit of {} bytes", *size, m_max_member));
    const auto mode = parse_number(h + 100, 8).value_or(0644);
    m_data_left = *size;
    m_pending = *size + (k_block - *size % k_block) % k_block;
    return TarMember{name, *size, (mode & 0111) != 0};
  }
}

std::size_t TarReader::read_some(std::byte* dst, std::size_t max) {
  const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(max, m_data_left));
  read_exact(dst, n);
  m_data_left -= n;
  m_pending -= n;
  return n;
}

util::ByteVector TarReader::read_data() {
  // Grows with the bytes that really arrive: a header that declares a large
  // size on a truncated stream costs nothing.
  util::ByteVector out;
  constexpr std::size_t k_step = 64 * 1024;
  while (m_data_left > 0) {
    const auto at = out.size();
    out.resize(at + static_cast<std::size_t>(std::min<std::uint64_t>(k_step, m_data_left)));
    read_some(out.data() + at, out.size() - at);
  }
  return out;
}

}  // namespace mithril::cache
