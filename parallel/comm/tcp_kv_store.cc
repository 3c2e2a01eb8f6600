// TCP key-value store of the rendezvous; see tcp_kv_store.h.
#include "parallel/comm/tcp_kv_store.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"

namespace moeserve::parallel {
namespace {

// A value or key past this is a corrupt or foreign peer (rendezvous values are ~100 bytes).
constexpr uint32_t kMaxLength = 1 << 20;

bool WriteAll(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool ReadAll(int fd, void* data, size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = ::recv(fd, p, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

bool WriteBytes(int fd, const char* data, uint32_t n) {
  return WriteAll(fd, &n, sizeof(n)) && (n == 0 || WriteAll(fd, data, n));
}

bool ReadBytes(int fd, std::string* out) {
  uint32_t n = 0;
  if (!ReadAll(fd, &n, sizeof(n)) || n > kMaxLength) return false;
  out->resize(n);
  return n == 0 || ReadAll(fd, out->data(), n);
}

std::string Errno() { return std::strerror(errno); }

absl::StatusOr<addrinfo*> Resolve(const std::string& host, int port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_INET;  // the Gloo TCP transport here is IPv4 too
  hints.ai_socktype = SOCK_STREAM;
  if (passive) hints.ai_flags = AI_PASSIVE;
  addrinfo* result = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &result); rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot resolve ", host, ": ", ::gai_strerror(rc)));
  }
  return result;
}

}  // namespace

absl::Status ParseHostPort(const std::string& addr, std::string* host, int* port) {
  const size_t colon = addr.rfind(':');
  int p = 0;
  if (colon == std::string::npos || colon == 0 || !absl::SimpleAtoi(addr.substr(colon + 1), &p) ||
      p < 1 || p > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", addr, "\" is not host:port with a port in [1, 65535] (e.g. 10.0.0.1:29500)"));
  }
  *host = addr.substr(0, colon);
  *port = p;
  return absl::OkStatus();
}

// ------------------------------------------------------------------------------------------------
// Server

class TcpKvServer::Impl {
 public:
  explicit Impl(int listen_fd) : listen_fd_(listen_fd) {
    accept_thread_ = std::thread([this] { AcceptLoop(); });
  }

  ~Impl() {
    // shutdown() wakes the threads blocked in accept / recv; they then exit and are joined.
    ::shutdown(listen_fd_, SHUT_RDWR);
    accept_thread_.join();
    ::close(listen_fd_);
    std::vector<std::thread> threads;
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
      for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
      threads.swap(threads_);
    }
    for (std::thread& t : threads) t.join();
    absl::MutexLock lock(&mu_);
    for (int fd : fds_) ::close(fd);
  }

 private:
  void AcceptLoop() {
    while (true) {
      const int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        return;  // shut down
      }
      absl::MutexLock lock(&mu_);
      if (stopping_) {
        ::close(fd);
        return;
      }
      fds_.push_back(fd);
      threads_.emplace_back([this, fd] { Serve(fd); });
    }
  }

  // One connection: requests until the peer closes or sends something malformed.
  void Serve(int fd) {
    while (true) {
      char op = 0;
      std::string key;
      if (!ReadAll(fd, &op, 1) || !ReadBytes(fd, &key)) return;
      if (op == 'S') {
        std::string value;
        if (!ReadBytes(fd, &value)) return;
        {
          absl::MutexLock lock(&mu_);
          values_[key] = std::move(value);
        }
        const char ok = 1;
        if (!WriteAll(fd, &ok, 1)) return;
      } else if (op == 'G') {
        std::optional<std::string> value;
        {
          absl::MutexLock lock(&mu_);
          if (auto it = values_.find(key); it != values_.end()) value = it->second;
        }
        const char found = value ? 1 : 0;
        if (!WriteAll(fd, &found, 1)) return;
        if (value && !WriteBytes(fd, value->data(), static_cast<uint32_t>(value->size()))) return;
      } else {
        return;  // not our protocol: drop the connection
      }
    }
  }

  const int listen_fd_;
  std::thread accept_thread_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<int> fds_ ABSL_GUARDED_BY(mu_);  // every accepted connection (closed by ~Impl)
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> values_ ABSL_GUARDED_BY(mu_);
};

TcpKvServer::TcpKvServer(std::unique_ptr<Impl> impl, int port)
    : impl_(std::move(impl)), port_(port) {}
TcpKvServer::~TcpKvServer() = default;

