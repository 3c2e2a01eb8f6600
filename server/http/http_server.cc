#include "server/http/http_server.h"

#include <sys/socket.h>

// Beast's string_view is std::string_view (defined before any Beast header; this file is the
// only one that includes Beast).
#define BOOST_BEAST_USE_STD_STRING_VIEW 1

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <chrono>
#include <list>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"
#include "server/api/openai_json.h"
#include "server/http/info_routes.h"
#include "server/http/routes.h"
#include "spdlog/spdlog.h"

namespace moeserve::server {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using api::RequestKind;

constexpr char kJson[] = "application/json";
// How often a connection with a generation in flight checks that its client is still there
// (recv with MSG_PEEK: 0 bytes means the client closed). Streams also notice on a failed write;
// a non-streaming call writes nothing until the end, so it relies on this.
constexpr auto kLivenessProbeEvery = std::chrono::milliseconds(200);
// After an error response that closes the connection, read and drop what the client still
// sends for this long (at most kLingerBytes), so that close() does not reset the connection
// before the client has read the response.
constexpr auto kLinger = std::chrono::seconds(1);
constexpr size_t kLingerBytes = 1 << 20;

// Bookworm's Abseil (20220623) has its own string_view, which StrCat takes; std::string_view and
// Beast's (boost) string_view go through this.
template <typename View>
absl::string_view Av(const View& v) {
  return absl::string_view(v.data(), v.size());
}

std::chrono::steady_clock::duration ToChrono(absl::Duration d) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      absl::ToChronoNanoseconds(d));
}

std::string_view ReasonPhrase(int status) {
  if (status == 499) return "Client Closed Request";
  return http::obsolete_reason(http::int_to_status(static_cast<unsigned>(status)));
}

// A whole response with a Content-Length body.
std::string ResponseText(int status, std::string_view content_type, std::string_view body,
                         std::string_view extra_headers, bool close) {
  return absl::StrCat("HTTP/1.1 ", status, " ", Av(ReasonPhrase(status)),
                      "\r\nContent-Type: ", Av(content_type), "\r\nContent-Length: ", body.size(),
                      "\r\n", Av(extra_headers), close ? "Connection: close\r\n" : "", "\r\n",
                      Av(body));
}

std::string Chunk(std::string_view data) {
  return absl::StrCat(absl::Hex(data.size()), "\r\n", Av(data), "\r\n");
}

}  // namespace

class Session;

// The listener, the io threads and the registry of open connections (for the cap and Stop).
class HttpServer {
 public:
  HttpServer(ServingContext* ctx, HttpOptions options)
      : ctx_(ctx),
        options_(std::move(options)),
        ioc_(options_.io_threads),
        work_(net::make_work_guard(ioc_)),
        acceptor_(net::make_strand(ioc_)),
        accept_retry_(acceptor_.get_executor()) {}

  absl::Status Start(int* port);
  void Stop(const std::string& reason);

  ServingContext* ctx() const { return ctx_; }
  const HttpOptions& options() const { return options_; }
  bool stopping() const { return stopping_.load(); }
  // Session destructor.
  void Unregister(std::list<std::weak_ptr<Session>>::iterator pos) {
    absl::MutexLock lock(&mu_);
    sessions_.erase(pos);
  }

 private:
  void Accept();
  void OnAccept(beast::error_code ec, tcp::socket socket);
  // Answers a connection past the cap with 503 and closes it, without a Session.
  void Refuse(tcp::socket socket);

  ServingContext* const ctx_;
  const HttpOptions options_;
  // Declared before ioc_: sessions destroyed with ioc_'s pending handlers unregister here.
  absl::Mutex mu_;
  std::list<std::weak_ptr<Session>> sessions_ ABSL_GUARDED_BY(mu_);  // oldest first
  std::atomic<bool> stopping_{false};
  net::io_context ioc_;
  net::executor_work_guard<net::io_context::executor_type> work_;
  tcp::acceptor acceptor_;          // on its own strand
  net::steady_timer accept_retry_;  // after accept fails (out of file descriptors)
  std::vector<std::thread> threads_;
};

