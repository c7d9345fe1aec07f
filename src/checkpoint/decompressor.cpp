// checkpoint/decompressor.cpp — decompress_file(), verify_file(),
// describe_file(), is_mcp_file().
#include <chrono>
#include <cstring>
#include <type_traits>
#include <fstream>

#include <fmt/format.h>

#include "checkpoint/parallel.hpp"
#include "checkpoint/source.hpp"
#include "container/reader.hpp"
#include "formats/safetensors.hpp"
#include "formats/torch_checkpoint.hpp"
#include "formats/zip_reader.hpp"
#include "mithril/checkpoint.hpp"
#include "mithril/error.hpp"
#include "storage/url.hpp"
#include "util/atomic_file.hpp"
#include "util/blake3.hpp"
#include "util/clock.hpp"
#include "util/mapped_file.hpp"

namespace mithril {
namespace {

FileInfo describe_torch(const std::filesystem::path& path, util::ByteSpan bytes) {
  const auto ck = formats::read_torch_checkpoint(bytes, path.string());
  FileInfo info;
  info.path = path.string();
  info.kind = "torch";
  info.file_bytes = bytes.size();
  info.storages = ck.storages.size();
  std::uint64_t storage_bytes = 0;
  for (const auto& s : ck.storages) storage_bytes += s.stored ? s.data_size : 0;
  info.other_bytes = bytes.size() - storage_bytes;
  for (const auto& t : ck.tensors) {
    TensorSummary ts;
    ts.name = t.name;
    ts.dtype = t.dtype ? std::string(formats::dtype_info(*t.dtype).name) : t.torch_dtype;
    ts.shape = t.shape;
    ts.bytes = t.numel() * t.element_size;
    ts.storage = ck.storages[t.storage].key;
    ts.storage_offset = t.storage_offset;
    ts.contiguous = t.contiguous();
    info.tensors.push_back(std::move(ts));
  }
  for (const auto& v : ck.values) info.values.push_back({v.name, v.repr});
  return info;
}

FileInfo describe_plain(const std::filesystem::path& path, util::ByteSpan bytes) {
  if (formats::looks_like_legacy_torch_save(bytes) || formats::looks_like_zip(bytes)) return describe_torch(path, bytes);
  if (!formats::looks_like_safetensors(bytes))
    throw Error(Errc::unsupported, fmt::format("{}: not an .mcp, safetensors or torch.save file", path.string()));
  FileInfo info;
  info.path = path.string();
  info.kind = "safetensors";
  info.file_bytes = bytes.size();
  const auto header = formats::parse_safetensors(bytes, path.string());
  info.metadata = header.metadata;
  info.other_bytes = header.data_offset;
  for (const auto& t : header.tensors)
    info.tensors.push_back({t.name, std::string(formats::dtype_info(t.dtype).name), t.shape, t.size(), std::nullopt, 0});
  return info;
}

}  // namespace

namespace {

// Every chunk of `reader` restored into a new local file (atomically, by
// the workers at known offsets) or handed to an OrderedWriter in order.
template <class Output>
DecompressResult decompress_reader(const container::Reader& reader, const Output& output,
                                   const DecompressOptions& options, std::chrono::steady_clock::time_point t0) {
  auto base = checkpoint::open_base_for(reader, options.base, options.threads, options.remote);
  if constexpr (std::is_same_v<Output, std::filesystem::path>) {
    util::AtomicFile out(output, options.force ? util::Overwrite::allow : util::Overwrite::refuse,
                         options.sync ? util::Durability::sync : util::Durability::none);
    // Workers write each chunk at its source offset (the index's segments
    // cover the source exactly, checked when it was read).
    out.reserve(reader.index().source.size);
    checkpoint::DecodeTarget to_file;
    to_file.consume = [&](std::size_t c, util::ByteSpan raw) {
      out.write_at(reader.index().chunks[c].source_offset, raw);
    };
    checkpoint::decode_container(reader, base.get(), options.threads, to_file, nullptr, options.progress,
                                 checkpoint::digest_check(options.check_digest));
    out.commit();
  } else {
    checkpoint::DecodeTarget in_order;
    in_order.consume_in_order = [&output](std::size_t, util::ByteSpan raw) { output(raw); };
    checkpoint::decode_container(reader, base.get(), options.threads, in_order, nullptr, options.progress,
                                 checkpoint::digest_check(options.check_digest));
  }
  DecompressResult r;
  r.input_bytes = reader.file_size();
  r.output_bytes = reader.index().source.size;
  r.seconds = util::seconds_since(t0);
  return r;
}

void check_local_output(const std::filesystem::path& output) {
  if (storage::is_url(output.string()))
    throw Error(Errc::unsupported, fmt::format("{}: decompress writes a local file", output.string()));
}

}  // namespace

DecompressResult decompress_file(const std::filesystem::path& input, const std::filesystem::path& output,
                                 const DecompressOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  container::Reader reader(checkpoint::open_container_source(input, options.remote));
  check_local_output(output);
  if (!storage::is_url(input.string()) && std::filesystem::exists(output) && std::filesystem::equivalent(input, output))
    throw Error(Errc::invalid_argument, fmt::format("{}: input and output are the same file", output.string()));
  return decompress_reader(reader, output, options, t0);
}

DecompressResult decompress_file(const std::filesystem::path& input, const OrderedWriter& write,
                                 const DecompressOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  return decompress_reader(container::Reader(checkpoint::open_container_source(input, options.remote)), write,
                           options, t0);
}

DecompressResult decompress_bytes(std::span<const std::byte> mcp, const std::string& name,
                                  const std::filesystem::path& output, const DecompressOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  const container::Reader reader(std::make_shared<util::SpanSource>(mcp, name));
  check_local_output(output);
  return decompress_reader(reader, output, options, t0);
}

DecompressResult decompress_bytes(std::span<const std::byte> mcp, const std::string& name, const OrderedWriter& write,
                                  const DecompressOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  return decompress_reader(container::Reader(std::make_shared<util::SpanSource>(mcp, name)), write, options, t0);
}

namespace {

VerifyResult verify_reader(const container::Reader& reader, const std::string& input, const VerifyOptions& options,
                           std::chrono::steady_clock::time_point t0) {
  VerifyResult r;
  r.chunks = reader.index().chunks.size();
  r.source_bytes = reader.index().source.size;
  std::unique_ptr<checkpoint::BaseSource> base;
  if (reader.index().base) {
    if (!options.base) {
      r.problems.push_back(fmt::format(
          "{}: delta against '{}' (BLAKE3 {}): chunk checksums of delta chunks need --base; checked the rest",
          input, reader.index().base->name, util::to_hex(reader.index().base->blake3)));
    } else {
      base = checkpoint::open_base_for(reader, options.base, options.threads, options.remote);
    }
  }
  try {
    checkpoint::decode_container(reader, base.get(), options.threads, {}, &r.problems, options.progress);
  } catch (const Error& e) {
    if (e.code() != Errc::invalid_argument) throw;
    // A delta chunk without its base: report what could not be checked.
    if (r.problems.empty()) r.problems.push_back(e.what());
  }
  r.ok = r.problems.empty();
  r.seconds = util::seconds_since(t0);
  return r;
}

}  // namespace

VerifyResult verify_file(const std::filesystem::path& input, const VerifyOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  return verify_reader(container::Reader(checkpoint::open_container_source(input, options.remote)), input.string(),
                       options, t0);
}

VerifyResult verify_bytes(std::span<const std::byte> mcp, const std::string& name, const VerifyOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  return verify_reader(container::Reader(std::make_shared<util::SpanSource>(mcp, name)), name, options, t0);
}

bool is_mcp_file(const std::filesystem::path& path, const RemoteOptions& remote) {
  if (!storage::is_url(path.string())) {
    std::ifstream f(path, std::ios::binary);
    std::array<char, 8> magic{};
    if (!f.read(magic.data(), magic.size())) return false;
    return std::memcmp(magic.data(), container::k_magic.data(), 8) == 0;
  }
  try {
    const auto source = checkpoint::open_container_source(path, remote);
    if (source->size() < 8) return false;
    util::ByteVector scratch;
    const auto magic = source->read(0, 8, scratch);
    return std::memcmp(magic.data(), container::k_magic.data(), 8) == 0;
  } catch (const Error&) {
    return false;
  }
}

namespace checkpoint {

// FileInfo of an opened .mcp (describe_file, CheckpointReader).
FileInfo describe_container(const container::Reader& reader, const std::string& path) {
  FileInfo info;
  info.path = path;
  const auto& index = reader.index();
  info.kind = "mcp";
  info.file_bytes = reader.file_size();
  info.format_version = fmt::format("{}.{}", reader.footer().major, reader.footer().minor);
  info.source_name = index.source.name;
  info.source_kind = index.source_kind;
  info.source_bytes = index.source.size;
  info.source_blake3 = util::to_hex(index.source.blake3);
  if (index.base) info.base = BaseSummary{index.base->name, index.base->size, util::to_hex(index.base->blake3)};
  info.metadata = index.metadata;
  info.chunks = index.chunks.size();
  std::uint64_t other_stored = 0;
  for (const auto& s : index.segments) {
    const std::uint64_t stored = container::stored_bytes(index, s);
    if (s.kind == container::SegmentKind::tensor) {
      info.tensors.push_back({s.name, s.dtype, s.shape, s.size, stored, s.chunk_count});
    } else {
      info.other_bytes += s.size;
      other_stored += stored;
    }
  }
  info.other_stored_bytes = other_stored;
  return info;
}

}  // namespace checkpoint

FileInfo describe_file(const std::filesystem::path& path, const RemoteOptions& remote) {
  if (storage::is_url(path.string())) {
    // Header, footer and index: two ranged reads (the header check
    // refuses anything that is not an .mcp).
    return checkpoint::describe_container(container::Reader(checkpoint::open_container_source(path, remote)),
                                          path.string());
  }
  if (is_mcp_file(path)) return checkpoint::describe_container(container::Reader(path), path.string());
  const util::MappedFile file(path);
  // A file cut after it was mapped reads as zeros: that is said, not the
  // parse error they give.
  return util::read_then_check([&] { return describe_plain(path, file.bytes()); }, [&] { file.check_intact(); });
}

}  // namespace mithril
