// cache/bundle.cpp — portable bundles (.tar.zst) of a store's entries.
//
// Members, in order (plain tar + zstd: any tool can list them):
//   mithril-bundle.json        {"format":"mithril-cache-bundle","version":1}
//   e/<n>/manifest.json        entry n's manifest (manifest.hpp)
//   e/<n>/<i>                  its file i (manifest order), portable bytes:
//                              Triton group files with relative child paths
//   ...
//   mithril-bundle-end.json    {"entries": N}  (a truncated bundle lacks it)
//
// Import validates everything before anything lands: member names follow
// this grammar, only regular files, sizes under the limit and equal to the
// manifest's, digests match, manifests fit their kind's layout (so entries
// land only under inductor/, triton/ or in the CAS, and every file lies under
// the directory its entry's id names), Triton groups name only files of their
// own kernel directory. Members are streamed into tmp/ as they are read (never
// a buffer of a declared size); each entry is assembled there and renamed
// into place: it appears whole or not at all.
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "cache/fs_util.hpp"
#include "cache/store_impl.hpp"
#include "cache/tar_stream.hpp"
#include "cache/triton_group.hpp"
#include "util/blake3.hpp"
#include "util/json_number.hpp"
#include "util/posix.hpp"

namespace mithril::cache {
namespace {

constexpr const char* k_header_name = "mithril-bundle.json";
constexpr const char* k_trailer_name = "mithril-bundle-end.json";
constexpr std::uint64_t k_max_manifest = 16 << 20;

util::ByteVector json_bytes(const nlohmann::json& j) {
  const auto s = j.dump();
  util::ByteVector out(s.size());
  std::memcpy(out.data(), s.data(), s.size());
  return out;
}

}  // namespace

BundleReport Store::export_bundle(const std::filesystem::path& bundle) {
  auto& im = *m_impl;
  BundleReport rep;
  TarWriter tar(bundle, im.config.bundle_level);  // a temporary until finish()
  tar.add_file(k_header_name, json_bytes({{"format", "mithril-cache-bundle"}, {"version", 1}}));
  std::uint64_t n = 0;
  for (const auto& row : im.index.all()) {
    auto m = im.load_manifest(row);
    if (!m) {
      im.quarantine_entry(row, "manifest missing or corrupt");
      ++rep.skipped;
      rep.problems.push_back(row.id + ": manifest missing or corrupt");
      continue;
    }
    std::vector<util::ByteVector> data;
    std::string bad;
    for (const auto& f : m->files) {
      try {
        std::optional<util::ByteVector> bytes;
        if (is_cas_kind(m->kind)) bytes = im.cas.get(f.digest);
        else bytes = im.portable_bytes(*m, f);
        if (!bytes || bytes->size() != f.size || util::blake3(*bytes) != f.digest) {
          bad = "'" + f.path + "' does not match its digest";
          break;
        }
        data.push_back(std::move(*bytes));
      } catch (const Error& e) {
        if (e.code() == Errc::not_found) bad = "'" + f.path + "' is missing";
        else bad = e.what();
        break;
      }
    }
    if (!bad.empty()) {
      // A vanished file is a concurrent eviction, not corruption.
      if (bad.find("is missing") == std::string::npos) im.quarantine_entry(row, bad);
      ++rep.skipped;
      rep.problems.push_back(row.id + ": " + bad);
      continue;
    }
    const auto prefix = fmt::format("e/{}/", n);
    tar.add_file(prefix + "manifest.json", m->serialize());
    for (std::size_t i = 0; i < data.size(); ++i) {
      tar.add_file(prefix + std::to_string(i), data[i], m->files[i].executable);
      rep.bytes += data[i].size();
    }
    rep.files += data.size();
    ++n;
  }
  tar.add_file(k_trailer_name, json_bytes({{"entries", n}}));
  tar.finish();
  rep.entries = n;
  rep.bundle_bytes = tar.compressed_bytes();
  return rep;
}

BundleReport Store::import_bundle(const std::filesystem::path& bundle) {
  auto& im = *m_impl;
  BundleReport rep;
  TarReader tar(bundle, im.config.max_import_member);
  const auto bad = [&](const std::string& why) { return Error(Errc::corrupt, bundle.string() + ": " + why); };

  auto first = tar.next();
  if (!first || first->name != k_header_name) throw bad("not a mithril cache bundle (no mithril-bundle.json first)");
  if (first->size > k_max_manifest) throw bad("oversized bundle header");
  {
    const auto h = tar.read_data();
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(util::as_chars(h));
    } catch (const std::exception&) {
      throw bad("bundle header is not JSON");
    }
    if (!j.is_object() || j.value("format", "") != "mithril-cache-bundle") throw bad("not a mithril cache bundle");
    if (!util::json_has_u64(j, "version", 1)) throw Error(Errc::unsupported, bundle.string() + ": bundle version " + j["version"].dump() + " is not supported");
  }

