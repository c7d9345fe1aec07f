// checkpoint/compressor.cpp — compress_file(): map the source, plan it, and
// hand it to the shared pipeline (encode.cpp).
#include <chrono>

#include <fmt/format.h>

#include "checkpoint/encode.hpp"
#include "checkpoint/plan.hpp"
#include "mithril/checkpoint.hpp"
#include "mithril/error.hpp"
#include "storage/url.hpp"
#include "util/mapped_file.hpp"

namespace mithril {

CompressResult compress_file(const std::filesystem::path& input, const std::filesystem::path& output,
                             const CompressOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  checkpoint::check_level(options.level);
  if (storage::is_url(input.string()))
    throw Error(Errc::unsupported, fmt::format("{}: compress reads a local file; download it first", input.string()));
  if (!storage::is_url(output.string()) && std::filesystem::exists(output) && std::filesystem::equivalent(input, output))
    throw Error(Errc::invalid_argument, fmt::format("{}: input and output are the same file", output.string()));

  util::MappedFile source(input);
  source.advise_sequential();
  const util::ByteSpan bytes = source.bytes();
  checkpoint::SourcePlan plan = checkpoint::plan_source(bytes, input.string(), options.chunk_size);
  if (!plan.note.empty() && options.warn) options.warn(plan.note);
  return checkpoint::write_container(
      output, std::move(plan), input.filename().string(), bytes.size(),
      [bytes](const checkpoint::ChunkPlan& c) { return bytes.subspan(c.source_offset, c.size); }, options, t0);
}

}  // namespace mithril
