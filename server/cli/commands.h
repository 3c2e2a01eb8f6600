// The `moeserve` subcommands. Each registers its flags on `app`; when selected it runs and
// stores the process exit code in *exit_code.
#pragma once

#include "CLI/CLI.hpp"

namespace moeserve::server {

void AddGenerateCommand(CLI::App& app,
                        int* exit_code);  // moeserve generate: stream a completion to stdout
void AddMakeModelCommand(CLI::App& app,
                         int* exit_code);  // moeserve make-model: write a random-init model
void AddBenchCommand(CLI::App& app,
                     int* exit_code);  // moeserve bench: prefill / decode tokens per second
// moeserve analyze-routing: the Mixtral paper's routing analysis over prompt sets.
void AddAnalyzeRoutingCommand(CLI::App& app, int* exit_code);
// moeserve serve: the HTTP + gRPC daemon (server/cli/serve_command.cc, MOESERVE_FRONTENDS only).
void AddServeCommand(CLI::App& app, int* exit_code);

}  // namespace moeserve::server
