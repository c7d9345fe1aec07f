#include "util/kernel_memo.hpp"

#if defined(__linux__)
#include <link.h>
#define MITHRIL_HAVE_DL_ITERATE_PHDR 1
#endif

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <sstream>
#include <vector>

#include "util/atomic_file.hpp"
#include "util/cpu_info.hpp"

namespace mithril::util {
namespace {

constexpr std::size_t k_max_lines = 64;
constexpr std::uintmax_t k_max_file = 64 * 1024;  // a larger file is not ours: ignored

#ifdef MITHRIL_HAVE_DL_ITERATE_PHDR
constexpr std::uint32_t k_nt_gnu_build_id = 3;  // <elf.h>'s NT_GNU_BUILD_ID

struct Search {
  std::uintptr_t address;
  std::string id;
};

// The PT_NOTE segments of the object that holds `address`: its
// NT_GNU_BUILD_ID note ("GNU" owner), as ld --build-id writes it.
int find_build_id(dl_phdr_info* info, std::size_t, void* data) {
  auto& s = *static_cast<Search*>(data);
  bool ours = false;
  for (int i = 0; i < info->dlpi_phnum && !ours; ++i) {
    const auto& ph = info->dlpi_phdr[i];
    const std::uintptr_t begin = info->dlpi_addr + ph.p_vaddr;
    ours = ph.p_type == PT_LOAD && s.address >= begin && s.address - begin < ph.p_memsz;
  }
  if (!ours) return 0;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const auto& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_NOTE) continue;
    const auto* p = reinterpret_cast<const unsigned char*>(info->dlpi_addr + ph.p_vaddr);
    const unsigned char* end = p + ph.p_memsz;
    auto align4 = [](std::size_t n) { return (n + 3) & ~std::size_t{3}; };
    while (end - p >= static_cast<std::ptrdiff_t>(sizeof(ElfW(Nhdr)))) {
      ElfW(Nhdr) h;
      std::memcpy(&h, p, sizeof h);
      const unsigned char* name = p + sizeof h;
      const unsigned char* desc = name + align4(h.n_namesz);
      if (desc > end || static_cast<std::size_t>(end - desc) < h.n_descsz) break;
      if (h.n_type == k_nt_gnu_build_id && h.n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0) {
        static constexpr char k_hex[] = "0123456789abcdef";
        for (std::size_t j = 0; j < h.n_descsz; ++j) {
          s.id += k_hex[desc[j] >> 4];
          s.id += k_hex[desc[j] & 15];
        }
        return 1;
      }
      p = desc + align4(h.n_descsz);
    }
  }
  return 1;  // ours, without a build id
}
#endif

std::string one_field(std::string s) {
  std::replace_if(s.begin(), s.end(), [](char c) { return c == '\t' || c == '\n' || c == '\r'; }, ' ');
  return s;
}

// "BUILD\tCPU\tQUESTION\t": what a line starts with for `question` here.
std::string line_key(std::string_view question) {
  static const std::string prefix = build_id() + '\t' + one_field(cpu_identity()) + '\t';
  return prefix + one_field(std::string(question)) + '\t';
}

std::vector<std::string> read_lines(const std::filesystem::path& path) {
  std::vector<std::string> lines;
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec || size > k_max_file) return lines;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] != '#') lines.push_back(std::move(line));
  return lines;
}

}  // namespace

std::string build_id() {
#ifdef MITHRIL_HAVE_DL_ITERATE_PHDR
  Search s{reinterpret_cast<std::uintptr_t>(&find_build_id), {}};
  dl_iterate_phdr(find_build_id, &s);
  return s.id;
#else
  return {};  // no way to tell builds apart: nothing is remembered
#endif
}

std::optional<std::filesystem::path> kernel_memo_path() {
  static const bool has_build_id = !build_id().empty();
  if (!has_build_id) return std::nullopt;
  if (const char* f = std::getenv("MITHRIL_KERNEL_MEMO")) {
    const std::string_view v(f);
    if (v.empty() || v == "0" || v == "off") return std::nullopt;
    return std::filesystem::path(v);
  }
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::filesystem::path(x) / "mithril" / "kernels";
  if (const char* h = std::getenv("HOME"); h && *h) return std::filesystem::path(h) / ".cache" / "mithril" / "kernels";
  return std::nullopt;
}

namespace {

// The answer of `line` to the question whose key it starts with, and how
// many timings in a row gave it: "KEY" + "ANSWER\tN". Nullopt for another
// question's line or one that does not parse.
struct Answer {
  std::string kernel;
  int timings = 0;
};
std::optional<Answer> answer_of(const std::string& line, const std::string& key) {
  if (line.size() <= key.size() || line.compare(0, key.size(), key) != 0) return std::nullopt;
  const std::string_view rest = std::string_view(line).substr(key.size());
  const std::size_t tab = rest.find('\t');
  if (tab == 0 || tab == std::string_view::npos || rest.size() != tab + 2 || (rest[tab + 1] != '1' && rest[tab + 1] != '2'))
    return std::nullopt;
  return Answer{std::string(rest.substr(0, tab)), rest[tab + 1] - '0'};
}

}  // namespace

std::optional<std::string> recall_kernel(std::string_view question) {
  const auto path = kernel_memo_path();
  if (!path) return std::nullopt;
  const std::string key = line_key(question);
  std::optional<std::string> answer;
  for (const auto& line : read_lines(*path))
    if (const auto a = answer_of(line, key)) answer = a->timings >= 2 ? std::optional(a->kernel) : std::nullopt;
  return answer;
}

bool remember_kernel(std::string_view question, std::string_view answer) {
  const auto path = kernel_memo_path();
  if (!path) return false;
  try {
    const std::string key = line_key(question);
    const std::string kernel = one_field(std::string(answer));
    std::vector<std::string> lines = read_lines(*path);
    // The same answer as the last timing's: now two in a row agree.
    int timings = 1;
    for (const auto& line : lines)
      if (const auto a = answer_of(line, key)) timings = a->kernel == kernel ? 2 : 1;
    std::erase_if(lines, [&](const std::string& l) { return l.compare(0, key.size(), key) == 0; });
    if (lines.size() >= k_max_lines) lines.erase(lines.begin(), lines.end() - (k_max_lines - 1));
    lines.push_back(key + kernel + '\t' + std::to_string(timings));
    std::ostringstream text;
    text << "# Mithril's kernel choices, made by timing them (mithril --version -v); delete to time again\n";
    for (const auto& l : lines) text << l << '\n';
    std::error_code ec;
    std::filesystem::create_directories(path->parent_path(), ec);
    write_file_atomic(*path, as_bytes(text.str()), Overwrite::allow, Durability::none);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace mithril::util
