// libFuzzer target for a series' state file (series.json, read by every
// `mithril series` command through series_list()). Built and run by
// scripts/fuzz; replayed by ctest.
//
// Contract checked: series_list either throws Error(corrupt) naming the file
// or returns members sorted by unique step, each naming its own plain file inside
// the series directory, each delta naming a keyframe member as its base.
#include <cstddef>
#include <cstdint>
#include <set>

#include "fuzz_common.hpp"
#include "mithril/error.hpp"
#include "mithril/series.hpp"

using namespace mithril;
using mithril::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto dir = fuzz::scratch_dir() / "series";
  std::filesystem::create_directories(dir);
  fuzz::write_file(dir / "series.json", fuzz::as_span(data, size));
  std::vector<SeriesMember> members;
  try {
    members = series_list(dir);
  } catch (const Error& e) {
    check(e.code() == Errc::corrupt);
    check(e.what() != nullptr && std::string(e.what()).find("series.json") != std::string::npos);
    return 0;
  }
  std::set<std::uint64_t> keyframes;
  std::set<std::string> files;
  for (std::size_t i = 0; i < members.size(); ++i) {
    const auto& m = members[i];
    if (i > 0) check(members[i - 1].step < m.step);
    check(!m.file.empty() && m.file.find('/') == std::string::npos && m.file != "." && m.file != "..");
    check(files.insert(m.file).second);
    check(m.keyframe != m.base_step.has_value());
    if (m.keyframe) keyframes.insert(m.step);
  }
  for (const auto& m : members)
    if (m.base_step) check(keyframes.count(*m.base_step) == 1);
  return 0;
}
