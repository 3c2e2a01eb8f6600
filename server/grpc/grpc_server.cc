#include "server/grpc/grpc_server.h"

#include <algorithm>
#include <limits>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/stubs/logging.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "proto/moeserve.grpc.pb.h"
#include "runtime/engine/eplb.h"
#include "runtime/sampling/stop_checker.h"
#include "runtime/tokenizer/chat_template.h"
#include "server/grpc/proto_convert.h"
#include "spdlog/spdlog.h"

namespace moeserve::server {
namespace {

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::OK:
      return "OK";
    case grpc::CANCELLED:
      return "CANCELLED";
    case grpc::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::UNAVAILABLE:
      return "UNAVAILABLE";
    default:
      return "OTHER";
  }
}

// Requests are decoded here rather than by gRPC: when gRPC's generated handler fails to decode a
// request it answers UNIMPLEMENTED with an empty message, and protobuf logs an error line per
// request. Our service registers every method "raw" (bytes in, bytes out) and answers
// INVALID_ARGUMENT naming the message type and protobuf's reason.

// What protobuf said while decoding on this thread (ProtobufLogHandler collects it).
thread_local std::string protobuf_messages;

// Protobuf's messages during request decoding ("String field ... contains invalid UTF-8") are
// about a client's bytes: they go into that request's error, and to the debug log, not stderr.
void ProtobufLogHandler(google::protobuf::LogLevel level, const char* filename, int line,
                        const std::string& message) {
  if (level >= google::protobuf::LOGLEVEL_FATAL) {
    spdlog::critical("protobuf {}:{}: {}", filename, line, message);
    return;
  }
  spdlog::debug("protobuf {}:{}: {}", filename, line, message);
  if (protobuf_messages.size() < 1024) {
    absl::StrAppend(&protobuf_messages, protobuf_messages.empty() ? "" : "; ", message);
  }
}

// Decodes a request. An empty or absent payload is the default message (what protobuf encodes
// as zero bytes).
template <typename Message>
grpc::Status DecodeRequest(const grpc::ByteBuffer& bytes, Message* out) {
  if (!bytes.Valid() || bytes.Length() == 0) {
    out->Clear();
    return grpc::Status::OK;
  }
  grpc::ByteBuffer copy(bytes);  // Deserialize consumes the buffer it is given
  protobuf_messages.clear();
  const grpc::Status decoded = grpc::SerializationTraits<Message>::Deserialize(&copy, out);
  if (decoded.ok()) return decoded;
  std::string reason = protobuf_messages.empty() ? decoded.error_message() : protobuf_messages;
  protobuf_messages.clear();
  absl::StripTrailingAsciiWhitespace(&reason);
  return grpc::Status(
      grpc::INVALID_ARGUMENT,
      absl::StrCat("the request is not a valid ", Message::descriptor()->full_name(),
                   " (protobuf decoding failed", reason.empty() ? "" : ": ", reason, ")"));
}

template <typename Message>
grpc::Status EncodeResponse(const Message& message, grpc::ByteBuffer* out) {
  out->Clear();  // the serializer wants an empty buffer; Generate reuses one per stream
  bool own_buffer = false;
  return grpc::SerializationTraits<Message>::Serialize(message, out, &own_buffer);
}

// The service with every method taking and returning bytes (see DecodeRequest).
using RawMoeserveService = v1::Moeserve::WithRawCallbackMethod_Generate<
    v1::Moeserve::WithRawCallbackMethod_Tokenize<v1::Moeserve::WithRawCallbackMethod_Detokenize<
        v1::Moeserve::WithRawCallbackMethod_ModelInfo<v1::Moeserve::WithRawCallbackMethod_GetStats<
            v1::Moeserve::WithRawCallbackMethod_StartRecorder<
                v1::Moeserve::WithRawCallbackMethod_StopRecorder<
                    v1::Moeserve::WithRawCallbackMethod_DumpRecorder<
                        v1::Moeserve::WithRawCallbackMethod_Rebalance<
                            v1::Moeserve::Service>>>>>>>>>;

class StreamPump;

