#include "storage/remote_libs.hpp"

#include <dlfcn.h>
#include <link.h>

#include <filesystem>
#include <system_error>

#include "mithril/error.hpp"

namespace mithril::storage::libs {
namespace {

constexpr const char* k_shim = "libmithril_remote.so";
constexpr const char* k_what = "S3 access";

// The file of the object that holds this code: the Python extension (its
// link map names it), or the executable (whose link map has no name).
std::string self_path() {
  Dl_info info{};
  link_map* map = nullptr;
  if (::dladdr1(reinterpret_cast<void*>(&self_path), &info, reinterpret_cast<void**>(&map), RTLD_DL_LINKMAP) != 0 &&
      map && map->l_name && map->l_name[0] != '\0')
    return map->l_name;
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : exe.string();
}

struct Shim {
  void* handle;
  std::string path;
};

const Shim& shim() {
  // A throwing initialiser leaves the static uninitialised: the next call
  // tries again (and reports again).
  static const Shim s = [] {
    auto [h, path] = detail::open_first(detail::shim_candidates(), k_what);
    auto layout = reinterpret_cast<std::size_t (*)()>(::dlsym(h, "mithril_remote_layout"));
    if (!layout || layout() != k_layout)
      throw Error(Errc::unsupported, path + ": not the " + k_shim + " of this build of mithril (its tables differ)");
    return Shim{h, std::move(path)};
  }();
  return s;
}

template <typename Table>
const Table* table(const char* function) {
  const Shim& s = shim();
  auto get = reinterpret_cast<const Table* (*)()>(::dlsym(s.handle, function));
  if (!get) throw Error(Errc::unsupported, s.path + ": lacks " + function);
  return get();
}

}  // namespace

namespace detail {

std::vector<std::string> shim_candidates() {
  const std::filesystem::path dir = std::filesystem::path(self_path()).parent_path();
  std::vector<std::string> out;
  for (const char* rel : {
           ".",           // build/mithril; the package's _core beside it; the tests
           "..",          // build/python/_core*.so
           "../mithril",  // a wheel's CLI, moved to site-packages/mithril.scripts/ by auditwheel
#ifdef MITHRIL_PYTHON_DIR  // `pip install .`: the CLI in bin/, the package in lib/pythonX.Y/
           "../lib/" MITHRIL_PYTHON_DIR "/site-packages/mithril",
           "../lib/" MITHRIL_PYTHON_DIR "/dist-packages/mithril",  // Debian's system Python
#endif
       })
    out.push_back((dir / rel / k_shim).lexically_normal().string());
  return out;
}

std::pair<void*, std::string> open_first(const std::vector<std::string>& candidates, const char* what) {
  std::string tried;
  for (const auto& path : candidates) {
    // RTLD_LOCAL: libcurl's and libcrypto's symbols serve only the tables.
    if (void* h = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL)) return {h, path};
    const char* why = ::dlerror();
    tried += "\n  " + path + ": " + (why ? why : "unknown error");
  }
  throw Error(Errc::unsupported, std::string(what) + " needs " + k_shim +
                                     " (libcurl and libcrypto, loaded on first use), which could not be loaded from:" +
                                     tried);
}

}  // namespace detail

const Curl& curl() {
  static const Curl* c = [] {
    const Curl* t = table<Curl>("mithril_remote_curl");
    if (!t) throw Error(Errc::internal, "libcurl initialisation failed");
    return t;
  }();
  return *c;
}

const Crypto& crypto() {
  static const Crypto* c = table<Crypto>("mithril_remote_crypto");
  return *c;
}

}  // namespace mithril::storage::libs
