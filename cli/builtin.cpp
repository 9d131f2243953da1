// The built-in component kinds; registering a kind is one line here. This lives in the cli
// because it is the one place that sees every component library (components -> bus, nn, ...).
#include "builtin.hpp"

#include "neat/blt/blt_component.hpp"
#include "neat/components/byte_stats.hpp"
#include "neat/components/online_unigram.hpp"
#include "neat/components/sink.hpp"
#include "neat/components/source.hpp"
#include "neat/job/corpus_source.hpp"
#include "neat/job/predictor.hpp"
#include "neat/job/report.hpp"
#include "neat/mvot/mvot_component.hpp"
#include "neat/t2/t2_component.hpp"
#include "neat/titans/titans_component.hpp"

namespace neat::cli {

using components::ByteStats;
using components::ComponentKind;
using components::OnlineUnigram;
using components::Registry;
using components::Sink;
using components::Source;

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
    r.add(kind<job::CorpusSource>("corpus_source",
                                  "streams the prepared corpus split round-robin over domains, "
                                  "with Fashion-MNIST test images spread among the documents"));
    r.add(kind<job::Predictor>("blt_predict",
                               "the byte LM as predictor: per-document code length under the "
                               "base LM and its Transformer²/Titans variants (blt.scores)"));
    r.add(kind<job::Report>("report",
                            "the main job's report: per document, domain and image results next "
                            "to the compressors"));
    r.add(kind<ByteStats>("byte_stats", "per-document byte histogram and order-0 entropy"));
    r.add(kind<Sink>("sink", "collects per-document results into report.json"));
    r.add(kind<OnlineUnigram>("online_unigram",
                              "adaptive order-0 byte model learning at test time under the "
                              "coordinator's grants"));
    r.add(components::mvot_kind());
    r.add(components::titans_kind());
    r.add(components::blt_kind());
    r.add(components::t2_kind());
    return r;
  }();
  return registry;
}

}  // namespace neat::cli
