// Throughput of the CPU matmul (kernels/cpu/matmul.cc) per instruction-set path, at the tiny
// model's shapes: GMAC/s (multiply-adds per second), the median of several timed runs.
//   build/bench/cpu_matmul_bench [--repeat N] [--min-seconds S] [--shape M,N,K]...
// Not a test: timings depend on the machine and its load. docs/cpu-kernels.md has numbers.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/matmul_pack.h"
#include "kernels/dtype.h"

namespace {

using moeserve::kernels::DType;
namespace cpu = moeserve::kernels::cpu;

struct Shape {
  std::string what;
  int64_t m, n, k;
};

double ProcessCpuSeconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

struct Rate {
  double wall;  // GMAC per wall-clock second
  double cpu;   // GMAC per CPU second of the process: what a core does when it is not shared
};

// Median rates of `repeat` runs, each calling the matmul until min_seconds have passed.
Rate Measure(const Shape& s, const std::vector<float>& x, const std::vector<uint16_t>& w,
             std::vector<float>& y, int repeat, double min_seconds) {
  // Weights packed once, as the model loader does (kernels/cpu/matmul_pack.h).
  std::vector<uint8_t> packed(cpu::PackedBytes(DType::kBF16, s.n, s.k));
  cpu::PackWeight(w.data(), DType::kBF16, s.n, s.k, packed.data());
  moeserve::kernels::MatmulParams p{x.data(), packed.data(), DType::kBF16, y.data(), s.m, s.n, s.k};
  p.w_layout = moeserve::kernels::WeightLayout::kCpuPanels;
  cpu::Matmul(p);  // warm up: threads, caches, page faults
  std::vector<double> walls, cpus;
  for (int r = 0; r < repeat; ++r) {
    int64_t calls = 0;
    const double cpu_start = ProcessCpuSeconds();
    const auto start = std::chrono::steady_clock::now();
    double seconds = 0.0;
    do {
      cpu::Matmul(p);
      ++calls;
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    } while (seconds < min_seconds);
    const double gmac = static_cast<double>(calls) * s.m * s.n * s.k * 1e-9;
    walls.push_back(gmac / seconds);
    cpus.push_back(gmac / (ProcessCpuSeconds() - cpu_start));
  }
  std::sort(walls.begin(), walls.end());
  std::sort(cpus.begin(), cpus.end());
  return {walls[walls.size() / 2], cpus[cpus.size() / 2]};
}

}  // namespace

int main(int argc, char** argv) {
  int repeat = 5;
  double min_seconds = 0.2;
  std::vector<Shape> shapes;
  for (int i = 1; i + 1 < argc; i += 2) {
    long long m = 0, n = 0, k = 0;
    if (std::strcmp(argv[i], "--repeat") == 0) {
      repeat = std::max(1, std::atoi(argv[i + 1]));
    } else if (std::strcmp(argv[i], "--min-seconds") == 0) {
      min_seconds = std::atof(argv[i + 1]);
    } else if (std::strcmp(argv[i], "--shape") == 0 &&
               std::sscanf(argv[i + 1], "%lld,%lld,%lld", &m, &n, &k) == 3 && m > 0 && n > 0 &&
               k > 0) {
      shapes.push_back({"custom", m, n, k});
    } else {
      std::fprintf(stderr, "usage: %s [--repeat N] [--min-seconds S] [--shape M,N,K]...\n",
                   argv[0]);
      return 2;
    }
  }
  if (shapes.empty()) {
    shapes = {{"lm_head decode b1", 1, 32000, 256},
              {"lm_head decode b8", 8, 32000, 256},
              {"expert gemm prefill", 2048, 512, 256}};
  }
  // GMAC/cpu-s: per CPU-second of the process; with OMP_WAIT_POLICY=PASSIVE waiting threads sleep,
  // so on a shared machine it is the steadier number (what a core does when it gets to run).
  std::printf("%-20s %-7s %5s %5s %4s %3s %12s %12s\n", "shape", "path", "m", "n", "k", "thr",
              "GMAC/s wall", "GMAC/cpu-s");
  for (const Shape& s : shapes) {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<float> x(static_cast<size_t>(s.m * s.k));
    for (float& v : x) v = dist(rng);
    std::vector<uint16_t> w(static_cast<size_t>(s.n * s.k));
    for (uint16_t& v : w) v = moeserve::kernels::F32ToBf16(dist(rng));
    std::vector<float> y(static_cast<size_t>(s.m * s.n));
    for (cpu::CpuIsa isa : cpu::AvailableCpuIsas()) {
      cpu::SetActiveCpuIsa(isa);
      for (int threads : {1, 2}) {
        omp_set_num_threads(threads);
        const Rate rate = Measure(s, x, w, y, repeat, min_seconds);
        std::printf("%-20s %-7s %5lld %5lld %4lld %3d %12.2f %12.2f\n", s.what.c_str(),
                    std::string(cpu::CpuIsaName(isa)).c_str(), static_cast<long long>(s.m),
                    static_cast<long long>(s.n), static_cast<long long>(s.k), threads, rate.wall,
                    rate.cpu);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}
