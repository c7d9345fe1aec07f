#include "cache/fs_util.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

#include <fmt/core.h>

#include "mithril/error.hpp"
#include "util/posix.hpp"
#include "util/stale_temporaries.hpp"

namespace mithril::cache {

std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::int64_t atime_ns(const struct stat& st) noexcept {
  return static_cast<std::int64_t>(st.st_atim.tv_sec) * 1'000'000'000 + st.st_atim.tv_nsec;
}

std::optional<struct stat> lstat_path(const fs::path& path) noexcept {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return std::nullopt;
  return st;
}

namespace {

util::UniqueFd open_read_noatime(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOATIME | O_NOFOLLOW);
  if (fd < 0 && errno == EPERM) fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) util::throw_errno(path, "cannot open");
  return util::UniqueFd(fd);
}

}  // namespace

util::ByteVector read_file(const fs::path& path) {
  auto fd = open_read_noatime(path);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) util::throw_errno(path, "cannot stat");
  if (!S_ISREG(st.st_mode)) throw Error(Errc::corrupt, path.string() + ": not a regular file");
  util::ByteVector out(static_cast<std::size_t>(st.st_size));
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::read(fd.get(), out.data() + done, out.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      util::throw_errno(path, "read failed");
    }
    if (n == 0) break;  // shrank meanwhile
    done += static_cast<std::size_t>(n);
  }
  out.resize(done);
  return out;
}

FileHash hash_file(const fs::path& path) {
  auto fd = open_read_noatime(path);
  util::Blake3 h;
  FileHash r;
  std::vector<std::byte> buf(1 << 16);
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      util::throw_errno(path, "read failed");
    }
    if (n == 0) break;
    h.update({buf.data(), static_cast<std::size_t>(n)});
    r.size += static_cast<std::uint64_t>(n);
  }
  r.digest = h.digest();
  return r;
}

void write_file_replace(const fs::path& path, util::ByteSpan data) {
  std::string name = ".";
  name += path.filename().string();
  // The writer's pid lets a later gc tell a killed writer's leftover from
  // a live one's (util::remove_stale_temporaries).
  name += "." + util::temporary_tag() + ".XXXXXX.tmp";
  std::string templ = (path.parent_path() / name).string();
  int fd = ::mkostemps(templ.data(), 4, O_CLOEXEC);
  if (fd < 0) util::throw_errno(path, "cannot create temporary file");
  util::UniqueFd guard(fd);
  try {
    util::write_all(fd, data.data(), data.size(), templ);
    ::fchmod(fd, 0666 & ~util::current_umask());
    guard.reset();
    if (::rename(templ.c_str(), path.c_str()) != 0) util::throw_errno(path, "cannot rename into place");
  } catch (...) {
    ::unlink(templ.c_str());
    throw;
  }
}

fs::path make_temp_dir(const fs::path& parent, std::string_view prefix) {
  std::string templ = (parent / (std::string(prefix) + "XXXXXX")).string();
  if (!::mkdtemp(templ.data())) util::throw_errno(parent, "cannot create temporary directory");
  return templ;
}

bool remove_via_trash(const fs::path& path, const fs::path& trash_dir) {
  static std::atomic<unsigned> counter{0};
  const auto name = fmt::format("{}-{}-{}-{}", ::getpid(), now_ns(), counter.fetch_add(1),
                                path.filename().string());
  const auto target = trash_dir / name;
  if (::rename(path.c_str(), target.c_str()) != 0) {
    if (errno == ENOENT) {
      if (!lstat_path(path)) return false;
      // The trash directory itself vanished (a concurrent clear): recreate it.
      std::error_code ec;
      fs::create_directories(trash_dir, ec);
      if (::rename(path.c_str(), target.c_str()) != 0) {
        if (errno == ENOENT) return false;
        util::throw_errno(path, "cannot move into trash");
      }
    } else {
      util::throw_errno(path, "cannot move into trash");
    }
  }
  std::error_code ec;
  fs::remove_all(target, ec);
  return true;
}

