// cache/python_hook.hpp — STORE/python/sitecustomize.py (see python_hook.cpp).
#pragma once

#include <filesystem>
#include <string>

namespace mithril::cache {

// Writes (or refreshes) STORE/python/sitecustomize.py; returns STORE/python.
// Throws Error(io) when it cannot be written.
std::filesystem::path ensure_python_hook(const std::filesystem::path& store_root);
// $PYTHONPATH with `dir` first (unchanged if it already is).
std::string python_path_with(const std::filesystem::path& dir);

}  // namespace mithril::cache
