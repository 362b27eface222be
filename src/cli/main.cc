// tollgate: the command-line tool. Wiring only: each command group registers its subcommands and
// options on the CLI::App and sets the exit code when its command runs (exit_codes.h).
#include <CLI/CLI.hpp>

#include "cli/control_commands.h"
#include "cli/exit_codes.h"
#include "cli/macos_commands.h"

int main(int argc, char** argv) {
  CLI::App app{"tollgate: control and check a Tollgate host network filter"};
  app.set_version_flag("--version", "tollgate " TOLLGATE_VERSION);
  app.require_subcommand(1);
  int exit_code = tollgate::cli::kExitClean;
  tollgate::cli::AddControlCommands(app, &exit_code);
  tollgate::cli::AddMacosCommands(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version are "errors" with code 0; everything else is a usage error.
    return app.exit(e) == 0 ? tollgate::cli::kExitClean : tollgate::cli::kExitUsage;
  }
  return exit_code;
}
