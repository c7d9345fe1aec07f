// storage/remote_shim.cpp — libmithril_remote.so: the one object that links
// libcurl and libcrypto. mithril_core opens it with dlopen() on the first S3
// request (storage/remote_libs.cpp) and takes the two tables of entry points
// it hands out. Being a shared library with ordinary link dependencies, it
// is what auditwheel sees when it repairs the wheel: libcurl, libcrypto and
// what they need are vendored into the wheel because of it, and its
// DT_NEEDED names are rewritten to the vendored copies. (A plain
// dlopen("libcurl.so.4") from the core would find neither.)
//
// Not part of mithril_core (CMakeLists.txt builds it alone); exports only
// the two functions below (-fvisibility=hidden).
#include <cstddef>

#include "storage/remote_libs.hpp"

using mithril::storage::libs::Crypto;
using mithril::storage::libs::Curl;

extern "C" __attribute__((visibility("default"))) std::size_t mithril_remote_layout() {
  return mithril::storage::libs::k_layout;
}

extern "C" __attribute__((visibility("default"))) const Curl* mithril_remote_curl() {
  static const Curl table{&::curl_easy_init,     &::curl_easy_setopt,   &::curl_easy_perform,
                          &::curl_easy_reset,    &::curl_easy_cleanup,  &::curl_easy_getinfo,
                          &::curl_easy_strerror, &::curl_slist_append, &::curl_slist_free_all};
  // Once per process, before any handle is made.
  static const bool initialised = ::curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
  return initialised ? &table : nullptr;
}

extern "C" __attribute__((visibility("default"))) const Crypto* mithril_remote_crypto() {
  static const Crypto table{&::EVP_Digest, &::EVP_md5, &::EVP_sha256, &::HMAC};
  return &table;
}
