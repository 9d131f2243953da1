#include "neat/components/plot.hpp"

#include <cstdlib>
#include <fstream>

#include "neat/hardware/detect.hpp"

namespace neat::components {

namespace {

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

bool gnuplot_available() { return hardware::executable_on_path("gnuplot"); }

std::optional<std::string> run_gnuplot(const std::filesystem::path& script_file,
                                       const std::string& script) {
  if (!gnuplot_available()) return "gnuplot is not on PATH";
  {
    std::ofstream out(script_file);
    out << script;
    if (!out) return "cannot write " + script_file.string();
  }
  const std::string command = "gnuplot " + shell_quoted(script_file) + " 2>/dev/null";
  const int rc = std::system(command.c_str());
  if (rc != 0) return "gnuplot failed (exit status " + std::to_string(rc) + ")";
  return std::nullopt;
}

}  // namespace neat::components