// One Generate call. Shared by its reactor (gRPC's threads) and the pump; the reactor is
// deleted in OnDone, after which `reactor` is null and the pump drops the call.
struct GenerateCall {
  ServingContext* ctx = nullptr;
  std::shared_ptr<runtime::RequestStream> stream;
  std::string request_id;
  std::optional<RequestTimer> timer;

  absl::Mutex mu;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* reactor ABSL_GUARDED_BY(mu) = nullptr;
  bool write_in_flight ABSL_GUARDED_BY(mu) = false;
  bool finish_started ABSL_GUARDED_BY(mu) = false;
  // The message being written and its encoding (alive until OnWriteDone); touched only by
  // whoever set write_in_flight / finish_started.
  v1::GenerateResponse response;
  grpc::ByteBuffer response_bytes;
};

// Moves updates from the RequestStreams of open Generate calls to their reactors. RequestStream
// offers only a waiting Next(), so one thread polls every open call (Next with a past deadline
// does not wait) and sleeps briefly when nothing moved.
class StreamPump {
 public:
  StreamPump() : thread_([this] { Run(); }) {}
  ~StreamPump() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    thread_.join();
  }

  void Add(std::shared_ptr<GenerateCall> call) {
    absl::MutexLock lock(&mu_);
    calls_.push_back(std::move(call));
  }
  // A write finished: look again now rather than after the sleep.
  void Wake() {
    absl::MutexLock lock(&mu_);
    wake_ = true;
  }

 private:
  void Run();
  // Starts a write or the finish on `call` when it has an update; true when it did.
  static bool Pump(GenerateCall& call);

  absl::Mutex mu_;
  std::vector<std::shared_ptr<GenerateCall>> calls_ ABSL_GUARDED_BY(mu_);
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

void StreamPump::Run() {
  std::vector<std::shared_ptr<GenerateCall>> snapshot;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      // Idle with no calls: wait for one. Otherwise a short sleep unless a write completed.
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || wake_ || !calls_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (stop_) return;
      auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || wake_; };
      mu_.AwaitWithTimeout(absl::Condition(&woken), absl::Milliseconds(2));
      if (stop_) return;
      wake_ = false;
      // Drop calls whose reactor is gone.
      std::erase_if(calls_, [](const std::shared_ptr<GenerateCall>& c) {
        absl::MutexLock call_lock(&c->mu);
        return c->reactor == nullptr;
      });
      snapshot = calls_;
    }
    for (const std::shared_ptr<GenerateCall>& call : snapshot) Pump(*call);
    snapshot.clear();
  }
}

bool StreamPump::Pump(GenerateCall& call) {
  grpc::ServerWriteReactor<grpc::ByteBuffer>* reactor = nullptr;
  std::optional<runtime::RequestUpdate> update;
  {
    absl::MutexLock lock(&call.mu);
    if (call.reactor == nullptr || call.write_in_flight || call.finish_started) return false;
    update = call.stream->Next(absl::InfinitePast());
    if (!update) return false;
    reactor = call.reactor;
    if (update->finished) {
      call.finish_started = true;
    } else {
      call.write_in_flight = true;
    }
  }
  // No one else touches `response` or finishes the reactor while our flag is set, so the write
  // starts outside the lock (a reaction may run on this thread and take the lock).
  call.timer->OnUpdate(*update);
  ToGenerateResponse(*update, call.request_id, *call.ctx->tokenizer, &call.response);
  grpc::Status encoded = EncodeResponse(call.response, &call.response_bytes);
  if (!update->finished) {
    if (!encoded.ok()) {
      // Not expected (a response we built); end the call rather than write garbage.
      call.stream->Cancel();
      {
        absl::MutexLock lock(&call.mu);
        call.write_in_flight = false;
        call.finish_started = true;
      }
      call.ctx->metrics->CountRequest("grpc", "Generate", CodeName(grpc::INTERNAL));
      reactor->Finish(grpc::Status(grpc::INTERNAL, "cannot encode the response"));
      return true;
    }
    reactor->StartWrite(&call.response_bytes);
    return true;
  }
  const grpc::Status status = encoded.ok() ? ToGrpcStatus(update->status) : encoded;
  call.ctx->metrics->CountRequest("grpc", "Generate", CodeName(status.error_code()));
  if (status.ok()) {
    reactor->StartWriteAndFinish(&call.response_bytes, grpc::WriteOptions(), status);
  } else {
    reactor->Finish(status);
  }
  return true;
}

