// checkpoint/series.cpp — keyframe + delta series in a directory
// (include/mithril/series.hpp).
#include "mithril/series.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "mithril/error.hpp"
#include "util/atomic_file.hpp"
#include "util/json_number.hpp"
#include "util/json_text.hpp"
#include "util/posix.hpp"
#include "util/stale_temporaries.hpp"

namespace mithril {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr const char* k_manifest = "series.json";

// Exclusive advisory lock on DIR/.lock for the lifetime of the object.
class DirLock {
 public:
  explicit DirLock(const fs::path& dir) : m_fd(::open((dir / ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)) {
    if (!m_fd) util::throw_errno(dir / ".lock", "cannot open lock file");
    while (::flock(m_fd.get(), LOCK_EX) != 0) {
      if (errno != EINTR) util::throw_errno(dir / ".lock", "cannot lock");
    }
  }

 private:
  util::UniqueFd m_fd;
};

json to_json(const SeriesMember& m) {
  json j{{"step", m.step},
         {"kind", m.keyframe ? "keyframe" : "delta"},
         {"file", m.file},
         {"source_bytes", m.source_bytes},
         {"stored_bytes", m.stored_bytes},
         {"source_name", m.source_name},
         {"blake3", m.blake3}};
  if (m.base_step) j["base_step"] = *m.base_step;
  if (!m.metrics.empty()) j["metrics"] = m.metrics;
  return j;
}

// Structural rules a manifest must follow (found by tests/fuzz/fuzz_series_state):
// two members sharing a step or a file would make `prune` delete a file a
// kept member still needs; a delta must name a keyframe of the series.
void check_members(const fs::path& path, const std::vector<SeriesMember>& members) {
  const auto bad = [&](const std::string& why) { return Error(Errc::corrupt, fmt::format("{}: {}", path.string(), why)); };
  std::set<std::string> files;
  for (std::size_t i = 0; i < members.size(); ++i) {
    const auto& m = members[i];
    if (i > 0 && members[i - 1].step == m.step) throw bad(fmt::format("step {} appears twice", m.step));
    if (!files.insert(m.file).second) throw bad(fmt::format("file '{}' belongs to two members", m.file));
    if (m.keyframe == m.base_step.has_value())
      throw bad(fmt::format("step {}: {}", m.step, m.keyframe ? "a keyframe with a base step" : "a delta without a base step"));
  }
  for (const auto& m : members) {
    if (!m.base_step) continue;
    const auto it = std::find_if(members.begin(), members.end(), [&](const auto& k) { return k.step == *m.base_step; });
    if (it == members.end() || !it->keyframe)
      throw bad(fmt::format("step {}: base step {} is not a keyframe of the series", m.step, *m.base_step));
  }
}

std::vector<SeriesMember> load(const fs::path& dir) {
  const fs::path path = dir / k_manifest;
  std::ifstream f(path);
  if (!f) throw Error(Errc::not_found, fmt::format("{}: no series here (missing {})", dir.string(), k_manifest));
  std::vector<SeriesMember> members;
  try {
    const json j = json::parse(f);
    if (j.value("format", std::string{}) != "mithril-series" || !util::json_has_u64(j, "version", 1))
      throw Error(Errc::corrupt, fmt::format("{}: not a version 1 series manifest", path.string()));
    const auto u64 = [&](const json& jm, const char* key) {
      const auto v = util::json_u64(jm, key);
      if (!v)
        throw Error(Errc::corrupt, fmt::format("{}: member '{}' missing or not a non-negative integer", path.string(), key));
      return *v;
    };
    for (const auto& jm : j.at("members")) {
      SeriesMember m;
      m.step = u64(jm, "step");
      m.keyframe = jm.at("kind").get<std::string>() == "keyframe";
      if (jm.contains("base_step")) m.base_step = u64(jm, "base_step");
      m.file = jm.at("file").get<std::string>();
      m.source_bytes = u64(jm, "source_bytes");
      m.stored_bytes = u64(jm, "stored_bytes");
      m.source_name = jm.value("source_name", std::string{});
      m.blake3 = jm.value("blake3", std::string{});
      if (jm.contains("metrics")) m.metrics = jm["metrics"].get<std::map<std::string, double>>();
      if (m.file.empty() || m.file.find('/') != std::string::npos || m.file.starts_with("."))
        throw Error(Errc::corrupt, fmt::format("{}: member file '{}' is not a plain name", path.string(), m.file));
      members.push_back(std::move(m));
    }
  } catch (const json::exception& e) {
    throw Error(Errc::corrupt, fmt::format("{}: malformed manifest: {}", path.string(), e.what()));
  }
  std::sort(members.begin(), members.end(), [](auto& a, auto& b) { return a.step < b.step; });
  check_members(path, members);
  return members;
}

void save(const fs::path& dir, const std::vector<SeriesMember>& members) {
  json j{{"format", "mithril-series"}, {"version", 1}, {"members", json::array()}};
  for (const auto& m : members) j["members"].push_back(to_json(m));
  const std::string text = j.dump(2) + "\n";
  util::write_file_atomic(dir / k_manifest, util::as_bytes(text), util::Overwrite::allow);
}

const SeriesMember* find_step(const std::vector<SeriesMember>& members, std::uint64_t step) {
  for (const auto& m : members)
    if (m.step == step) return &m;
  return nullptr;
}

// Drops `steps` from the manifest, then deletes their files. Call under the lock.
std::vector<SeriesMember> remove_locked(const fs::path& dir, std::vector<SeriesMember> members,
                                        const std::vector<std::uint64_t>& steps) {
  const auto doomed = [&](std::uint64_t s) { return std::find(steps.begin(), steps.end(), s) != steps.end(); };
  std::vector<SeriesMember> kept, removed;
  for (auto& m : members) (doomed(m.step) ? removed : kept).push_back(std::move(m));
  for (const auto& m : kept)
    if (!m.keyframe && m.base_step && doomed(*m.base_step))
      throw Error(Errc::invalid_argument, fmt::format("{}: step {} is the keyframe of step {}, which stays; not removed",
                                                      dir.string(), *m.base_step, m.step));
  save(dir, kept);  // first the manifest: a crash now leaves unreferenced files only
  for (const auto& m : removed) {
    std::error_code ec;
    fs::remove(dir / m.file, ec);
  }
  return removed;
}

}  // namespace

std::string series_member_file(std::uint64_t step) { return fmt::format("step-{:010}.mcp", step); }

std::vector<SeriesMember> series_list(const fs::path& dir) { return load(dir); }

SeriesMember series_add(const fs::path& dir, const fs::path& checkpoint, std::optional<std::uint64_t> step,
                        const SeriesOptions& options) {
  fs::create_directories(dir);
  DirLock lock(dir);
  std::vector<SeriesMember> members;
  if (fs::exists(dir / k_manifest)) members = load(dir);
  const std::uint64_t s = step ? *step : (members.empty() ? 0 : members.back().step + 1);
  if (find_step(members, s))
    throw Error(Errc::exists, fmt::format("{}: step {} is already in the series", dir.string(), s));

  // The latest keyframe (by step) and the deltas made since.
  const SeriesMember* keyframe = nullptr;
  unsigned deltas_since = 0;
  for (const auto& m : members) {
    if (m.keyframe) {
      keyframe = &m;
      deltas_since = 0;
    } else if (keyframe && m.base_step == keyframe->step) {
      ++deltas_since;
    }
  }

  SeriesMember member;
  member.step = s;
  member.file = series_member_file(s);
  // For people (list, info): a file name that is not UTF-8 is kept with U+FFFD.
  member.source_name = util::utf8_or_replacement(checkpoint.filename().string());
  const fs::path out = dir / member.file;

  CompressOptions co;
  co.level = options.level;
  co.threads = options.threads;
  co.force = true;  // a file not in the manifest is an orphan of an interrupted add
  co.progress = options.progress;
  co.metadata["step"] = std::to_string(s);

  bool done = false;
  if (keyframe && deltas_since < options.max_deltas) {
    co.base = dir / keyframe->file;
    const auto r = compress_file(checkpoint, out, co);
    const double keyframe_ratio = keyframe->stored_bytes
                                      ? static_cast<double>(keyframe->source_bytes) / keyframe->stored_bytes
                                      : 1.0;
    const double standalone_estimate = static_cast<double>(r.source_bytes) / keyframe_ratio;
    if (static_cast<double>(r.output_bytes) <= options.keyframe_threshold * standalone_estimate) {
      member.keyframe = false;
      member.base_step = keyframe->step;
      member.source_bytes = r.source_bytes;
      member.stored_bytes = r.output_bytes;
      done = true;
    }
  }
  if (!done) {
    co.base.reset();
    const auto r = compress_file(checkpoint, out, co);
    member.keyframe = true;
    member.source_bytes = r.source_bytes;
    member.stored_bytes = r.output_bytes;
  }
  member.blake3 = describe_file(out).source_blake3;
  members.push_back(member);
  std::sort(members.begin(), members.end(), [](auto& a, auto& b) { return a.step < b.step; });
  save(dir, members);  // the commit point: only now is the member part of the series
  return member;
}

DecompressResult series_restore(const fs::path& dir, std::uint64_t step, const fs::path& output, bool force,
                                unsigned threads, bool check_digest, ProgressCallback progress) {
  const auto members = load(dir);
  const SeriesMember* m = find_step(members, step);
  if (!m) throw Error(Errc::not_found, fmt::format("{}: no step {} in the series", dir.string(), step));
  const fs::path file = dir / m->file;
  series_check_member(file, m->blake3, (dir / k_manifest).string(), step);
  DecompressOptions o;
  o.threads = threads;
  o.force = force;
  o.check_digest = check_digest;
  o.progress = std::move(progress);
  if (!m->keyframe) {
    const SeriesMember* k = m->base_step ? find_step(members, *m->base_step) : nullptr;
    if (!k)
      throw Error(Errc::corrupt, fmt::format("{}: step {} is a delta whose keyframe is missing", dir.string(), step));
    o.base = dir / k->file;
  }
  return decompress_file(file, output, o);
}

FileInfo series_check_member(const fs::path& location, const std::string& expected_blake3,
                             const std::string& manifest, std::uint64_t step) {
  FileInfo info = describe_file(location);
  if (expected_blake3.empty()) return info;
  const auto& recorded = info.source_blake3;
  if (recorded != expected_blake3)
    throw Error(Errc::corrupt, fmt::format("{}: holds a checkpoint with BLAKE3 {}, but {} records {} for step {}",
                                           location.string(), recorded, manifest, expected_blake3, step));
  return info;
}

std::vector<SeriesMember> series_prune(const fs::path& dir, std::size_t keep) {
  DirLock lock(dir);
  auto members = load(dir);
  const std::size_t first_kept = members.size() > keep ? members.size() - keep : 0;
  std::vector<std::uint64_t> needed, doomed;
  for (std::size_t i = first_kept; i < members.size(); ++i)
    if (!members[i].keyframe && members[i].base_step) needed.push_back(*members[i].base_step);
  for (std::size_t i = 0; i < first_kept; ++i)
    if (std::find(needed.begin(), needed.end(), members[i].step) == needed.end()) doomed.push_back(members[i].step);
  return remove_locked(dir, std::move(members), doomed);
}

std::size_t series_remove_stale_temporaries(const fs::path& dir) { return util::remove_stale_temporaries(dir); }

std::vector<SeriesMember> series_remove(const fs::path& dir, const std::vector<std::uint64_t>& steps) {
  DirLock lock(dir);
  auto members = load(dir);
  for (const auto s : steps)
    if (!find_step(members, s))
      throw Error(Errc::not_found, fmt::format("{}: no step {} in the series", dir.string(), s));
  return remove_locked(dir, std::move(members), steps);
}

SeriesMember series_register(const fs::path& dir, std::uint64_t step, const std::string& file,
                             std::optional<std::uint64_t> base_step, const std::map<std::string, double>& metrics) {
  if (file.empty() || file.find('/') != std::string::npos || file.starts_with(".") || file == k_manifest)
    throw Error(Errc::invalid_argument, fmt::format("{}: member file '{}' is not a plain name", dir.string(), file));
  DirLock lock(dir);
  std::vector<SeriesMember> members;
  if (fs::exists(dir / k_manifest)) members = load(dir);
  if (find_step(members, step))
    throw Error(Errc::exists, fmt::format("{}: step {} is already in the series", dir.string(), step));
  const FileInfo info = describe_file(dir / file);
  if (info.kind != "mcp")
    throw Error(Errc::invalid_argument, fmt::format("{}: not an .mcp file", (dir / file).string()));
  SeriesMember member;
  member.step = step;
  member.file = file;
  member.source_bytes = info.source_bytes;
  member.stored_bytes = info.file_bytes;
  member.source_name = info.source_name;
  member.blake3 = info.source_blake3;
  member.metrics = metrics;
  if (info.base) {
    const SeriesMember* k = base_step ? find_step(members, *base_step) : nullptr;
    if (!k || !k->keyframe)
      throw Error(Errc::invalid_argument,
                  fmt::format("{}: is a delta; its base must be a keyframe of the series (given: {})",
                              (dir / file).string(), base_step ? std::to_string(*base_step) : "none"));
    if (k->blake3 != info.base->blake3)
      throw Error(Errc::invalid_argument,
                  fmt::format("{}: is a delta against BLAKE3 {}, but keyframe step {} is {}", (dir / file).string(),
                              info.base->blake3, k->step, k->blake3));
    member.keyframe = false;
    member.base_step = k->step;
  } else if (base_step) {
    throw Error(Errc::invalid_argument,
                fmt::format("{}: is not a delta, yet a base step ({}) was given", (dir / file).string(), *base_step));
  }
  members.push_back(member);
  std::sort(members.begin(), members.end(), [](auto& a, auto& b) { return a.step < b.step; });
  save(dir, members);  // the commit point
  return member;
}

}  // namespace mithril
