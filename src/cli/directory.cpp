// cli/directory.cpp — planning `compress DIR` / `decompress DIR` (see directory.hpp).
#include "cli/directory.hpp"

#include <algorithm>
#include <system_error>

#include <fmt/core.h>

#include "mithril/error.hpp"

namespace mithril::cli {

namespace fs = std::filesystem;

std::vector<DirectoryJob> plan_directory(const fs::path& input, const fs::path& output, DirectoryDirection direction,
                                         bool force) {
  std::vector<DirectoryJob> jobs;
  std::error_code ec;
  fs::recursive_directory_iterator it(input, fs::directory_options::none, ec), end;
  if (ec) throw Error(Errc::io, fmt::format("{}: cannot list: {}", input.string(), ec.message()));
  for (; it != end; it.increment(ec)) {
    if (ec) throw Error(Errc::io, fmt::format("{}: cannot list: {}", input.string(), ec.message()));
    if (!it->is_regular_file(ec) || it->is_symlink(ec)) continue;
    const fs::path rel = fs::relative(it->path(), input);
    DirectoryJob job{it->path(), output / rel, it->file_size(ec)};
    if (direction == DirectoryDirection::compress) {
      job.output += ".mcp";
    } else {
      if (rel.extension() != ".mcp")
        throw Error(Errc::invalid_argument,
                    fmt::format("{}: not an .mcp file; decompress of a directory takes a tree made by "
                                "`mithril compress DIR` (only .mcp files)",
                                it->path().string()));
      job.output.replace_extension();
    }
    jobs.push_back(std::move(job));
  }
  std::sort(jobs.begin(), jobs.end(), [](const auto& a, const auto& b) { return a.input < b.input; });
  if (jobs.empty()) throw Error(Errc::invalid_argument, fmt::format("{}: no files in this directory", input.string()));
  if (!force)
    for (const auto& j : jobs)
      if (fs::exists(fs::symlink_status(j.output)))
        throw Error(Errc::exists, fmt::format("{}: already exists (use -f to overwrite)", j.output.string()));
  return jobs;
}

}  // namespace mithril::cli
