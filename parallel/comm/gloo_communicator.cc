// Gloo communicator; see gloo_communicator.h. Compiled in every build: without Gloo
// (MOESERVE_HAVE_GLOO unset) CreateGlooCommunicator returns Unimplemented.
#include "parallel/comm/gloo_communicator.h"

#include "absl/strings/str_cat.h"

#if MOESERVE_HAVE_GLOO
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "gloo/allgather.h"
#include "gloo/alltoall.h"
#include "gloo/alltoallv.h"
#include "gloo/barrier.h"
#include "gloo/common/error.h"
#include "gloo/common/logging.h"
#include "gloo/rendezvous/context.h"
#include "gloo/rendezvous/file_store.h"
#include "gloo/rendezvous/prefix_store.h"
#include "gloo/transport/tcp/address.h"
#include "gloo/transport/tcp/device.h"
#include "parallel/comm/tcp_kv_store.h"
#endif

namespace moeserve::parallel {

#if !MOESERVE_HAVE_GLOO

bool GlooAvailable() { return false; }

absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(const GlooOptions&) {
  return absl::UnimplementedError(
      "moeserve was built without Gloo (MOESERVE_GLOO=OFF, or libgloo-dev missing: run "
      "tools/setup.sh and reconfigure)");
}

#else

namespace {

std::chrono::milliseconds ToMillis(absl::Duration d) {
  return std::chrono::milliseconds(std::max<int64_t>(1, absl::ToInt64Milliseconds(d)));
}

// Runs a Gloo call and turns what it throws into a Status: a timeout is
// DeadlineExceeded, any other I/O error (a peer closed its connection: it died or aborted) is
// Unavailable, a failed GLOO_ENFORCE (e.g. a size mismatch between ranks) is Internal.
absl::Status CallGloo(const std::string& what, const std::function<void()>& fn) {
  try {
    fn();
    return absl::OkStatus();
  } catch (const ::gloo::IoException& e) {
    const std::string msg = e.what();
    // Collectives say "Timed out waiting ...", the FileStore rendezvous "Wait timeout for key(s)".
    if (msg.find("Timed out") != std::string::npos ||
        msg.find("Wait timeout") != std::string::npos) {
      return absl::DeadlineExceededError(absl::StrCat(what, ": ", msg));
    }
    return absl::UnavailableError(absl::StrCat(what, ": ", msg));
  } catch (const ::gloo::EnforceNotMet& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat(what, ": unknown exception"));
  }
}

// Gloo's Store interface over the TCP key-value store (--dist-init-addr). Gloo expects failures
// as exceptions: they are thrown as gloo::IoException, which CallGloo turns back into a Status
// ("Wait timeout" -> DeadlineExceeded).
class TcpStore final : public ::gloo::rendezvous::Store {
 public:
  TcpStore(TcpKvClient* client, absl::Duration timeout, std::function<absl::Status()> check)
      : client_(client), timeout_(timeout), check_(std::move(check)) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    Check(client_->Set(key, data));
  }
  std::vector<char> get(const std::string& key) override {
    Check(client_->Wait({key}, timeout_, check_));
    absl::StatusOr<std::optional<std::vector<char>>> v = client_->Get(key);
    Check(v.status());
    return **v;
  }
  void wait(const std::vector<std::string>& keys) override {
    Check(client_->Wait(keys, timeout_, check_));
  }
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override {
    Check(client_->Wait(keys, absl::FromChrono(timeout), check_));
  }

 private:
  static void Check(const absl::Status& st) {
    if (!st.ok()) throw ::gloo::IoException(std::string(st.message()));
  }
  TcpKvClient* client_;
  absl::Duration timeout_;
  std::function<absl::Status()> check_;
};

// Each peer's address as Gloo prints it in this rank's errors, read back from the rendezvous: in
// connectFullMesh rank r stores, under key "r", one serialized tcp::Address per peer in rank
// order (itself skipped), each pair listening on its own port; the one meant for this rank is
// entry `rank` (or `rank - 1` past r). Best effort: a layout this does not recognise just names
// no ranks.
std::vector<std::pair<std::string, int>> PeerAddresses(::gloo::rendezvous::Store& store, int rank,
                                                       int world) {
  std::vector<std::pair<std::string, int>> peers;
  const size_t address_bytes = ::gloo::transport::tcp::Address().bytes().size();
  for (int r = 0; r < world; ++r) {
    if (r == rank) continue;
    try {
      const std::vector<char> blob = store.get(std::to_string(r));
      const size_t entry = static_cast<size_t>(rank < r ? rank : rank - 1);
      if (blob.size() < (entry + 1) * address_bytes) continue;
      const auto begin = blob.begin() + static_cast<std::ptrdiff_t>(entry * address_bytes);
      const std::vector<char> mine(begin, begin + static_cast<std::ptrdiff_t>(address_bytes));
      peers.emplace_back(::gloo::transport::tcp::Address(mine).str(), r);
    } catch (const std::exception&) {
      // not the expected layout: no names
    }
  }
  return peers;
}

