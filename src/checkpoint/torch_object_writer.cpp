// checkpoint/torch_object_writer.cpp — compress_torch_object(): an .mcp of
// the torch.save archive a pickle and storages in memory make, coded from
// their buffers without building the archive.
//
// The archive is laid out by formats::ZipWriter (as torch 2.x lays it out);
// its small parts (local headers, data.pkl, small records, central
// directory) land in a sparse buffer of the archive's size, its storage data
// is only referenced. The restricted reader (read_torch_checkpoint, through
// plan_torch_source) then reads that buffer as it reads any torch.save file:
// it checks the pickle and yields the plan, so the output equals
// compress_file() of the real archive.
#include <chrono>
#include <map>
#include <set>

#include <fmt/format.h>

#include "checkpoint/encode.hpp"
#include "checkpoint/plan.hpp"
#include "formats/zip_writer.hpp"
#include "mithril/error.hpp"
#include "mithril/torch_object.hpp"
#include "util/sparse_buffer.hpp"

namespace mithril {
namespace {

constexpr std::string_view k_archive = "archive/";

// "m.mcp" -> "m.pt", "m.pt.mcp" -> "m.pt".
std::string pt_source_name_for(const std::filesystem::path& output) {
  std::filesystem::path name = output.filename();
  if (name.extension() == ".mcp") name.replace_extension();
  const auto ext = name.extension();
  if (ext != ".pt" && ext != ".pth" && ext != ".ckpt" && ext != ".bin") name += ".pt";
  return name.string();
}

// Bytes of archive structure around `records` records of at most `pickle`
// bytes of pickle: local header (30) + name + ZIP64 extra (20) + padding
// extra (4 + 63), central header (46) + name + ZIP64 extra (28), end records.
std::uint64_t archive_bound(std::uint64_t data_bytes, std::size_t records, std::uint64_t names_bytes) {
  return data_bytes + names_bytes * 2 + records * (30 + 20 + 4 + 63 + 46 + 28) + 22 + 56 + 20 + 4096;
}

}  // namespace

CompressResult compress_torch_object(std::span<const std::byte> pickle, const std::vector<StorageData>& storages,
                                     const std::filesystem::path& output, const CompressOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  checkpoint::check_level(options.level);
  const std::string name = output.string();

  std::set<std::string_view> keys;
  for (const auto& s : storages)
    if (s.key.empty() || !keys.insert(s.key).second)
      throw Error(Errc::invalid_argument, fmt::format("{}: storage key '{}' is empty or repeated", name, s.key));

  // The records, in torch.save's order.
  const std::string a(k_archive);
  std::vector<std::pair<std::string, util::ByteSpan>> records;
  records.emplace_back(a + "data.pkl", pickle);
  records.emplace_back(a + ".format_version", util::as_bytes("1"));
  records.emplace_back(a + ".storage_alignment", util::as_bytes("64"));
  records.emplace_back(a + "byteorder", util::as_bytes("little"));
  for (const auto& s : storages) records.emplace_back(a + "data/" + s.key, s.data);
  records.emplace_back(a + "version", util::as_bytes("3\n"));
  std::uint64_t data_bytes = 0, names_bytes = 0;
  for (const auto& [n, d] : records) {
    data_bytes += d.size();
    names_bytes += n.size();
  }

  // Storage bytes are skipped (recognised by address); everything else is
  // copied to its place in the sparse archive.
  util::SparseBuffer archive(archive_bound(data_bytes, records.size(), names_bytes));
  std::map<const std::byte*, std::size_t> storage_at;  // data start -> storages index
  for (std::size_t i = 0; i < storages.size(); ++i)
    if (!storages[i].data.empty()) storage_at.emplace(storages[i].data.data(), i);
  std::uint64_t pos = 0;
  std::map<std::uint64_t, std::size_t> storage_offsets;  // archive offset -> storages index
  formats::ZipWriter zip([&](util::ByteSpan b) {
    if (pos + b.size() > archive.size()) throw Error(Errc::internal, name + ": torch archive bound too small");
    if (const auto it = storage_at.find(b.data()); it != storage_at.end() && storages[it->second].data.size() == b.size())
      storage_offsets.emplace(pos, it->second);
    else
      std::memcpy(archive.mutable_bytes().data() + pos, b.data(), b.size());
    pos += b.size();
  });
  for (const auto& [n, d] : records) zip.add(n, d);
  zip.finish();
  const util::ByteSpan file = archive.bytes(pos);

  const std::string source_name = pt_source_name_for(output);
  checkpoint::SourcePlan plan = checkpoint::plan_torch_source(file, source_name, options.chunk_size);

  // Segment -> the bytes it covers: a storage's buffer, or the archive.
  std::vector<util::ByteSpan> segment_bytes(plan.segments.size());
  std::size_t matched = 0;
  for (std::size_t s = 0; s < plan.segments.size(); ++s) {
    const auto& seg = plan.segments[s];
    if (const auto it = storage_offsets.find(seg.offset); it != storage_offsets.end()) {
      segment_bytes[s] = storages[it->second].data;
      ++matched;
    } else {
      segment_bytes[s] = file.subspan(seg.offset, seg.size);
    }
    if (segment_bytes[s].size() != seg.size)
      throw Error(Errc::internal, fmt::format("{}: segment {} does not match the archive layout", name, s));
  }
  if (matched != storage_offsets.size())
    throw Error(Errc::invalid_argument,
                fmt::format("{}: {} storages were given but the pickle names {} of them", name, storage_offsets.size(),
                            matched));

  std::vector<std::uint64_t> segment_offsets;
  segment_offsets.reserve(plan.segments.size());
  for (const auto& seg : plan.segments) segment_offsets.push_back(seg.offset);
  return checkpoint::write_container(
      output, std::move(plan), source_name, file.size(),
      [&](const checkpoint::ChunkPlan& c) {
        return segment_bytes[c.segment].subspan(c.source_offset - segment_offsets[c.segment], c.size);
      },
      options, t0);
}

}  // namespace mithril
