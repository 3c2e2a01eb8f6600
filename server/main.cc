// moeserve: command-line entry point.
#include <cstdio>

int main() {
  std::puts("moeserve");
  return 0;
}
