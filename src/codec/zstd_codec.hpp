// codec/zstd_codec.hpp — RAII zstd contexts for one-shot frames.
//
// Contexts are reused across calls (allocation is expensive); one object per
// thread. Frames carry their content size.
#pragma once

#include <memory>
#include <optional>

#include "util/bytes.hpp"

struct ZSTD_CCtx_s;
struct ZSTD_DCtx_s;

namespace mithril::codec {

class ZstdCompressor {
 public:
  explicit ZstdCompressor(int level);
  ~ZstdCompressor();
  ZstdCompressor(ZstdCompressor&&) noexcept;
  ZstdCompressor& operator=(ZstdCompressor&&) noexcept;

  // Compresses into out; nullopt when the frame would not fit in out.size().
  std::optional<std::size_t> compress(util::ByteSpan in, util::MutableByteSpan out);
  // Appends a frame to out (which grows as needed).
  void compress_append(util::ByteSpan in, util::ByteVector& out);
  int level() const noexcept { return m_level; }

 private:
  struct Free {
    void operator()(ZSTD_CCtx_s* c) const noexcept;
  };
  std::unique_ptr<ZSTD_CCtx_s, Free> m_ctx;
  int m_level;
};

class ZstdDecompressor {
 public:
  ZstdDecompressor();
  ~ZstdDecompressor();
  ZstdDecompressor(ZstdDecompressor&&) noexcept;
  ZstdDecompressor& operator=(ZstdDecompressor&&) noexcept;

  // Decodes exactly one frame whose content is exactly out.size() bytes.
  // Throws Error(corrupt) on anything else.
  void decompress(util::ByteSpan frame, util::MutableByteSpan out);

 private:
  // Made by the first decompress(): every chunk decoder has one, and most
  // never meet a zstd plane (creating it was 1.4% of decompressing a 3 MB
  // file of small tensors).
  struct Free {
    void operator()(ZSTD_DCtx_s* c) const noexcept;
  };
  std::unique_ptr<ZSTD_DCtx_s, Free> m_ctx;
};

// Decodes a whole frame whose declared content size is at most max_size.
// Memory grows with the bytes actually decoded, not with the declared size.
// Throws Error(corrupt) on a malformed, truncated or oversized frame.
util::ByteVector zstd_decompress_bounded(util::ByteSpan frame, std::size_t max_size);

}  // namespace mithril::codec
