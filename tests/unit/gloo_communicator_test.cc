// The Gloo communicator between real PROCESSES: the parent test spawns this same binary N times
// (fork + exec, role chosen by the MOESERVE_GLOO_CHILD environment variable, which runs only the
// GlooChildRole.Run case), the children rendezvous through a fresh FileStore directory, run a
// scenario and write their results to files; the parent asserts.
//   - conformance: the checks of communicator_test.cc (AllToAll, AllToAllV with zero and uneven
//     counts and scattered offsets, AllReduce sum/max of int64 and double bitwise equal to the
//     rank-ordered sum computed here, Barrier), each child checking its own share;
//   - a peer that exits after its first collective, one that stops calling, one that aborts, and
//     inconsistent AllToAllV counts: the others get an error instead of hanging (the parent kills
//     any child still running after a hang guard, and fails);
//   - the expert-parallel MoE layer at world sizes 2 and 4, its outputs bitwise equal to world
//     size 1 (RunMoeLayer over all tokens) computed in the parent.
// Skipped when moeserve is built without Gloo.
#include "parallel/comm/gloo_communicator.h"
#include "parallel/comm/tcp_kv_store.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/dtype.h"
#include "parallel/moe/ep_moe_layer.h"
#include "parallel/moe/moe_layer.h"
#include "tests/unit/moe_layer_fixture.h"

extern char** environ;

