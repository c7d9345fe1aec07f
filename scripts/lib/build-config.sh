# scripts/lib/build-config.sh — sourced by scripts/setup, scripts/wheel and scripts/sanitize.
#
# One build tree, build/, for everything: the CLI, the unit tests, the
# benchmarks and the Python extension. `pip install .` (setup) and `pip wheel .`
# (scripts/wheel) are pointed at that same tree with the same options through
# scikit-build-core, so they only package what setup compiled: CMake's
# configure sees an unchanged cache and ninja finds nothing to do.
#
# In:  $root (repository root), MITHRIL_BUILD_TYPE (default Release),
#      MITHRIL_UNITY (default 1)
# Out: build_type, cmake_args (for `cmake -S . -B build`),
#      skbuild_args (the same options as -C flags for pip)
build_type=${MITHRIL_BUILD_TYPE:-Release}
# A unity build (CMakeLists.txt, MITHRIL_UNITY) unless MITHRIL_UNITY=0: a fresh
# Release tree in 0.57x the compile time; an edit-compile loop is quicker
# without. scripts/sanitize reads it here too.
unity=$([ "${MITHRIL_UNITY:-1}" = 0 ] && echo OFF || echo ON)
py=$root/.venv/bin/python
cmake_defines=(
  CMAKE_BUILD_TYPE="$build_type"
  MITHRIL_PYTHON_MODULE=ON
  MITHRIL_TESTS=ON
  # The tests' own sources at -O1 in a Release tree (a quarter less compile time);
  # the code under test keeps -O3.
  MITHRIL_TEST_OPT="$([ "$build_type" = Release ] && echo -O1)"
  MITHRIL_BENCH=ON
  MITHRIL_UNITY="$unity"
  Python_EXECUTABLE="$py"
)
cmake_args=()
for d in "${cmake_defines[@]}"; do cmake_args+=("-D$d"); done
# Ninja when installed (scikit-build-core uses it too; a tree keeps its generator).
if command -v ninja >/dev/null && [ ! -f "$root/build/Makefile" ]; then
  cmake_args+=(-G Ninja)
fi
skbuild_args=(-C build-dir=build -C cmake.build-type="$build_type")
for d in "${cmake_defines[@]}"; do
  case $d in CMAKE_BUILD_TYPE=*|Python_EXECUTABLE=*) continue ;; esac
  skbuild_args+=(-C "cmake.define.$d")
done
