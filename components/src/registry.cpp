// Registry of component kinds.
#include "neat/components/registry.hpp"

#include <stdexcept>

namespace neat::components {

void Registry::add(ComponentKind kind) {
  auto name = kind.name;
  if (!kinds_.emplace(name, std::move(kind)).second) {
    throw std::logic_error("component kind '" + name + "' registered twice");
  }
}

const ComponentKind& Registry::get(const std::string& name) const {
  auto it = kinds_.find(name);
  if (it == kinds_.end()) {
    throw std::out_of_range("unknown component kind '" + name +
                            "' (known: " + config::join(names(), ", ") + ")");
  }
  return it->second;
}

std::vector<std::string> Registry::names() const {
  std::vector<std::string> out;
  for (const auto& [k, _] : kinds_) out.push_back(k);
  return out;
}

}  // namespace neat::components