namespace moeserve::parallel {
namespace {

constexpr char kChildEnv[] = "MOESERVE_GLOO_CHILD";  // "scenario,rank,world,store_dir,out_prefix"

// ---------------------------------------------------------------------------------------------
// The EP layer, its weights and inputs: deterministic from seeds, so that every child and the
// parent build the same ones (same construction as ep_moe_layer_test.cc).

using test::Layer;
using test::Uniform;

constexpr int64_t kExperts = 8;

std::unique_ptr<Layer> MakeLayer() { return test::MakeLayer(kExperts, kernels::DType::kF32, 42); }

// Tokens per rank (one rank with none at world size 4: it still joins every collective).
std::vector<int64_t> EpTokens(int world) {
  return world == 2 ? std::vector<int64_t>{6, 4} : std::vector<int64_t>{5, 0, 7, 3};
}

// x[r]: rank r's tokens [tokens[r], hidden].
std::vector<std::vector<float>> EpInputs(int world, int64_t hidden) {
  const std::vector<int64_t> tokens = EpTokens(world);
  std::vector<std::vector<float>> x(world);
  uint64_t seed = 7;
  for (int r = 0; r < world; ++r) {
    for (int64_t i = 0; i < tokens[r] * hidden; ++i) x[r].push_back(Uniform(seed, 2.0f));
  }
  return x;
}

// ---------------------------------------------------------------------------------------------
// Child side. Each scenario returns its report lines; "OK" last when everything held.

struct Report {
  std::vector<std::string> lines;
  bool ok = true;
  void Fail(const std::string& what) {
    ok = false;
    lines.push_back("FAIL " + what);
  }
  void Check(bool cond, const std::string& what) {
    if (!cond) Fail(what);
  }
  void CheckOk(const absl::Status& st, const std::string& what) {
    if (!st.ok()) Fail(absl::StrCat(what, ": ", st.ToString()));
  }
};

// Bytes rank src sends rank dst in the AllToAllV checks: zero for some pairs, uneven otherwise.
int64_t VBytes(int src, int dst) { return (src + 2 * dst) % 5 == 0 ? 0 : (src + 2 * dst) % 5 + 3; }
uint8_t VByte(int src, int dst, int64_t i) { return static_cast<uint8_t>(src * 31 + dst * 7 + i); }

// Values whose double sum depends on the order of the terms: 1e16 and -1e16 cancel, and the small
// terms survive or vanish depending on whether they are added before or after the cancellation
// (at world size 4, sums starting at different ranks, as a ring's do, differ).
double DValue(int r, int64_t i) {
  const double v[4] = {1e16, 1.0 + 0.25 * static_cast<double>(i), -1e16, 3.0 + 0.5 * r};
  return v[(r + i) % 4];
}
int64_t IValue(int r, int64_t i) { return (r + 1) * (i + 3) * ((r + i) % 2 ? -1 : 1); }

void Conformance(Communicator& comm, Report& rep) {
  const int rank = comm.rank(), world = comm.world_size();
  // AllToAll, out of place then in place: row p of rank r reaches rank p as row r.
  constexpr int64_t kCount = 3;
  std::vector<int64_t> send(world * kCount), recv(world * kCount, -1);
  for (int p = 0; p < world; ++p) {
    for (int64_t i = 0; i < kCount; ++i) send[p * kCount + i] = rank * 1000 + p * 10 + i;
  }
  rep.CheckOk(comm.AllToAll(send.data(), recv.data(), kCount), "AllToAll");
  std::vector<int64_t> want(world * kCount);
  for (int p = 0; p < world; ++p) {
    for (int64_t i = 0; i < kCount; ++i) want[p * kCount + i] = p * 1000 + rank * 10 + i;
  }
  rep.Check(recv == want, "AllToAll rows");
  rep.CheckOk(comm.AllToAll(send.data(), send.data(), kCount), "AllToAll in place");
  rep.Check(send == want, "AllToAll in place rows");

  // AllToAllV with every count zero and null buffers.
  std::vector<int64_t> zeros(world, 0);
  rep.CheckOk(
      comm.AllToAllV(nullptr, zeros.data(), zeros.data(), nullptr, zeros.data(), zeros.data()),
      "AllToAllV all zero");

  // AllToAllV with uneven and zero counts; segments laid out in REVERSE peer order with 2-byte
  // gaps (not Gloo's packing), received once packed and once scattered the same way.
  for (bool scattered_recv : {false, true}) {
    std::vector<int64_t> sc(world), so(world), rc(world), ro(world);
    int64_t at = 0;
    for (int p = world - 1; p >= 0; --p) {
      sc[p] = VBytes(rank, p);
      so[p] = at;
      at += sc[p] + 2;
    }
    std::vector<uint8_t> sbuf(at, 0xEE);
    for (int p = 0; p < world; ++p) {
      for (int64_t i = 0; i < sc[p]; ++i) sbuf[so[p] + i] = VByte(rank, p, i);
    }
    at = 0;
    if (scattered_recv) {
      for (int p = world - 1; p >= 0; --p) {
        rc[p] = VBytes(p, rank);
        ro[p] = at;
        at += rc[p] + 2;
      }
    } else {
      for (int p = 0; p < world; ++p) {
        rc[p] = VBytes(p, rank);
        ro[p] = at;
        at += rc[p];
      }
    }
    std::vector<uint8_t> rbuf(at + 1, 0xEE);
    const std::string what = scattered_recv ? "AllToAllV scattered" : "AllToAllV packed recv";
    rep.CheckOk(
        comm.AllToAllV(sbuf.data(), sc.data(), so.data(), rbuf.data(), rc.data(), ro.data()), what);
    std::vector<uint8_t> rwant(at + 1, 0xEE);
    for (int p = 0; p < world; ++p) {
      for (int64_t i = 0; i < rc[p]; ++i) rwant[ro[p] + i] = VByte(p, rank, i);
    }
    rep.Check(rbuf == rwant, what + " bytes (gaps must stay untouched)");
  }

  // AllReduce: against the sum / max over ranks 0..world-1 in that order, computed here.
  constexpr int64_t kN = 7;
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
    const std::string name = op == ReduceOp::kSum ? "sum" : "max";
    std::vector<int64_t> iv(kN), iw(kN);
    std::vector<double> dv(kN), dw(kN);
    for (int64_t i = 0; i < kN; ++i) {
      iv[i] = IValue(rank, i);
      dv[i] = DValue(rank, i);
      iw[i] = IValue(0, i);
      dw[i] = DValue(0, i);
      for (int r = 1; r < world; ++r) {
        iw[i] = op == ReduceOp::kSum ? iw[i] + IValue(r, i) : std::max(iw[i], IValue(r, i));
        dw[i] = op == ReduceOp::kSum ? dw[i] + DValue(r, i) : std::max(dw[i], DValue(r, i));
      }
    }
    std::vector<int64_t> ir(kN, -1);
    std::vector<double> dr(kN, -1);
    rep.CheckOk(comm.AllReduce(iv.data(), ir.data(), kN, op), "AllReduce int64 " + name);
    rep.Check(ir == iw, "AllReduce int64 " + name + " values");
    rep.CheckOk(comm.AllReduce(dv.data(), dr.data(), kN, op), "AllReduce double " + name);
    rep.Check(std::memcmp(dr.data(), dw.data(), kN * sizeof(double)) == 0,
              "AllReduce double " + name + " not bitwise the rank-ordered result");
    rep.CheckOk(comm.AllReduce(dv.data(), dv.data(), kN, op), "AllReduce double in place");
    rep.Check(std::memcmp(dv.data(), dw.data(), kN * sizeof(double)) == 0,
              "AllReduce double " + name + " in place");
  }
  rep.CheckOk(comm.Barrier(), "Barrier");
  rep.CheckOk(comm.Barrier(), "second Barrier");
}

// The last rank leaves (exits, goes silent or aborts); the others must get errors.
void Faulty(const std::string& scenario, Communicator& comm, Report& rep) {
  const bool faulty = comm.rank() == comm.world_size() - 1 && scenario != "mismatch";
  // First a collective that works: every connection is up before the faulty rank misbehaves (a
  // rank that exits during the rendezvous fails its peers' CreateGlooCommunicator instead).
  rep.CheckOk(comm.Barrier(), "Barrier before the fault");
  if (faulty && scenario == "exit") std::_Exit(0);  // no report: the parent sees the file absent
  if (faulty && scenario == "silent") std::this_thread::sleep_for(std::chrono::seconds(60));
  if (faulty && scenario == "abort") {
    comm.Abort(absl::CancelledError("test abort"));
    absl::Status st = comm.Barrier();
    rep.Check(st.code() == absl::StatusCode::kCancelled &&
                  st.message().find("test abort") != std::string::npos,
              "after Abort: " + st.ToString());
    return;
  }
  const int world = comm.world_size();
  std::vector<int64_t> v(world, 1), r(world);
  absl::Status st;
  if (scenario == "mismatch") {
    // Every rank sends 4 bytes to every rank, but rank 0 expects 5 from the last rank.
    std::vector<int64_t> sc(world, 4), so(world), rc(world, 4), ro(world);
    if (comm.rank() == 0) rc[world - 1] = 5;
    for (int p = 0; p < world; ++p) so[p] = 4 * p, ro[p] = 4 * p;
    std::vector<uint8_t> sbuf(4 * world, 1), rbuf(4 * world + 1);
    st = comm.AllToAllV(sbuf.data(), sc.data(), so.data(), rbuf.data(), rc.data(), ro.data());
  } else {
    st = comm.AllToAll(v.data(), r.data(), 1);
  }
  // A rank whose share arrived intact may succeed; the next collective must fail everywhere.
  if (st.ok()) st = comm.Barrier();
  rep.Check(!st.ok(), "a collective with a missing or inconsistent peer succeeded");
  rep.lines.push_back(absl::StrCat("CODE ", absl::StatusCodeToString(st.code())));
  rep.lines.push_back(absl::StrCat("MSG ", st.message()));
  rep.Check(!comm.Barrier().ok(), "the group is still usable after a failed collective");
}

void RunEp(Communicator& comm, const std::string& out_path, Report& rep) {
  const int rank = comm.rank(), world = comm.world_size();
  auto layer = MakeLayer();
  absl::StatusOr<ExpertPlacement> placement = ExpertPlacement::Contiguous(1, kExperts, world);
  if (!placement.ok()) return rep.Fail(placement.status().ToString());
  MoeLayerWeights w = layer->weights;
  for (int64_t e = 0; e < kExperts; ++e) {
    if (!placement->Holds(rank, 0, e)) w.experts[e] = {};  // this rank gets only its experts
  }
  auto backend = kernels::MakeCpuBackend(1);
  absl::StatusOr<kernels::DeviceBuffer> tables = BuildExpertTables(*backend, w);
  if (!tables.ok()) return rep.Fail(tables.status().ToString());
  const std::vector<std::vector<float>> x = EpInputs(world, layer->shape.hidden);
  std::vector<float> out(x[rank].size(), -1.0f);
  const ExpertParallelContext ep{&comm, &*placement};
  EpLayerTrace trace;
  for (int call = 0; call < 2; ++call) {  // twice, as a model's layers would
    rep.CheckOk(RunExpertParallelMoeLayer(*backend, layer->shape, w, 0, ep, x[rank].data(),
                                          EpTokens(world)[rank], out.data(), nullptr, &trace),
                absl::StrCat("EP layer call ", call));
  }
  std::ofstream f(out_path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(out.data()),
          static_cast<std::streamsize>(out.size() * sizeof(float)));
}

// The child role: runs only when spawned by the tests below.
TEST(GlooChildRole, Run) {
  const char* env = std::getenv(kChildEnv);
  if (env == nullptr) GTEST_SKIP() << "child role of the Gloo tests; runs only when they spawn it";
  const std::vector<std::string> f = absl::StrSplit(env, ',');
  ASSERT_EQ(f.size(), 5u) << env;
  const std::string& scenario = f[0];
  GlooOptions options;
  options.rank = std::stoi(f[1]);
  options.world_size = std::stoi(f[2]);
  // "tcp:host:port": the TCP rendezvous (a TcpKvServer the parent runs), else a FileStore dir.
  if (f[3].rfind("tcp:", 0) == 0) {
    options.init_addr = f[3].substr(4);
  } else {
    options.file_store_dir = f[3];
  }
  const std::string out_prefix = f[4];
  options.timeout = scenario == "conformance" || scenario == "ep" || scenario == "abort"
                        ? absl::Seconds(30)  // a hang guard in the parent fails the test first
                        : absl::Milliseconds(1500);
  Report rep;
  absl::StatusOr<std::unique_ptr<Communicator>> comm = CreateGlooCommunicator(options);
  if (!comm.ok()) {
    rep.Fail("create: " + comm.status().ToString());
  } else if (scenario == "conformance") {
    Conformance(**comm, rep);
  } else if (scenario == "ep") {
    RunEp(**comm, out_prefix + ".out", rep);
  } else {
    Faulty(scenario, **comm, rep);
  }
  std::ofstream report(out_prefix + ".report");
  for (const std::string& line : rep.lines) report << line << "\n";
  if (rep.ok) report << "OK\n";
}

// ---------------------------------------------------------------------------------------------
// Parent side.

struct ChildResult {
  bool exited = false;  // on its own, before the hang guard
  int exit_code = -1;
  std::string report;  // empty when it wrote none
  std::string out;     // the EP output file (bytes)
  std::string log;     // its stdout + stderr
};

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Spawns `world` children running `scenario` and waits for them. A child still running after
// `hang_guard` is killed (and reported as not exited). `kill_rank` (if >= 0) is killed as soon
// as every other child has exited (the silent peer). `tcp_store`: the children rendezvous through
// a TcpKvServer on a free loopback port (--dist-init-addr) instead of a FileStore directory.
std::vector<ChildResult> RunGroup(const std::string& scenario, int world,
                                  std::chrono::seconds hang_guard, int kill_rank = -1,
                                  bool tcp_store = false) {
  char dir_template[] = "/tmp/moeserve_gloo_XXXXXX";
  const std::string dir = mkdtemp(dir_template);
  std::string store = dir + "/store";
  std::filesystem::create_directory(store);
  std::unique_ptr<TcpKvServer> server;
  if (tcp_store) {
    absl::StatusOr<std::unique_ptr<TcpKvServer>> started = TcpKvServer::Start("127.0.0.1", 0);
    EXPECT_TRUE(started.ok()) << started.status();
    if (!started.ok()) return {};
    server = *std::move(started);
    store = absl::StrCat("tcp:127.0.0.1:", server->port());
  }
  const std::string exe = std::filesystem::read_symlink("/proc/self/exe");
  std::vector<pid_t> pids(world, -1);
  for (int r = 0; r < world; ++r) {
    // Everything the child needs is built before fork: after fork in a threaded process only
    // async-signal-safe calls are allowed until exec.
    const std::string prefix = absl::StrCat(dir, "/rank", r);
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
    env_strings.push_back(
        absl::StrCat(kChildEnv, "=", scenario, ",", r, ",", world, ",", store, ",", prefix));
    std::vector<char*> envp;
    for (std::string& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::string filter = "--gtest_filter=GlooChildRole.Run";
    std::vector<char*> argv = {const_cast<char*>(exe.c_str()), filter.data(), nullptr};
    const int log_fd = ::open((prefix + ".log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const pid_t pid = fork();
    if (pid == 0) {
      ::dup2(log_fd, 1);
      ::dup2(log_fd, 2);
      ::execve(exe.c_str(), argv.data(), envp.data());
      ::_exit(127);
    }
    ::close(log_fd);
    pids[r] = pid;
  }
  std::vector<ChildResult> results(world);
  const auto deadline = std::chrono::steady_clock::now() + hang_guard;
  int running = world;
  while (running > 0) {
    for (int r = 0; r < world; ++r) {
      if (pids[r] < 0) continue;
      int status = 0;
      if (::waitpid(pids[r], &status, WNOHANG) == pids[r]) {
        results[r].exited = true;
        results[r].exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        pids[r] = -1;
        --running;
      }
    }
    const bool only_kill_rank_left = kill_rank >= 0 && running == 1 && pids[kill_rank] >= 0;
    if (running > 0 && (std::chrono::steady_clock::now() > deadline || only_kill_rank_left)) {
      for (int r = 0; r < world; ++r) {
        if (pids[r] < 0) continue;
        ::kill(pids[r], SIGKILL);  // our own child
        ::waitpid(pids[r], nullptr, 0);
        pids[r] = -1;
        --running;
        if (r == kill_rank) results[r].exited = true;  // expected: it was told to stay silent
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (int r = 0; r < world; ++r) {
    const std::string prefix = absl::StrCat(dir, "/rank", r);
    results[r].report = ReadFile(prefix + ".report");
    results[r].out = ReadFile(prefix + ".out");
    results[r].log = ReadFile(prefix + ".log");
  }
  std::filesystem::remove_all(dir);
  return results;
}

bool ReportOk(const ChildResult& c) {
  return c.report.size() >= 3 && c.report.compare(c.report.size() - 3, 3, "OK\n") == 0;
}

class GlooCommunicatorTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    if (!GlooAvailable()) {
      GTEST_SKIP() << "moeserve built without Gloo (MOESERVE_GLOO=OFF or libgloo-dev missing: "
                      "run tools/setup.sh and reconfigure)";
    }
  }
};

TEST_P(GlooCommunicatorTest, ConformanceAcrossProcesses) {
  const int world = GetParam();
  std::vector<ChildResult> res = RunGroup("conformance", world, std::chrono::seconds(20));
  for (int r = 0; r < world; ++r) {
    EXPECT_TRUE(res[r].exited && res[r].exit_code == 0 && ReportOk(res[r]))
        << "rank " << r << " exit " << res[r].exit_code << "\n"
        << res[r].report << res[r].log;
  }
}

// The same checks with the ranks meeting through the TCP rendezvous (what --dist-init-addr uses
// across nodes): the store only carries the addresses, the collectives are Gloo's as above.
TEST_P(GlooCommunicatorTest, ConformanceOverTcpRendezvous) {
  const int world = GetParam();
  std::vector<ChildResult> res = RunGroup("conformance", world, std::chrono::seconds(20), -1,
                                          /*tcp_store=*/true);
  ASSERT_EQ(res.size(), static_cast<size_t>(world));
  for (int r = 0; r < world; ++r) {
    EXPECT_TRUE(res[r].exited && res[r].exit_code == 0 && ReportOk(res[r]))
        << "rank " << r << " exit " << res[r].exit_code << "\n"
        << res[r].report << res[r].log;
  }
}

// A peer that exits after the first collective, one that stops calling, one that aborts, and
// inconsistent AllToAllV counts: every other rank's collective (or its next one) fails, never
// hangs, and the group stays failed.
TEST_P(GlooCommunicatorTest, MissingPeerIsAnErrorNotAHang) {
  const int world = GetParam();
  for (const std::string scenario : {"exit", "silent", "abort", "mismatch"}) {
    SCOPED_TRACE(scenario);
    std::vector<ChildResult> res =
        RunGroup(scenario, world, std::chrono::seconds(15), scenario == "silent" ? world - 1 : -1);
    bool some_deadline = false;
    const int checked = scenario == "mismatch" ? world : world - 1;  // mismatch: no faulty rank
    for (int r = 0; r < checked; ++r) {
      EXPECT_TRUE(res[r].exited && res[r].exit_code == 0 && ReportOk(res[r]))
          << "rank " << r << " exit " << res[r].exit_code << "\n"
          << res[r].report << res[r].log;
      some_deadline |= res[r].report.find("CODE DEADLINE_EXCEEDED") != std::string::npos &&
                       res[r].report.find("AllToAll on rank") != std::string::npos;
    }
    const ChildResult& last = res[world - 1];
    EXPECT_TRUE(last.exited) << "faulty rank did not finish";
    if (scenario == "abort") {
      EXPECT_TRUE(ReportOk(last)) << last.report << last.log;
    }
    // Nobody answers a silent peer's collective: someone must time out and say which collective.
    // Inconsistent counts: the rank that expects other counts says so.
    if (scenario == "mismatch") {
      EXPECT_NE(res[0].report.find("CODE INVALID_ARGUMENT"), std::string::npos) << res[0].report;
      EXPECT_NE(res[0].report.find("inconsistent counts: rank " + std::to_string(world - 1) +
                                   " sends 4 bytes to rank 0, which expects 5"),
                std::string::npos)
          << res[0].report;
    }
    if (scenario == "silent") {
      EXPECT_TRUE(some_deadline) << res[0].report;
    }
  }
}

// The expert-parallel MoE layer across processes, bitwise equal to world size 1.
TEST_P(GlooCommunicatorTest, EpMoeLayerBitwiseEqualToWorldSizeOne) {
  const int world = GetParam();
  auto layer = MakeLayer();
  const int64_t hidden = layer->shape.hidden;
  const std::vector<std::vector<float>> x = EpInputs(world, hidden);
  std::vector<float> all_x;
  for (const auto& xr : x) all_x.insert(all_x.end(), xr.begin(), xr.end());
  const int64_t total = static_cast<int64_t>(all_x.size()) / hidden;
  auto backend = kernels::MakeCpuBackend(1);
  auto tables = BuildExpertTables(*backend, layer->weights);
  ASSERT_TRUE(tables.ok()) << tables.status();
  MoeWorkspace workspace;
  std::vector<float> expected(all_x.size());
  std::vector<int64_t> counts(kExperts, 0);
  ASSERT_TRUE(RunMoeLayer(*backend, layer->shape, layer->weights, workspace, all_x.data(), total,
                          expected.data(), nullptr, counts.data())
                  .ok());

  std::vector<ChildResult> res = RunGroup("ep", world, std::chrono::seconds(30));
  int64_t offset = 0;
  const std::vector<int64_t> tokens = EpTokens(world);
  for (int r = 0; r < world; ++r) {
    ASSERT_TRUE(res[r].exited && res[r].exit_code == 0 && ReportOk(res[r]))
        << "rank " << r << " exit " << res[r].exit_code << "\n"
        << res[r].report << res[r].log;
    const size_t bytes = static_cast<size_t>(tokens[r] * hidden) * sizeof(float);
    ASSERT_EQ(res[r].out.size(), bytes) << "rank " << r;
    if (bytes > 0) {
      EXPECT_EQ(0, std::memcmp(res[r].out.data(), expected.data() + offset * hidden, bytes))
          << "rank " << r << " output differs from world size 1";
    }
    offset += tokens[r];
  }
}

INSTANTIATE_TEST_SUITE_P(Worlds, GlooCommunicatorTest, ::testing::Values(2, 4),
                         [](const ::testing::TestParamInfo<int>& p) {
                           return absl::StrCat("world", p.param);
                         });

TEST(GlooCommunicatorOptions, BadOptionsAreErrors) {
  if (!GlooAvailable()) GTEST_SKIP() << "moeserve built without Gloo";
  GlooOptions o;
  o.rank = 2;
  o.world_size = 2;
  o.file_store_dir = "/tmp";
  EXPECT_EQ(CreateGlooCommunicator(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.rank = 0;
  o.file_store_dir.clear();
  EXPECT_EQ(CreateGlooCommunicator(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.init_addr = "10.0.0.1:29500";
  o.file_store_dir = "/tmp";  // two rendezvous
  EXPECT_EQ(CreateGlooCommunicator(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.file_store_dir.clear();
  o.init_addr = "no-port";
  EXPECT_EQ(CreateGlooCommunicator(o).status().code(), absl::StatusCode::kInvalidArgument);
}

// An init address nobody listens on: DeadlineExceeded within the timeout, naming the address.
TEST(GlooCommunicatorOptions, UnreachableInitAddrIsDeadlineExceeded) {
  if (!GlooAvailable()) GTEST_SKIP() << "moeserve built without Gloo";
  // A port that was free a moment ago: bind a server, note its port, close it.
  int port = 0;
  {
    absl::StatusOr<std::unique_ptr<TcpKvServer>> s = TcpKvServer::Start("127.0.0.1", 0);
    ASSERT_TRUE(s.ok()) << s.status();
    port = (*s)->port();
  }
  GlooOptions o;
  o.rank = 1;
  o.world_size = 2;
  o.init_addr = absl::StrCat("127.0.0.1:", port);
  o.timeout = absl::Milliseconds(400);
  absl::StatusOr<std::unique_ptr<Communicator>> comm = CreateGlooCommunicator(o);
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded) << comm.status();
  EXPECT_NE(comm.status().message().find(o.init_addr), std::string::npos) << comm.status();
}

// The TCP rendezvous stops waiting as soon as its check fails (the daemon's check: a rank it
// spawned has exited), with the check's status instead of the timeout's.
TEST(GlooCommunicatorOptions, RendezvousCheckEndsTheWait) {
  if (!GlooAvailable()) GTEST_SKIP() << "moeserve built without Gloo";
  absl::StatusOr<std::unique_ptr<TcpKvServer>> server = TcpKvServer::Start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status();
  GlooOptions o;
  o.rank = 0;
  o.world_size = 2;
  o.init_addr = absl::StrCat("127.0.0.1:", (*server)->port());
  o.timeout = absl::Seconds(60);  // the parent of this test (ctest) would time out first
  int polls = 0;
  o.rendezvous_check = [&polls]() -> absl::Status {
    if (++polls < 5) return absl::OkStatus();
    return absl::UnavailableError("rank 1 (pid 1) exited with status 1");
  };
  absl::StatusOr<std::unique_ptr<Communicator>> comm = CreateGlooCommunicator(o);
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kUnavailable) << comm.status();
  EXPECT_NE(comm.status().message().find("rank 1 (pid 1) exited"), std::string::npos)
      << comm.status();
  EXPECT_EQ(polls, 5);
}

// A rank whose peer never starts: the rendezvous ends with DeadlineExceeded, not a hang.
TEST(GlooCommunicatorOptions, PeerThatNeverStartsIsDeadlineExceeded) {
  if (!GlooAvailable()) GTEST_SKIP() << "moeserve built without Gloo";
  char dir_template[] = "/tmp/moeserve_gloo_XXXXXX";
  const std::string dir = mkdtemp(dir_template);
  GlooOptions o;
  o.rank = 0;
  o.world_size = 2;
  o.file_store_dir = dir;
  o.timeout = absl::Milliseconds(300);
  absl::StatusOr<std::unique_ptr<Communicator>> comm = CreateGlooCommunicator(o);
  std::filesystem::remove_all(dir);
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded) << comm.status();
  EXPECT_NE(comm.status().message().find("rendezvous of rank 0 of 2"), std::string::npos)
      << comm.status();
}

}  // namespace
}  // namespace moeserve::parallel
