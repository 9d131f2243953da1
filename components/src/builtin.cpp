// The built-in component kinds; registering a kind is one line here.
#include "neat/components/byte_stats.hpp"
#include "neat/components/online_unigram.hpp"
#include "neat/components/registry.hpp"
#include "neat/components/sink.hpp"
#include "neat/components/source.hpp"

namespace neat::components {

namespace {
template <class T>
ComponentKind kind(std::string name, std::string description) {
  return {std::move(name), std::move(description), [] { return std::make_unique<T>(); },
          [] { return T::schema(); }};
}
}  // namespace

const Registry& builtin_registry() {
  static const Registry registry = [] {
    Registry r;
    r.add(kind<Source>("source", "reads files and publishes their bytes in chunks"));
    r.add(kind<ByteStats>("byte_stats", "per-document byte histogram and order-0 entropy"));
    r.add(kind<Sink>("sink", "collects per-document results into report.json"));
    r.add(kind<OnlineUnigram>("online_unigram",
                              "adaptive order-0 byte model learning at test time under the "
                              "coordinator's grants"));
    return r;
  }();
  return registry;
}

}  // namespace neat::components
