// One parallel-for helper for the whole engine.
//
// Work items are handed out in chunks through an atomic counter. The calling
// thread is worker 0 and is the only one that polls for Ctrl-C (through a
// callback installed by the bindings, which takes the GIL briefly). A worker
// exception is captured and rethrown on the calling thread after all workers
// have joined. Results never depend on the number of threads because every
// item is computed by exactly one worker with no shared accumulation.
#pragma once

#include <cstddef>
#include <functional>
#include <stdexcept>

namespace pqkit {

// Thrown (on the calling thread) when the user interrupted a long call.
struct Interrupted : std::runtime_error {
    Interrupted() : std::runtime_error("interrupted") {}
};

// Returns true when the caller should stop (e.g. a pending KeyboardInterrupt).
using InterruptChecker = bool (*)();
void set_interrupt_checker(InterruptChecker checker);

int hardware_concurrency();

// A single query's scan is split over threads only when each thread gets at
// least this many bytes of codes (default 256 KiB): below that, waking the
// other threads and repeating the query's table costs more than it saves. Its
// re-ranking splits from an eighth of it in candidate rows per thread (each
// row a cache miss or several, no table to repeat). Settable so tests can
// exercise the split paths on small data (returns the previous value, for
// the test to restore).
size_t min_split_bytes_per_thread();
size_t set_min_split_bytes_per_thread(size_t bytes);

// Inside a parallel_for body: throws Interrupted when the loop is stopping (the user
// interrupted, or another worker failed), polling the checker on the calling thread at most
// every 20 ms; outside one it does nothing. Bodies whose one chunk can run for long (a large
// block of queries) call it between their inner blocks, so Ctrl-C stops them promptly.
void check_interrupt();

// Calls body(begin, end, worker) over [0, n) in chunks of at most `chunk`
// items. Throws Interrupted if the checker fired, or the first worker error.
void parallel_for(size_t n, int n_threads, size_t chunk,
                  const std::function<void(size_t, size_t, int)>& body);

}  // namespace pqkit
