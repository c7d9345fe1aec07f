#include "checkpoint/plan.hpp"

#include <algorithm>

#include "formats/dtype.hpp"
#include "formats/safetensors.hpp"
#include "mithril/error.hpp"

namespace mithril::checkpoint {
namespace {

void add_segment(SourcePlan& plan, container::Segment seg, const codec::ChunkKind& kind, std::size_t chunk_size) {
  // Chunks are whole elements: round the chunk size down to the width.
  const std::size_t step = std::max<std::size_t>(kind.width, chunk_size - chunk_size % kind.width);
  seg.first_chunk = static_cast<std::uint32_t>(plan.chunks.size());
  const auto index = static_cast<std::uint32_t>(plan.segments.size());
  for (std::uint64_t off = 0; off < seg.size;) {
    const std::uint64_t n = std::min<std::uint64_t>(step, seg.size - off);
    plan.chunks.push_back({seg.offset + off, static_cast<std::uint32_t>(n), index, kind});
    off += n;
  }
  seg.chunk_count = static_cast<std::uint32_t>(plan.chunks.size()) - seg.first_chunk;
  plan.segments.push_back(std::move(seg));
}

void add_raw(SourcePlan& plan, std::uint64_t offset, std::uint64_t size, std::size_t chunk_size) {
  container::Segment seg;
  seg.kind = container::SegmentKind::raw;
  seg.offset = offset;
  seg.size = size;
  add_segment(plan, std::move(seg), codec::ChunkKind{1, false, false}, chunk_size);
}

void check_chunk_size(std::size_t chunk_size) {
  if (chunk_size < 64 || chunk_size > container::k_max_chunk_size)
    throw Error(Errc::invalid_argument, "chunk size must be between 64 bytes and 2 GiB");
}

}  // namespace

codec::ChunkKind chunk_kind_for_dtype(std::string_view dtype) {
  codec::ChunkKind k;
  k.is_tensor = true;
  const auto t = formats::parse_dtype(dtype);
  if (!t) return k;
  const auto& info = formats::dtype_info(*t);
  if (*t == formats::DType::C64) {
    k.width = 4;  // pairs of fp32
    k.is_float = true;
  } else if (info.bits == 16 || info.bits == 32 || info.bits == 64) {
    k.width = info.bits / 8;
    k.is_float = info.is_float;
  } else {
    k.width = 1;  // bytes, bools, fp8 and packed sub-byte formats
    k.is_float = false;
  }
  return k;
}

SourcePlan plan_safetensors(const formats::SafetensorsHeader& header, std::size_t chunk_size) {
  check_chunk_size(chunk_size);
  SourcePlan plan;
  plan.kind = "safetensors";
  add_raw(plan, 0, header.data_offset, chunk_size);
  for (const auto& t : header.tensors) {
    container::Segment seg;
    seg.kind = container::SegmentKind::tensor;
    seg.offset = header.data_offset + t.begin;
    seg.size = t.size();
    seg.name = t.name;
    seg.dtype = std::string(formats::dtype_info(t.dtype).name);
    seg.shape = t.shape;
    const auto kind = chunk_kind_for_dtype(seg.dtype);
    add_segment(plan, std::move(seg), kind, chunk_size);
  }
  plan.tensor_count = header.tensors.size();
  return plan;
}

SourcePlan plan_source(util::ByteSpan file, std::string_view file_name, std::size_t chunk_size) {
  check_chunk_size(chunk_size);
  SourcePlan plan;
  plan.kind = "raw";
  if (formats::looks_like_safetensors(file)) {
    try {
      const auto header = formats::parse_safetensors(file, file_name);
      plan = plan_safetensors(header, chunk_size);
      return plan;
    } catch (const Error& e) {
      if (e.code() != Errc::corrupt) throw;
      plan = SourcePlan{};
      plan.kind = "raw";
      plan.note = std::string(e.what()) + "; compressing it as raw bytes";
    }
  }
  add_raw(plan, 0, file.size(), chunk_size);
  return plan;
}

}  // namespace mithril::checkpoint