// One connection: reads requests one after the other (pipelined ones included), answers each in
// order, and runs at most one generation call at a time. All members are touched only on the
// connection's strand, except `busy_` and `evicted_` (read by the acceptor).
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(HttpServer* server, tcp::socket socket)
      : server_(server),
        ctx_(server->ctx()),
        socket_(std::move(socket)),
        deadline_(socket_.get_executor()),
        probe_(socket_.get_executor()) {}
  ~Session();

  void Start() {
    net::post(socket_.get_executor(), [self = shared_from_this()] { self->ReadHeader(); });
  }
  // True while no generation call is in flight: the connection may be closed to make room.
  // Claims the session for eviction (true once).
  bool ClaimForEviction() {
    if (busy_.load()) return false;
    return !evicted_.exchange(true);
  }
  void Evict() {
    net::post(socket_.get_executor(), [self = shared_from_this()] {
      if (!self->busy_.load()) self->Close();
    });
  }
  // HttpFrontEnd::Stop: ends the current call (if any) with `reason` and closes.
  void Abort(std::string reason) {
    net::post(socket_.get_executor(),
              [self = shared_from_this(), reason = std::move(reason)] { self->OnAbort(reason); });
  }

  std::list<std::weak_ptr<Session>>::iterator registry_pos;

 private:
  struct Call {
    RequestKind kind;
    std::shared_ptr<runtime::RequestStream> stream;
    api::OpenAiResponder responder;
    RequestTimer timer;
    bool streaming = false;
    bool include_usage = false;
  };

  void ReadHeader();
  void OnHeader(beast::error_code ec);
  void ReadBody();
  void OnBody(beast::error_code ec);
  void Dispatch();
  void Generate(RequestKind kind);
  void Pump();
  void Probe();
  void OnAbort(const std::string& reason);
  // The current call is over (its response is queued): metrics, stop listening to the engine.
  void EndCall(int status);
  // Queues a whole response; after it is written the next request is read (or the connection
  // closes when `close`).
  void Respond(int status, std::string_view content_type, std::string_view body,
               std::string_view extra_headers = "", bool close = false);
  void RespondError(const absl::Status& status, bool close = false) {
    Respond(api::HttpStatusOf(status), kJson, api::ErrorBody(status), "", close);
  }
  void Write(std::string data);
  void StartWrite();
  void OnWrite(beast::error_code ec);
  void AfterResponse();
  void ArmDeadline(absl::Duration d);
  void CancelDeadline() {
    ++deadline_seq_;
    deadline_.cancel();
  }
  void CloseAfterLinger();
  void Linger();
  void Close();
  void ReleaseActive() {
    if (active_) {
      active_ = false;
      ctx_->active_calls.fetch_sub(1);
    }
    busy_.store(false);
  }

  HttpServer* const server_;
  ServingContext* const ctx_;
  tcp::socket socket_;          // its executor is the connection's strand
  net::steady_timer deadline_;  // header, body or write timeout: closes the connection
  uint64_t deadline_seq_ = 0;   // bumped by ArmDeadline and CancelDeadline
  net::steady_timer probe_;     // liveness probe while a call is in flight
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::string endpoint_;  // metrics label of the current request
  bool keep_alive_ = true;
  bool closed_ = false;
  bool lingering_ = false;
  size_t lingered_bytes_ = 0;
  // Writes: `writing_` is on the wire, `queued_` waits for it.
  std::string writing_;
  std::string queued_;
  bool write_in_flight_ = false;
  bool response_done_ = false;          // the current response is complete in writing_ / queued_
  bool read_body_after_write_ = false;  // "Expect: 100-continue" answered
  std::optional<Call> call_;
  bool active_ = false;  // counted in ctx_->active_calls until the response is written
  std::atomic<bool> busy_{false};
  std::atomic<bool> evicted_{false};
};

Session::~Session() {
  if (call_) call_->stream->SetOnPush(nullptr);
  if (call_) call_->stream->Cancel();
  ReleaseActive();
  server_->Unregister(registry_pos);
}

