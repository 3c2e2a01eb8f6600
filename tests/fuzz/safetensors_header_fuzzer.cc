// libFuzzer harness: SafetensorsFile::Open on arbitrary file bytes (the 8-byte length, the JSON
// header and the data section), as a checkpoint shard read from disk would give them.
// Oracle: Open never crashes, throws or aborts; an opened file's every tensor view lies inside
// the file (its first and last byte are read, so ASan / SEGV catch a view past the mapping).
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "kernels/dtype.h"
#include "runtime/weights/safetensors_file.h"

namespace {

// One memfd for the whole run: Open takes a path, and /proc/self/fd/N names the memfd without
// touching the disk.
int MemFd() {
  static const int fd = memfd_create("safetensors_fuzz", MFD_CLOEXEC);
  if (fd < 0) {
    std::perror("memfd_create");
    std::abort();
  }
  return fd;
}

void WriteAll(int fd, const uint8_t* data, size_t size) {
  if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0) std::abort();
  while (size > 0) {
    const ssize_t n = write(fd, data, size);
    if (n <= 0) std::abort();
    data += n;
    size -= static_cast<size_t>(n);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = MemFd();
  WriteAll(fd, data, size);
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  auto file = moeserve::runtime::SafetensorsFile::Open(path);
  if (!file.ok()) return 0;
  volatile uint8_t sink = 0;
  for (const auto& [name, info] : (*file)->tensors()) {
    auto view = (*file)->View(name);
    if (!view.ok()) std::abort();  // every listed tensor must have a view
    if (info.end == info.begin) continue;
    const auto* bytes = static_cast<const uint8_t*>(view->data);
    sink = sink + bytes[0] + bytes[info.end - info.begin - 1];
  }
  return 0;
}
