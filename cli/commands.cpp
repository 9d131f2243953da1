#include "commands.hpp"

#include <cstdlib>

namespace neat::cli {

std::filesystem::path config_dir() {
  if (const char* env = std::getenv("NEAT_CONFIG_DIR")) return env;
  return std::filesystem::path(NEAT_SOURCE_DIR) / "configs";
}

std::string source_path(const std::string& relative) {
  return (std::filesystem::path(NEAT_SOURCE_DIR) / relative).string();
}

}  // namespace neat::cli
