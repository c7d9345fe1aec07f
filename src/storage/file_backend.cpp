#include "storage/file_backend.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>

#include "mithril/error.hpp"
#include "storage/upload_token.hpp"
#include "util/atomic_file.hpp"
#include "util/posix.hpp"

namespace mithril::storage {
namespace {

namespace fs = std::filesystem;

class FileUpload final : public Upload {
 public:
  FileUpload(const fs::path& path, std::string key) : m_file(path, util::Overwrite::allow), m_key(std::move(key)) {}
  void write(util::ByteSpan data) override { m_file.write(data); }
  void complete() override { m_file.commit(); }
  // The temporary (".NAME.PID.XXXXXX.tmp", beside the destination) stays; the
  // token names it and its inode, so that completing twice is recognised.
  // Never completed, it is removed as a stale temporary once this process
  // has exited (util/stale_temporaries.hpp).
  std::string detach() override {
    const auto size = m_file.size();
    return detached_file_token(m_file.release(), m_key, size);
  }
  void abort() noexcept override {}  // the AtomicFile removes its temporary unless committed
  std::uint64_t size() const noexcept override { return m_file.size(); }

 private:
  util::AtomicFile m_file;
  std::string m_key;
};

// An object opened for reading, with its size; nullopt when it is missing.
struct OpenObject {
  util::UniqueFd fd;
  std::uint64_t size = 0;
};
std::optional<OpenObject> open_object(const fs::path& p) {
  util::UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
    util::throw_errno(p, "cannot open");
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) util::throw_errno(p, "cannot stat");
  return OpenObject{std::move(fd), static_cast<std::uint64_t>(st.st_size)};
}

class FileBackend final : public Backend {
 public:
  explicit FileBackend(fs::path root) : m_root(std::move(root)), m_endpoint("file://" + m_root.string()) {}

  const std::string& endpoint() const noexcept override { return m_endpoint; }

  std::optional<util::ByteVector> get(std::string_view key) override { return get_at_most(key, UINT64_MAX); }

  std::optional<util::ByteVector> get_at_most(std::string_view key, std::uint64_t max_bytes) override {
    const auto p = path(key);
    auto f = open_object(p);
    if (!f) return std::nullopt;
    if (f->size > max_bytes)
      throw Error(Errc::corrupt, p.string() + ": " + std::to_string(f->size) + " bytes, larger than the " +
                                     std::to_string(max_bytes) + " expected");
    util::ByteVector out(static_cast<std::size_t>(f->size));
    util::pread_exact(f->fd.get(), out.data(), out.size(), 0, p);
    return out;
  }

  std::optional<ObjectTail> get_tail(std::string_view key, std::uint64_t length) override {
    const auto p = path(key);
    auto f = open_object(p);
    if (!f) return std::nullopt;
    ObjectTail t;
    t.size = f->size;
    t.bytes.resize(static_cast<std::size_t>(std::min(length, t.size)));
    util::pread_exact(f->fd.get(), t.bytes.data(), t.bytes.size(), t.size - t.bytes.size(), p);
    return t;
  }

  std::optional<util::ByteVector> get_range(std::string_view key, std::uint64_t offset, std::uint64_t length) override {
    const auto p = path(key);
    auto f = open_object(p);
    if (!f) return std::nullopt;
    if (offset >= f->size) return util::ByteVector{};
    util::ByteVector out(static_cast<std::size_t>(std::min(length, f->size - offset)));
    util::pread_exact(f->fd.get(), out.data(), out.size(), offset, p);
    return out;
  }

  std::optional<ObjectInfo> stat(std::string_view key) override {
    struct stat st {};
    const auto p = path(key);
    if (::stat(p.c_str(), &st) != 0) {
      if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
      util::throw_errno(p, "cannot stat");
    }
    if (!S_ISREG(st.st_mode)) return std::nullopt;
    return ObjectInfo{static_cast<std::uint64_t>(st.st_size)};
  }

  void put(std::string_view key, util::ByteSpan data) override {
    const auto p = path(key);
    make_parent(p);
    util::write_file_atomic(p, data, util::Overwrite::allow);
  }

  std::unique_ptr<Upload> begin_upload(std::string_view key) override {
    const auto p = path(key);
    make_parent(p);
    return std::make_unique<FileUpload>(p, std::string(key));
  }

