// Process-wide table of shared engines: the JS threads of one process (the main thread and the
// front-end worker threads) serve one native engine per model version. The thread that loaded a
// version shares it under a key; another thread attaches to it by that key and gets the same
// C++ engine (one copy of the model, one CUDA context). The table holds weak references only: an
// engine is freed when the last JS wrapper that holds it, on any thread, lets go.
#pragma once

#include <cstdint>
#include <memory>

#include "engine/engine.h"

namespace adrank::addon {

// The key under which `engine` is shared (the same key each time for the same engine).
uint64_t share_engine(const std::shared_ptr<Engine>& engine);

// The engine shared under `key`, or null when no thread holds it any more (or the key is unknown).
std::shared_ptr<Engine> attach_engine(uint64_t key);

// Engines shared and still held by some thread (for tests).
size_t shared_engine_count();

}  // namespace adrank::addon
