// The gRPC front end: the moeserve.v1.Moeserve service (proto/moeserve.proto) on the callback
// API, plus grpc.health.v1 and server reflection.
//
// Threading: gRPC's own threads run the unary methods and the stream reactions. Generate streams
// pin no thread: one pump thread polls the open streams' RequestStreams and starts a write on
// each that has an update and no write in flight (a stream has at most one write outstanding).
// A deadline or a client cancel reaches the reactor's OnCancel, which cancels the request.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/api/serving_context.h"

namespace moeserve::server {

class GrpcFrontEnd {
 public:
  // `address` like "127.0.0.1:50051"; port 0 picks a free one (see port()).
  GrpcFrontEnd(ServingContext* context, std::string address);
  ~GrpcFrontEnd();

  absl::Status Start();
  int port() const;
  // Health reports NOT_SERVING (the drain began; Generate answers UNAVAILABLE meanwhile).
  void SetNotServing();
  // Shuts the server down; calls still open after `grace` are cancelled.
  void Stop(absl::Duration grace);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moeserve::server
