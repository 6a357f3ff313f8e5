// GilRelease: py::gil_scoped_release that a thread may leave by a thread-exit unwind.
//
// At interpreter shutdown CPython ends a daemon thread that asks for the GIL back by calling pthread_exit, which
// glibc carries out as a forced unwind of the thread's stack. gil_scoped_release takes the GIL back in its
// destructor, which is noexcept: the unwind reaches it and std::terminate aborts the whole process ("terminate
// called without an active exception", pybind/pybind11#2215) whenever a daemon thread is inside a long call as the
// program ends. This destructor may throw, so the unwind passes through it (pybind11's dispatcher rethrows
// abi::__forced_unwind) and the thread ends as CPython intends.
#pragma once

#include <Python.h>

namespace kvcache::bindings {

class GilRelease {
 public:
  GilRelease() : state_(PyEval_SaveThread()) {}
  ~GilRelease() noexcept(false) { PyEval_RestoreThread(state_); }
  GilRelease(const GilRelease&) = delete;
  GilRelease& operator=(const GilRelease&) = delete;

 private:
  PyThreadState* state_;
};

}  // namespace kvcache::bindings
