// Where a component finds a file named in its config (a shipped model, a codebook, the
// prepared corpus): relative paths are taken from the working directory, and from the source
// tree when they do not exist there, so that `neat run` works from any directory.
#pragma once

#include <filesystem>
#include <string>

namespace neat::components {

/// `path` itself when it is absolute or exists relative to the working directory; else the
/// same relative path under the source tree (NEAT_SOURCE_DIR at build time) when it exists
/// there; else `path` unchanged (the caller's open then fails naming it).
std::filesystem::path resolve_path(const std::string& path);

}  // namespace neat::components
