#include "checkpoint/plan.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <optional>

#include <fmt/format.h>

#include "formats/dtype.hpp"
#include "formats/safetensors.hpp"
#include "formats/torch_checkpoint.hpp"
#include "formats/zip_reader.hpp"
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
    plan.chunks.push_back({seg.offset + off, static_cast<std::uint32_t>(n), index, kind, index});
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

// Element layout of a torch storage, for dtypes safetensors cannot name too.
codec::ChunkKind chunk_kind_for_storage(const formats::TorchStorage& s) {
  if (s.dtype) return chunk_kind_for_dtype(formats::dtype_info(*s.dtype).name);
  codec::ChunkKind k;
  k.is_tensor = true;
  if (s.torch_dtype == "complex128") {
    k.width = 8;  // pairs of fp64
    k.is_float = true;
  } else if (s.torch_dtype == "complex32") {
    k.width = 2;  // pairs of fp16
    k.is_float = true;
  } else if (s.element_size == 2 || s.element_size == 4 || s.element_size == 8) {
    k.width = s.element_size;
  }
  return k;
}

// What `info` and delta matching call a storage: the dotted names of the
// tensors that view it, then its key. Long lists of views are shortened so
// that names stay readable (and deterministic).
std::string storage_segment_name(const formats::TorchCheckpoint& ck, std::uint32_t storage,
                                 const std::vector<std::uint32_t>& views) {
  constexpr std::size_t k_max_listed = 8;
  std::string out;
  for (std::size_t i = 0; i < views.size() && i < k_max_listed; ++i) {
    if (!out.empty()) out += ", ";
    const auto& n = ck.tensors[views[i]].name;
    out += n.empty() ? "<root>" : n;
  }
  if (views.size() > k_max_listed) out += fmt::format(", ... (+{} more)", views.size() - k_max_listed);
  if (!out.empty()) out += ' ';
  return out + "[storage " + ck.storages[storage].key + "]";
}

// The shape a storage segment reports: the viewing tensor's when exactly one
// tensor covers the whole storage in order, else the flat element count.
std::vector<std::uint64_t> storage_segment_shape(const formats::TorchCheckpoint& ck, std::uint32_t storage,
                                                 const std::vector<std::uint32_t>& views) {
  const auto& s = ck.storages[storage];
  if (views.size() == 1) {
    const auto& t = ck.tensors[views[0]];
    if (t.storage_offset == 0 && t.contiguous() && t.element_size == s.element_size && t.numel() == s.numel)
      return t.shape;
  }
  return {s.numel};
}

