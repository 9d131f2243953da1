#include "neat/components/plot.hpp"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string_view>

namespace neat::components {

namespace {

std::optional<std::filesystem::path> find_on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return std::nullopt;
  std::string_view rest(path);
  while (!rest.empty()) {
    const auto colon = rest.find(':');
    const auto dir = rest.substr(0, colon);
    if (!dir.empty()) {
      const auto candidate = std::filesystem::path(dir) / program;
      if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    }
    if (colon == std::string_view::npos) break;
    rest.remove_prefix(colon + 1);
  }
  return std::nullopt;
}

// A path as a single-quoted shell word ('\'' stands for ' inside it).
std::string shell_quoted(const std::filesystem::path& p) {
  std::string out = "'";
  for (char c : p.string()) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace

std::string gnuplot_quoted(const std::filesystem::path& path) {
  std::string out = "'";
  for (char c : path.string()) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

bool gnuplot_available() { return find_on_path("gnuplot").has_value(); }

std::optional<std::string> run_gnuplot(const std::filesystem::path& script_file,
                                       const std::string& script) {
  const auto gnuplot = find_on_path("gnuplot");
  if (!gnuplot) return "gnuplot is not on PATH";
  {
    std::ofstream out(script_file);
    out << script;
    if (!out) return "cannot write " + script_file.string();
  }
  const std::string command =
      shell_quoted(*gnuplot) + " " + shell_quoted(script_file) + " 2>/dev/null";
  const int rc = std::system(command.c_str());
  if (rc != 0) return "gnuplot failed (exit status " + std::to_string(rc) + ")";
  return std::nullopt;
}

}  // namespace neat::components