void Session::ArmDeadline(absl::Duration d) {
  // A deadline that fired just as its operation completed may still have its handler queued
  // after cancel(); the sequence number makes that stale handler a no-op.
  const uint64_t armed = ++deadline_seq_;
  deadline_.expires_after(ToChrono(d));
  deadline_.async_wait([self = shared_from_this(), armed](beast::error_code ec) {
    if (ec == net::error::operation_aborted || armed != self->deadline_seq_) return;
    self->Close();  // pending reads and writes end with operation_aborted
  });
}

void Session::ReadHeader() {
  if (closed_) return;
  if (server_->stopping()) return Close();
  parser_.emplace();
  parser_->header_limit(static_cast<uint32_t>(server_->options().max_header_bytes));
  parser_->body_limit(static_cast<uint64_t>(ctx_->max_body_bytes));
  endpoint_ = "other";
  ArmDeadline(server_->options().header_timeout);
  http::async_read_header(
      socket_, buffer_, *parser_,
      [self = shared_from_this()](beast::error_code ec, size_t) { self->OnHeader(ec); });
}

void Session::OnHeader(beast::error_code ec) {
  CancelDeadline();
  if (closed_) return;
  if (ec == http::error::end_of_stream || ec == http::error::partial_message ||
      ec == net::error::eof || ec == net::error::operation_aborted ||
      ec == net::error::connection_reset) {
    return Close();  // the client went away (or timed out) before a whole header
  }
  if (ec == http::error::header_limit) {
    ctx_->metrics->CountRequest("http", endpoint_, "431");
    return Respond(431, kJson,
                   api::ErrorBody(431, absl::StrCat("request line and headers are larger than ",
                                                    server_->options().max_header_bytes, " bytes")),
                   "", /*close=*/true);
  }
  if (ec == http::error::body_limit) {  // Content-Length past the limit: refused unread
    ctx_->metrics->CountRequest("http", endpoint_, "400");
    return RespondError(
        api::InvalidParam("", absl::StrCat("request body is larger than ",
                                           "--max-body-bytes=", ctx_->max_body_bytes)),
        /*close=*/true);
  }
  if (ec) {
    ctx_->metrics->CountRequest("http", endpoint_, "400");
    return Respond(400, kJson,
                   api::ErrorBody(400, absl::StrCat("bad HTTP request: ", ec.message())), "",
                   /*close=*/true);
  }
  const http::request<http::string_body>& req = parser_->get();
  keep_alive_ = req.keep_alive();
  endpoint_ = std::string(EndpointLabel(req.target()));
  const bool has_body = parser_->chunked() || parser_->content_length().value_or(0) > 0;
  auto refuse = [&](int status, const std::string& message, std::string_view headers = "") {
    ctx_->metrics->CountRequest("http", endpoint_, absl::StrCat(status));
    // An unread body must not be parsed as the next request.
    Respond(status, kJson, api::ErrorBody(status, message), headers, /*close=*/has_body);
  };
  // Request smuggling guards: one framing only.
  if (req.count(http::field::content_length) > 1) {
    return refuse(400, "more than one Content-Length header");
  }
  if (req.count(http::field::transfer_encoding) > 0 && req.count(http::field::content_length) > 0) {
    ctx_->metrics->CountRequest("http", endpoint_, "400");
    return Respond(400, kJson,
                   api::ErrorBody(400, "Content-Length and Transfer-Encoding must not both be set"),
                   "", /*close=*/true);
  }
  const Route* route = FindRoute(req.target());
  if (route == nullptr) {
    return refuse(404, absl::StrCat("no route for ", Av(req.method_string()), " ",
                                    Av(std::string_view(req.target()).substr(0, 200))));
  }
  if (req.method_string() != route->method) {
    return refuse(405,
                  absl::StrCat(Av(route->path), " takes ", Av(route->method), ", not ",
                               Av(std::string_view(req.method_string()).substr(0, 20))),
                  absl::StrCat("Allow: ", Av(route->method), "\r\n"));
  }
  if (route->method == "POST") {
    auto type = req.find(http::field::content_type);
    if (type != req.end() && !IsJsonMediaType(type->value())) {
      return refuse(415, absl::StrCat("Content-Type must be application/json, got ",
                                      Av(std::string_view(type->value()).substr(0, 100))));
    }
    if (parser_->content_length() && *parser_->content_length() > uint64_t(ctx_->max_body_bytes)) {
      ctx_->metrics->CountRequest("http", endpoint_, "400");
      return RespondError(
          api::InvalidParam(
              "", absl::StrCat("request body of ", *parser_->content_length(),
                               " bytes is larger than --max-body-bytes=", ctx_->max_body_bytes)),
          /*close=*/true);
    }
  }
  if (parser_->is_done()) return Dispatch();
  if (absl::EqualsIgnoreCase(Av(req[http::field::expect]), "100-continue")) {
    // The write and the body read must not share the deadline timer: read after writing.
    read_body_after_write_ = true;
    return Write("HTTP/1.1 100 Continue\r\n\r\n");
  }
  ReadBody();
}

