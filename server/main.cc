// moeserve: command-line entry point.
//   moeserve generate    stream a completion (embedded default model unless --model)
//   moeserve make-model  write a random-init Mixtral-architecture model
//   moeserve bench       prefill / decode throughput
//   moeserve serve       the daemon: OpenAI-compatible HTTP + gRPC (built with MOESERVE_FRONTENDS)
#include "CLI/CLI.hpp"
#include "server/cli/commands.h"
#include "server/cli/openmp_wait_policy.h"

int main(int argc, char** argv) {
  moeserve::server::ReexecWithPassiveOpenMpWait(argv);  // before any OpenMP region runs
  CLI::App app{"moeserve: serving engine for Mixtral-style mixture-of-experts models"};
  app.set_version_flag("--version", "moeserve 0.1.0");
  app.require_subcommand(1);
  int exit_code = 0;
  moeserve::server::AddGenerateCommand(app, &exit_code);
  moeserve::server::AddMakeModelCommand(app, &exit_code);
  moeserve::server::AddBenchCommand(app, &exit_code);
  moeserve::server::AddAnalyzeRoutingCommand(app, &exit_code);
#ifdef MOESERVE_HAVE_FRONTENDS
  moeserve::server::AddServeCommand(app, &exit_code);
#endif
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