class GenerateReactor : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  GenerateReactor(std::shared_ptr<GenerateCall> call, StreamPump* pump)
      : call_(std::move(call)), pump_(pump) {
    absl::MutexLock lock(&call_->mu);
    call_->reactor = this;
  }

  // Ends the call before it reached the engine (bad request, queue full, draining).
  void Reject(const absl::Status& status) { Reject(ToGrpcStatus(status)); }
  void Reject(const grpc::Status& s) {
    {
      absl::MutexLock lock(&call_->mu);
      call_->finish_started = true;
    }
    call_->ctx->metrics->CountRequest("grpc", "Generate", CodeName(s.error_code()));
    Finish(s);
  }

  void OnWriteDone(bool ok) override {
    bool finish = false;
    {
      absl::MutexLock lock(&call_->mu);
      call_->write_in_flight = false;
      if (!ok && !call_->finish_started) {
        call_->finish_started = true;
        finish = true;
      }
    }
    if (finish) {
      // The client went away mid-stream: free the request's KV blocks.
      call_->stream->Cancel();
      call_->ctx->metrics->CountRequest("grpc", "Generate", "CANCELLED");
      Finish(grpc::Status(grpc::CANCELLED, "write failed: the client went away"));
    } else {
      pump_->Wake();
    }
  }

  // Deadline passed or the client cancelled.
  void OnCancel() override {
    bool finish = false;
    {
      absl::MutexLock lock(&call_->mu);
      if (call_->stream) call_->stream->Cancel();
      if (!call_->write_in_flight && !call_->finish_started) {
        call_->finish_started = true;
        finish = true;
      }
    }
    if (finish) {
      call_->ctx->metrics->CountRequest("grpc", "Generate", "CANCELLED");
      Finish(grpc::Status(grpc::CANCELLED, "cancelled"));
    }
  }

  void OnDone() override {
    bool admitted = false;
    {
      absl::MutexLock lock(&call_->mu);
      call_->reactor = nullptr;
      admitted = call_->stream != nullptr;
    }
    if (admitted) call_->ctx->active_calls.fetch_sub(1);
    delete this;
  }

 private:
  std::shared_ptr<GenerateCall> call_;
  StreamPump* pump_;
};

