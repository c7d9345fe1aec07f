// checkpoint/tensor_writer.cpp — compress_tensors(): an .mcp of the
// safetensors file that tensors in memory make, coded from their buffers.
#include <chrono>

#include <fmt/format.h>

#include "checkpoint/encode.hpp"
#include "checkpoint/plan.hpp"
#include "formats/safetensors.hpp"
#include "mithril/error.hpp"
#include "mithril/tensors.hpp"

namespace mithril {
namespace {

// "m.mcp" -> "m.safetensors", "m.safetensors.mcp" -> "m.safetensors": the
// name `mithril decompress` and `info` show for the source.
std::string source_name_for(const std::filesystem::path& output) {
  std::filesystem::path name = output.filename();
  if (name.extension() == ".mcp") name.replace_extension();
  if (name.extension() != ".safetensors") name += ".safetensors";
  return name.string();
}

}  // namespace

CompressResult compress_tensors(const std::vector<TensorData>& tensors,
                                const std::map<std::string, std::string>& header_metadata,
                                const std::filesystem::path& output, const CompressOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  checkpoint::check_level(options.level);

  std::vector<formats::TensorView> views;
  views.reserve(tensors.size());
  for (const auto& t : tensors) {
    const auto dtype = formats::parse_dtype(t.dtype);
    if (!dtype)
      throw Error(Errc::invalid_argument,
                  fmt::format("{}: tensor '{}': unknown dtype '{}' (expected a safetensors dtype such as F32, BF16)",
                              output.string(), t.name, t.dtype));
    views.push_back({t.name, *dtype, t.shape, t.data});
  }
  std::vector<std::size_t> order;
  const util::ByteVector header_bytes = formats::build_safetensors_header(views, header_metadata, &order);

  // The layout the header describes: tensors back to back in `order`.
  formats::SafetensorsHeader header;
  header.data_offset = header_bytes.size();
  header.header_size = header_bytes.size() - 8;
  header.metadata = header_metadata;
  std::uint64_t offset = 0;
  for (const auto i : order) {
    const auto& v = views[i];
    header.tensors.push_back({v.name, v.dtype, v.shape, offset, offset + v.data.size()});
    offset += v.data.size();
  }
  checkpoint::SourcePlan plan = checkpoint::plan_safetensors(header, options.chunk_size);

  // Segment k + 1 is tensor order[k]; segment 0 the header.
  std::vector<util::ByteSpan> segment_bytes;
  std::vector<std::uint64_t> segment_offsets;
  segment_bytes.reserve(plan.segments.size());
  segment_bytes.push_back(header_bytes);
  for (const auto i : order) segment_bytes.push_back(views[i].data);
  for (const auto& s : plan.segments) segment_offsets.push_back(s.offset);
  if (segment_bytes.size() != plan.segments.size())
    throw Error(Errc::internal, "compress_tensors: plan does not match the tensor layout");

  return checkpoint::write_container(
      output, std::move(plan), source_name_for(output), header.data_offset + offset,
      [&](const checkpoint::ChunkPlan& c) {
        return segment_bytes[c.segment].subspan(c.source_offset - segment_offsets[c.segment], c.size);
      },
      options, t0);
}

}  // namespace mithril