  void complete_detached(std::string_view key, std::string_view token) override {
    const auto p = path(key);
    const auto where = m_endpoint + ": " + std::string(key);
    const auto j = parse_upload_token(token, "file", key, m_endpoint);
    const auto temp_name = token_string(j, "temp", where);
    if (temp_name.empty() || temp_name.front() != '.' || temp_name.find('/') != std::string::npos ||
        !temp_name.ends_with(".tmp"))
      throw Error(Errc::invalid_argument, where + ": the upload token names no temporary file");
    const auto temp = p.parent_path() / temp_name;
    if (::rename(temp.c_str(), p.c_str()) != 0) {
      if (errno != ENOENT) util::throw_errno(p, "cannot rename into place");
      // Renamed already (this token completed before: the file is that
      // temporary, same inode), or removed as stale.
      struct stat st {};
      if (::stat(p.c_str(), &st) == 0 && j.value("dev", std::uint64_t{0}) == static_cast<std::uint64_t>(st.st_dev) &&
          j.value("ino", std::uint64_t{0}) == static_cast<std::uint64_t>(st.st_ino))
        return;
      throw Error(Errc::not_found, where + ": the detached upload's temporary " + temp_name +
                                       " no longer exists (removed as stale?); nothing was published");
    }
    util::UniqueFd dfd(::open(p.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dfd) ::fsync(dfd.get());  // the new directory entry
  }

  void remove(std::string_view key) override {
    const auto p = path(key);
    if (::unlink(p.c_str()) != 0 && errno != ENOENT) util::throw_errno(p, "cannot delete");
  }

  std::vector<std::string> list(std::string_view prefix) override {
    // Walk the deepest directory the prefix names completely.
    const auto cut = prefix.rfind('/');
    const std::string dir_key = cut == std::string_view::npos ? std::string() : std::string(prefix.substr(0, cut));
    const fs::path dir = dir_key.empty() ? m_root : path(dir_key);
    std::vector<std::string> keys;
    std::error_code ec;
    fs::recursive_directory_iterator it(dir, ec), end;
    for (; !ec && it != end; it.increment(ec)) {
      const auto name = it->path().filename().string();
      if (!it->is_regular_file(ec)) continue;
      // The temporaries of in-flight writes (AtomicFile: ".NAME.XXXXXX.tmp") are
      // not objects yet; other names, dot-names included, list as S3 lists them.
      if (name.size() > 5 && name.front() == '.' && name.ends_with(".tmp")) continue;
      auto rel = fs::relative(it->path(), m_root, ec).generic_string();
      if (ec) continue;
      if (rel.compare(0, prefix.size(), prefix) == 0) keys.push_back(std::move(rel));
    }
    std::sort(keys.begin(), keys.end());
    return keys;
  }

  std::unique_ptr<Backend> clone() const override { return std::make_unique<FileBackend>(m_root); }

 private:
  fs::path path(std::string_view key) const {
    // Keys come from our own layouts and from URLs; refuse ones that would
    // leave the root.
    std::string_view rest = key;
    while (!rest.empty()) {
      const auto s = rest.find('/');
      const auto comp = rest.substr(0, s);
      if (comp == "..") throw Error(Errc::invalid_argument, m_endpoint + ": key '" + std::string(key) + "' leaves the store");
      rest = s == std::string_view::npos ? std::string_view{} : rest.substr(s + 1);
    }
    if (key.empty()) throw Error(Errc::invalid_argument, m_endpoint + ": empty key");
    return m_root / std::string(key);
  }

  static void make_parent(const fs::path& p) {
    std::error_code ec;
    fs::create_directories(p.parent_path(), ec);
    if (ec) throw Error(Errc::io, p.parent_path().string() + ": cannot create directory: " + ec.message());
  }

  fs::path m_root;
  std::string m_endpoint;
};

}  // namespace

std::string detached_file_token(const fs::path& temporary, std::string_view key, std::uint64_t size) {
  struct stat st {};
  if (::stat(temporary.c_str(), &st) != 0) util::throw_errno(temporary, "cannot stat");
  auto token = new_upload_token("file", key, size);
  token["temp"] = temporary.filename().string();
  token["dev"] = static_cast<std::uint64_t>(st.st_dev);
  token["ino"] = static_cast<std::uint64_t>(st.st_ino);
  return token.dump();
}

std::unique_ptr<Backend> make_file_backend(std::filesystem::path root) {
  return std::make_unique<FileBackend>(std::move(root));
}

}  // namespace mithril::storage