absl::StatusOr<std::unique_ptr<TcpKvServer>> TcpKvServer::Start(const std::string& bind_host,
                                                                int port) {
  absl::StatusOr<addrinfo*> resolved = Resolve(bind_host, port, /*passive=*/true);
  if (!resolved.ok()) return resolved.status();
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("rendezvous: socket: ", Errno()));
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  const bool bound = ::bind(fd, (*resolved)->ai_addr, (*resolved)->ai_addrlen) == 0;
  ::freeaddrinfo(*resolved);
  if (!bound || ::listen(fd, 128) != 0) {
    const std::string err = Errno();
    ::close(fd);
    return absl::UnavailableError(
        absl::StrCat("rendezvous: cannot listen on ", bind_host, ":", port, ": ", err));
  }
  sockaddr_in local{};
  socklen_t len = sizeof(local);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len);
  return std::unique_ptr<TcpKvServer>(
      new TcpKvServer(std::make_unique<Impl>(fd), ntohs(local.sin_port)));
}

// ------------------------------------------------------------------------------------------------
// Client

absl::StatusOr<std::unique_ptr<TcpKvClient>> TcpKvClient::Connect(const std::string& addr,
                                                                  absl::Duration timeout) {
  std::string host;
  int port = 0;
  if (absl::Status st = ParseHostPort(addr, &host, &port); !st.ok()) return st;
  const absl::Time deadline = absl::Now() + timeout;
  std::string last_error;
  while (true) {
    absl::StatusOr<addrinfo*> resolved = Resolve(host, port, /*passive=*/false);
    if (resolved.ok()) {
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) return absl::InternalError(absl::StrCat("rendezvous: socket: ", Errno()));
      const bool connected = ::connect(fd, (*resolved)->ai_addr, (*resolved)->ai_addrlen) == 0;
      ::freeaddrinfo(*resolved);
      if (connected) {
        const int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        sockaddr_in local{};
        socklen_t len = sizeof(local);
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len);
        char text[INET_ADDRSTRLEN] = {};
        ::inet_ntop(AF_INET, &local.sin_addr, text, sizeof(text));
        return std::unique_ptr<TcpKvClient>(new TcpKvClient(fd, addr, text));
      }
      last_error = Errno();
      ::close(fd);
    } else {
      last_error = std::string(resolved.status().message());
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("rendezvous: could not reach --dist-init-addr ", addr, " within ",
                       absl::FormatDuration(timeout), " (last error: ", last_error,
                       "); is rank 0 running and the port open?"));
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
}

TcpKvClient::~TcpKvClient() { ::close(fd_); }

absl::Status TcpKvClient::Set(const std::string& key, const std::vector<char>& value) {
  const char op = 'S';
  char ok = 0;
  if (!WriteAll(fd_, &op, 1) || !WriteBytes(fd_, key.data(), static_cast<uint32_t>(key.size())) ||
      !WriteBytes(fd_, value.data(), static_cast<uint32_t>(value.size())) ||
      !ReadAll(fd_, &ok, 1) || ok != 1) {
    return absl::UnavailableError(
        absl::StrCat("rendezvous at ", addr_, ": set ", key, " failed: ", Errno()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<std::vector<char>>> TcpKvClient::Get(const std::string& key) {
  const char op = 'G';
  char found = 0;
  if (!WriteAll(fd_, &op, 1) || !WriteBytes(fd_, key.data(), static_cast<uint32_t>(key.size())) ||
      !ReadAll(fd_, &found, 1)) {
    return absl::UnavailableError(
        absl::StrCat("rendezvous at ", addr_, ": get ", key, " failed (the server went away?)"));
  }
  if (!found) return std::optional<std::vector<char>>();
  std::string value;
  if (!ReadBytes(fd_, &value)) {
    return absl::UnavailableError(absl::StrCat("rendezvous at ", addr_, ": get ", key, " failed"));
  }
  return std::optional<std::vector<char>>(std::vector<char>(value.begin(), value.end()));
}

absl::Status TcpKvClient::Wait(const std::vector<std::string>& keys, absl::Duration timeout,
                               const std::function<absl::Status()>& check) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    if (check) {
      if (absl::Status st = check(); !st.ok()) return st;
    }
    std::vector<std::string> missing;
    for (const std::string& key : keys) {
      absl::StatusOr<std::optional<std::vector<char>>> v = Get(key);
      if (!v.ok()) return v.status();
      if (!v->has_value()) missing.push_back(key);
    }
    if (missing.empty()) return absl::OkStatus();
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "rendezvous at ", addr_, ": Wait timeout for key(s) ", absl::StrJoin(missing, ", "),
          " after ", absl::FormatDuration(timeout), " (a rank did not start or did not arrive)"));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
}

}  // namespace moeserve::parallel
