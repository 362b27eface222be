// The `tollgate macos` command group: `scaffold` writes a consistent content-filter
// configuration, `check` verifies a built .app, a scaffold tree or a single file (docs/macos.md).
// main.cc calls AddMacosCommands once; the command's exit code (exit_codes.h) is stored in
// *exit_code when it runs.
#pragma once

#include <CLI/CLI.hpp>

namespace tollgate::cli {

void AddMacosCommands(CLI::App& app, int* exit_code);

}  // namespace tollgate::cli