class GlooCommunicator final : public Communicator {
 public:
  // peers: (Gloo's text for a peer's address, its rank), to name ranks in Gloo's errors.
  GlooCommunicator(std::shared_ptr<::gloo::rendezvous::Context> context, absl::Duration timeout,
                   std::vector<std::pair<std::string, int>> peers)
      : context_(std::move(context)), timeout_(ToMillis(timeout)), peers_(std::move(peers)) {}

  ~GlooCommunicator() override {
    CallGloo("close", [&] { context_->closeConnections(); }).IgnoreError();
  }

  int rank() const override { return context_->rank; }
  int world_size() const override { return context_->size; }

  absl::Status AllToAll(const int64_t* send, int64_t* recv, int64_t count) override {
    const int world = world_size();
    if (count < 0) return Fail("AllToAll", absl::InvalidArgumentError("count < 0"));
    const size_t n = static_cast<size_t>(count) * world;
    if (n == 0) return Begin("AllToAll");  // nothing moves (every rank has the same count)
    // Gloo's alltoall reads and writes the two buffers while exchanging: in place needs a copy.
    std::vector<int64_t> input;
    if (send == recv) {
      input.assign(send, send + n);
      send = input.data();
    }
    return Run("AllToAll", [&](uint32_t tag) {
      ::gloo::AlltoallOptions opts(context_);
      opts.setInput(const_cast<int64_t*>(send), n);
      opts.setOutput(recv, n);
      opts.setTag(tag);
      opts.setTimeout(timeout_);
      ::gloo::alltoall(opts);
    });
  }

  absl::Status AllToAllV(const void* send, const int64_t* send_counts, const int64_t* send_offsets,
                         void* recv, const int64_t* recv_counts,
                         const int64_t* recv_offsets) override {
    const int world = world_size();
    int64_t send_total = 0, recv_total = 0;
    bool send_packed = true, recv_packed = true;
    for (int p = 0; p < world; ++p) {
      if (send_counts[p] < 0 || recv_counts[p] < 0 || send_offsets[p] < 0 || recv_offsets[p] < 0) {
        return Fail("AllToAllV", absl::InvalidArgumentError(
                                     absl::StrCat("negative count or offset for peer ", p)));
      }
      send_packed &= send_counts[p] == 0 || send_offsets[p] == send_total;
      recv_packed &= recv_counts[p] == 0 || recv_offsets[p] == recv_total;
      send_total += send_counts[p];
      recv_total += recv_counts[p];
    }
    // Gloo accepts a message shorter than the receive buffer without a word, so inconsistent
    // counts would go unnoticed: first every rank tells each peer how much it will send (one
    // [world] int64 alltoall), and a rank that expects something else fails and aborts, which
    // closes its connections and fails its peers' exchange (at the latest their next collective).
    std::vector<int64_t> announced(world), sent(send_counts, send_counts + world);
    absl::Status st = Run("AllToAllV (counts)", [&](uint32_t tag) {
      ::gloo::AlltoallOptions opts(context_);
      opts.setInput(sent.data(), sent.size());
      opts.setOutput(announced.data(), announced.size());
      opts.setTag(tag);
      opts.setTimeout(timeout_);
      ::gloo::alltoall(opts);
    });
    if (!st.ok()) return st;
    for (int p = 0; p < world; ++p) {
      if (announced[p] != recv_counts[p]) {
        return Fail("AllToAllV",
                    absl::InvalidArgumentError(absl::StrCat(
                        "inconsistent counts: rank ", p, " sends ", announced[p], " bytes to rank ",
                        rank(), ", which expects ", recv_counts[p])));
      }
    }
    // [send_total] bytes in peer order, as Gloo wants them. Gloo also wants non-null buffers even
    // when a rank sends or receives nothing, hence the one-byte placeholders.
    std::vector<uint8_t> send_stage, recv_stage;
    const uint8_t* src = static_cast<const uint8_t*>(send);
    if (!send_packed || send_total == 0) {
      send_stage.resize(static_cast<size_t>(std::max<int64_t>(send_total, 1)));
      int64_t at = 0;
      for (int p = 0; p < world; ++p) {
        if (send_counts[p] > 0) std::memcpy(&send_stage[at], src + send_offsets[p], send_counts[p]);
        at += send_counts[p];
      }
      src = send_stage.data();
    }
    uint8_t* dst = static_cast<uint8_t*>(recv);
    if (!recv_packed || recv_total == 0) {
      recv_stage.resize(static_cast<size_t>(std::max<int64_t>(recv_total, 1)));
      dst = recv_stage.data();
    }
    std::vector<int64_t> in_lengths(send_counts, send_counts + world);
    std::vector<int64_t> out_lengths(recv_counts, recv_counts + world);
    st = Run("AllToAllV", [&](uint32_t tag) {
      ::gloo::AlltoallvOptions opts(context_);
      opts.setInput(const_cast<uint8_t*>(src), in_lengths);
      opts.setOutput(dst, out_lengths);
      opts.setTag(tag);
      opts.setTimeout(timeout_);
      ::gloo::alltoallv(opts);
    });
    if (!st.ok()) return st;
    if (!recv_packed && recv_total > 0) {
      int64_t at = 0;
      for (int p = 0; p < world; ++p) {
        if (recv_counts[p] > 0) {
          std::memcpy(static_cast<uint8_t*>(recv) + recv_offsets[p], &recv_stage[at],
                      recv_counts[p]);
        }
        at += recv_counts[p];
      }
    }
    return absl::OkStatus();
  }

