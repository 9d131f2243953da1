#include "neat/components/paths.hpp"

namespace neat::components {

std::filesystem::path resolve_path(const std::string& path) {
  const std::filesystem::path p(path);
  std::error_code ec;
  if (p.is_absolute() || std::filesystem::exists(p, ec)) return p;
  const auto in_tree = std::filesystem::path(NEAT_SOURCE_DIR) / p;
  return std::filesystem::exists(in_tree, ec) ? in_tree : p;
}

}  // namespace neat::components
