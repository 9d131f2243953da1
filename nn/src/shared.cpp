// The process-wide registry of shared read-only objects (see shared.hpp).
#include "neat/nn/shared.hpp"

#include <map>
#include <mutex>

namespace neat::nn {

namespace {
std::recursive_mutex& registry_mutex() {
  static std::recursive_mutex m;
  return m;
}
std::map<std::string, std::weak_ptr<void>>& registry() {
  static std::map<std::string, std::weak_ptr<void>> r;
  return r;
}
}  // namespace

std::shared_ptr<void> shared_instance_erased(const std::string& key,
                                             const std::function<std::shared_ptr<void>()>& make) {
  std::lock_guard lock(registry_mutex());
  auto& r = registry();
  if (auto it = r.find(key); it != r.end()) {
    if (auto live = it->second.lock()) return live;
  }
  auto made = make();
  r[key] = made;
  return made;
}

std::size_t shared_instance_count() {
  std::lock_guard lock(registry_mutex());
  std::size_t n = 0;
  for (const auto& [key, weak] : registry()) n += weak.expired() ? 0 : 1;
  return n;
}

}  // namespace neat::nn