void Session::ReadBody() {
  ArmDeadline(server_->options().body_timeout);
  http::async_read(socket_, buffer_, *parser_,
                   [self = shared_from_this()](beast::error_code ec, size_t) { self->OnBody(ec); });
}

void Session::OnBody(beast::error_code ec) {
  CancelDeadline();
  if (closed_) return;
  if (ec == http::error::body_limit) {
    ctx_->metrics->CountRequest("http", endpoint_, "400");
    return RespondError(
        api::InvalidParam("", absl::StrCat("request body is larger than ",
                                           "--max-body-bytes=", ctx_->max_body_bytes)),
        /*close=*/true);
  }
  if (ec == http::error::end_of_stream || ec == net::error::eof ||
      ec == net::error::operation_aborted || ec == net::error::connection_reset) {
    return Close();
  }
  if (ec) {
    ctx_->metrics->CountRequest("http", endpoint_, "400");
    return Respond(400, kJson, api::ErrorBody(400, absl::StrCat("bad HTTP body: ", ec.message())),
                   "", /*close=*/true);
  }
  Dispatch();
}

void Session::Dispatch() {
  const Route* route = FindRoute(parser_->get().target());
  try {
    switch (route->id) {
      case RouteId::kCompletions:
        return Generate(RequestKind::kCompletion);
      case RouteId::kChat:
        return Generate(RequestKind::kChat);
      default: {
        const RouteAnswer answer = AnswerInfoRoute(route->id, parser_->get().body(), *ctx_);
        ctx_->metrics->CountRequest("http", endpoint_, absl::StrCat(answer.status));
        return Respond(answer.status, answer.content_type, answer.body);
      }
    }
  } catch (const std::exception& e) {
    // Never expected (parsers return Status); a bug must not take the connection's strand down.
    spdlog::error("HTTP {}: {}", endpoint_, e.what());
    if (call_) return;  // the call owns the response now
    ctx_->metrics->CountRequest("http", endpoint_, "500");
    return RespondError(absl::InternalError(e.what()), /*close=*/true);
  }
}

