#include "common/parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include <pthread.h>

namespace pqkit {
namespace {

std::atomic<InterruptChecker> g_checker{nullptr};

// Polling takes the GIL, so the calling thread polls at most every 20 ms.
class InterruptPoller {
public:
    bool due_and_fired() {
        InterruptChecker checker = g_checker.load();
        if (checker == nullptr) return false;
        auto now = std::chrono::steady_clock::now();
        if (now - last_ < std::chrono::milliseconds(20)) return false;
        last_ = now;
        return checker();
    }

private:
    std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

}  // namespace

void set_interrupt_checker(InterruptChecker checker) { g_checker.store(checker); }

namespace {
std::atomic<size_t> g_min_split_bytes{256 * 1024};
}  // namespace

size_t min_split_bytes_per_thread() { return g_min_split_bytes.load(std::memory_order_relaxed); }
size_t set_min_split_bytes_per_thread(size_t bytes) {
    return g_min_split_bytes.exchange(bytes, std::memory_order_relaxed);
}

int hardware_concurrency() {
    unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : static_cast<int>(n);
}

namespace {

// Worker threads kept between calls, so a short call (one query) does not pay
// for creating threads. One call at a time owns the pool (try_lock); a
// concurrent call from another Python thread, or a nested call from inside a
// worker, starts its own threads instead, as before the pool existed.
//
// Waking a sleeping thread costs tens of microseconds on a VM, as much as a
// whole single-query search, so both sides first spin for a short while (a
// new job for an idle worker, the last helper for the caller) before they
// sleep on a condition variable.
//
// The caller never waits for a helper that has not started: once job(0)
// returns (parallel_for's job returns when no chunk is left), the job is
// closed, a helper that wakes later skips it, and the caller waits only for
// the helpers already inside it. On a busy machine, where a woken thread may
// not run for milliseconds, a call is then never slower than its caller alone
// would be, beyond the chunks that helpers did take.
class ThreadPool {
public:
    // Runs job(0) on the caller and job(1) .. job(helpers) on those pool
    // threads that start before job(0) returns; returns when all that started
    // have finished. Requires the lock.
    void run(int helpers, const std::function<void(int)>& job) {
        {
            std::unique_lock<std::mutex> lock(mutex_);
            while (static_cast<int>(threads_.size()) < helpers) {
                const int id = static_cast<int>(threads_.size()) + 1;
                threads_.emplace_back([this, id] { loop(id); });
            }
            job_ = &job;
            active_ = helpers;
            closed_ = false;
            generation_.fetch_add(1, std::memory_order_release);
        }
        wake_.notify_all();
        job(0);
        {
            std::lock_guard<std::mutex> lock(mutex_);
            closed_ = true;  // from here on running_ only decreases
        }
        if (!spin_until([this] { return running_.load(std::memory_order_acquire) == 0; })) {
            std::unique_lock<std::mutex> lock(mutex_);
            done_.wait(lock, [this] { return running_.load(std::memory_order_acquire) == 0; });
        }
    }
    std::mutex owner;  // held by the call that uses the pool

private:
    template <class Ready>
    static bool spin_until(Ready&& ready) {
        const auto start = std::chrono::steady_clock::now();
        while (!ready()) {
            if (std::chrono::steady_clock::now() - start > std::chrono::microseconds(200)) return false;
            std::this_thread::yield();
        }
        return true;
    }

    void loop(int id) {
        uint64_t seen = 0;
        for (;;) {
            if (!spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; })) {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
            }
            const std::function<void(int)>* job;
            {
                // job_, active_ and closed_ are written under the mutex
                std::lock_guard<std::mutex> lock(mutex_);
                seen = generation_.load(std::memory_order_acquire);
                if (closed_ || id > active_) continue;  // finished without it, or not needed
                job = job_;
                running_.fetch_add(1, std::memory_order_relaxed);
            }
            (*job)(id);  // never throws: parallel_for's job catches everything
            if (running_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
                std::lock_guard<std::mutex> lock(mutex_);  // the caller may be about to sleep
                done_.notify_one();
            }
        }
    }