class MoeserveService final : public RawMoeserveService {
 public:
  explicit MoeserveService(ServingContext* ctx) : ctx_(ctx) {}

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(grpc::CallbackServerContext* /*context*/,
                                                       const grpc::ByteBuffer* bytes) override {
    auto call = std::make_shared<GenerateCall>();
    call->ctx = ctx_;
    auto* reactor = new GenerateReactor(call, &pump_);
    if (ctx_->draining.load()) {
      reactor->Reject(absl::UnavailableError("the server is shutting down"));
      return reactor;
    }
    v1::GenerateRequest request;
    if (grpc::Status decoded = DecodeRequest(*bytes, &request); !decoded.ok()) {
      reactor->Reject(decoded);
      return reactor;
    }
    absl::StatusOr<runtime::GenerationRequest> gen =
        api::BuildGenerationRequest(ToApiRequest(request), *ctx_->tokenizer, ctx_->limits);
    if (!gen.ok()) {
      reactor->Reject(gen.status());
      return reactor;
    }
    absl::StatusOr<std::shared_ptr<runtime::RequestStream>> stream =
        ctx_->engine->Submit(*std::move(gen));
    if (!stream.ok()) {
      reactor->Reject(stream.status());
      return reactor;
    }
    ctx_->active_calls.fetch_add(1);  // until OnDone
    {
      absl::MutexLock lock(&call->mu);
      call->stream = *stream;
      // Cancelled while we were submitting: OnCancel had no stream to cancel.
      if (call->finish_started) call->stream->Cancel();
    }
    call->request_id = (*stream)->request_id();
    call->timer.emplace(ctx_->metrics, (*stream)->submitted_at());
    pump_.Add(std::move(call));
    return reactor;
  }

  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request_bytes,
                                     grpc::ByteBuffer* response_bytes) override {
    return Unary<v1::TokenizeRequest, v1::TokenizeResponse>(
        context, "Tokenize", request_bytes, response_bytes,
        [this](const v1::TokenizeRequest& r, v1::TokenizeResponse* out) {
          return Tokenize(r, out);
        });
  }

  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request_bytes,
                                       grpc::ByteBuffer* response_bytes) override {
    return Unary<v1::DetokenizeRequest, v1::DetokenizeResponse>(
        context, "Detokenize", request_bytes, response_bytes,
        [this](const v1::DetokenizeRequest& r, v1::DetokenizeResponse* out) {
          return Detokenize(r, out);
        });
  }

  grpc::ServerUnaryReactor* ModelInfo(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request_bytes,
                                      grpc::ByteBuffer* response_bytes) override {
    return Unary<v1::ModelInfoRequest, v1::ModelInfoResponse>(
        context, "ModelInfo", request_bytes, response_bytes,
        [this](const v1::ModelInfoRequest& /*request*/, v1::ModelInfoResponse* out) {
          FillModelInfo(out);
          return absl::OkStatus();
        });
  }

  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request_bytes,
                                     grpc::ByteBuffer* response_bytes) override {
    return Unary<v1::GetStatsRequest, v1::GetStatsResponse>(
        context, "GetStats", request_bytes, response_bytes,
        [this](const v1::GetStatsRequest& /*request*/, v1::GetStatsResponse* out) {
          ToStatsResponse(ctx_->engine->Stats(), out);
          return absl::OkStatus();
        });
  }

  // The load recorder (imbalance lab): start clears and records, stop keeps, dump returns it.
  grpc::ServerUnaryReactor* StartRecorder(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request_bytes,
                                          grpc::ByteBuffer* response_bytes) override {
    return Recorder(
        context, "StartRecorder", request_bytes, response_bytes,
        [](runtime::LoadRecorder& r) { r.Start(); }, false);
  }
  grpc::ServerUnaryReactor* StopRecorder(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request_bytes,
                                         grpc::ByteBuffer* response_bytes) override {
    return Recorder(
        context, "StopRecorder", request_bytes, response_bytes,
        [](runtime::LoadRecorder& r) { r.Stop(); }, false);
  }
  grpc::ServerUnaryReactor* DumpRecorder(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request_bytes,
                                         grpc::ByteBuffer* response_bytes) override {
    return Recorder(
        context, "DumpRecorder", request_bytes, response_bytes, [](runtime::LoadRecorder&) {},
        true);
  }

  // Live rebalancing: runs on the gRPC callback thread until every rank has switched (as the
  // HTTP route holds its connection's strand).
  grpc::ServerUnaryReactor* Rebalance(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request_bytes,
                                      grpc::ByteBuffer* response_bytes) override {
    return Unary<v1::RebalanceRequest, v1::RebalanceResponse>(
        context, "Rebalance", request_bytes, response_bytes,
        [this](const v1::RebalanceRequest& request, v1::RebalanceResponse* out) -> absl::Status {
          int64_t budget = -1;
          if (request.has_extra_experts_per_rank()) {
            budget = request.extra_experts_per_rank();
            if (budget < 0) {
              return absl::InvalidArgumentError(
                  absl::StrCat("rebalance: extra_experts_per_rank must be >= 0, got ", budget));
            }
          }
          absl::StatusOr<runtime::RebalanceResult> r = ctx_->engine->Rebalance(budget);
          if (!r.ok()) return r.status();
          out->set_old_placement(r->old_placement);
          out->set_new_placement(r->new_placement);
          out->set_changed(r->changed);
          out->set_measured_imbalance_before(r->measured_imbalance_before);
          out->set_projected_imbalance_before(r->projected_imbalance_before);
          out->set_projected_imbalance_after(r->projected_imbalance_after);
          out->set_replicas(r->replicas);
          out->set_experts_prepared(r->experts_prepared);
          out->set_prepare_ms(r->prepare_ms);
          out->set_pause_ms(r->pause_ms);
          out->set_total_ms(r->total_ms);
          return absl::OkStatus();
        });
  }

 private:
  template <typename Action>
  grpc::ServerUnaryReactor* Recorder(grpc::CallbackServerContext* context, const char* method,
                                     const grpc::ByteBuffer* request_bytes,
                                     grpc::ByteBuffer* response_bytes, Action action,
                                     bool with_steps) {
    return Unary<v1::RecorderRequest, v1::RecorderDump>(
        context, method, request_bytes, response_bytes,
        [this, action, with_steps](const v1::RecorderRequest&, v1::RecorderDump* out) {
          runtime::LoadRecorder& recorder = ctx_->engine->recorder();
          action(recorder);
          ToRecorderDump(recorder.Dump(), with_steps, out);
          return absl::OkStatus();
        });
  }

  // One unary call: decode, `handle`, encode, finish (counted in the metrics).
  template <typename Request, typename Response, typename Handler>
  grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* context, const char* method,
                                  const grpc::ByteBuffer* request_bytes,
                                  grpc::ByteBuffer* response_bytes, Handler handle) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    Request request;
    grpc::Status status = DecodeRequest(*request_bytes, &request);
    if (status.ok()) {
      Response response;
      status = ToGrpcStatus(handle(request, &response));
      if (status.ok()) status = EncodeResponse(response, response_bytes);
    }
    ctx_->metrics->CountRequest("grpc", method, CodeName(status.error_code()));
    reactor->Finish(status);
    return reactor;
  }

  absl::Status Tokenize(const v1::TokenizeRequest& request_message,
                        v1::TokenizeResponse* response) {
    const v1::TokenizeRequest* request = &request_message;
    const runtime::Tokenizer& tok = *ctx_->tokenizer;
    std::vector<int32_t> ids;
    if (request->input_case() == v1::TokenizeRequest::kChat) {
      std::vector<runtime::ChatMessage> messages;
      for (const v1::ChatMessage& m : request->chat().messages()) {
        messages.push_back({m.role(), m.content()});
      }
      absl::StatusOr<std::vector<int32_t>> encoded = runtime::EncodeChat(tok, messages);
      if (!encoded.ok()) return encoded.status();
      ids = *std::move(encoded);
    } else {
      if (!runtime::IsValidUtf8(request->text())) {
        return api::InvalidParam("text", "text is not valid UTF-8");
      }
      ids = tok.Encode(request->text(), request->add_bos(), /*add_eos=*/false);
    }
    for (int32_t id : ids) {
      response->add_ids(id);
      response->add_pieces(tok.IdToPiece(id));
    }
    return absl::OkStatus();
  }

  absl::Status Detokenize(const v1::DetokenizeRequest& request, v1::DetokenizeResponse* response) {
    const runtime::Tokenizer& tok = *ctx_->tokenizer;
    for (int i = 0; i < request.ids_size(); ++i) {
      if (request.ids(i) < 0 || request.ids(i) >= tok.vocab_size()) {
        return api::InvalidParam(
            "ids", absl::StrCat("ids[", i, "]=", request.ids(i), " is outside the vocabulary [0, ",
                                tok.vocab_size(), ")"));
      }
    }
    response->set_text(
        tok.Decode(std::vector<int32_t>(request.ids().begin(), request.ids().end())));
    return absl::OkStatus();
  }

  void FillModelInfo(v1::ModelInfoResponse* out) const {
    const runtime::ModelConfig& c = ctx_->engine->model_config();
    const runtime::EngineOptions& o = ctx_->engine->options();
    out->set_served_model_name(ctx_->limits.served_model_name);
    out->set_source(ctx_->model_source);
    out->set_server_config(ctx_->server_config);
    v1::ModelConfig* mc = out->mutable_config();
    mc->set_hidden_size(c.hidden_size);
    mc->set_intermediate_size(c.intermediate_size);
    mc->set_num_hidden_layers(c.num_hidden_layers);
    mc->set_num_attention_heads(c.num_attention_heads);
    mc->set_num_key_value_heads(c.num_key_value_heads);
    mc->set_head_dim(c.head_dim);
    mc->set_num_local_experts(c.num_local_experts);
    mc->set_num_experts_per_tok(c.num_experts_per_tok);
    mc->set_rope_theta(c.rope_theta);
    mc->set_rms_norm_eps(c.rms_norm_eps);
    mc->set_sliding_window(c.sliding_window.value_or(0));
    mc->set_max_position_embeddings(c.max_position_embeddings);
    mc->set_vocab_size(c.vocab_size);
    mc->set_dtype(std::string(kernels::DTypeName(c.dtype)));
    mc->set_config_json(c.ToJson());
    v1::Placement* placement = out->mutable_placement();
    placement->set_world_size(ctx_->engine->world_size());
    const parallel::ExpertPlacement* p = ctx_->engine->placement();
    for (int r = 0; r < ctx_->engine->world_size(); ++r) {
      v1::RankPlacement* rank = placement->add_ranks();
      rank->set_rank(r);
      for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
        // World size 1 without a placement: the one rank holds every expert.
        std::vector<int64_t> experts;
        if (p == nullptr) {
          for (int64_t e = 0; e < c.num_local_experts; ++e) experts.push_back(e);
        } else {
          experts = p->LocalExperts(r, layer);
        }
        v1::LayerExperts* l = rank->add_layers();
        for (int64_t e : experts) l->add_experts(static_cast<int32_t>(e));
        if (layer == 0) {
          for (int64_t e : experts) rank->add_experts(static_cast<int32_t>(e));
        }
      }
    }
    v1::Limits* limits = out->mutable_limits();
    limits->set_max_model_len(ctx_->engine->max_model_len());
    limits->set_max_num_seqs(o.max_num_seqs);
    limits->set_max_num_batched_tokens(o.max_num_batched_tokens);
    limits->set_max_queue(o.max_queue);
    limits->set_kv_block_size(o.kv_block_size);
    limits->set_kv_blocks(ctx_->engine->Stats().kv_blocks_total);
    limits->set_max_body_bytes(ctx_->max_body_bytes);
    limits->set_max_stop_strings(runtime::kMaxStopStrings);
  }

  ServingContext* ctx_;
  StreamPump pump_;
};

}  // namespace

