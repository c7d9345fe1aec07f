// storage/objects.cpp — mithril/objects.hpp over storage::open().
#include "mithril/objects.hpp"

#include "mithril/error.hpp"
#include "storage/backend.hpp"
#include "storage/remote_io.hpp"
#include "storage/url.hpp"

namespace mithril {
namespace {

storage::Location locate(const std::string& url, const RemoteOptions& remote) {
  if (!storage::is_url(url)) {
    throw Error(Errc::invalid_argument,
                "'" + url + "' is not an object-store URL (s3://, redis://, file://); use the file system");
  }
  storage::Options o;
  o.endpoint = remote.endpoint;
  return storage::open(url, storage::options_from_env(o));
}

}  // namespace

void put_object(const std::string& url, std::span<const std::byte> data, const RemoteOptions& remote) {
  auto loc = locate(url, remote);
  loc.backend->put(loc.key, data);
}

std::optional<std::vector<std::byte>> get_object(const std::string& url, const RemoteOptions& remote) {
  auto loc = locate(url, remote);
  return loc.backend->get(loc.key);
}

std::optional<std::uint64_t> stat_object(const std::string& url, const RemoteOptions& remote) {
  auto loc = locate(url, remote);
  const auto info = loc.backend->stat(loc.key);
  if (!info) return std::nullopt;
  return info->size;
}

void remove_object(const std::string& url, const RemoteOptions& remote) {
  auto loc = locate(url, remote);
  loc.backend->remove(loc.key);
}

std::vector<std::string> list_objects(const std::string& url_prefix, const RemoteOptions& remote) {
  auto loc = locate(url_prefix, remote);
  std::vector<std::string> out;
  for (auto& key : loc.backend->list(loc.key)) {
    if (key.size() >= loc.key.size() && key.compare(0, loc.key.size(), loc.key) == 0) {
      out.push_back(key.substr(loc.key.size()));
    }
  }
  return out;
}

std::size_t abort_uploads(const std::string& url_prefix, const RemoteOptions& remote) {
  auto loc = locate(url_prefix, remote);
  return loc.backend->abort_uploads(loc.key);
}

void complete_upload(const std::string& path_or_url, const std::string& token, const RemoteOptions& remote) {
  storage::Options o;
  o.endpoint = remote.endpoint;
  storage::complete_detached(path_or_url, token, storage::options_from_env(o));
}

}  // namespace mithril
