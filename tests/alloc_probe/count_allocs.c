/* A malloc interposer for tests: counts every heap allocation in the process (malloc, calloc, realloc,
 * posix_memalign, aligned_alloc; C++ operator new goes through malloc). Loaded with LD_PRELOAD; read the count
 * with kvcache_test_alloc_count() through ctypes. While dlsym resolves the real functions (it may allocate
 * itself), requests are served from a static buffer. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <string.h>

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void (*real_free)(void *);

static long allocations;
static char boot[1 << 16];
static size_t boot_used;
static int resolving;

static void *boot_alloc(size_t n) {
  n = (n + 15) & ~(size_t)15;
  if (boot_used + n > sizeof boot) return NULL;
  void *p = boot + boot_used;
  boot_used += n;
  return p;
}

static void resolve(void) {
  if (real_malloc != NULL) return;
  resolving = 1;
  real_malloc = dlsym(RTLD_NEXT, "malloc");
  real_calloc = dlsym(RTLD_NEXT, "calloc");
  real_realloc = dlsym(RTLD_NEXT, "realloc");
  real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
  real_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
  real_free = dlsym(RTLD_NEXT, "free");
  resolving = 0;
}

static void count(void) { __atomic_fetch_add(&allocations, 1, __ATOMIC_RELAXED); }

long kvcache_test_alloc_count(void) { return __atomic_load_n(&allocations, __ATOMIC_RELAXED); }

void *malloc(size_t n) {
  if (resolving) return boot_alloc(n);
  resolve();
  count();
  return real_malloc(n);
}

void *calloc(size_t a, size_t b) {
  if (resolving) {
    void *p = boot_alloc(a * b);
    if (p != NULL) memset(p, 0, a * b);
    return p;
  }
  resolve();
  count();
  return real_calloc(a, b);
}

void *realloc(void *p, size_t n) {
  resolve();
  count();
  return real_realloc(p, n);
}

int posix_memalign(void **out, size_t align, size_t n) {
  resolve();
  count();
  return real_posix_memalign(out, align, n);
}

void *aligned_alloc(size_t align, size_t n) {
  resolve();
  count();
  return real_aligned_alloc(align, n);
}

void free(void *p) {
  if ((char *)p >= boot && (char *)p < boot + sizeof boot) return;
  resolve();
  real_free(p);
}
