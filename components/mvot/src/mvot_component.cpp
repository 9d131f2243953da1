// mvot component: item assembly, modality decision, tokenization, statistics.
#include "neat/mvot/mvot_component.hpp"

#include "neat/components/paths.hpp"

#include "neat/components/messages.hpp"
#include "neat/mvot/modality.hpp"
#include "neat/mvot/tokens.hpp"

namespace neat::mvot {

config::Schema MvotComponent::schema() {
  using config::Schema;
  return Schema::map()
      .optional("codebook", Schema::string().default_value("models/mvot/codebook.msgpack"),
                "VQ codebook file written by `neat train mvot`")
      .optional("input", Schema::string().default_value("input.item"),
                "topic of InputChunk messages")
      .optional("output", Schema::string().default_value("tokens"), "topic for neat.Tokens")
      .optional("stats_topic", Schema::string().default_value("mvot.stats"),
                "topic for neat.MvotStats")
      .optional("stats_every", Schema::integer(0, 1'000'000'000).default_value("0"),
                "publish statistics every n items (0: only at end of stream)");
}

MvotStats MvotComponent::current_stats() const {
  MvotStats s = stats_;
  s.mean_psnr_db = s.images ? psnr_sum_ / static_cast<double>(s.images) : 0.0;
  const auto items = s.text_items + s.image_items;
  s.mean_confidence = items ? confidence_sum_ / static_cast<double>(items) : 0.0;
  return s;
}

Tokens MvotComponent::tokenize(std::uint64_t doc_id, const std::string& path,
                               std::span<const std::uint8_t> item,
                               std::vector<std::int32_t>& tokens) {
  if (!codebook_) throw std::logic_error("mvot: tokenize before a codebook is loaded");
  Tokens out;
  out.doc_id = doc_id;
  out.path = path;
  out.item_bytes = item.size();
  out.codebook_size = codebook_->size();
  const ModalityDecision d = decide_modality(item);
  out.confidence = d.confidence;
  confidence_sum_ += d.confidence;
  tokens.clear();
  if (d.modality == Modality::image) {
    try {
      std::size_t count = 0;
      const auto pixels = item_images_28(item, d.format, count);
      const auto codes = codebook_->encode_batch(pixels, count);
      double psnr = 0.0;
      for (std::size_t i = 0; i < count; ++i) {
        std::span<const std::int32_t> c(codes.data() + i * kCodesPerImage, kCodesPerImage);
        const auto t = image_codes_to_tokens(c, codebook_->size());
        tokens.insert(tokens.end(), t.begin(), t.end());
        psnr += psnr_db(image_mse(std::span(pixels).subspan(i * kPixelsPerImage, kPixelsPerImage),
                                  codebook_->decode(c)));
      }
      psnr_sum_ += psnr;
      out.modality = "image";
      out.format = std::string(to_string(d.format));
      out.images = count;
      out.psnr_db = psnr / static_cast<double>(count);
      out.token_count = tokens.size();
      ++stats_.image_items;
      stats_.images += count;
      stats_.image_codes += count * kCodesPerImage;
      return out;
    } catch (const std::exception&) {
      ++stats_.decode_failures;
      tokens.clear();
    }
  }
  tokens = bytes_to_tokens(item);
  out.modality = "text";
  out.format = "none";
  out.token_count = tokens.size();
  ++stats_.text_items;
  stats_.text_tokens += tokens.size();
  return out;
}

void MvotComponent::configure(const YAML::Node& config, components::Context& ctx) {
  std::string file = "models/mvot/codebook.msgpack";
  if (config["codebook"]) file = config["codebook"].as<std::string>();
  if (config["input"]) input_ = config["input"].as<std::string>();
  if (config["output"]) output_ = config["output"].as<std::string>();
  if (config["stats_topic"]) stats_topic_ = config["stats_topic"].as<std::string>();
  if (config["stats_every"]) stats_every_ = config["stats_every"].as<std::uint64_t>();
  if (!codebook_) codebook_.emplace(Codebook::load(components::resolve_path(file)));
  using components::EndOfStream;
  using components::InputChunk;
  bus::subscribe<InputChunk>(
      ctx.node(), input_, [this, &ctx](const InputChunk& chunk, const bus::Message& m) {
        auto tensors = m.tensors();
        if (tensors.size() != 1 || tensors[0].desc().dtype != bus::DType::u8) {
          throw bus::PayloadError("InputChunk must carry one u8 tensor 'bytes'");
        }
        auto& buf = open_[chunk.doc_id];
        const auto bytes = tensors[0].bytes();
        const auto* p = reinterpret_cast<const std::uint8_t*>(bytes.data());
        buf.insert(buf.end(), p, p + bytes.size());
        if (!chunk.last) return;
        std::vector<std::int32_t> tokens;
        const Tokens out = tokenize(chunk.doc_id, chunk.path, buf, tokens);
        open_.erase(chunk.doc_id);
        const auto n = static_cast<std::int64_t>(tokens.size());
        bus::publish(
            ctx.node(), output_, out,
            {bus::TensorOut::from_vector("tokens", bus::DType::i32, {n}, std::move(tokens))});
        const auto items = stats_.text_items + stats_.image_items;
        if (stats_every_ > 0 && items % stats_every_ == 0) {
          bus::publish(ctx.node(), stats_topic_, current_stats());
        }
      });
  bus::subscribe<EndOfStream>(
      ctx.node(), input_, [this, &ctx](const EndOfStream& eos, const bus::Message&) {
        MvotStats s = current_stats();
        s.final = true;
        bus::publish(ctx.node(), stats_topic_, s);
        bus::publish(ctx.node(), output_,
                     EndOfStream{stats_.text_items + stats_.image_items, eos.bytes});
      });
}

nlohmann::json MvotComponent::stats() const {
  const MvotStats s = current_stats();
  return {{"text_items", s.text_items},
          {"image_items", s.image_items},
          {"images", s.images},
          {"image_codes", s.image_codes},
          {"text_tokens", s.text_tokens},
          {"decode_failures", s.decode_failures},
          {"mean_psnr_db", s.mean_psnr_db},
          {"mean_confidence", s.mean_confidence},
          {"open_items", open_.size()},
          {"codebook_size", codebook_ ? codebook_->size() : 0}};
}

}  // namespace neat::mvot

namespace neat::components {

ComponentKind mvot_kind() {
  return {"mvot", "MVoT: modality decision, VQ image codes and bytes in one token space",
          [] { return std::make_unique<neat::mvot::MvotComponent>(); },
          [] { return neat::mvot::MvotComponent::schema(); }};
}

}  // namespace neat::components
