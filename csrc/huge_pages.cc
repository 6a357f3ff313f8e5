#include "huge_pages.h"

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace kvcache {

namespace {

#if defined(__linux__)
// The whole pages inside [data, data + bytes): madvise needs a page-aligned start, and rounding inward never
// touches a neighbour's memory.
bool inner_pages(const void* data, std::size_t bytes, void** start, std::size_t* length) {
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<std::uintptr_t>(data);
  const std::uintptr_t first = (begin + page - 1) / page * page;
  const std::uintptr_t last = (begin + bytes) / page * page;
  if (last <= first) return false;
  *start = reinterpret_cast<void*>(first);
  *length = last - first;
  return true;
}
#endif

}  // namespace

void advise_huge_pages(void* data, std::size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  void* start;
  std::size_t length;
  if (inner_pages(data, bytes, &start, &length)) ::madvise(start, length, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

void release_mapped_pages(const void* data, std::size_t bytes) {
#if defined(__linux__)
  void* start;
  std::size_t length;
  if (inner_pages(data, bytes, &start, &length)) ::madvise(start, length, MADV_DONTNEED);
#else
  (void)data;
  (void)bytes;
#endif
}

}  // namespace kvcache
