#include "mithril/version.hpp"

#include "codec/byte_group.hpp"
#include "codec/rans.hpp"
#include "codec/rans_pairs.hpp"
#include "codec/rans_split.hpp"
#include "util/atomic_file.hpp"
#include "util/blake3.hpp"
#include "util/cold_memory.hpp"
#include "util/cpu_info.hpp"
#include "util/interrupt.hpp"
#include "util/kernel_memo.hpp"
#include "util/mapped_file.hpp"
#include "util/simd_level.hpp"
#include "util/xxh3.hpp"

namespace mithril {

const char* version() noexcept { return MITHRIL_VERSION; }

namespace {
std::string_view source_name(codec::rans::KernelSource s) {
  switch (s) {
    case codec::rans::KernelSource::forced: return "forced by MITHRIL_RANS_KERNEL";
    case codec::rans::KernelSource::only: return "the only candidate";
    case codec::rans::KernelSource::timed: return "timed";
    case codec::rans::KernelSource::remembered: return "remembered";
  }
  return "?";
}
}  // namespace

Kernels kernels() {
  const auto rans = codec::rans::kernel_names();
  const auto memo = util::kernel_memo_path();
  std::string choice = std::string("encode ") + std::string(source_name(rans.encode_source)) + ", decode " +
                       std::string(source_name(rans.decode_source)) + "; " +
                       (memo ? "remembered in " + memo->string() : std::string("not remembered (MITHRIL_KERNEL_MEMO)"));
  return {std::string(rans.encode),
          std::string(rans.decode),
          std::string(codec::byte_group_isa()),
          std::string(util::detail::blake3_kernel()),
          std::string(util::xxh3_kernel()),
          std::string(codec::rans_pairs::expand_kernel_name()),
          std::string(codec::rans_split::merge_kernel_name()),
          std::string(util::streaming_copy_kernel()),
          std::move(choice)};
}

std::string cpu_model() { return util::cpu_description(); }

IsaCap isa_cap() {
  IsaCap c;
  if (const auto level = util::simd_cap()) c.level = std::string(util::simd_level_name(*level));
  if (auto bad = util::simd_cap_rejected()) c.rejected = std::move(*bad);
  return c;
}

void remove_pending_outputs() noexcept { util::remove_all_pending_temporaries(); }

bool defer_signal(int sig) noexcept { return util::defer_signal(sig); }

int deferred_signal() noexcept { return util::deferred_signal(); }

void recover_from_shrinking_files() { util::install_bus_error_recovery(); }

}  // namespace mithril