void Session::Generate(RequestKind kind) {
  auto fail = [&](const absl::Status& status) {
    ctx_->metrics->CountRequest("http", endpoint_, absl::StrCat(api::HttpStatusOf(status)));
    RespondError(status);
  };
  if (ctx_->draining.load()) return fail(absl::UnavailableError("the server is shutting down"));
  absl::StatusOr<api::OpenAiRequest> parsed = api::ParseOpenAiRequest(parser_->get().body(), kind);
  if (!parsed.ok()) return fail(parsed.status());
  absl::StatusOr<runtime::GenerationRequest> gen =
      api::BuildGenerationRequest(parsed->api, *ctx_->tokenizer, ctx_->limits);
  if (!gen.ok()) return fail(gen.status());
  const int n = gen->sampling.n;
  const bool logprobs = gen->sampling.logprobs;
  absl::StatusOr<std::shared_ptr<runtime::RequestStream>> stream =
      ctx_->engine->Submit(*std::move(gen));
  if (!stream.ok()) return fail(stream.status());
  parser_.reset();  // the body is no longer needed
  ctx_->active_calls.fetch_add(1);
  active_ = true;
  busy_.store(true);

  const std::string id =
      absl::StrCat(kind == RequestKind::kChat ? "chatcmpl-" : "cmpl-", (*stream)->request_id());
  const absl::Time submitted_at = (*stream)->submitted_at();
  call_.emplace(Call{.kind = kind,
                     .stream = *std::move(stream),
                     .responder = api::OpenAiResponder(kind, id, ctx_->limits.served_model_name,
                                                       absl::ToUnixSeconds(absl::Now()),
                                                       *ctx_->tokenizer, logprobs, n),
                     .timer = RequestTimer(ctx_->metrics, submitted_at),
                     .streaming = parsed->stream,
                     .include_usage = parsed->include_usage});
  if (call_->streaming) {
    Write(absl::StrCat("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n",
                       "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n",
                       keep_alive_ ? "" : "Connection: close\r\n", "\r\n"));
  }
  // The engine thread tells us about new output; Pump runs on our strand.
  std::weak_ptr<Session> weak = weak_from_this();
  call_->stream->SetOnPush([weak, strand = socket_.get_executor()] {
    net::post(strand, [weak] {
      if (std::shared_ptr<Session> self = weak.lock()) self->Pump();
    });
  });
  Probe();
}

void Session::Pump() {
  if (closed_ || !call_ || write_in_flight_) return;  // OnWrite pumps again
  Call& call = *call_;
  std::string out;
  bool finished = false;
  absl::Status status;
  runtime::Usage usage;
  while (std::optional<runtime::RequestUpdate> u = call.stream->Next(absl::InfinitePast())) {
    call.timer.OnUpdate(*u);
    if (call.streaming) {
      for (const std::string& chunk : call.responder.Chunks(*u)) {
        absl::StrAppend(&out, "data: ", chunk, "\n\n");
      }
    } else {
      call.responder.Accumulate(*u);
    }
    if (u->finished) {
      finished = true;
      status = u->status;
      usage = u->usage;
      break;
    }
  }
  if (call.streaming) {
    if (finished) {
      if (!status.ok()) absl::StrAppend(&out, "data: ", api::ErrorBody(status), "\n\n");
      if (call.include_usage) {
        absl::StrAppend(&out, "data: ", call.responder.UsageChunk(usage), "\n\n");
      }
      out += "data: [DONE]\n\n";
    }
    if (!out.empty()) Write(Chunk(out));
    if (finished) {
      response_done_ = true;
      Write("0\r\n\r\n");
      EndCall(200);
    }
    return;
  }
  if (!finished) return;
  if (!status.ok()) {
    const std::string body = api::ErrorBody(status);
    const int code = api::HttpStatusOf(status);
    EndCall(code);
    return Respond(code, kJson, body);
  }
  std::string body = call.responder.Body(usage);
  EndCall(200);
  Respond(200, kJson, body);
}

void Session::EndCall(int status) {
  ctx_->metrics->CountRequest("http", endpoint_, absl::StrCat(status));
  probe_.cancel();
  call_->stream->SetOnPush(nullptr);
  call_.reset();
}

void Session::Probe() {
  probe_.expires_after(kLivenessProbeEvery);
  probe_.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (ec || self->closed_ || !self->call_) return;
    char byte;
    const ssize_t got = ::recv(self->socket_.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      return self->Close();  // the client is gone: Close cancels the request
    }
    self->Probe();
  });
}

void Session::OnAbort(const std::string& reason) {
  if (closed_) return;
  keep_alive_ = false;
  if (!call_) {
    // Idle, reading a request, or finishing a response: let a response in flight end.
    if (!write_in_flight_ && queued_.empty()) Close();
    return;
  }
  call_->stream->Cancel();
  const absl::Status status = absl::UnavailableError(reason);
  if (call_->streaming) {
    EndCall(503);
    response_done_ = true;
    Write(Chunk(absl::StrCat("data: ", api::ErrorBody(status), "\n\ndata: [DONE]\n\n")));
    Write("0\r\n\r\n");
  } else {
    EndCall(503);
    RespondError(status, /*close=*/true);
  }
}

