// A small key-value store over TCP, for the RENDEZVOUS of a process group only (the ranks publish
// their Gloo transport addresses under their keys and read everyone else's); the data plane stays
// Gloo. Debian's libgloo-dev ships FileStore (one node: a shared directory), HashStore (one
// process), PrefixStore and RedisStore (needs a Redis server): nothing that spans nodes on its
// own, hence this store (the role of torch.distributed's TCPStore, the `--dist-init-addr
// host:port` of SGLang / vLLM).
//
// Rank 0's process runs a TcpKvServer on the init address; every rank (rank 0 too) talks to it
// through a TcpKvClient. Wire format, one request at a time per connection:
//   request  = op (1 byte: 'S' set, 'G' get) | u32 key length | key | (set only) u32 value length
//              | value
//   response = set: 1 byte 1;  get: 1 byte found (0/1) | (found) u32 length | value
// Integers little-endian (x86 / arm64 hosts; the store never leaves a cluster of them). Waiting
// for a key is the client polling `get` every 10 ms until its deadline: a rendezvous reads a
// handful of keys once, so polling costs nothing and keeps the server stateless.
//
// Threading: TcpKvServer runs an accept thread plus one thread per connection, all joined by its
// destructor. A TcpKvClient is used by one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace moeserve::parallel {

// "host:port" -> (host, port). InvalidArgument naming the flag's value otherwise.
absl::Status ParseHostPort(const std::string& addr, std::string* host, int* port);

class TcpKvServer {
 public:
  // Listens on `bind_host`:`port` (port 0: any free port; bind_host "0.0.0.0": every interface).
  static absl::StatusOr<std::unique_ptr<TcpKvServer>> Start(const std::string& bind_host, int port);
  ~TcpKvServer();  // closes every connection and joins the threads
  TcpKvServer(const TcpKvServer&) = delete;
  TcpKvServer& operator=(const TcpKvServer&) = delete;

  int port() const { return port_; }

 private:
  class Impl;
  TcpKvServer(std::unique_ptr<Impl> impl, int port);
  std::unique_ptr<Impl> impl_;
  int port_;
};

class TcpKvClient {
 public:
  // Connects to "host:port", retrying (the server's process may start later, e.g. on another
  // node) until `timeout`; then DeadlineExceeded naming the address and the last error.
  static absl::StatusOr<std::unique_ptr<TcpKvClient>> Connect(const std::string& addr,
                                                              absl::Duration timeout);
  ~TcpKvClient();
  TcpKvClient(const TcpKvClient&) = delete;
  TcpKvClient& operator=(const TcpKvClient&) = delete;

  absl::Status Set(const std::string& key, const std::vector<char>& value);
  // The value, or nullopt when the key is not set (yet).
  absl::StatusOr<std::optional<std::vector<char>>> Get(const std::string& key);
  // Polls until every key is set; DeadlineExceeded naming the missing keys past `timeout`.
  // `check` (optional) runs at every poll; its first non-OK status ends the wait (e.g. a rank
  // that was to set a key has exited).
  absl::Status Wait(const std::vector<std::string>& keys, absl::Duration timeout,
                    const std::function<absl::Status()>& check = nullptr);

  // This end's address on the connection (the interface that routes to the server): what the
  // other ranks can reach this host at.
  const std::string& local_host() const { return local_host_; }

 private:
  TcpKvClient(int fd, std::string addr, std::string local_host)
      : fd_(fd), addr_(std::move(addr)), local_host_(std::move(local_host)) {}
  int fd_;
  std::string addr_;
  std::string local_host_;
};

}  // namespace moeserve::parallel
