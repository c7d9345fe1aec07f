// cache/content_store.hpp — immutable blobs addressed by their BLAKE3 digest.
//
// Layout: DIR/<first 2 hex digits>/<64 hex digits>. Blob file grammar
// (little-endian):
//
//   blob   := magic "MTHB" | version u8 (=1) | codec u8 | reserved u16 (=0)
//             | raw_size u64 | payload
//   codec  := 0 (payload is the raw bytes) | 1 (payload is one zstd frame)
//
// The digest is BLAKE3 of the raw (uncompressed) bytes. Blobs are compressed
// with zstd only when that saves at least 1/8 of the size.
//
// Writes go to a temporary in the fan-out directory and are renamed into
// place, so a blob is either absent or whole; two processes storing the same
// blob race harmlessly (same bytes). Reads verify the digest: a blob that
// fails is moved to the quarantine directory and reported as a miss — its
// bytes are never handed out.
//
// Thread-safety: all member functions may be called concurrently, from any
// number of threads and processes sharing the directory.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <vector>

#include "util/blake3.hpp"
#include "util/bytes.hpp"

namespace mithril::cache {

enum class Compression { automatic, none };

class ContentStore {
 public:
  // Creates dir and quarantine_dir if missing.
  ContentStore(std::filesystem::path dir, std::filesystem::path quarantine_dir);

  // Stores data (no-op when already present) and returns its digest.
  // Throws Error(io) when the blob cannot be written.
  util::Digest put(util::ByteSpan data, Compression compression = Compression::automatic);

  // The verified bytes of a blob; nullopt when absent, or when the blob is
  // corrupt (then quarantined, and corrupt_count() is incremented).
  std::optional<util::ByteVector> get(const util::Digest& digest);

  enum class State { ok, missing, corrupt };
  // Verifies a blob without returning it (quarantines a corrupt one).
  State check(const util::Digest& digest);

  bool contains(const util::Digest& digest) const;
  // Deletes a blob; false if it was absent.
  bool remove(const util::Digest& digest);
  // Size of the blob file on disk (header + payload); 0 when absent.
  std::uint64_t stored_size(const util::Digest& digest) const;
  std::filesystem::path blob_path(const util::Digest& digest) const;

  // Every digest present (order unspecified). Skips temporaries and junk.
  std::vector<util::Digest> list() const;

  // Corrupt blobs this object has found since construction.
  std::uint64_t corrupt_count() const noexcept { return m_corrupt.load(); }

 private:
  std::optional<util::ByteVector> load(const util::Digest& digest, bool want_bytes, State& state);
  void quarantine(const std::filesystem::path& path, const util::Digest& digest);

  std::filesystem::path m_dir;
  std::filesystem::path m_quarantine;
  std::atomic<std::uint64_t> m_corrupt{0};
};

// Decodes one blob file image (header + payload), verifying its digest.
// nullopt when the image is malformed, declares more than max_raw_size bytes
// or does not match `expected`. Memory grows with the bytes the payload
// really decodes to, never with what the header declares.
std::optional<util::ByteVector> decode_blob(util::ByteSpan image, const util::Digest& expected,
                                            std::uint64_t max_raw_size = UINT64_MAX);
// Encodes raw bytes as a blob file image.
util::ByteVector encode_blob(util::ByteSpan raw, Compression compression);

}  // namespace mithril::cache
