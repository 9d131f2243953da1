// Process-wide registry of read-only objects shared by the components of one process (issue 8):
// the byte LM that blt, t2 and blt_predict each load, its SVD factors, the composed-weight
// cache. An entry lives while some holder keeps its shared_ptr (the registry holds a weak_ptr),
// so a process that runs one component (the separate-process shape) simply loads its own copy.
// Invariant: for one key, make() runs at most once while an instance is alive; every caller
// gets the same instance.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <typeinfo>

namespace neat::nn {

/// Type-erased core of shared_instance(); `key` already includes the type.
std::shared_ptr<void> shared_instance_erased(const std::string& key,
                                             const std::function<std::shared_ptr<void>()>& make);

/// The live instance registered under (`key`, T), or the one make() returns, registered. make()
/// runs under the registry's (recursive) lock, so concurrent callers with one key load once;
/// an exception from make() propagates and registers nothing. Thread-safe.
template <typename T>
std::shared_ptr<T> shared_instance(const std::string& key,
                                   const std::function<std::shared_ptr<T>()>& make) {
  using Mutable = std::remove_const_t<T>;
  return std::static_pointer_cast<Mutable>(shared_instance_erased(
      key + "|" + typeid(T).name(),
      [&] { return std::static_pointer_cast<void>(std::const_pointer_cast<Mutable>(make())); }));
}

/// Number of live registered instances (tests, diagnostics).
std::size_t shared_instance_count();

}  // namespace neat::nn