void Session::Respond(int status, std::string_view content_type, std::string_view body,
                      std::string_view extra_headers, bool close) {
  if (close) keep_alive_ = false;
  response_done_ = true;
  Write(ResponseText(status, content_type, body, extra_headers, !keep_alive_));
}

void Session::Write(std::string data) {
  if (closed_) return;
  queued_ += data;
  if (!write_in_flight_) StartWrite();
}

void Session::StartWrite() {
  writing_.swap(queued_);
  queued_.clear();
  write_in_flight_ = true;
  ArmDeadline(server_->options().write_timeout);
  net::async_write(
      socket_, net::buffer(writing_),
      [self = shared_from_this()](beast::error_code ec, size_t) { self->OnWrite(ec); });
}

void Session::OnWrite(beast::error_code ec) {
  write_in_flight_ = false;
  CancelDeadline();
  if (closed_) return;
  if (ec) return Close();  // client gone or too slow: Close cancels a call in flight
  if (!queued_.empty()) return StartWrite();
  if (read_body_after_write_) {
    read_body_after_write_ = false;
    return ReadBody();
  }
  if (response_done_ && !call_) return AfterResponse();
  if (call_) Pump();  // output that arrived while writing
}

void Session::AfterResponse() {
  response_done_ = false;
  ReleaseActive();
  if (!keep_alive_ || server_->stopping()) return CloseAfterLinger();
  ReadHeader();
}

void Session::CloseAfterLinger() {
  // Half-close, then drain what the client still sends until it closes or kLinger passes.
  beast::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_send, ignored);
  lingering_ = true;
  deadline_.expires_after(kLinger);
  deadline_.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (ec != net::error::operation_aborted) self->Close();
  });
  Linger();
}

void Session::Linger() {
  buffer_.consume(buffer_.size());
  socket_.async_read_some(buffer_.prepare(64 << 10),
                          [self = shared_from_this()](beast::error_code ec, size_t n) {
                            self->lingered_bytes_ += n;
                            if (ec || self->closed_ || self->lingered_bytes_ > kLingerBytes) {
                              return self->Close();
                            }
                            self->Linger();
                          });
}

void Session::Close() {
  if (closed_) return;
  closed_ = true;
  if (call_) {
    call_->stream->Cancel();  // the engine frees its KV blocks at the next step
    EndCall(499);
  }
  ReleaseActive();
  CancelDeadline();
  probe_.cancel();
  beast::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
}

absl::Status HttpServer::Start(int* port) {
  beast::error_code ec;
  const net::ip::address address = net::ip::make_address(options_.host, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("HTTP: bad --host ", options_.host));
  const tcp::endpoint endpoint(address, static_cast<uint16_t>(options_.port));
  acceptor_.open(endpoint.protocol(), ec);
  // SO_REUSEADDR only (not SO_REUSEPORT, which would let a second daemon bind the port).
  if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  // A burst of a thousand connects must not overflow the backlog and stall on SYN retries.
  if (!ec) acceptor_.listen(4096, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("HTTP: cannot bind ", options_.host, ":",
                                               options_.port, " (", ec.message(), ")"));
  }
  *port = acceptor_.local_endpoint().port();
  Accept();
  for (int i = 0; i < options_.io_threads; ++i) {
    threads_.emplace_back([this] {
      for (;;) {
        try {
          ioc_.run();
          return;
        } catch (const std::exception& e) {
          spdlog::error("HTTP io thread: {}", e.what());
        }
      }
    });
  }
  return absl::OkStatus();
}

void HttpServer::Accept() {
  acceptor_.async_accept(net::make_strand(ioc_), [this](beast::error_code ec, tcp::socket socket) {
    OnAccept(ec, std::move(socket));
  });
}

