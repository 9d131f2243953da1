// Out-of-line anchor for the Component vtable, and ProfileSettings (de)serialisation.
#include "neat/components/component.hpp"

#include <stdexcept>

namespace neat::components {

nlohmann::json ProfileSettings::to_json() const {
  return {{"profile", profile},
          {"precision", precision},
          {"batch_size", batch_size},
          {"memory_grant_bytes", memory_grant_bytes},
          {"memory_budget_bytes", memory_budget_bytes},
          {"malloc_arena_max", malloc_arena_max},
          {"mmap_threshold_bytes", mmap_threshold_bytes},
          {"trim_heap", trim_heap}};
}

ProfileSettings ProfileSettings::from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw std::invalid_argument("profile settings: not an object");
  ProfileSettings s;
  try {
    s.profile = j.value("profile", s.profile);
    s.precision = j.value("precision", s.precision);
    s.batch_size = j.value("batch_size", s.batch_size);
    s.memory_grant_bytes = j.value("memory_grant_bytes", s.memory_grant_bytes);
    s.memory_budget_bytes = j.value("memory_budget_bytes", s.memory_budget_bytes);
    s.malloc_arena_max = j.value("malloc_arena_max", s.malloc_arena_max);
    s.mmap_threshold_bytes = j.value("mmap_threshold_bytes", s.mmap_threshold_bytes);
    s.trim_heap = j.value("trim_heap", s.trim_heap);
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("profile settings: ") + e.what());
  }
  if (s.precision != "float32" && s.precision != "bf16") {
    throw std::invalid_argument("profile settings: precision '" + s.precision +
                                "' is neither float32 nor bf16");
  }
  if (s.batch_size < 0 || s.malloc_arena_max < 0) {
    throw std::invalid_argument("profile settings: batch_size and malloc_arena_max must be >= 0");
  }
  return s;
}

}  // namespace neat::components
