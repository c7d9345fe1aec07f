// cache/config.cpp — CacheConfig from defaults, ROOT/config and environment.
#include <cstdlib>
#include <fstream>
#include <string>

#include "cache/fs_util.hpp"
#include "mithril/cache.hpp"

namespace mithril::cache {
namespace {

std::string trim(std::string s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return {};
  const auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

std::filesystem::path default_root() {
  if (const char* d = std::getenv("MITHRIL_CACHE_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::filesystem::path(x) / "mithril";
  if (const char* h = std::getenv("HOME"); h && *h) return std::filesystem::path(h) / ".cache" / "mithril";
  throw Error(Errc::invalid_argument, "no cache directory: set MITHRIL_CACHE_DIR (or HOME)");
}

void apply_file(CacheConfig& c, const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) return;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (auto hash = line.find('#'); hash != std::string::npos) line.erase(hash);
    line = trim(line);
    if (line.empty()) continue;
    const auto eq = line.find('=');
    const auto where = file.string() + ":" + std::to_string(n);
    if (eq == std::string::npos) throw Error(Errc::invalid_argument, where + ": expected 'key = value'");
    const auto key = trim(line.substr(0, eq));
    const auto value = trim(line.substr(eq + 1));
    try {
      if (key == "max_size") c.max_size = parse_size(value);
      else if (key == "max_entries") c.max_entries = std::stoull(value);
      else if (key == "max_import_member") c.max_import_member = parse_size(value);
      else if (key == "eviction_grace") c.eviction_grace_s = parse_age_seconds(value);
      else if (key == "bundle_level") c.bundle_level = std::stoi(value);
      else throw Error(Errc::invalid_argument, "unknown setting '" + key + "'");
    } catch (const Error& e) {
      throw Error(Errc::invalid_argument, where + ": " + e.what());
    } catch (const std::exception&) {
      throw Error(Errc::invalid_argument, where + ": bad value '" + value + "' for " + key);
    }
  }
}

}  // namespace

CacheConfig load_config(const std::optional<std::filesystem::path>& root) {
  CacheConfig c;
  c.root = root ? *root : default_root();
  c.root = std::filesystem::absolute(c.root).lexically_normal();
  apply_file(c, c.root / "config");
  if (const char* s = std::getenv("MITHRIL_CACHE_MAX_SIZE"); s && *s) {
    try {
      c.max_size = parse_size(s);
    } catch (const Error& e) {
      throw Error(Errc::invalid_argument, std::string("MITHRIL_CACHE_MAX_SIZE: ") + e.what());
    }
  }
  return c;
}

}  // namespace mithril::cache
