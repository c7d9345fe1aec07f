// util/stale_temporaries.cpp — see stale_temporaries.hpp.
#include "util/stale_temporaries.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <string>

namespace mithril::util {

namespace {

// FNV-1a of the host name (32 bits): enough to tell the hosts sharing a
// directory apart; a collision only keeps a dead writer's temporary.
std::uint32_t host_hash() noexcept {
  static const std::uint32_t h = [] {
    char name[256] = {};
    if (::gethostname(name, sizeof name - 1) != 0) name[0] = '\0';
    std::uint32_t v = 2166136261u;
    for (const char* p = name; *p; ++p) v = (v ^ static_cast<unsigned char>(*p)) * 16777619u;
    return v;
  }();
  return h;
}

}  // namespace

std::string temporary_tag() {
  char host[9];
  std::snprintf(host, sizeof host, "%08x", host_hash());
  return std::to_string(::getpid()) + "@" + host;
}

std::optional<TemporaryOwner> temporary_owner(std::string_view name) noexcept {
  if (name.size() < 2 || name.front() != '.' || !name.ends_with(".tmp")) return std::nullopt;
  name.remove_suffix(4);
  const auto all_digits = [](std::string_view s) {
    return !s.empty() && s.size() <= 10 && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
  };
  const auto last = [](std::string_view s) {
    const auto dot = s.rfind('.');
    return dot == std::string_view::npos || dot == 0 ? std::string_view{} : s.substr(dot + 1);
  };
  // "PID" or "PID@HOST"; nullopt otherwise.
  const auto parse = [&](std::string_view tag) -> std::optional<TemporaryOwner> {
    TemporaryOwner o;
    if (const auto at = tag.find('@'); at != std::string_view::npos) {
      const auto host = tag.substr(at + 1);
      if (host.size() != 8 || !std::all_of(host.begin(), host.end(), [](unsigned char c) { return std::isxdigit(c); }))
        return std::nullopt;
      o.host = static_cast<std::uint32_t>(std::stoul(std::string(host), nullptr, 16));
      tag = tag.substr(0, at);
    }
    if (!all_digits(tag)) return std::nullopt;
    o.pid = std::stol(std::string(tag));
    if (o.pid <= 0) return std::nullopt;
    return o;
  };
  // ".NAME.TAG.XXXXXX.tmp" (AtomicFile, write_file_replace): skip the random part.
  if (const auto tag = last(name); tag.size() == 6) {
    if (const auto o = parse(last(name.substr(0, name.size() - 7)))) return o;
  }
  return parse(last(name));  // ".NAME.PID.tmp" (bundle export), or not ours
}

std::size_t remove_stale_temporaries(const std::filesystem::path& dir) noexcept {
  std::size_t removed = 0;
  DIR* d = ::opendir(dir.empty() ? "." : dir.c_str());
  if (!d) return 0;
  while (const dirent* e = ::readdir(d)) {
    const auto owner = temporary_owner(e->d_name);
    if (!owner || owner->pid == ::getpid()) continue;
    if (owner->host && *owner->host != host_hash()) continue;  // another machine's writer
    if (::kill(static_cast<pid_t>(owner->pid), 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to ask)
    struct stat st {};
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
    if (::unlinkat(::dirfd(d), e->d_name, 0) == 0) ++removed;
  }
  ::closedir(d);
  return removed;
}

}  // namespace mithril::util
