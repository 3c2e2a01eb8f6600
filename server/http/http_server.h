// The OpenAI-compatible HTTP/1.1 front end (Boost.Beast on Boost.Asio):
//   POST /v1/completions, POST /v1/chat/completions   stream=false: one JSON body;
//                                                      stream=true: SSE "data: {...}\n\n" chunks,
//                                                      then "data: [DONE]\n\n"
//   GET /v1/models, GET /health, GET /metrics, GET /lab (live imbalance page), GET /v1/lab/stats
// Errors use OpenAI's body {"error": {"message", "type", "param", "code"}}.
//
// Threading: a fixed pool of `io_threads` runs one io_context; every connection's handlers run
// on its own strand, so a connection's state is touched by one thread at a time. Nothing blocks
// an io thread: a generation call registers RequestStream::SetOnPush, whose callback (on the
// engine thread) posts the connection's Pump to its strand; open streams cost no thread.
//
// Bounds (each answered at once, never by a stall):
//   * request line + headers: at most max_header_bytes (431 past it), complete within
//     header_timeout of the connection becoming ready for a request (idle keep-alive included);
//   * body: at most ServingContext::max_body_bytes (400), complete within body_timeout;
//   * a response write that makes no progress for write_timeout closes the connection;
//   * at most max_connections connections: past it the oldest connection with no generation in
//     flight (idle, slow, or still sending its request) is closed to make room, and when every
//     connection has one in flight the new one gets 503;
//   * a client that closes its connection cancels its request (stream or not) within
//     a fraction of a second, and its KV blocks are freed at the engine's next step.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/api/serving_context.h"

namespace moeserve::server {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: any free port (see HttpFrontEnd::port)
  int max_connections = 2048;
  int io_threads = 2;
  int64_t max_header_bytes = 16 << 10;  // request line + header lines
  absl::Duration header_timeout = absl::Seconds(30);
  absl::Duration body_timeout = absl::Seconds(60);
  absl::Duration write_timeout = absl::Seconds(30);
};

class HttpServer;  // http_server.cc

class HttpFrontEnd {
 public:
  HttpFrontEnd(ServingContext* context, HttpOptions options);
  ~HttpFrontEnd();  // Stop()s

  // Binds and starts serving on the io threads. Unavailable when the port is taken.
  absl::Status Start();
  int port() const { return port_; }
  // Ends every open call now and stops: a non-streaming call gets 503 with `reason`, a stream an
  // error event with it and "data: [DONE]"; their engine requests are cancelled. Waits up to a
  // second for those last writes, then closes every connection and joins the io threads.
  void Stop(const std::string& reason = "the server is shutting down");

 private:
  ServingContext* ctx_;
  HttpOptions options_;
  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
};

}  // namespace moeserve::server