// A torch.save zip archive: every STORED, non-empty storage record's data is a
// tensor segment; everything between them (local headers, data.pkl, small
// records, the central directory) stays raw bytes, so the file is rebuilt
// byte for byte. Throws what read_torch_checkpoint throws.
void plan_torch(SourcePlan& plan, util::ByteSpan file, std::string_view file_name, std::size_t chunk_size) {
  const auto ck = formats::read_torch_checkpoint(file, file_name);
  plan.kind = "torch";
  std::vector<std::vector<std::uint32_t>> views(ck.storages.size());  // tensors of each storage
  for (std::uint32_t t = 0; t < ck.tensors.size(); ++t) views[ck.tensors[t].storage].push_back(t);
  std::uint64_t pos = 0;
  for (std::uint32_t i = 0; i < ck.storages.size(); ++i) {
    const auto& s = ck.storages[i];  // sorted by data_offset, non-overlapping
    if (!s.stored || s.data_size == 0) continue;
    if (s.data_offset > pos) add_raw(plan, pos, s.data_offset - pos, chunk_size);
    container::Segment seg;
    seg.kind = container::SegmentKind::tensor;
    seg.offset = s.data_offset;
    seg.size = s.data_size;
    seg.name = storage_segment_name(ck, i, views[i]);
    seg.dtype = s.dtype ? std::string(formats::dtype_info(*s.dtype).name) : s.torch_dtype;
    seg.shape = storage_segment_shape(ck, i, views[i]);
    add_segment(plan, std::move(seg), chunk_kind_for_storage(s), chunk_size);
    ++plan.tensor_count;
    pos = s.data_offset + s.data_size;
  }
  if (pos < file.size()) add_raw(plan, pos, file.size() - pos, chunk_size);
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

namespace {

// A tensor's statistics for share_small_chunks: the histogram of its
// elements' high bytes below the sign bit (a float's exponent, the top of an
// integer's magnitude), from every element up to 1024 of them, then at least
// one in 16 (the estimate's bias, about (symbols - 1) / (2 ln 2) bits per
// sampled element, then stays below ~250 bits a tensor for ~20 symbols).
struct Sample {
  std::array<double, 256> count{};
  double elements = 0;  // the tensor's, which the sample stands for
  double sampled = 0;
};

// Integer counts in four interleaved tables (a run of one exponent would
// otherwise wait on each increment), the element's top two bytes loaded as one.
// The first version (a double count, a memcpy of `width` bytes an element)
// took 19% of compressing a 12-layer bf16 transformer (144 tensors, 4.8 MB).
template <unsigned Width>
Sample sample_tensor_of(util::ByteSpan b) {
  Sample s;
  const std::size_t n = b.size() / Width;
  s.elements = static_cast<double>(n);
  if (n == 0) return s;
  const std::size_t step = n <= 1024 ? 1 : std::min<std::size_t>(16, n / 1024);
  std::array<std::array<std::uint32_t, 256>, 4> counts{};
  std::size_t k = 0, taken = 0;
  for (std::size_t i = 0; i < n; i += step, ++k, ++taken) {
    const auto top = util::load_le<std::uint16_t>(b.data() + i * Width + (Width - 2));  // little-endian
    ++counts[k & 3][(top >> 7) & 0xff];
  }
  for (unsigned v = 0; v < 256; ++v)
    s.count[v] = static_cast<double>(counts[0][v] + counts[1][v] + counts[2][v] + counts[3][v]);
  s.sampled = static_cast<double>(taken);
  return s;
}

Sample sample_tensor(util::ByteSpan b, unsigned width) {
  switch (width) {
    case 2: return sample_tensor_of<2>(b);
    case 4: return sample_tensor_of<4>(b);
    case 8: return sample_tensor_of<8>(b);
    default: {  // bytes: their own histogram, from the same sample
      Sample s;
      s.elements = static_cast<double>(b.size());
      const std::size_t step = b.size() <= 1024 ? 1 : std::min<std::size_t>(16, b.size() / 1024);
      for (std::size_t i = 0; i < b.size(); i += step, s.sampled += 1) s.count[static_cast<std::uint8_t>(b[i])] += 1;
      return s;
    }
  }
}

// Bits lost by coding a and b with one order-0 model instead of each with its
// own: a.n KL(a || m) + b.n KL(b || m), m their mixture weighted by elements.
double sharing_penalty(const Sample& a, const Sample& b) {
  if (a.sampled == 0 || b.sampled == 0) return 0;
  const double total = a.elements + b.elements;
  double bits = 0;
  for (unsigned k = 0; k < 256; ++k) {
    if (a.count[k] == 0 && b.count[k] == 0) continue;  // most of the 256
    const double pa = a.count[k] / a.sampled, pb = b.count[k] / b.sampled;
    const double m = (a.elements * pa + b.elements * pb) / total;
    if (pa > 0) bits += a.elements * pa * std::log2(pa / m);
    if (pb > 0) bits += b.elements * pb * std::log2(pb / m);
  }
  return bits;
}

// The chunk's statistics so far and one more tensor's, as one sample.
void merge_sample(Sample& into, const Sample& t) {
  const double total = into.elements + t.elements;
  if (t.sampled > 0) {
    for (unsigned k = 0; k < 256; ++k)
      into.count[k] = (into.elements * (into.sampled ? into.count[k] / into.sampled : 0) +
                       t.elements * t.count[k] / t.sampled) /
                      total;
    into.sampled = 1;  // count now holds probabilities
  }
  into.elements = total;
}

}  // namespace

void share_small_chunks(SourcePlan& plan, std::size_t chunk_size,
                        const std::function<util::ByteSpan(const ChunkPlan&)>& bytes) {
  if (plan.kind != "safetensors") return;
  const std::uint64_t limit = std::min<std::uint64_t>(chunk_size, k_shared_chunk);
  auto& segs = plan.segments;
  // Whether segment i may join a shared chunk: a whole small tensor in one chunk.
  const auto small = [&](std::size_t i) {
    const auto& s = segs[i];
    return s.kind == container::SegmentKind::tensor && s.chunk_count == 1 && s.size < k_small_tensor &&
           !s.base_offset;
  };
  std::vector<ChunkPlan> chunks;
  chunks.reserve(plan.chunks.size());
  // A tensor is sampled only once a neighbour could join it, and once: the
  // one whose statistics ended a run starts the next with its sample.
  std::size_t carried_at = SIZE_MAX;
  Sample carried;
  for (std::size_t i = 0; i < segs.size();) {
    // The run starting at i: consecutive, contiguous, the same kind, within the limit.
    std::size_t j = i + 1;
    if (small(i)) {
      std::uint64_t total = segs[i].size;
      const auto& kind = plan.chunks[segs[i].first_chunk].kind;
      std::optional<Sample> shared;
      while (j < segs.size() && small(j) && segs[j].offset == segs[j - 1].offset + segs[j - 1].size &&
             total + segs[j].size <= limit) {
        const auto& c = plan.chunks[segs[j].first_chunk];
        if (c.kind.width != kind.width || c.kind.is_float != kind.is_float) break;
        if (!shared)
          shared = carried_at == i ? carried : sample_tensor(bytes(plan.chunks[segs[i].first_chunk]), kind.width);
        Sample next = sample_tensor(bytes(c), kind.width);
        if (sharing_penalty(*shared, next) > k_share_penalty_bits) {
          carried_at = j;
          carried = next;
          break;
        }
        merge_sample(*shared, next);
        total += segs[j].size;
        ++j;
      }
    }
    const auto first = static_cast<std::uint32_t>(chunks.size());
    if (j - i >= 2) {
      ChunkPlan c = plan.chunks[segs[i].first_chunk];
      c.size = static_cast<std::uint32_t>(segs[j - 1].offset + segs[j - 1].size - segs[i].offset);
      c.last_segment = static_cast<std::uint32_t>(j - 1);
      chunks.push_back(c);
      for (std::size_t k = i; k < j; ++k) {
        segs[k].first_chunk = first;
        segs[k].chunk_count = 1;
      }
    } else {
      auto& s = segs[i];
      for (std::uint32_t c = s.first_chunk; c < s.first_chunk + s.chunk_count; ++c) chunks.push_back(plan.chunks[c]);
      s.first_chunk = first;
    }
    i = j;
  }
  plan.chunks = std::move(chunks);
}

SourcePlan plan_single_tensor(std::uint64_t size, std::string_view dtype, std::size_t chunk_size) {
  check_chunk_size(chunk_size);
  const auto t = formats::parse_dtype(dtype);
  if (!t)
    throw Error(Errc::invalid_argument,
                fmt::format("unknown dtype '{}' (expected a safetensors dtype such as F32, BF16)", dtype));
  const auto& info = formats::dtype_info(*t);
  if ((size * 8) % info.bits != 0 || (info.bits >= 8 && size % (info.bits / 8) != 0))
    throw Error(Errc::invalid_argument,
                fmt::format("{} bytes are not a whole number of {} elements", size, info.name));
  SourcePlan plan;
  plan.kind = "raw";
  container::Segment seg;
  seg.kind = container::SegmentKind::tensor;
  seg.size = size;
  seg.name = "data";
  seg.dtype = std::string(info.name);
  seg.shape = {size * 8 / info.bits};
  add_segment(plan, std::move(seg), chunk_kind_for_dtype(info.name), chunk_size);
  plan.tensor_count = 1;
  return plan;
}

SourcePlan plan_torch_source(util::ByteSpan file, std::string_view file_name, std::size_t chunk_size) {
  check_chunk_size(chunk_size);
  SourcePlan plan;
  plan_torch(plan, file, file_name, chunk_size);
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
  if (formats::looks_like_legacy_torch_save(file)) {
    plan.note = fmt::format("{}: legacy torch.save file (torch < 1.6); compressing it as raw bytes", file_name);
  } else if (formats::looks_like_zip(file)) {
    try {
      plan_torch(plan, file, file_name, chunk_size);
      return plan;
    } catch (const Error& e) {
      // Whatever the reader refuses (a hostile pickle included) is still
      // compressed losslessly, as bytes; nothing in it is ever interpreted.
      plan = SourcePlan{};
      plan.kind = "raw";
      plan.note = std::string(e.what()) + "; compressing it as raw bytes";
    }
  }
  // Named as one, but not even its first bytes are (a truncated download).
  if (plan.note.empty() && file_name.ends_with(".safetensors"))
    plan.note = fmt::format("{}: not a safetensors file ({}); compressing it as raw bytes", file_name,
                            formats::safetensors_sniff_failure(file));
  add_raw(plan, 0, file.size(), chunk_size);
  return plan;
}

}  // namespace mithril::checkpoint
