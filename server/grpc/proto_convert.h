// moeserve.v1 messages <-> the front-end-neutral types (ApiRequest, RequestUpdate, EngineStats).
#pragma once

#include "absl/status/status.h"
#include "grpcpp/support/status.h"
#include "proto/moeserve.pb.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/request.h"
#include "runtime/tokenizer/tokenizer.h"
#include "server/api/api_request.h"

namespace moeserve::server {

// absl and gRPC share their status code numbering.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The prompt form and sampling fields of `request`; unset proto3 optionals stay unset. Text and
// token-id prompts get completion defaults, chat prompts chat defaults.
api::ApiRequest ToApiRequest(const v1::GenerateRequest& request);

// One stream message for `update`: text and token ids per choice, logprobs when asked for.
void ToGenerateResponse(const runtime::RequestUpdate& update, const std::string& request_id,
                        const runtime::Tokenizer& tok, v1::GenerateResponse* out);

// A finished choice's routing trace (return_routing), one TokenRouting per position.
void ToTokenRouting(const runtime::RoutingTrace& trace, v1::ChoiceDelta* out);

// The recorder's state; its steps only when `with_steps` (DumpRecorder).
void ToRecorderDump(const runtime::RecorderDump& dump, bool with_steps, v1::RecorderDump* out);

void ToStatsResponse(const runtime::EngineStats& stats, v1::GetStatsResponse* out);

}  // namespace moeserve::server