  absl::Status AllReduce(const int64_t* send, int64_t* recv, int64_t count, ReduceOp op) override {
    return AllReduceImpl("AllReduce(int64)", send, recv, count, op);
  }
  absl::Status AllReduce(const double* send, double* recv, int64_t count, ReduceOp op) override {
    return AllReduceImpl("AllReduce(double)", send, recv, count, op);
  }

  absl::Status Barrier() override {
    return Run("Barrier", [&](uint32_t tag) {
      ::gloo::BarrierOptions opts(context_);
      opts.setTag(tag);
      opts.setTimeout(timeout_);
      ::gloo::barrier(opts);
    });
  }

  void Abort(const absl::Status& reason) override {
    {
      absl::MutexLock lock(&mu_);
      if (!aborted_.ok()) return;  // the first reason wins
      aborted_ = reason.ok() ? absl::AbortedError("Abort called with an OK status") : reason;
    }
    // Peers blocked on this rank see their connections close and fail now, not at their timeout.
    CallGloo("Abort", [&] { context_->closeConnections(); }).IgnoreError();
  }

 private:
  // allgather [world, count] then a rank-ordered reduction (see the header for why).
  template <typename T>
  absl::Status AllReduceImpl(const char* what, const T* send, T* recv, int64_t count, ReduceOp op) {
    if (count < 0) return Fail(what, absl::InvalidArgumentError("count < 0"));
    if (count == 0) return Begin(what);
    const int world = world_size();
    const size_t n = static_cast<size_t>(count);
    std::vector<T> input(send, send + n);  // also makes in-place calls safe
    std::vector<T> gathered(n * world);
    absl::Status st = Run(what, [&](uint32_t tag) {
      ::gloo::AllgatherOptions opts(context_);
      opts.setInput(input.data(), n);
      opts.setOutput(gathered.data(), gathered.size());
      opts.setTag(tag);
      opts.setTimeout(timeout_);
      ::gloo::allgather(opts);
    });
    if (!st.ok()) return st;
    for (size_t i = 0; i < n; ++i) {
      T acc = gathered[i];
      for (int r = 1; r < world; ++r) {
        const T v = gathered[r * n + i];
        acc = op == ReduceOp::kSum ? acc + v : std::max(acc, v);
      }
      recv[i] = acc;
    }
    return absl::OkStatus();
  }

  // Checks that the group is usable and advances the tag, so that every rank's collective k uses
  // tag k even when some collectives move nothing.
  absl::Status Begin(const char* what, uint32_t* tag = nullptr) {
    absl::MutexLock lock(&mu_);
    if (!aborted_.ok()) {
      return absl::Status(aborted_.code(), absl::StrCat(what, " on rank ", context_->rank,
                                                        ": group aborted: ", aborted_.message()));
    }
    const uint32_t t = next_tag_++;
    if (tag != nullptr) *tag = t;
    return absl::OkStatus();
  }

