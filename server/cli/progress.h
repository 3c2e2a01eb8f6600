// Progress display for long loads: a bar on a terminal, nothing when stderr is not a tty.
#pragma once

#include <cstdint>
#include <string>

namespace moeserve::server {

class ProgressBar {
 public:
  // total: number of units (e.g. tensors or bytes). Draws on stderr only if it is a terminal.
  ProgressBar(std::string label, int64_t total);
  ~ProgressBar();
  void Update(int64_t done);

 private:
  std::string label_;
  int64_t total_;
  int last_percent_ = -1;
  bool enabled_;
};

}  // namespace moeserve::server