void HttpServer::OnAccept(beast::error_code ec, tcp::socket socket) {
  if (stopping_.load() || !acceptor_.is_open()) return;
  if (ec) {
    // Out of file descriptors, most likely: try again shortly rather than spin.
    spdlog::warn("HTTP accept: {}", ec.message());
    accept_retry_.expires_after(std::chrono::milliseconds(50));
    accept_retry_.async_wait([this](beast::error_code) { Accept(); });
    return;
  }
  beast::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);  // SSE chunks go out at once
  std::shared_ptr<Session> victim;
  bool full = false;
  {
    absl::MutexLock lock(&mu_);
    if (sessions_.size() >= static_cast<size_t>(options_.max_connections)) {
      for (const std::weak_ptr<Session>& weak : sessions_) {
        std::shared_ptr<Session> s = weak.lock();
        if (s && s->ClaimForEviction()) {
          victim = std::move(s);
          break;
        }
      }
      full = victim == nullptr;
    }
  }
  if (full) {
    Refuse(std::move(socket));
  } else {
    if (victim) victim->Evict();
    auto session = std::make_shared<Session>(this, std::move(socket));
    {
      absl::MutexLock lock(&mu_);
      session->registry_pos = sessions_.insert(sessions_.end(), session);
    }
    session->Start();
  }
  Accept();
}

// A connection past the cap: written the 503, half-closed, and drained until the client closes
// (or kLinger passes) so that it reads the 503 rather than a connection reset. Everything runs
// on the socket's strand.
class RefusedConnection : public std::enable_shared_from_this<RefusedConnection> {
 public:
  RefusedConnection(tcp::socket socket, std::string response)
      : socket_(std::move(socket)),
        timer_(socket_.get_executor()),
        response_(std::move(response)) {}

  void Start() {
    timer_.expires_after(kLinger);
    timer_.async_wait([self = shared_from_this()](beast::error_code) {
      beast::error_code ignored;
      self->socket_.close(ignored);
    });
    net::async_write(socket_, net::buffer(response_),
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       beast::error_code ignored;
                       self->socket_.shutdown(tcp::socket::shutdown_send, ignored);
                       if (ec) {
                         self->timer_.cancel();
                         return;
                       }
                       self->Drain();
                     });
  }

 private:
  void Drain() {
    socket_.async_read_some(net::buffer(scratch_),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) {
                                self->timer_.cancel();
                                return;
                              }
                              self->Drain();
                            });
  }

  tcp::socket socket_;
  net::steady_timer timer_;
  std::string response_;
  char scratch_[4096];
};

void HttpServer::Refuse(tcp::socket socket) {
  ctx_->metrics->CountRequest("http", "other", "503");
  const absl::Status status = absl::UnavailableError(
      absl::StrCat("more than --http-max-connections=", options_.max_connections,
                   " connections are open with requests in flight; retry later"));
  std::make_shared<RefusedConnection>(
      std::move(socket), ResponseText(503, kJson, api::ErrorBody(status), "Retry-After: 1\r\n",
                                      /*close=*/true))
      ->Start();
}

void HttpServer::Stop(const std::string& reason) {
  if (stopping_.exchange(true)) return;
  net::post(acceptor_.get_executor(), [this] {
    beast::error_code ignored;
    acceptor_.close(ignored);
    accept_retry_.cancel();
  });
  std::vector<std::shared_ptr<Session>> open;
  {
    absl::MutexLock lock(&mu_);
    for (const std::weak_ptr<Session>& weak : sessions_) {
      if (std::shared_ptr<Session> s = weak.lock()) open.push_back(std::move(s));
    }
  }
  for (const std::shared_ptr<Session>& s : open) s->Abort(reason);
  open.clear();
  // The last writes (503 bodies, error events) get a second to leave.
  const absl::Time deadline = absl::Now() + absl::Seconds(1);
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (sessions_.empty()) break;
    }
    if (absl::Now() > deadline) break;
    absl::SleepFor(absl::Milliseconds(5));
  }
  work_.reset();
  ioc_.stop();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

HttpFrontEnd::HttpFrontEnd(ServingContext* context, HttpOptions options)
    : ctx_(context), options_(std::move(options)) {}

HttpFrontEnd::~HttpFrontEnd() { Stop(); }

absl::Status HttpFrontEnd::Start() {
  server_ = std::make_unique<HttpServer>(ctx_, options_);
  return server_->Start(&port_);
}

void HttpFrontEnd::Stop(const std::string& reason) {
  if (server_) server_->Stop(reason);
}

}  // namespace moeserve::server
