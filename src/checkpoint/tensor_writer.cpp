// checkpoint/tensor_writer.cpp — compress_tensors(): an .mcp of the
// safetensors file that tensors in memory make, coded from their buffers.
#include <chrono>

#include <fmt/format.h>

#include "checkpoint/encode.hpp"
#include "checkpoint/plan.hpp"
#include "formats/safetensors.hpp"
#include "mithril/error.hpp"
#include "mithril/memory.hpp"
#include "mithril/tensors.hpp"

namespace mithril {
namespace {

// "m.mcp" -> "m.safetensors", "m.safetensors.mcp" -> "m.safetensors": the
// name `mithril decompress` and `info` show for the source.
std::string safetensors_source_name_for(const std::filesystem::path& output) {
  std::filesystem::path name = output.filename();
  if (name.extension() == ".mcp") name.replace_extension();
  if (name.extension() != ".safetensors") name += ".safetensors";
  return name.string();
}

// The safetensors file the tensors make, planned, with its bytes read from
// the tensors' buffers (the header built in memory).
struct TensorSource {
  checkpoint::SourcePlan plan;
  util::ByteVector header_bytes;
  std::vector<util::ByteSpan> segment_bytes;  // segment k + 1 is tensor order[k]; segment 0 the header
  std::vector<std::uint64_t> segment_offsets;
  std::uint64_t size = 0;

  util::ByteSpan chunk(const checkpoint::ChunkPlan& c) const {
    return segment_bytes[c.segment].subspan(c.source_offset - segment_offsets[c.segment], c.size);
  }
};

// `where` names the output in messages.
TensorSource plan_tensors(const std::vector<TensorData>& tensors,
                          const std::map<std::string, std::string>& header_metadata, const std::string& where,
                          const CompressOptions& options) {
  checkpoint::check_level(options.level);
  std::vector<formats::TensorView> views;
  views.reserve(tensors.size());
  for (const auto& t : tensors) {
    const auto dtype = formats::parse_dtype(t.dtype);
    if (!dtype)
      throw Error(Errc::invalid_argument,
                  fmt::format("{}: tensor '{}': unknown dtype '{}' (expected a safetensors dtype such as F32, BF16)",
                              where, t.name, t.dtype));
    views.push_back({t.name, *dtype, t.shape, t.data});
  }
  TensorSource src;
  std::vector<std::size_t> order;
  src.header_bytes = formats::build_safetensors_header(views, header_metadata, &order);

  // The layout the header describes: tensors back to back in `order`.
  formats::SafetensorsHeader header;
  header.data_offset = src.header_bytes.size();
  header.header_size = src.header_bytes.size() - 8;
  header.metadata = header_metadata;
  std::uint64_t offset = 0;
  for (const auto i : order) {
    const auto& v = views[i];
    header.tensors.push_back({v.name, v.dtype, v.shape, offset, offset + v.data.size()});
    offset += v.data.size();
  }
  src.plan = checkpoint::plan_safetensors(header, options.chunk_size);
  src.size = header.data_offset + offset;

  src.segment_bytes.reserve(src.plan.segments.size());
  src.segment_bytes.push_back(src.header_bytes);
  for (const auto i : order) src.segment_bytes.push_back(views[i].data);
  for (const auto& s : src.plan.segments) src.segment_offsets.push_back(s.offset);
  if (src.segment_bytes.size() != src.plan.segments.size())
    throw Error(Errc::internal, "compress_tensors: plan does not match the tensor layout");
  return src;
}

}  // namespace

CompressResult compress_tensors(const std::vector<TensorData>& tensors,
                                const std::map<std::string, std::string>& header_metadata,
                                const std::filesystem::path& output, const CompressOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  TensorSource src = plan_tensors(tensors, header_metadata, output.string(), options);
  const std::uint64_t size = src.size;
  return checkpoint::write_container(
      output, std::move(src.plan), safetensors_source_name_for(output), size,
      [&src](const checkpoint::ChunkPlan& c) { return src.chunk(c); }, options, t0);
}

std::uint64_t compress_tensors_to_memory(const std::vector<TensorData>& tensors,
                                         const std::map<std::string, std::string>& header_metadata,
                                         const CompressOptions& options, const MemoryAllocator& allocate,
                                         std::string_view source_name) {
  const auto t0 = std::chrono::steady_clock::now();
  TensorSource src = plan_tensors(tensors, header_metadata, std::string(source_name), options);
  const std::uint64_t size = src.size;
  return checkpoint::write_container_to_memory(
             std::move(src.plan), std::string(source_name), size,
             [&src](const checkpoint::ChunkPlan& c) { return src.chunk(c); }, options, t0, allocate)
      .output_bytes;
}

}  // namespace mithril