bool arm_atime(const fs::path& path) noexcept {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return false;
  struct timespec ts[2];
  ts[0] = st.st_mtim;
  ts[0].tv_sec -= 1;
  ts[1].tv_sec = 0;
  ts[1].tv_nsec = UTIME_OMIT;
  return ::utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW) == 0;
}

bool was_read_since_armed(const struct stat& st) noexcept {
  // Armed files have atime = mtime - 1 s; any read since moves atime to "now",
  // which is at or after mtime.
  return atime_ns(st) >= mtime_ns(st);
}

bool is_safe_component(std::string_view name) noexcept {
  if (name.empty() || name.size() > 255 || name == "." || name == "..") return false;
  for (char c : name)
    if (c == '/' || c == '\\' || c == '\0') return false;
  return true;
}

bool is_safe_relative_path(std::string_view path) noexcept {
  if (path.empty() || path.size() > 4096) return false;
  int depth = 0;
  std::size_t start = 0;
  while (true) {
    const auto slash = path.find('/', start);
    const auto comp = path.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (!is_safe_component(comp)) return false;
    if (++depth > 16) return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

std::uint64_t parse_size(std::string_view text) {
  std::string t(text);
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
  std::size_t i = 0;
  while (i < t.size() && std::isspace(static_cast<unsigned char>(t[i]))) ++i;
  t = t.substr(i);
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(t.c_str(), &end);
  if (end == t.c_str() || errno != 0 || !(v >= 0) || !std::isfinite(v))
    throw Error(Errc::invalid_argument, "size '" + std::string(text) + "': expected a number with an optional unit (K, M, G, T)");
  std::string unit(end);
  while (!unit.empty() && unit.front() == ' ') unit.erase(unit.begin());
  for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  double mult = 1;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "K" || unit == "KB" || unit == "KIB") mult = 1024.0;
  else if (unit == "M" || unit == "MB" || unit == "MIB") mult = 1024.0 * 1024;
  else if (unit == "G" || unit == "GB" || unit == "GIB") mult = 1024.0 * 1024 * 1024;
  else if (unit == "T" || unit == "TB" || unit == "TIB") mult = 1024.0 * 1024 * 1024 * 1024;
  else throw Error(Errc::invalid_argument, "size '" + std::string(text) + "': unknown unit '" + unit + "'");
  const double bytes = v * mult;
  if (bytes > 9.0e18) throw Error(Errc::invalid_argument, "size '" + std::string(text) + "': too large");
  return static_cast<std::uint64_t>(bytes);
}

std::int64_t parse_age_seconds(std::string_view text) {
  std::int64_t v = 0;
  const auto* b = text.data();
  const auto* e = text.data() + text.size();
  auto [p, ec] = std::from_chars(b, e, v);
  if (ec != std::errc() || p == b || v < 0)
    throw Error(Errc::invalid_argument, "age '" + std::string(text) + "': expected e.g. 30s, 15m, 12h, 7d");
  const std::string_view unit(p, static_cast<std::size_t>(e - p));
  std::int64_t mult = 1;
  if (unit.empty() || unit == "s") mult = 1;
  else if (unit == "m") mult = 60;
  else if (unit == "h") mult = 3600;
  else if (unit == "d") mult = 86400;
  else if (unit == "w") mult = 7 * 86400;
  else throw Error(Errc::invalid_argument, "age '" + std::string(text) + "': unknown unit '" + std::string(unit) + "'");
  return v * mult;
}

std::string format_size(std::uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  if (u == 0) return fmt::format("{} B", bytes);
  return fmt::format("{:.1f} {}", v, units[u]);
}

FileLock::FileLock(const fs::path& path, Mode mode) {
  m_fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (m_fd < 0) util::throw_errno(path, "cannot open lock file");
  while (::flock(m_fd, mode == Mode::exclusive ? LOCK_EX : LOCK_SH) != 0) {
    if (errno == EINTR) continue;
    const int e = errno;
    ::close(m_fd);
    errno = e;
    util::throw_errno(path, "cannot lock");
  }
}

FileLock::~FileLock() {
  if (m_fd >= 0) ::close(m_fd);
}

}  // namespace mithril::cache