    std::mutex mutex_;
    std::condition_variable wake_, done_;
    std::vector<std::thread> threads_;  // never joined: the pool lives until the process ends
    const std::function<void(int)>* job_ = nullptr;
    int active_ = 0;
    bool closed_ = true;           // the current job takes no more helpers
    std::atomic<int> running_{0};  // helpers inside the current job
    std::atomic<uint64_t> generation_{0};
};

// Deliberately never destroyed (its threads are still blocked at exit). After
// fork() the child has none of the parent's threads, so it gets a new, empty
// pool and the old one is abandoned.
ThreadPool* g_pool = nullptr;
thread_local bool t_in_worker = false;

// The loop a worker thread is running a body of, for check_interrupt().
struct LoopState {
    std::atomic<bool>* stop;
    bool* interrupted;
    InterruptPoller* poller;  // polled by worker 0 (the calling thread) only
};
thread_local LoopState* t_loop = nullptr;
thread_local int t_worker = -1;
std::once_flag g_pool_once;

ThreadPool& pool() {
    std::call_once(g_pool_once, [] {
        g_pool = new ThreadPool();
        pthread_atfork(nullptr, nullptr, [] { g_pool = new ThreadPool(); });
    });
    return *g_pool;
}

}  // namespace

void check_interrupt() {
    LoopState* const loop = t_loop;
    if (loop == nullptr) return;
    if (loop->stop->load(std::memory_order_relaxed)) throw Interrupted();
    if (t_worker == 0 && loop->poller->due_and_fired()) {
        *loop->interrupted = true;
        loop->stop->store(true);
        throw Interrupted();
    }
}

void parallel_for(size_t n, int n_threads, size_t chunk,
                  const std::function<void(size_t, size_t, int)>& body) {
    if (n == 0) return;
    if (chunk == 0) chunk = 1;
    const size_t n_chunks = (n + chunk - 1) / chunk;
    // A call made from inside a worker runs serially on that worker.
    const int workers = t_in_worker ? 1 : static_cast<int>(
        std::max<size_t>(1, std::min<size_t>(static_cast<size_t>(std::max(n_threads, 1)), n_chunks)));

    std::atomic<size_t> next{0};
    std::atomic<bool> stop{false};
    std::exception_ptr error;
    std::mutex error_mutex;
    bool interrupted = false;
    InterruptPoller poller;

    LoopState state{&stop, &interrupted, &poller};
    const std::function<void(int)> run = [&](int worker) {
        const bool outer = !t_in_worker;
        t_in_worker = true;
        LoopState* const outer_loop = t_loop;
        const int outer_worker = t_worker;
        t_loop = &state;
        t_worker = worker;
        try {
            while (!stop.load(std::memory_order_relaxed)) {
                if (worker == 0 && poller.due_and_fired()) {
                    interrupted = true;
                    stop.store(true);
                    break;
                }
                size_t c = next.fetch_add(1);
                if (c >= n_chunks) break;
                size_t begin = c * chunk;
                body(begin, std::min(n, begin + chunk), worker);
            }
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
            stop.store(true);
        }
        t_loop = outer_loop;
        t_worker = outer_worker;
        if (outer) t_in_worker = false;
    };

    if (workers == 1) {
        run(0);
    } else {
        ThreadPool& shared = pool();
        std::unique_lock<std::mutex> owner(shared.owner, std::try_to_lock);
        if (owner.owns_lock()) {
            shared.run(workers - 1, run);
        } else {
            std::vector<std::thread> threads;
            threads.reserve(static_cast<size_t>(workers - 1));
            for (int w = 1; w < workers; ++w) threads.emplace_back(run, w);
            run(0);
            for (auto& t : threads) t.join();
        }
    }

    if (error) std::rethrow_exception(error);
    if (interrupted) throw Interrupted();
}

}  // namespace pqkit