  std::uint64_t n = 0;
  std::uint64_t total = im.index.totals().bytes;
  bool ended = false;
  while (auto member = tar.next()) {
    if (member->name == k_trailer_name) {
      const auto t = tar.read_data();
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(util::as_chars(t));
      } catch (const std::exception&) {
        throw bad("bundle trailer is not JSON");
      }
      if (!util::json_has_u64(j, "entries", n)) throw bad("bundle trailer does not match its entries");
      ended = true;
      if (tar.next()) throw bad("members after the trailer");
      break;
    }
    const auto prefix = fmt::format("e/{}/", n);
    if (member->name != prefix + "manifest.json") throw bad("unexpected member '" + member->name + "' (expected " + prefix + "manifest.json)");
    if (member->size > k_max_manifest) throw bad("oversized manifest '" + member->name + "'");
    const auto m = Manifest::parse(tar.read_data(), bundle.string() + ": " + member->name);

    // Stream the files into a staging directory, checking as they arrive:
    // memory stays bounded whatever sizes the bundle declares.
    const bool fits = m.total_size() <= im.config.max_size;
    std::optional<StagedEntry> staged;
    if (fits) staged.emplace(im.tmp);
    for (std::size_t i = 0; i < m.files.size(); ++i) {
      const auto& f = m.files[i];
      auto fm = tar.next();
      if (!fm || fm->name != prefix + std::to_string(i)) throw bad("entry " + m.id + ": missing file member " + prefix + std::to_string(i));
      if (fm->size != f.size) throw bad("entry " + m.id + ": '" + f.path + "' has the wrong size");
      if (f.transform == Transform::triton_group) {
        if (fm->size > k_max_manifest) throw bad("entry " + m.id + ": oversized Triton group file '" + f.path + "'");
        const auto bytes = tar.read_data();
        if (util::blake3(bytes) != f.digest) throw bad("entry " + m.id + ": '" + f.path + "' does not match its digest");
        if (auto problem = im.check_group_file(m, f, bytes)) throw bad(*problem);
        if (staged) {
          const auto fd = staged->create(f.path, f.executable);
          const auto disk = materialize_triton_group(bytes, im.triton);
          util::write_all(fd.get(), disk.data(), disk.size(), staged->dir / f.path);
        }
        continue;
      }
      util::UniqueFd fd;
      if (staged) fd = staged->create(f.path, f.executable);
      util::Blake3 h;
      std::vector<std::byte> buf(256 * 1024);
      while (const auto got = tar.read_some(buf.data(), buf.size())) {
        h.update({buf.data(), got});
        if (staged) util::write_all(fd.get(), buf.data(), got, staged->dir / f.path);
      }
      if (h.digest() != f.digest) throw bad("entry " + m.id + ": '" + f.path + "' does not match its digest");
    }
    ++n;

    if (!staged) {
      rep.problems.push_back(m.id + ": larger than the store's size limit");
      ++rep.skipped;
      continue;
    }
    if (!im.place_staged(m, *staged, "imported")) {
      ++rep.skipped;
      continue;
    }
    ++rep.entries;
    rep.files += m.files.size();
    rep.bytes += m.total_size();
    // Keep the store within its limit as entries land, not after the import.
    total += m.total_size();
    if (total > im.config.max_size) total = im.enforce(im.config.max_size, 0).bytes;
  }
  if (!ended) throw bad("truncated bundle (no trailer)");
  struct stat st {};
  if (::stat(bundle.c_str(), &st) == 0) rep.bundle_bytes = static_cast<std::uint64_t>(st.st_size);
  im.enforce(im.config.max_size, 0);
  return rep;
}

}  // namespace mithril::cache