class GrpcFrontEnd::Impl {
 public:
  Impl(ServingContext* ctx, std::string listen_address)
      : service(ctx), address(std::move(listen_address)), max_body_bytes(ctx->max_body_bytes) {}
  MoeserveService service;
  std::string address;
  int64_t max_body_bytes;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
};

GrpcFrontEnd::GrpcFrontEnd(ServingContext* context, std::string address)
    : impl_(std::make_unique<Impl>(context, std::move(address))) {}

GrpcFrontEnd::~GrpcFrontEnd() { Stop(absl::ZeroDuration()); }

absl::Status GrpcFrontEnd::Start() {
  google::protobuf::SetLogHandler(&ProtobufLogHandler);  // see DecodeRequest
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(impl_->address, grpc::InsecureServerCredentials(), &impl_->port);
  builder.RegisterService(&impl_->service);
  // The gRPC twin of the HTTP --max-body-bytes limit (gRPC answers RESOURCE_EXHAUSTED past it).
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::min<int64_t>(impl_->max_body_bytes, std::numeric_limits<int>::max())));
  impl_->server = builder.BuildAndStart();
  if (!impl_->server || impl_->port == 0) {
    return absl::UnavailableError(
        absl::StrCat("gRPC: cannot listen on ", impl_->address, " (in use?)"));
  }
  impl_->server->GetHealthCheckService()->SetServingStatus(true);
  return absl::OkStatus();
}

int GrpcFrontEnd::port() const { return impl_->port; }

void GrpcFrontEnd::SetNotServing() {
  if (impl_->server) impl_->server->GetHealthCheckService()->SetServingStatus(false);
}

void GrpcFrontEnd::Stop(absl::Duration grace) {
  if (!impl_->server) return;
  impl_->server->Shutdown(std::chrono::system_clock::now() + absl::ToChronoMicroseconds(grace));
  impl_->server->Wait();
  impl_->server.reset();
}

}  // namespace moeserve::server
