// checkpoint/compressor.cpp — compress_file(): map the source, plan it, and
// hand it to the shared pipeline (encode.cpp).
#include <chrono>
#include <type_traits>

#include <fmt/format.h>

#include "checkpoint/encode.hpp"
#include "checkpoint/plan.hpp"
#include "mithril/checkpoint.hpp"
#include "mithril/error.hpp"
#include "storage/url.hpp"
#include "util/mapped_file.hpp"

namespace mithril {

namespace {

// A source's bytes planned (tensor by tensor where it is a checkpoint) and
// coded into `output`: a path or URL, or an OrderedWriter.
template <class Output>
CompressResult compress_span(util::ByteSpan bytes, const std::string& display_name, const std::string& stored_name,
                             const Output& output, const CompressOptions& options,
                             std::chrono::steady_clock::time_point t0, const std::function<void()>& before_commit = {}) {
  checkpoint::SourcePlan plan = checkpoint::plan_source(bytes, display_name, options.chunk_size);
  if (!plan.note.empty() && options.warn) options.warn(plan.note);
  return checkpoint::write_container(
      output, std::move(plan), stored_name, bytes.size(),
      [bytes](const checkpoint::ChunkPlan& c) { return bytes.subspan(c.source_offset, c.size); }, options, t0,
      before_commit);
}

template <class Output>
CompressResult compress_path(const std::filesystem::path& input, const Output& output, const CompressOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  checkpoint::check_level(options.level);
  if (storage::is_url(input.string()))
    throw Error(Errc::unsupported, fmt::format("{}: compress reads a local file; download it first", input.string()));
  if constexpr (std::is_same_v<Output, std::filesystem::path>) {
    if (!storage::is_url(output.string()) && std::filesystem::exists(output) &&
        std::filesystem::equivalent(input, output))
      throw Error(Errc::invalid_argument, fmt::format("{}: input and output are the same file", output.string()));
  }
  util::MappedFile source(input);
  source.advise_will_read();
  // A file written while it was read (a training job saving over it in
  // place) gives chunks of two versions: refused rather than stored. (One
  // shrunk under the mapping raises SIGBUS instead: the CLI reports it; where
  // recover_from_shrinking_files() is in effect the reads find zeros and this
  // check refuses them, and a parse that fails on them says the file
  // shrank.)
  return util::check_if_failed(
      [&] {
        return compress_span(source.bytes(), input.string(), input.filename().string(), output, options, t0,
                             [&] { source.check_unchanged("compressed"); });
      },
      [&] { source.check_intact(); });
}

}  // namespace

CompressResult compress_file(const std::filesystem::path& input, const std::filesystem::path& output,
                             const CompressOptions& options) {
  return compress_path(input, output, options);
}

CompressResult compress_file(const std::filesystem::path& input, const OrderedWriter& write,
                             const CompressOptions& options) {
  return compress_path(input, write, options);
}

CompressResult compress_bytes(std::span<const std::byte> data, const std::string& name,
                              const std::filesystem::path& output, const CompressOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  checkpoint::check_level(options.level);
  return compress_span(data, name, name, output, options, t0);
}

CompressResult compress_bytes(std::span<const std::byte> data, const std::string& name, const OrderedWriter& write,
                              const CompressOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  checkpoint::check_level(options.level);
  return compress_span(data, name, name, write, options, t0);
}

}  // namespace mithril
