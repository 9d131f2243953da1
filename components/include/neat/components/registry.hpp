// Registry of component kinds by name: a factory and the schema of the kind's `config:` block.
// The built-in kinds are registered, one line each, in cli/builtin.cpp (builtin_registry()).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "neat/components/component.hpp"
#include "neat/config/schema.hpp"

namespace neat::components {

struct ComponentKind {
  std::string name;
  std::string description;
  std::function<std::unique_ptr<Component>()> create;
  std::function<config::Schema()> schema;  ///< schema of the `config:` block
};

class Registry {
 public:
  /// Adds a kind; throws std::logic_error if the name is taken.
  void add(ComponentKind kind);
  /// Throws std::out_of_range listing the known kinds if `name` is unknown.
  const ComponentKind& get(const std::string& name) const;
  bool contains(const std::string& name) const { return kinds_.contains(name); }
  std::vector<std::string> names() const;

 private:
  std::map<std::string, ComponentKind> kinds_;
};

}  // namespace neat::components
