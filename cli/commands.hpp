// Sub-command modules: each component library contributes its `neat` sub-commands from its own
// translation unit (cli/cmd_<component>.cpp), so that main.cpp does not grow with every
// component. A module declares its options on the parsed app and returns a runner.
#pragma once

#include <CLI/CLI.hpp>

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace neat::cli {

/// Called after parsing; runs the module's chosen sub-command and returns its exit status, or
/// std::nullopt when none of the module's sub-commands was chosen. Exceptions propagate to
/// main(), which prints them (config::ConfigError: exit 2; others: exit 1).
using CommandRunner = std::function<std::optional<int>()>;

/// The parents a module may add sub-commands to.
struct CommandParents {
  CLI::App& app;    ///< top level (`neat generate`, ...)
  CLI::App& train;  ///< `neat train <component>`
};

/// configs/ of the source tree, or $NEAT_CONFIG_DIR.
std::filesystem::path config_dir();
/// A file under the source tree (models/..., configs/...), as an absolute path string.
std::string source_path(const std::string& relative);

// One declaration per module; main.cpp calls each once, in this order.
// (Add yours here and in main.cpp's `modules` list; cli/CMakeLists.txt globs cmd_*.cpp.)
CommandRunner add_mvot_commands(const CommandParents& parents);  // cmd_mvot.cpp
CommandRunner add_t2_commands(const CommandParents& parents);    // cmd_t2.cpp
CommandRunner add_titans_commands(const CommandParents& parents);  // cmd_titans.cpp

}  // namespace neat::cli
