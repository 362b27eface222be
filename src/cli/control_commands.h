// The `tollgate` commands that talk to tollgated's control API (proto/io.tollgate.Control.varlink):
// status, rules list|add|rm|test|export, rules import (OpenSnitch files; only --apply talks to
// the daemon), flows, stats, reload, metrics. main.cc calls AddControlCommands once; the command's
// exit code (exit_codes.h) is stored in *exit_code when it runs. docs/cli.md describes each one.
#pragma once

#include <CLI/CLI.hpp>

namespace tollgate::cli {

void AddControlCommands(CLI::App& app, int* exit_code);

}  // namespace tollgate::cli
