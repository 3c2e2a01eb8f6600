#include "server/cli/ep_process_group.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "parallel/comm/gloo_communicator.h"
#include "spdlog/spdlog.h"

extern char** environ;

namespace moeserve::server {
namespace {

// This process's arguments as the kernel has them (argv after any re-exec), NUL-separated.
std::vector<std::string> OwnArguments() {
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  size_t start = 0;
  while (start < all.size()) {
    const size_t end = all.find('\0', start);
    args.push_back(all.substr(start, end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return args;
}

std::string DescribeExit(int rank, pid_t pid, int status, int* exit_code) {
  if (WIFSIGNALED(status)) {
    *exit_code = 128 + WTERMSIG(status);
    return absl::StrCat("rank ", rank, " (pid ", pid, ") was killed by signal ", WTERMSIG(status),
                        " (", ::strsignal(WTERMSIG(status)), ")");
  }
  *exit_code = WEXITSTATUS(status);
  return absl::StrCat("rank ", rank, " (pid ", pid, ") exited with status ", *exit_code);
}

}  // namespace

absl::StatusOr<std::unique_ptr<EpProcessGroup>> EpProcessGroup::Start(
    const runtime::EpTopology& topology, absl::Duration timeout) {
  std::unique_ptr<EpProcessGroup> group(new EpProcessGroup(topology));
  std::string init_addr = topology.init_addr;
  if (topology.hosts_store()) {
    // One node without --dist-init-addr: a free loopback port, passed to the spawned ranks.
    std::string host = "127.0.0.1";
    int port = 0;
    if (!init_addr.empty()) {
      if (absl::Status st = parallel::ParseHostPort(init_addr, &host, &port); !st.ok()) return st;
    }
    absl::StatusOr<std::unique_ptr<parallel::TcpKvServer>> store =
        parallel::TcpKvServer::Start(host, port);
    if (!store.ok()) {
      return absl::Status(store.status().code(),
                          absl::StrCat("--dist-init-addr: ", store.status().message()));
    }
    group->store_ = *std::move(store);
    if (init_addr.empty()) init_addr = absl::StrCat(host, ":", group->store_->port());
    group->topology_.init_addr = init_addr;
  }
  if (absl::Status st = group->Spawn(init_addr); !st.ok()) return st;
  group->watcher_ = std::thread([g = group.get()] { g->Watch(); });
  spdlog::info("rank {} of {} ({}): rendezvous at {}{}", topology.rank, topology.world_size,
               topology.source, init_addr,
               topology.spawn_ranks.empty()
                   ? std::string()
                   : absl::StrCat(", spawned ranks ", absl::StrJoin(topology.spawn_ranks, ",")));
  parallel::GlooOptions options;
  options.rank = topology.rank;
  options.world_size = topology.world_size;
  options.init_addr = init_addr;
  options.timeout = timeout;
  // A spawned rank that has already ended will never arrive: stop waiting and say which.
  options.rendezvous_check = [g = group.get()]() -> absl::Status {
    const std::vector<std::string> ended = g->Ended();
    if (ended.empty()) return absl::OkStatus();
    return absl::UnavailableError(
        absl::StrCat("a rank ended before joining the group: ", absl::StrJoin(ended, "; ")));
  };
  absl::StatusOr<std::unique_ptr<parallel::Communicator>> comm =
      parallel::CreateGlooCommunicator(options);
  if (!comm.ok()) {
    group->ExpectExits();
    const std::vector<std::string> ended = group->Ended();
    return absl::Status(comm.status().code(),
                        absl::StrCat(comm.status().message(),
                                     ended.empty() ? "" : "; " + absl::StrJoin(ended, "; ")));
  }
  group->owned_comm_ = *std::move(comm);
  return group;
}

absl::Status EpProcessGroup::Spawn(const std::string& init_addr) {
  if (topology_.spawn_ranks.empty()) return absl::OkStatus();
  const std::vector<std::string> args = OwnArguments();
  if (args.empty()) return absl::InternalError("cannot read /proc/self/cmdline to spawn ranks");
  for (int rank : topology_.spawn_ranks) {
    // Everything is built before fork: the child only calls execve.
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string var = *e;
      if (var.rfind(absl::StrCat(runtime::kSpawnedRankEnv, "="), 0) == 0 ||
          var.rfind(absl::StrCat(runtime::kDistInitAddrEnv, "="), 0) == 0) {
        continue;
      }
      env.push_back(var);
    }
    env.push_back(absl::StrCat(runtime::kSpawnedRankEnv, "=", rank));
    env.push_back(absl::StrCat(runtime::kDistInitAddrEnv, "=", init_addr));
    std::vector<char*> envp, argv;
    for (std::string& s : env) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::vector<std::string> arg_copy = args;
    for (std::string& s : arg_copy) argv.push_back(s.data());
    argv.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) {
      const std::string err = std::strerror(errno);
      KillRemaining();
      return absl::InternalError(absl::StrCat("cannot spawn rank ", rank, ": fork: ", err));
    }
    if (pid == 0) {
      ::execve("/proc/self/exe", argv.data(), envp.data());
      ::_exit(127);
    }
    spdlog::info("spawned rank {} (pid {})", rank, pid);
    absl::MutexLock lock(&mu_);
    children_.push_back({.rank = rank, .pid = pid});
  }
  return absl::OkStatus();
}

void EpProcessGroup::Watch() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stop_watching_) return;
      for (Child& c : children_) {
        if (!c.running) continue;
        int status = 0;
        if (::waitpid(c.pid, &status, WNOHANG) != c.pid) continue;
        c.running = false;
        c.how = DescribeExit(c.rank, c.pid, status, &c.exit_code);
        ended_.push_back(c.how);
        if (expecting_exits_) continue;
        spdlog::error("{} while the group was serving", c.how);
      }
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

std::unique_ptr<parallel::Communicator> EpProcessGroup::TakeComm() {
  return std::move(owned_comm_);
}

void EpProcessGroup::ExpectExits() {
  absl::MutexLock lock(&mu_);
  expecting_exits_ = true;
}

std::vector<std::string> EpProcessGroup::Reap(absl::Duration timeout) {
  ExpectExits();
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    bool any_running = false;
    {
      absl::MutexLock lock(&mu_);
      for (const Child& c : children_) any_running |= c.running;
    }
    if (!any_running) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  KillRemaining();
  std::vector<std::string> failed;
  absl::MutexLock lock(&mu_);
  for (const Child& c : children_) {
    if (c.exit_code != 0) failed.push_back(c.how);
  }
  return failed;
}

void EpProcessGroup::KillRemaining() {
  {
    absl::MutexLock lock(&mu_);
    stop_watching_ = true;
  }
  if (watcher_.joinable()) watcher_.join();
  absl::MutexLock lock(&mu_);
  for (Child& c : children_) {
    if (!c.running) continue;
    ::kill(c.pid, SIGKILL);  // our own child, still running past its time
    int status = 0;
    ::waitpid(c.pid, &status, 0);
    c.running = false;
    DescribeExit(c.rank, c.pid, status, &c.exit_code);
    c.how = absl::StrCat("rank ", c.rank, " (pid ", c.pid, ") did not exit in time and was killed");
    ended_.push_back(c.how);
  }
}

std::vector<std::string> EpProcessGroup::Ended() const {
  absl::MutexLock lock(&mu_);
  return ended_;
}

EpProcessGroup::~EpProcessGroup() {
  ExpectExits();
  KillRemaining();
}

}  // namespace moeserve::server
