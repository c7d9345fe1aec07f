#include "cache/content_store.hpp"

#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <system_error>

#include <fmt/core.h>

#include "cache/fs_util.hpp"
#include "codec/zstd_codec.hpp"
#include "mithril/error.hpp"

namespace mithril::cache {
namespace {

constexpr char k_magic[4] = {'M', 'T', 'H', 'B'};
constexpr std::uint8_t k_version = 1;
constexpr std::uint8_t k_codec_raw = 0;
constexpr std::uint8_t k_codec_zstd = 1;
constexpr std::size_t k_header_size = 16;
constexpr std::size_t k_min_compress = 256;
// Upper bound on a blob's declared raw size: refuse absurd headers before
// allocating (a corrupt header must not become a huge allocation).
constexpr std::uint64_t k_max_raw_size = std::uint64_t{1} << 40;

}  // namespace

util::ByteVector encode_blob(util::ByteSpan raw, Compression compression) {
  util::ByteVector out(k_header_size);
  std::memcpy(out.data(), k_magic, 4);
  out[4] = std::byte{k_version};
  out[5] = std::byte{k_codec_raw};
  util::store_le<std::uint64_t>(out.data() + 8, raw.size());
  if (compression == Compression::automatic && raw.size() >= k_min_compress) {
    util::ByteVector z(ZSTD_compressBound(raw.size()));
    const std::size_t n = ZSTD_compress(z.data(), z.size(), raw.data(), raw.size(), 3);
    if (!ZSTD_isError(n) && n <= raw.size() - raw.size() / 8) {
      out[5] = std::byte{k_codec_zstd};
      out.insert(out.end(), z.begin(), z.begin() + static_cast<std::ptrdiff_t>(n));
      return out;
    }
  }
  util::append_bytes(out, raw);
  return out;
}

std::optional<util::ByteVector> decode_blob(util::ByteSpan image, const util::Digest& expected, std::uint64_t max_raw_size) {
  if (image.size() < k_header_size || std::memcmp(image.data(), k_magic, 4) != 0) return std::nullopt;
  if (std::to_integer<std::uint8_t>(image[4]) != k_version) return std::nullopt;
  const auto method = std::to_integer<std::uint8_t>(image[5]);
  const auto raw_size = util::load_le<std::uint64_t>(image.data() + 8);
  const auto payload = image.subspan(k_header_size);
  if (raw_size > std::min(max_raw_size, k_max_raw_size)) return std::nullopt;
  util::ByteVector raw;
  if (method == k_codec_raw) {
    if (payload.size() != raw_size) return std::nullopt;
    raw.assign(payload.begin(), payload.end());
  } else if (method == k_codec_zstd) {
    const auto frame = ZSTD_getFrameContentSize(payload.data(), payload.size());
    if (frame != raw_size) return std::nullopt;
    try {
      raw = codec::zstd_decompress_bounded(payload, static_cast<std::size_t>(raw_size));
    } catch (const Error&) {
      return std::nullopt;
    }
    if (raw.size() != raw_size) return std::nullopt;
  } else {
    return std::nullopt;
  }
  if (util::blake3(raw) != expected) return std::nullopt;
  return raw;
}

ContentStore::ContentStore(std::filesystem::path dir, std::filesystem::path quarantine_dir)
    : m_dir(std::move(dir)), m_quarantine(std::move(quarantine_dir)) {
  std::error_code ec;
  std::filesystem::create_directories(m_dir, ec);
  if (ec) throw Error(Errc::io, m_dir.string() + ": cannot create directory: " + ec.message());
  std::filesystem::create_directories(m_quarantine, ec);
  if (ec) throw Error(Errc::io, m_quarantine.string() + ": cannot create directory: " + ec.message());
}

std::filesystem::path ContentStore::blob_path(const util::Digest& digest) const {
  const auto hex = util::to_hex(digest);
  return m_dir / hex.substr(0, 2) / hex;
}

util::Digest ContentStore::put(util::ByteSpan data, Compression compression) {
  const auto digest = util::blake3(data);
  const auto path = blob_path(digest);
  if (lstat_path(path)) return digest;  // immutable: present means whole (verified on read)
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  if (ec) throw Error(Errc::io, path.parent_path().string() + ": cannot create directory: " + ec.message());
  write_file_replace(path, encode_blob(data, compression));
  return digest;
}

std::optional<util::ByteVector> ContentStore::load(const util::Digest& digest, bool want_bytes, State& state) {
  const auto path = blob_path(digest);
  util::ByteVector image;
  try {
    image = read_file(path);
  } catch (const Error& e) {
    if (e.code() == Errc::not_found) {
      state = State::missing;
      return std::nullopt;
    }
    throw;
  }
  auto raw = decode_blob(image, digest);
  if (!raw) {
    state = State::corrupt;
    quarantine(path, digest);
    return std::nullopt;
  }
  state = State::ok;
  if (!want_bytes) return util::ByteVector{};
  return raw;
}

std::optional<util::ByteVector> ContentStore::get(const util::Digest& digest) {
  State s{};
  return load(digest, true, s);
}

ContentStore::State ContentStore::check(const util::Digest& digest) {
  State s{};
  load(digest, false, s);
  return s;
}

void ContentStore::quarantine(const std::filesystem::path& path, const util::Digest& digest) {
  ++m_corrupt;
  const auto target = m_quarantine / fmt::format("blob-{}-{}", util::to_hex(digest), now_ns());
  std::error_code ec;
  std::filesystem::rename(path, target, ec);
  if (ec) std::filesystem::remove(path, ec);
  fmt::print(stderr, "mithril: cache: corrupt blob {} quarantined as {}\n", util::to_hex(digest), target.string());
}

bool ContentStore::contains(const util::Digest& digest) const { return lstat_path(blob_path(digest)).has_value(); }

bool ContentStore::remove(const util::Digest& digest) {
  std::error_code ec;
  return std::filesystem::remove(blob_path(digest), ec);
}

std::uint64_t ContentStore::stored_size(const util::Digest& digest) const {
  auto st = lstat_path(blob_path(digest));
  return st ? static_cast<std::uint64_t>(st->st_size) : 0;
}

std::vector<util::Digest> ContentStore::list() const {
  std::vector<util::Digest> out;
  std::error_code ec;
  for (const auto& fan : std::filesystem::directory_iterator(m_dir, ec)) {
    if (!fan.is_directory()) continue;
    std::error_code ec2;
    for (const auto& f : std::filesystem::directory_iterator(fan.path(), ec2)) {
      util::Digest d{};
      if (util::parse_hex_digest(f.path().filename().string(), d)) out.push_back(d);
    }
  }
  return out;
}

}  // namespace mithril::cache
