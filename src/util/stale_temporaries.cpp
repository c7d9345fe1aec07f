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
#include <string>

namespace mithril::util {

std::optional<long> temporary_owner(std::string_view name) noexcept {
  if (name.size() < 2 || name.front() != '.' || !name.ends_with(".tmp")) return std::nullopt;
  name.remove_suffix(4);
  const auto all_digits = [](std::string_view s) {
    return !s.empty() && s.size() <= 10 && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
  };
  const auto last = [](std::string_view s) {
    const auto dot = s.rfind('.');
    return dot == std::string_view::npos || dot == 0 ? std::string_view{} : s.substr(dot + 1);
  };
  std::string_view pid = last(name);
  // ".NAME.PID.XXXXXX.tmp" (AtomicFile, write_file_replace): skip the random part.
  if (pid.size() == 6) {
    const auto rest = name.substr(0, name.size() - 7);
    if (all_digits(last(rest))) pid = last(rest);
  }
  if (!all_digits(pid)) return std::nullopt;  // ".NAME.PID.tmp" (bundle export) or not ours
  const long v = std::stol(std::string(pid));
  return v > 0 ? std::optional<long>(v) : std::nullopt;
}

std::size_t remove_stale_temporaries(const std::filesystem::path& dir) noexcept {
  std::size_t removed = 0;
  DIR* d = ::opendir(dir.empty() ? "." : dir.c_str());
  if (!d) return 0;
  while (const dirent* e = ::readdir(d)) {
    const auto pid = temporary_owner(e->d_name);
    if (!pid || *pid == ::getpid()) continue;
    if (::kill(static_cast<pid_t>(*pid), 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to ask)
    struct stat st {};
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
    if (::unlinkat(::dirfd(d), e->d_name, 0) == 0) ++removed;
  }
  ::closedir(d);
  return removed;
}

}  // namespace mithril::util
