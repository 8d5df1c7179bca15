#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

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

int hardware_concurrency() {
    unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : static_cast<int>(n);
}

void parallel_for(size_t n, int n_threads, size_t chunk,
                  const std::function<void(size_t, size_t, int)>& body) {
    if (n == 0) return;
    if (chunk == 0) chunk = 1;
    const size_t n_chunks = (n + chunk - 1) / chunk;
    const int workers = static_cast<int>(
        std::max<size_t>(1, std::min<size_t>(static_cast<size_t>(std::max(n_threads, 1)), n_chunks)));

    std::atomic<size_t> next{0};
    std::atomic<bool> stop{false};
    std::exception_ptr error;
    std::mutex error_mutex;
    bool interrupted = false;

    auto run = [&](int worker, InterruptPoller* poller) {
        try {
            while (!stop.load(std::memory_order_relaxed)) {
                if (poller != nullptr && poller->due_and_fired()) {
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
    };

    std::vector<std::thread> threads;
    threads.reserve(static_cast<size_t>(workers - 1));
    for (int w = 1; w < workers; ++w) threads.emplace_back(run, w, nullptr);
    InterruptPoller poller;
    run(0, &poller);
    for (auto& t : threads) t.join();

    if (error) std::rethrow_exception(error);
    if (interrupted) throw Interrupted();
}

}  // namespace pqkit
