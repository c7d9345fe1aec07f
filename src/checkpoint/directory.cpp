// checkpoint/directory.cpp — directories of checkpoint files (Hugging Face
// sharded checkpoints) compressed file by file, restored byte for byte.
//
// mithril-directory.json grammar (docs/format.md, "Directories"):
//   {"format": "mithril-directory", "version": 1,
//    "files": [{"name": REL, "stored": REL | REL + ".mcp", "bytes": N,
//               "stored_bytes": N, "blake3": HEX64}, ...]}
// REL is a relative '/'-separated path without "", "." or ".." components.
#include "mithril/directory.hpp"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <string_view>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "mithril/error.hpp"
#include "util/atomic_file.hpp"
#include "util/blake3.hpp"
#include "util/clock.hpp"
#include "util/json_number.hpp"
#include "util/json_text.hpp"
#include "util/mapped_file.hpp"
#include "util/posix.hpp"

namespace mithril {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

constexpr std::string_view k_format = "mithril-directory";
constexpr int k_version = 1;
// A manifest lists file names and digests: a few hundred bytes per file.
constexpr std::uintmax_t k_max_manifest_bytes = 64u << 20;

// A relative path from a manifest or an index: no absolute paths, no empty,
// "." or ".." components, no backslashes or NULs.
bool safe_relative(std::string_view rel) {
  if (rel.empty() || rel.front() == '/' || rel.find('\\') != std::string_view::npos ||
      rel.find('\0') != std::string_view::npos)
    return false;
  std::size_t start = 0;
  while (start <= rel.size()) {
    const std::size_t end = std::min(rel.find('/', start), rel.size());
    const std::string_view part = rel.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

// Every regular file under `root` (symlinks to files followed, as in a
// Hugging Face cache snapshot), as sorted relative '/'-paths.
std::vector<std::string> list_files(const fs::path& root) {
  std::vector<std::string> out;
  std::error_code ec;
  fs::recursive_directory_iterator it(root, fs::directory_options::none, ec);
  if (ec) throw Error(Errc::io, fmt::format("{}: cannot list: {}", root.string(), ec.message()));
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) throw Error(Errc::io, fmt::format("{}: cannot list: {}", root.string(), ec.message()));
    const fs::path& p = it->path();
    const auto st = fs::status(p, ec);  // follows symlinks
    if (ec) throw Error(Errc::io, fmt::format("{}: cannot stat: {}", p.string(), ec.message()));
    if (fs::is_directory(st)) {
      // Recursion never follows a linked directory (no loops); refuse it rather than skip it silently.
      if (it->is_symlink())
        throw Error(Errc::unsupported, fmt::format("{}: a symbolic link to a directory is not supported", p.string()));
      continue;
    }
    if (!fs::is_regular_file(st))
      throw Error(Errc::unsupported, fmt::format("{}: not a regular file (a socket, device or broken link)", p.string()));
    std::string rel = fs::relative(p, root).generic_string();
    // The manifest is JSON text: a name that is not UTF-8 could not be
    // recorded exactly (and restored under the same name).
    if (!util::valid_utf8(rel))
      throw Error(Errc::unsupported,
                  fmt::format("{}: the file name is not valid UTF-8 (byte {:#04x} at offset {}); a compressed "
                              "directory records names as JSON text: rename the file",
                              util::utf8_or_replacement(p.string()),
                              static_cast<unsigned char>(rel[util::invalid_utf8_at(rel)]), util::invalid_utf8_at(rel)));
    out.push_back(std::move(rel));
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Each *.index.json must map tensor names to shard files that are there.
void check_indexes(const fs::path& root, const std::vector<std::string>& files) {
  const std::set<std::string> present(files.begin(), files.end());
  for (const auto& rel : files) {
    if (!ends_with(rel, ".index.json")) continue;
    const fs::path path = root / rel;
    Json j;
    try {
      const util::MappedFile f(path);
      const auto* data = reinterpret_cast<const char*>(f.bytes().data());
      j = Json::parse(data, data + f.size());
    } catch (const Json::exception& e) {
      throw Error(Errc::invalid_argument, fmt::format("{}: not valid JSON: {}", path.string(), e.what()));
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      throw Error(Errc::invalid_argument, fmt::format("{}: no \"weight_map\" object (tensor name -> shard file)",
                                                      path.string()));
    const std::string dir = rel.find('/') == std::string::npos ? "" : rel.substr(0, rel.rfind('/') + 1);
    for (const auto& [tensor, shard] : j["weight_map"].items()) {
      if (!shard.is_string() || !safe_relative(shard.get<std::string>()))
        throw Error(Errc::invalid_argument,
                    fmt::format("{}: tensor '{}' maps to an invalid shard name {}", path.string(), tensor, shard.dump()));
      if (!present.count(dir + shard.get<std::string>()))
        throw Error(Errc::invalid_argument, fmt::format("{}: tensor '{}' is in shard '{}', which is not in {}",
                                                        path.string(), tensor, shard.get<std::string>(), root.string()));
    }
  }
}

// The output directory under construction: ".NAME.XXXXXX.tmp" beside the
// destination, removed unless commit() renamed it into place.
class StagingDir {
 public:
  StagingDir(fs::path destination, bool force) : m_destination(std::move(destination)), m_force(force) {
    if (!m_force && fs::symlink_status(m_destination).type() != fs::file_type::not_found)
      throw Error(Errc::exists, fmt::format("{}: already exists (use -f / force to replace it)", m_destination.string()));
    fs::path parent = m_destination.parent_path();
    if (parent.empty()) parent = ".";
    std::string templ = (parent / ("." + m_destination.filename().string() + ".tmp-XXXXXX")).string();
    if (!::mkdtemp(templ.data())) util::throw_errno(parent, "cannot create a temporary directory");
    m_path = templ;
  }
  ~StagingDir() {
    std::error_code ec;
    if (!m_path.empty()) fs::remove_all(m_path, ec);
  }
  StagingDir(const StagingDir&) = delete;
  StagingDir& operator=(const StagingDir&) = delete;

  const fs::path& path() const { return m_path; }

  void commit(bool sync) {
    if (sync) sync_dir(m_path);
    const auto existing = fs::symlink_status(m_destination).type();
    if (existing != fs::file_type::not_found) {
      if (!m_force)
        throw Error(Errc::exists, fmt::format("{}: already exists (use -f / force to replace it)", m_destination.string()));
      // Move the old one aside first: rename() cannot replace a non-empty directory.
      const fs::path old = m_path.string() + ".old";
      if (::rename(m_destination.c_str(), old.c_str()) != 0) util::throw_errno(m_destination, "cannot move aside");
      if (::rename(m_path.c_str(), m_destination.c_str()) != 0) {
        ::rename(old.c_str(), m_destination.c_str());
        util::throw_errno(m_destination, "cannot rename into place");
      }
      std::error_code ec;
      fs::remove_all(old, ec);
    } else if (::rename(m_path.c_str(), m_destination.c_str()) != 0) {
      util::throw_errno(m_destination, "cannot rename into place");
    }
    m_path.clear();
    if (sync) sync_dir(m_destination.parent_path().empty() ? fs::path(".") : m_destination.parent_path());
  }

 private:
  static void sync_dir(const fs::path& dir) {
    const util::UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (fd && ::fsync(fd.get()) != 0) util::throw_errno(dir, "fsync");
  }

  fs::path m_destination;
  fs::path m_path;
  bool m_force;
};

void make_parent(const fs::path& file) {
  std::error_code ec;
  fs::create_directories(file.parent_path(), ec);
  if (ec) throw Error(Errc::io, fmt::format("{}: cannot create: {}", file.parent_path().string(), ec.message()));
}

// Copies src to dst (atomically), returning the BLAKE3 of the bytes copied.
std::string copy_hashed(const fs::path& src, const fs::path& dst, unsigned threads) {
  const util::MappedFile in(src);
  make_parent(dst);
  util::write_file_atomic(dst, in.bytes(), util::Overwrite::refuse);
  auto digest = util::to_hex(util::blake3_parallel(in.bytes(), threads));
  in.check_intact();  // zeros read past a shrunk end: the directory's output is abandoned
  return digest;
}

std::string hash_file(const fs::path& path, unsigned threads) {
  const util::MappedFile f(path);
  auto digest = util::to_hex(util::blake3_parallel(f.bytes(), threads));
  f.check_intact();
  return digest;
}

Json manifest_json(const DirectoryResult& r) {
  Json files = Json::array();
  for (const auto& f : r.files)
    files.push_back(
        {{"name", f.name}, {"stored", f.stored}, {"bytes", f.bytes}, {"stored_bytes", f.stored_bytes}, {"blake3", f.blake3}});
  return Json{{"format", k_format}, {"version", k_version}, {"files", std::move(files)}};
}

DirectoryResult read_manifest(const fs::path& dir) {
  const fs::path path = dir / k_directory_manifest;
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec)
    throw Error(Errc::invalid_argument, fmt::format("{}: not a compressed directory (no {}; `mithril compress` it first)",
                                                    dir.string(), k_directory_manifest));
  if (size > k_max_manifest_bytes)
    throw Error(Errc::corrupt, fmt::format("{}: {} bytes, larger than a manifest can be", path.string(), size));
  Json j;
  try {
    const util::MappedFile f(path);
    const auto* data = reinterpret_cast<const char*>(f.bytes().data());
    j = Json::parse(data, data + f.size());
  } catch (const Json::exception& e) {
    throw Error(Errc::corrupt, fmt::format("{}: not valid JSON: {}", path.string(), e.what()));
  }
  const auto bad = [&](const std::string& what) { return Error(Errc::corrupt, fmt::format("{}: {}", path.string(), what)); };
  if (!j.is_object() || j.value("format", "") != k_format) throw bad("not a mithril-directory manifest");
  if (!j.contains("version") || !j["version"].is_number_unsigned()) throw bad("no version");
  if (j["version"].get<std::uint64_t>() != k_version)
    throw Error(Errc::unsupported, fmt::format("{}: directory format version {} is newer than this mithril (reads {})",
                                               path.string(), j["version"].dump(), k_version));
  if (!j.contains("files") || !j["files"].is_array()) throw bad("no \"files\" list");
  DirectoryResult r;
  std::set<std::string> seen;
  for (const auto& e : j["files"]) {
    if (!e.is_object() || !e.contains("name") || !e["name"].is_string() || !e.contains("stored") ||
        !e["stored"].is_string() || !e.contains("bytes") || !e["bytes"].is_number_unsigned() ||
        !e.contains("blake3") || !e["blake3"].is_string())
      throw bad("malformed file entry " + e.dump());
    DirectoryFile f;
    f.name = e["name"].get<std::string>();
    f.stored = e["stored"].get<std::string>();
    f.bytes = e["bytes"].get<std::uint64_t>();
    if (e.contains("stored_bytes")) {
      const auto sb = util::json_u64(e["stored_bytes"]);
      if (!sb) throw bad("malformed file entry " + e.dump());
      f.stored_bytes = *sb;
    }
    f.blake3 = e["blake3"].get<std::string>();
    util::Digest d{};
    if (!safe_relative(f.name) || f.name == k_directory_manifest)
      throw bad(fmt::format("unsafe or reserved file name '{}'", f.name));
    if (f.stored != f.name && f.stored != f.name + ".mcp")
      throw bad(fmt::format("file '{}' stored as '{}' (must be the name or name + .mcp)", f.name, f.stored));
    if (!util::parse_hex_digest(f.blake3, d)) throw bad(fmt::format("file '{}': bad BLAKE3 '{}'", f.name, f.blake3));
    if (!seen.insert(f.name).second) throw bad(fmt::format("file '{}' listed twice", f.name));
    f.compressed = f.stored != f.name;
    r.source_bytes += f.bytes;
    r.output_bytes += f.stored_bytes;
    r.files.push_back(std::move(f));
  }
  return r;
}

// The namesake of `name` in a base directory (plain or compressed), if any.
std::optional<fs::path> base_file(const std::optional<fs::path>& base_dir, const std::string& name) {
  if (!base_dir) return std::nullopt;
  for (const fs::path& candidate : {*base_dir / (name + ".mcp"), *base_dir / name}) {
    std::error_code ec;
    if (fs::is_regular_file(candidate, ec)) return candidate;
  }
  return std::nullopt;
}

void check_base_dir(const std::optional<fs::path>& base) {
  std::error_code ec;
  if (base && !fs::is_directory(*base, ec))
    throw Error(Errc::invalid_argument,
                fmt::format("{}: the base of a directory must be a directory (plain or compressed)", base->string()));
}

// Progress over several files: offsets each file's (done, total) by the bytes before it.
ProgressCallback offset_progress(const ProgressCallback& outer, std::uint64_t before, std::uint64_t total) {
  if (!outer) return {};
  return [outer, before, total](std::uint64_t done, std::uint64_t) { outer(before + done, total); };
}

}  // namespace

bool is_checkpoint_file_name(const fs::path& name) {
  const std::string ext = name.extension().string();
  return ext == ".safetensors" || ext == ".bin" || ext == ".pt" || ext == ".pth" || ext == ".ckpt";
}

bool is_compressed_directory(const fs::path& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) && fs::is_regular_file(path / k_directory_manifest, ec);
}

DirectoryResult compress_directory(const fs::path& input, const fs::path& output, const CompressOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  std::error_code ec;
  if (!fs::is_directory(input, ec)) throw Error(Errc::not_found, fmt::format("{}: not a directory", input.string()));
  if (is_compressed_directory(input))
    throw Error(Errc::invalid_argument, fmt::format("{}: already a compressed directory ({}); decompress it instead",
                                                    input.string(), k_directory_manifest));
  check_base_dir(options.base);
  const fs::path in_abs = fs::weakly_canonical(input), out_abs = fs::weakly_canonical(output);
  if (std::mismatch(in_abs.begin(), in_abs.end(), out_abs.begin(), out_abs.end()).first == in_abs.end())
    throw Error(Errc::invalid_argument, fmt::format("{}: the output lies inside the input directory {}", output.string(),
                                                    input.string()));
  const auto names = list_files(input);
  check_indexes(input, names);
  std::uint64_t total = 0;
  for (const auto& n : names) total += fs::file_size(input / n);

  StagingDir stage(output, options.force);
  DirectoryResult r;
  for (const auto& name : names) {
    DirectoryFile f;
    f.name = name;
    const fs::path src = input / name;
    if (is_checkpoint_file_name(name)) {
      f.stored = name + ".mcp";
      f.compressed = true;
      CompressOptions o = options;
      o.force = false;
      o.base = base_file(options.base, name);
      o.progress = offset_progress(options.progress, r.source_bytes, total);
      const fs::path dst = stage.path() / f.stored;
      make_parent(dst);
      const CompressResult c = compress_file(src, dst, o);
      f.bytes = c.source_bytes;
      f.stored_bytes = c.output_bytes;
      f.tensors = c.tensors;
      f.source_kind = c.source_kind;
      // The .mcp records the original's BLAKE3: read it back rather than hash twice.
      f.blake3 = describe_file(dst).source_blake3;
    } else {
      f.stored = name;
      f.blake3 = copy_hashed(src, stage.path() / name, options.threads);
      f.bytes = f.stored_bytes = fs::file_size(src);
      if (options.progress) options.progress(r.source_bytes + f.bytes, total);
    }
    r.source_bytes += f.bytes;
    r.output_bytes += f.stored_bytes;
    r.files.push_back(std::move(f));
  }
  const std::string manifest = manifest_json(r).dump(1) + "\n";
  util::write_file_atomic(stage.path() / k_directory_manifest,
                          {reinterpret_cast<const std::byte*>(manifest.data()), manifest.size()},
                          util::Overwrite::refuse);
  r.output_bytes += manifest.size();
  stage.commit(options.sync);
  r.seconds = util::seconds_since(t0);
  return r;
}

DirectoryResult decompress_directory(const fs::path& input, const fs::path& output, const DecompressOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  DirectoryResult r = read_manifest(input);
  check_base_dir(options.base);
  StagingDir stage(output, options.force);
  std::uint64_t done = 0;
  for (auto& f : r.files) {
    const fs::path src = input / f.stored;
    const fs::path dst = stage.path() / f.name;
    make_parent(dst);
    if (f.compressed) {
      DecompressOptions o = options;
      o.force = false;
      o.base = base_file(options.base, f.name);
      o.progress = offset_progress(options.progress, done, r.source_bytes);
      const DecompressResult d = decompress_file(src, dst, o);
      if (d.output_bytes != f.bytes)
        throw Error(Errc::corrupt, fmt::format("{}: restored {} bytes, the manifest says {}", src.string(),
                                               d.output_bytes, f.bytes));
      // decompress_file() checked the restored bytes against the BLAKE3 the
      // .mcp records; tie that to the manifest's.
      if (describe_file(src).source_blake3 != f.blake3)
        throw Error(Errc::corrupt, fmt::format("{}: holds another file than the manifest lists for '{}'", src.string(), f.name));
    } else {
      const std::string digest = copy_hashed(src, dst, options.threads);
      if (digest != f.blake3)
        throw Error(Errc::corrupt, fmt::format("{}: BLAKE3 {} does not match the manifest's {}", src.string(), digest,
                                               f.blake3));
    }
    done += f.bytes;
    if (options.progress) options.progress(done, r.source_bytes);
  }
  stage.commit(options.sync);
  r.seconds = util::seconds_since(t0);
  return r;
}

VerifyResult verify_directory(const fs::path& input, const VerifyOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  const DirectoryResult listing = read_manifest(input);
  check_base_dir(options.base);
  VerifyResult r;
  std::uint64_t done = 0;
  for (const auto& f : listing.files) {
    const fs::path path = input / f.stored;
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) {
      r.problems.push_back(fmt::format("{}: missing", path.string()));
      continue;
    }
    try {
      if (f.compressed) {
        VerifyOptions o = options;
        o.base = base_file(options.base, f.name);
        o.progress = offset_progress(options.progress, done, listing.source_bytes);
        VerifyResult v = verify_file(path, o);
        r.chunks += v.chunks;
        for (auto& p : v.problems) r.problems.push_back(std::move(p));
        if (describe_file(path).source_blake3 != f.blake3)
          r.problems.push_back(fmt::format("{}: holds another file than the manifest lists for '{}'", path.string(), f.name));
      } else if (const std::string digest = hash_file(path, options.threads); digest != f.blake3) {
        r.problems.push_back(fmt::format("{}: BLAKE3 {} does not match the manifest's {}", path.string(), digest, f.blake3));
      }
    } catch (const Error& e) {
      r.problems.push_back(e.what());
    }
    done += f.bytes;
    if (options.progress) options.progress(done, listing.source_bytes);
  }
  r.source_bytes = listing.source_bytes;
  r.ok = r.problems.empty();
  r.seconds = util::seconds_since(t0);
  return r;
}

DirectoryResult describe_directory(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) throw Error(Errc::not_found, fmt::format("{}: not a directory", path.string()));
  DirectoryResult r;
  if (is_compressed_directory(path)) {
    r = read_manifest(path);
    for (auto& f : r.files) {
      if (!f.compressed) continue;
      const FileInfo info = describe_file(path / f.stored);
      f.tensors = info.tensors.size();
      f.source_kind = info.source_kind;
    }
    return r;
  }
  for (const auto& name : list_files(path)) {
    DirectoryFile f;
    f.name = f.stored = name;
    f.bytes = f.stored_bytes = fs::file_size(path / name);
    if (is_checkpoint_file_name(name)) {
      try {
        const FileInfo info = describe_file(path / name);
        f.tensors = info.tensors.size();
        f.source_kind = info.kind;
      } catch (const Error&) {
        f.source_kind = "raw";
      }
    }
    r.source_bytes += f.bytes;
    r.output_bytes += f.stored_bytes;
    r.files.push_back(std::move(f));
  }
  return r;
}

}  // namespace mithril
