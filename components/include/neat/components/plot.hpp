// Plots through gnuplot when it is installed (Debian gnuplot-nox, from scripts/install-deps):
// the one place that finds the program, quotes paths and runs a script. A missing gnuplot is
// not an error: callers keep their data files (CSV, .dat) and say why there is no PNG.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace neat::components {

/// `path` as a single-quoted gnuplot string literal ('' stands for ' inside it).
std::string gnuplot_quoted(const std::filesystem::path& path);

/// Whether a gnuplot executable is on PATH.
bool gnuplot_available();

/// Writes `script` (gnuplot commands, which set their own terminal and output) to
/// `script_file` and runs gnuplot on it. Returns std::nullopt on success, otherwise why there
/// is no plot ("gnuplot is not on PATH", or its exit status).
std::optional<std::string> run_gnuplot(const std::filesystem::path& script_file,
                                       const std::string& script);

}  // namespace neat::components
