// cache/python_hook.cpp — the sitecustomize that `cache exec` / `cache env`
// put first on PYTHONPATH (STORE/python/), so that Python processes started
// under the store switch on what torch.compile needs for a warm start
// (Dynamo's caching precompile, managed by the `mithril` Python package:
// mithril/_hook.py) and report their cache lookups (`cache explain`).
//
// It imports nothing until the process imports torch (a meta-path finder that
// removes itself), so Python processes that never use torch, such as the
// probes and workers torch.compile starts, pay only for reading it.
// The file does nothing when the interpreter cannot import `mithril` (then
// the process runs on today's path: FX-graph and AOTAutograd caches), when
// MITHRIL_CACHE_HOOK is not 1, and it chains to the sitecustomize it shadows.
#include <cstdlib>
#include <string_view>

#include "cache/fs_util.hpp"
#include "mithril/error.hpp"
#include "cache/python_hook.hpp"
#include "util/bytes.hpp"

namespace mithril::cache {
namespace {

constexpr std::string_view k_sitecustomize = R"PY(# Written by `mithril cache` (src/cache/python_hook.cpp); rewritten when it differs.
def _mithril_cache_hook():
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        import importlib.machinery
        import importlib.util

        spec = importlib.machinery.PathFinder.find_spec(
            "sitecustomize", [p for p in sys.path if os.path.abspath(p or ".") != here])
        if spec is not None and spec.loader is not None:
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
    except Exception as e:
        print(f"mithril cache: warning: the shadowed sitecustomize failed: {e}", file=sys.stderr)
    root = os.environ.get("MITHRIL_CACHE_DIR")
    if not root or os.environ.get("MITHRIL_CACHE_HOOK") != "1":
        return

    # Nothing is imported until the process imports torch: the many Python
    # children torch.compile starts (Inductor's ISA probes, compile workers)
    # and every process that never uses torch pay nothing.
    class _MithrilTorchFinder:
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name != "torch":
                return None
            try:
                sys.meta_path.remove(cls)
            except ValueError:
                pass
            try:
                from mithril import _hook
            except Exception:
                return None
            try:
                _hook.activate(root)
            except Exception as e:
                print(f"mithril cache: warning: torch.compile hooks not enabled: {e}", file=sys.stderr)
            return None

    if "torch" in sys.modules:
        _MithrilTorchFinder.find_spec("torch")
    else:
        sys.meta_path.insert(0, _MithrilTorchFinder)


_mithril_cache_hook()
del _mithril_cache_hook
)PY";

}  // namespace

std::filesystem::path ensure_python_hook(const std::filesystem::path& store_root) {
  const auto dir = store_root / "python";
  const auto file = dir / "sitecustomize.py";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error(Errc::io, dir.string() + ": cannot create directory: " + ec.message());
  bool same = false;
  try {
    const auto have = read_file(file);
    same = std::string_view(reinterpret_cast<const char*>(have.data()), have.size()) == k_sitecustomize;
  } catch (const Error&) {
  }
  if (!same) write_file_replace(file, util::as_bytes(k_sitecustomize));
  return dir;
}

std::string python_path_with(const std::filesystem::path& dir) {
  const char* cur = std::getenv("PYTHONPATH");
  const std::string d = dir.string();
  if (!cur || !*cur) return d;
  const std::string c = cur;
  if (c == d || c.rfind(d + ":", 0) == 0) return c;
  return d + ":" + c;
}

}  // namespace mithril::cache
