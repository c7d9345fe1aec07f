// storage/remote_libs.hpp — libcurl and libcrypto, loaded when first used.
//
// Only the S3 tier needs them (HTTP, and SigV4's SHA-256 / HMAC plus the
// multipart ETag's MD5). Linked into the program, they were loaded by every
// `mithril` command and every `import mithril`, with the ~30 libraries
// Debian's libcurl brings (GnuTLS via librtmp, Kerberos, LDAP, nghttp2, ...)
// and their initialisers: on AMD EPYC (Linux 6.18, Debian 12) an empty
// `main` linked against libcurl starts in 14 ms against 1.5 without, and
// `mithril --version` took 12.9 ms against 4.0 now.
//
// So they are linked into a small shared library of their own,
// libmithril_remote.so (remote_shim.cpp), which the first S3 request opens
// with dlopen(): it hands out the tables below. It is installed next to the
// program that uses it (see curl()), and as an ordinary ELF dependency of
// theirs it lets auditwheel vendor libcurl and libcrypto into the wheel.
//
// Each entry point's type is the header's own (decltype), so a call through
// a table is checked like a direct one (curl's setopt and getinfo are
// variadic, as in the header).
//
// Thread-safety: curl() and crypto() may be called from any thread; the
// first call loads (once), later ones return the same tables.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace mithril::storage::libs {

struct Curl {
  decltype(&::curl_easy_init) easy_init;
  decltype(&::curl_easy_setopt) easy_setopt;
  decltype(&::curl_easy_perform) easy_perform;
  decltype(&::curl_easy_reset) easy_reset;
  decltype(&::curl_easy_cleanup) easy_cleanup;
  decltype(&::curl_easy_getinfo) easy_getinfo;
  decltype(&::curl_easy_strerror) easy_strerror;
  decltype(&::curl_slist_append) slist_append;
  decltype(&::curl_slist_free_all) slist_free_all;
};

struct Crypto {
  decltype(&::EVP_Digest) digest;
  decltype(&::EVP_md5) md5;
  decltype(&::EVP_sha256) sha256;
  decltype(&::HMAC) hmac;
};

// The shim and the core must agree on the tables (both are built from this
// header by one build; a stale shim of another build is refused).
inline constexpr std::size_t k_layout = sizeof(Curl) << 16 | sizeof(Crypto);

// libcurl's table, the shim loaded (and curl_global_init run) by the first
// call. Throws Error(unsupported) naming every place the shim was looked
// for and why it could not be loaded (dlerror), or Error(internal) when
// libcurl's initialisation fails.
const Curl& curl();

// libcrypto's table (OpenSSL); throws as curl() does.
const Crypto& crypto();

namespace detail {
// Where libmithril_remote.so is looked for, in order: beside the object
// that holds this code (the executable, or the Python extension), then the
// layouts an installed package has (see remote_libs.cpp).
std::vector<std::string> shim_candidates();
// dlopen() of the first candidate that loads: its handle and path. Throws
// Error(unsupported) "<what> needs libmithril_remote.so ..." listing each
// candidate with its dlerror().
std::pair<void*, std::string> open_first(const std::vector<std::string>& candidates, const char* what);
}  // namespace detail

}  // namespace mithril::storage::libs