  absl::Status Run(const char* what, const std::function<void(uint32_t tag)>& body) {
    uint32_t tag = 0;
    if (absl::Status st = Begin(what, &tag); !st.ok()) return st;
    absl::Status st =
        CallGloo(absl::StrCat(what, " on rank ", context_->rank, " of ", context_->size,
                              " (collective #", tag, ", timeout ", timeout_.count(), " ms)"),
                 [&] { body(tag); });
    if (!st.ok()) {
      st = NamePeers(st);
      Abort(st);
    }
    return st;
  }

  absl::Status Fail(const char* what, const absl::Status& st) {
    absl::Status err(st.code(),
                     absl::StrCat(what, " on rank ", context_->rank, ": ", st.message()));
    Abort(err);
    return err;
  }

  // Gloo's I/O errors name a peer by its address ("[10.0.0.2]:41234"): add its rank.
  absl::Status NamePeers(const absl::Status& st) const {
    const std::string msg(st.message());
    for (const auto& [address, rank] : peers_) {
      if (msg.find(address) != std::string::npos) {
        return absl::Status(st.code(),
                            absl::StrCat(msg, " (peer ", address, " is rank ", rank, ")"));
      }
    }
    return st;
  }

  const std::shared_ptr<::gloo::rendezvous::Context> context_;
  const std::chrono::milliseconds timeout_;
  const std::vector<std::pair<std::string, int>> peers_;
  absl::Mutex mu_;
  absl::Status aborted_ ABSL_GUARDED_BY(mu_);
  uint32_t next_tag_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

bool GlooAvailable() { return true; }

absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(const GlooOptions& options) {
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gloo: rank ", options.rank, " is not in [0, world size ", options.world_size, ")"));
  }
  if (options.file_store_dir.empty() == options.init_addr.empty()) {
    return absl::InvalidArgumentError(
        "gloo: set exactly one rendezvous: file_store_dir (one node) or init_addr (host:port)");
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("gloo: timeout must be positive");
  }
  // Gloo's TCP transport writes with writev, without MSG_NOSIGNAL: a write to a peer that died
  // would kill this process with SIGPIPE instead of failing the collective with EPIPE. Ignore
  // SIGPIPE unless the program installed its own handler.
  struct sigaction current {};
  if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    ::sigemptyset(&ignore.sa_mask);
    ::sigaction(SIGPIPE, &ignore, nullptr);
  }
  // TCP rendezvous: connect to the store first (retrying until the timeout: rank 0 may start
  // later); the connection's local address is this host as the other ranks reach it.
  std::unique_ptr<TcpKvClient> client;
  std::string hostname = options.hostname;
  if (!options.init_addr.empty()) {
    absl::StatusOr<std::unique_ptr<TcpKvClient>> connected =
        TcpKvClient::Connect(options.init_addr, options.timeout);
    if (!connected.ok()) return connected.status();
    client = *std::move(connected);
    if (hostname.empty()) hostname = client->local_host();
  }
  if (hostname.empty()) hostname = "127.0.0.1";
  auto context = std::make_shared<::gloo::rendezvous::Context>(options.rank, options.world_size);
  std::vector<std::pair<std::string, int>> peers;
  absl::Status st = CallGloo(
      absl::StrCat("gloo rendezvous of rank ", options.rank, " of ", options.world_size, " at ",
                   options.init_addr.empty() ? options.file_store_dir : options.init_addr,
                   " (this rank listens on ", hostname, ")"),
      [&] {
        ::gloo::transport::tcp::attr attr;
        attr.hostname = hostname;
        std::shared_ptr<::gloo::transport::Device> device =
            ::gloo::transport::tcp::CreateDevice(attr);
        std::unique_ptr<::gloo::rendezvous::Store> base;
        if (client) {
          base =
              std::make_unique<TcpStore>(client.get(), options.timeout, options.rendezvous_check);
        } else {
          base = std::make_unique<::gloo::rendezvous::FileStore>(options.file_store_dir);
        }
        ::gloo::rendezvous::PrefixStore store(options.store_prefix, *base);
        context->setTimeout(ToMillis(options.timeout));
        context->connectFullMesh(store, device);
        peers = PeerAddresses(store, options.rank, options.world_size);
      });
  if (!st.ok()) return st;
  return std::make_unique<GlooCommunicator>(std::move(context), options.timeout, std::move(peers));
}

#endif  // MOESERVE_HAVE_GLOO

}  // namespace moeserve::parallel
