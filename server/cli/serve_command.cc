// moeserve serve: the daemon. Loads the model (embedded tiny model unless --model), starts the
// engine, the OpenAI-compatible HTTP front end and the gRPC front end, and serves until SIGTERM /
// SIGINT / SIGHUP; then stops admission (new requests get 503 / UNAVAILABLE), lets in-flight
// requests finish within --drain-timeout, ends what is left (HTTP streams with an error event,
// other calls with 503 / UNAVAILABLE) and exits 0. A second signal during the drain ends it at
// once.
#include <pthread.h>
#include <sys/resource.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "parallel/moe/ep_stats.h"
#include "parallel/moe/skew_profile.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/ep_topology.h"
#include "runtime/engine/rank_set.h"
#include "server/api/serving_context.h"
#include "server/cli/commands.h"
#include "server/cli/ep_process_group.h"
#include "server/cli/model_options.h"
#include "server/cli/progress.h"
#include "server/cli/rank_process.h"
#include "server/grpc/grpc_server.h"
#include "server/http/http_server.h"
#include "server/metrics/metrics.h"
#include "spdlog/spdlog.h"

namespace moeserve::server {
namespace {

struct ServeFlags {
  ModelOptions model;
  std::string host = "0.0.0.0";
  int port = 8000;
  int grpc_port = 50051;
  std::string served_model_name;
  runtime::EngineOptions engine;
  int64_t max_body_bytes = int64_t{4} << 20;
  double drain_timeout_s = 30;
  int http_max_connections = 2048;
  int http_io_threads = 2;
  int ep_size = 1;
  std::string ep_launch = "threads";  // or "processes" (ep_process_group.h)
  int nnodes = 1;
  int node_rank = 0;
  std::string dist_init_addr;
  double comm_timeout_s = 300;
  std::string placement_file;
  std::string router_skew;
  int64_t stats_window_steps = parallel::kDefaultWindowSteps;
};

std::string DefaultServedName(const ModelOptions& m) {
  if (m.model_dir.empty()) return "moeserve-tiny";
  std::filesystem::path p(m.model_dir);
  if (!p.has_filename()) p = p.parent_path();  // "/models/mixtral/" -> "mixtral"
  return p.filename().string();
}

// The effective configuration, one "key = value" a line: printed at start-up and returned by
// ModelInfo.server_config.
std::string DescribeConfig(const ServeFlags& f, const std::string& served_name, int http_port,
                           int grpc_port, int64_t max_model_len) {
  std::ostringstream s;
  s << "model = " << (f.model.model_dir.empty() ? "embedded:tiny" : f.model.model_dir) << "\n"
    << "tokenizer = " << (f.model.tokenizer_path.empty() ? "(default)" : f.model.tokenizer_path)
    << "\n"
    << "served_model_name = " << served_name << "\n"
    << "host = " << f.host << "\n"
    << "port = " << http_port << "\n"
    << "grpc_port = " << grpc_port << "\n"
    << "threads = " << f.model.threads << "\n"
    << "max_model_len = " << max_model_len << "\n"
    << "max_num_seqs = " << f.engine.max_num_seqs << "\n"
    << "max_num_batched_tokens = " << f.engine.max_num_batched_tokens << "\n"
    << "max_queue = " << f.engine.max_queue << "\n"
    << "kv_block_size = " << f.engine.kv_block_size << "\n"
    << "kv_blocks = " << f.engine.kv_blocks << "\n"
    << "kv_cache_bytes = " << f.engine.kv_cache_bytes << "\n"
    << "max_body_bytes = " << f.max_body_bytes << "\n"
    << "http_max_connections = " << f.http_max_connections << "\n"
    << "http_io_threads = " << f.http_io_threads << "\n"
    << "drain_timeout_s = " << f.drain_timeout_s << "\n"
    << "ep_size = " << f.ep_size << "\n"
    << "ep_launch = " << f.ep_launch << "\n"
    << "nnodes = " << f.nnodes << "\n"
    << "node_rank = " << f.node_rank << "\n"
    << "dist_init_addr = "
    << (f.dist_init_addr.empty() ? "(one node: a free loopback port)" : f.dist_init_addr) << "\n"
    << "comm_timeout_s = " << f.comm_timeout_s << "\n"
    << "placement = " << (f.placement_file.empty() ? "(contiguous)" : f.placement_file) << "\n"
    << "router_skew = " << (f.router_skew.empty() ? "(off)" : f.router_skew) << "\n"
    << "stats_window_steps = " << f.stats_window_steps << "\n"
    << "max_routing_entries = " << f.engine.max_routing_entries << "\n"
    << "recorder_max_steps = " << f.engine.recorder_max_steps << "\n"
    << "eplb_extra_experts = " << f.engine.eplb_extra_experts_per_rank << "\n"
    << "eplb_interval_steps = "
    << (f.engine.eplb_interval_steps > 0 ? std::to_string(f.engine.eplb_interval_steps)
                                         : std::string("0 (off)"))
    << "\n"
    << "eplb_threshold = " << f.engine.eplb_threshold << "\n";
  return s.str();
}

const char* SignalName(int sig) {
  switch (sig) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGHUP:
      return "SIGHUP";
    default:
      return "signal";
  }
}

// The expert-parallel group failed while serving (a rank died, a collective timed out, a rank
// aborted): health turns NOT_SERVING / 503 at once, open calls end with 503 / UNAVAILABLE, the
// rank processes are reaped, and the exit status is 1 with the rank and cause on stderr.
int FailGroup(const absl::Status& failure, ServingContext& ctx, HttpFrontEnd& http,
              GrpcFrontEnd& grpc, std::unique_ptr<runtime::Engine>& engine, EpProcessGroup* group) {
  ctx.draining.store(true);
  grpc.SetNotServing();
  // The rank that ended, if a spawned one did (its pid and signal or status), is the cause; the
  // collective's error says what this rank saw.
  std::vector<std::string> ended = group != nullptr ? group->Ended() : std::vector<std::string>{};
  const std::string cause =
      absl::StrCat(ended.empty() ? "" : absl::StrJoin(ended, "; ") + "; ", failure.message());
  spdlog::error("expert-parallel group failed: {}", cause);
  const std::string reason = absl::StrCat("the expert-parallel group failed: ", cause);
  // The engine has already ended every request with UNAVAILABLE: give the front ends a moment
  // to write those 503s / error events before Stop ends whatever is still open.
  for (int i = 0; i < 100 && ctx.active_calls.load() > 0; ++i)
    absl::SleepFor(absl::Milliseconds(20));
  http.Stop(reason);
  grpc.Stop(absl::Milliseconds(100));
  if (group != nullptr) group->ExpectExits();
  engine.reset();
  if (group != nullptr) {
    group->Reap(absl::Seconds(5));  // the others fail within a step; a stopped one is killed
    ended = group->Ended();         // every rank process, in the order they ended
  }
  std::cerr << absl::StrCat("error: rank 0: expert-parallel group failed: ",
                            ended.empty() ? "" : absl::StrJoin(ended, "; ") + "; ",
                            failure.message(), "\n");
  return 1;
}

int RunServe(ServeFlags f) {
  // Block the shutdown signals in every thread (threads inherit the mask): the main thread takes
  // them synchronously with sigwait below, so no handler runs in an arbitrary thread. SIGHUP
  // (a closed terminal, `kill -HUP`) drains like SIGTERM: there is no configuration to reload,
  // and its default action would kill the process without a drain. Under `nohup` (SIGHUP
  // ignored) it stays ignored: a blocked signal would be queued for sigwait even if ignored.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  struct sigaction hup {};
  if (sigaction(SIGHUP, nullptr, &hup) == 0 && hup.sa_handler != SIG_IGN) {
    sigaddset(&signals, SIGHUP);
  }
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a client that hung up makes writes fail, not the process die
  // Every HTTP connection and gRPC stream holds a file descriptor: allow as many as the hard limit.
  if (rlimit files; getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }

  f.engine.kv_block_size = f.model.kv_block_size;
  f.engine.kv_blocks = f.model.kv_blocks;
  f.engine.gpu_memory_utilization = f.model.gpu_memory_utilization;
  if (absl::Status valid = f.engine.Validate(); !valid.ok()) {
    std::cerr << "error: " << valid.message() << "\n";
    return 2;
  }
  absl::StatusOr<std::unique_ptr<runtime::Tokenizer>> tokenizer = LoadTokenizerFor(f.model);
  if (!tokenizer.ok()) {
    std::cerr << "error: " << tokenizer.status().message() << "\n";
    return 1;
  }
  std::optional<parallel::SkewProfile> skew;
  if (!f.router_skew.empty()) {
    absl::StatusOr<parallel::SkewProfile> parsed = parallel::ParseSkewProfile(f.router_skew);
    if (!parsed.ok()) {
      std::cerr << "error: --router-skew: " << parsed.status().message() << "\n";
      return 2;
    }
    skew = *parsed;
  }
  std::optional<ProgressBar> bar;  // created on the first callback, when the total is known
  runtime::RankSetOptions rank_options{.model_dir = f.model.model_dir,
                                       .ep_size = f.ep_size,
                                       .placement_file = f.placement_file,
                                       .threads = f.model.threads,
                                       .progress =
                                           [&](int64_t done, int64_t total) {
                                             if (f.model.model_dir.empty()) return;
                                             if (!bar) bar.emplace("loading tensors", total);
                                             bar->Update(done);
                                           },
                                       .weight_check = f.model.weight_check()};
  rank_options.device = f.model.device;  // --device (ModelOptions)
  absl::StatusOr<runtime::DecodeGraphOptions> graphs = f.model.decode_graphs();
  if (!graphs.ok()) {
    std::cerr << "error: " << graphs.status().message() << "\n";
    return 2;
  }
  rank_options.decode_graphs = *graphs;  // applied only on backends with graphs (rank_set.cc)
  // Ranks as processes (--ep-launch processes): this process's place in the group, the ranks it
  // spawns, the rendezvous; then only this rank's model. Else every rank is a thread here.
  const bool processes = f.ep_launch == "processes" && (f.ep_size > 1 || f.nnodes > 1);
  if (!processes && (f.nnodes > 1 || !f.dist_init_addr.empty())) {
    std::cerr << "error: --nnodes / --dist-init-addr need --ep-launch processes (and --ep-size "
                 "> 1): with threads every rank lives in this one process\n";
    return 2;
  }
  if (processes && f.engine.eplb_interval_steps > 0) {
    // A placement switch needs every rank's model in this process (runtime/engine/eplb.h).
    std::cerr << "error: --eplb-interval-steps needs --ep-launch threads: ranks as processes "
                 "cannot switch placements yet\n";
    return 2;
  }
  std::unique_ptr<EpProcessGroup> group;
  absl::StatusOr<runtime::RankSet> rank_set;
  if (processes) {
    absl::StatusOr<runtime::EpTopology> topology = runtime::ResolveEpTopology(
        {.ep_size = f.ep_size,
         .nnodes = f.nnodes,
         .node_rank = f.node_rank,
         .dist_init_addr = f.dist_init_addr},
        [](const char* name) -> const char* { return std::getenv(name); });
    if (!topology.ok()) {
      std::cerr << "error: " << topology.status().message() << "\n";
      return 2;
    }
    if (topology->rank != 0) {
      // Every rank shares the terminal: say whose line it is; only rank 0 draws progress.
      spdlog::set_pattern(
          absl::StrCat("[%Y-%m-%d %H:%M:%S.%e] [rank ", topology->rank, "] [%l] %v"));
      rank_options.progress = nullptr;
    }
    // The node's cores are split between its rank processes.
    const int cores = f.model.threads > 0 ? f.model.threads
                                          : static_cast<int>(std::thread::hardware_concurrency());
    rank_options.threads = std::max(1, cores / topology->ranks_per_node);
    absl::StatusOr<std::unique_ptr<EpProcessGroup>> started =
        EpProcessGroup::Start(*topology, absl::Seconds(f.comm_timeout_s));
    if (!started.ok()) {
      std::cerr << "error: rank " << topology->rank << ": " << started.status().message() << "\n";
      return 1;
    }
    group = *std::move(started);
    rank_set = runtime::LoadProcessRank(rank_options, group->TakeComm());
  } else {
    rank_set = runtime::LoadRankSet(rank_options);
  }
  if (!rank_set.ok()) {
    std::cerr << "error: " << rank_set.status().message() << "\n";
    return 1;
  }
  for (runtime::RankModel& r : rank_set->ranks) {
    r.model->SetStatsWindowSteps(f.stats_window_steps);
  }
  if (skew) {
    // Load-test skew: the same bias on every rank (the router is replicated).
    for (runtime::RankModel& r : rank_set->ranks) {
      if (absl::Status st = r.model->SetSkewProfile(*skew); !st.ok()) {
        std::cerr << "error: --router-skew: " << st.message() << "\n";
        return 2;
      }
    }
  }
  const std::string source =
      f.model.model_dir.empty() ? std::string("embedded:tiny") : f.model.model_dir;
  absl::StatusOr<std::unique_ptr<runtime::Engine>> engine = runtime::Engine::Create(
      std::move(rank_set->ranks), tokenizer->get(), f.engine, rank_set->placement);
  if (!engine.ok()) {
    std::cerr << "error: " << engine.status().message() << "\n";
    return 1;
  }
  if (group != nullptr && group->topology().rank != 0) {
    return ServeAsRankProcess(*std::move(engine), *group, signals);
  }

  ServerMetrics metrics;
  ServingContext ctx;
  ctx.engine = engine->get();
  ctx.tokenizer = tokenizer->get();
  ctx.metrics = &metrics;
  ctx.model_source = source;
  ctx.max_body_bytes = f.max_body_bytes;
  ctx.limits.served_model_name =
      f.served_model_name.empty() ? DefaultServedName(f.model) : f.served_model_name;
  ctx.limits.max_model_len = (*engine)->max_model_len();
  ctx.limits.num_experts = (*engine)->model_config().num_local_experts;
  ctx.limits.num_layers = (*engine)->model_config().num_hidden_layers;
  ctx.limits.max_routing_entries = f.engine.max_routing_entries;

  HttpFrontEnd http(&ctx, {.host = f.host,
                           .port = f.port,
                           .max_connections = f.http_max_connections,
                           .io_threads = f.http_io_threads});
  if (absl::Status st = http.Start(); !st.ok()) {
    std::cerr << "error: " << st.message() << "\n";
    return 1;
  }
  GrpcFrontEnd grpc(&ctx, absl::StrCat(f.host, ":", f.grpc_port));
  if (absl::Status st = grpc.Start(); !st.ok()) {
    std::cerr << "error: " << st.message() << "\n";
    return 1;
  }
  ctx.server_config = DescribeConfig(f, ctx.limits.served_model_name, http.port(), grpc.port(),
                                     ctx.limits.max_model_len);
  std::cerr << "moeserve serve: effective configuration\n" << ctx.server_config;
  spdlog::info("serving '{}': HTTP on {}:{}, gRPC on {}:{}", ctx.limits.served_model_name, f.host,
               http.port(), f.host, grpc.port());

  // Serve until a shutdown signal, or until the expert-parallel group fails (a rank died, a
  // collective timed out): its in-flight requests have then already ended with UNAVAILABLE.
  int sig = 0;
  absl::Status group_failure;
  while (sig <= 0 && group_failure.ok()) {
    const timespec wait = absl::ToTimespec(absl::Milliseconds(50));
    sig = sigtimedwait(&signals, nullptr, &wait);
    group_failure = (*engine)->GroupFailure();
  }
  if (!group_failure.ok()) {
    return FailGroup(group_failure, ctx, http, grpc, *engine, group.get());
  }
  spdlog::info("{}: draining (at most {} s; a second signal stops at once)", SignalName(sig),
               f.drain_timeout_s);
  const absl::Time deadline = absl::Now() + absl::Seconds(f.drain_timeout_s);
  ctx.draining.store(true);
  grpc.SetNotServing();
  (*engine)->StopAdmission();
  // Wait for the engine to finish what it admitted and the front ends to write the last chunks,
  // watching for a second signal.
  bool drained = false;
  bool forced = false;
  for (;;) {
    if ((*engine)->WaitUntilIdle(absl::ZeroDuration()) && ctx.active_calls.load() == 0) {
      drained = true;
      break;
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) break;
    const timespec wait = absl::ToTimespec(std::min(left, absl::Milliseconds(20)));
    if (int again = sigtimedwait(&signals, nullptr, &wait); again > 0) {
      spdlog::warn("{} during the drain: stopping now", SignalName(again));
      forced = true;
      break;
    }
  }
  if (!drained) {
    spdlog::warn("{}: {} calls still open are ended", forced ? "stopping" : "drain timeout",
                 ctx.active_calls.load());
  }
  // HTTP first: it ends open streams with an error event and open calls with 503, cancelling
  // their engine requests; then gRPC cancels its own calls.
  http.Stop(forced ? "the server is stopping now (a second signal arrived during the drain)"
                   : absl::StrCat("the server is shutting down: the drain (--drain-timeout=",
                                  f.drain_timeout_s, " s) ended before this request"));
  grpc.Stop(absl::Milliseconds(100));
  if (group != nullptr) group->ExpectExits();
  engine->reset();  // cancels what is left and joins the workers (and ends the rank group)
  if (group != nullptr) {
    if (std::vector<std::string> failed = group->Reap(absl::Seconds(10)); !failed.empty()) {
      std::cerr << "error: rank 0: " << absl::StrJoin(failed, "; ") << "\n";
      return 1;
    }
  }
  spdlog::info("stopped{}", drained ? "" : " (drain timed out)");
  return 0;
}

}  // namespace

void AddServeCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<ServeFlags>();
  ServeFlags& f = *flags;
  CLI::App* cmd =
      app.add_subcommand("serve",
                         "Serve the model over OpenAI-compatible HTTP (/v1/completions, "
                         "/v1/chat/completions, /v1/models, /health, /metrics) and gRPC");
  f.model.AddTo(*cmd);
  // Here the engine sizes the KV pools, so --kv-blocks means blocks per rank.
  cmd->get_option("--kv-blocks")
      ->description("KV cache blocks per rank (0: as many as --kv-cache-bytes holds)");
  cmd->add_option("--host", f.host, "Address both front ends listen on")
      ->envname("MOESERVE_HOST")
      ->capture_default_str();
  cmd->add_option("--port", f.port, "HTTP port (0: any free port)")
      ->envname("MOESERVE_PORT")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--grpc-port", f.grpc_port, "gRPC port (0: any free port)")
      ->envname("MOESERVE_GRPC_PORT")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--served-model-name", f.served_model_name,
                  "Model name clients use; default: \"moeserve-tiny\" for the embedded model, "
                  "else the model directory's name")
      ->envname("MOESERVE_SERVED_MODEL_NAME");
  cmd->add_option("--max-model-len", f.engine.max_model_len,
                  "Longest prompt + completion in tokens (0: the model's max_position_embeddings)")
      ->envname("MOESERVE_MAX_MODEL_LEN")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--max-num-seqs", f.engine.max_num_seqs, "Running sequences per rank")
      ->envname("MOESERVE_MAX_NUM_SEQS")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--max-num-batched-tokens", f.engine.max_num_batched_tokens,
                  "Tokens per engine step per rank (prefill chunks + decodes)")
      ->envname("MOESERVE_MAX_NUM_BATCHED_TOKENS")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--max-queue", f.engine.max_queue,
                  "Requests waiting for admission; beyond it 429 / RESOURCE_EXHAUSTED")
      ->envname("MOESERVE_MAX_QUEUE")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--kv-cache-bytes", f.engine.kv_cache_bytes,
                  "KV cache memory per rank, used when --kv-blocks is 0")
      ->envname("MOESERVE_KV_CACHE_BYTES")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--max-body-bytes", f.max_body_bytes,
                  "Largest request body (HTTP: 400 past it) / message (gRPC: RESOURCE_EXHAUSTED)")
      ->envname("MOESERVE_MAX_BODY_BYTES")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--drain-timeout", f.drain_timeout_s,
                  "Seconds to let in-flight requests finish after SIGTERM / SIGINT / SIGHUP; "
                  "then HTTP streams end with an error event, other calls with 503")
      ->envname("MOESERVE_DRAIN_TIMEOUT")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--http-max-connections", f.http_max_connections,
                  "Open HTTP connections; past it the oldest one with no request in flight is "
                  "closed to make room, and when all have one a new connection gets 503")
      ->envname("MOESERVE_HTTP_MAX_CONNECTIONS")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--http-io-threads", f.http_io_threads,
                  "Threads running the HTTP event loop (connections and streams cost none)")
      ->envname("MOESERVE_HTTP_IO_THREADS")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  cmd->add_option("--ep-size", f.ep_size,
                  "Expert-parallel ranks (one worker thread each on CPU); the experts of every "
                  "layer are split between them, attention runs on each rank's own requests")
      ->envname("MOESERVE_EP_SIZE")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  cmd->add_option("--ep-launch", f.ep_launch,
                  "How the --ep-size ranks run: threads (one process) or processes (one process "
                  "per rank on Gloo: this process is rank 0 and spawns its node's other ranks, "
                  "or each process is one rank under mpirun / srun; docs/expert-parallelism.md)")
      ->envname("MOESERVE_EP_LAUNCH")
      ->check(CLI::IsMember({"threads", "processes"}))
      ->capture_default_str();
  cmd->add_option("--nnodes", f.nnodes,
                  "Nodes of a --ep-launch processes group; each runs --ep-size / --nnodes ranks")
      ->envname("MOESERVE_NNODES")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  cmd->add_option("--node-rank", f.node_rank,
                  "This node's index in [0, --nnodes); node 0 runs rank 0 (the front ends)")
      ->envname("MOESERVE_NODE_RANK")
      ->capture_default_str();
  cmd->add_option("--dist-init-addr", f.dist_init_addr,
                  "host:port where the ranks meet (rank 0's node serves it); needed with "
                  "--nnodes > 1 or mpirun / srun (else MASTER_ADDR:MASTER_PORT); one node: "
                  "default a free loopback port")
      ->envname(runtime::kDistInitAddrEnv);
  cmd->add_option("--comm-timeout", f.comm_timeout_s,
                  "Seconds a rank waits for the rendezvous and for each collective before the "
                  "group is declared failed (--ep-launch processes); must exceed the longest "
                  "gap between ranks finishing their model load (rank 0 starts stepping then)")
      ->envname("MOESERVE_COMM_TIMEOUT")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--placement", f.placement_file,
                  "JSON expert placement (which ranks hold which experts, replicas allowed; see "
                  "docs/expert-parallelism.md); default: contiguous split by --ep-size")
      ->envname("MOESERVE_PLACEMENT");
  cmd->add_option(
         "--router-skew", f.router_skew,
         "Load testing only, off by default: a router-logit bias for every request without "
         "its own router_skew: \"EXPERTS:BIAS\" e.g. \"0,5:2.5\", hot:K[:BIAS], zipf:S, "
         "per-layer-hot:K[:BIAS[:SEED]], drift:K:PERIOD[:BIAS] (docs/imbalance-lab.md; "
         "shifts routing, and so the output)")
      ->envname("MOESERVE_ROUTER_SKEW");
  cmd->add_option("--stats-window-steps", f.stats_window_steps,
                  "Steps in the sliding window of the per-layer imbalance statistics "
                  "(/metrics span=\"window\", GetStats; docs/imbalance-lab.md)")
      ->envname("MOESERVE_STATS_WINDOW_STEPS")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  cmd->add_option("--max-routing-entries", f.engine.max_routing_entries,
                  "Largest routing trace a request may ask for (return_routing): n x tokens x "
                  "layers entries; larger requests get 400 / INVALID_ARGUMENT")
      ->envname("MOESERVE_MAX_ROUTING_ENTRIES")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30))
      ->capture_default_str();
  cmd->add_option("--recorder-max-steps", f.engine.recorder_max_steps,
                  "Steps the load recorder keeps (/v1/lab/recorder/*; a ring, the oldest dropped)")
      ->envname("MOESERVE_RECORDER_MAX_STEPS")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  cmd->add_option("--eplb-extra-experts", f.engine.eplb_extra_experts_per_rank,
                  "Expert rebalancing (EPLB): replicas of hot experts each rank may hold on top "
                  "of its own, per layer (the memory budget, in experts; docs/imbalance-lab.md)")
      ->envname("MOESERVE_EPLB_EXTRA_EXPERTS")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20))
      ->capture_default_str();
  cmd->add_option("--eplb-interval-steps", f.engine.eplb_interval_steps,
                  "Automatic rebalancing: every N engine steps, rebalance when the measured rank "
                  "max/mean over the statistics window exceeds --eplb-threshold (0: off; "
                  "POST /v1/lab/rebalance works either way). Threads ranks on the CPU only")
      ->envname("MOESERVE_EPLB_INTERVAL_STEPS")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30))
      ->capture_default_str();
  cmd->add_option("--eplb-threshold", f.engine.eplb_threshold,
                  "Automatic rebalancing: the rank max/mean (>= 1) above which it rebalances")
      ->envname("MOESERVE_EPLB_THRESHOLD")
      ->check(CLI::Range(1.0, 1e9))
      ->capture_default_str();
  cmd->callback([flags, exit_code]() { *exit_code = RunServe(*flags); });
}

}  // namespace moeserve::server
