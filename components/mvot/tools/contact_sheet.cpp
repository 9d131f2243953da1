// neat_mvot_sheet: writes a contact sheet PNG of Fashion-MNIST test images (top row) and their
// reconstructions through the codebook (bottom row), and prints the strip's mean PSNR.
// Usage: neat_mvot_sheet [codebook=models/mvot/codebook.msgpack]
//                        [out=docs/img/mvot_reconstructions.png] [count=16]
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "neat/mvot/codebook.hpp"
#include "neat/mvot/image_io.hpp"

int main(int argc, char** argv) {
  using namespace neat::mvot;
  const std::string cb_path = argc > 1 ? argv[1] : "models/mvot/codebook.msgpack";
  const std::string out = argc > 2 ? argv[2] : "docs/img/mvot_reconstructions.png";
  const int count = argc > 3 ? std::atoi(argv[3]) : 16;
  try {
    const auto cb = Codebook::load(cb_path);
    const auto images = read_idx_images(std::filesystem::path(std::string(kFashionMnistDir)) /
                                        "t10k-images-idx3-ubyte.gz");
    std::vector<GrayImage> originals, recons;
    double psnr = 0.0;
    for (int i = 0; i < count; ++i) {
      const auto img = images.image(static_cast<std::size_t>(i));
      const auto rec = cb.decode(cb.encode(img));
      psnr += psnr_db(image_mse(img, rec));
      originals.push_back({kImageSide, kImageSide, {img.begin(), img.end()}});
      recons.push_back({kImageSide, kImageSide, rec});
    }
    originals.insert(originals.end(), recons.begin(), recons.end());
    // Three times larger (area resampling of an integer upscale replicates pixels) for viewing.
    GrayImage sheet = contact_sheet(originals, count, 2);
    sheet = resample_area(sheet, sheet.width * 3, sheet.height * 3);
    write_png(out, sheet);
    std::printf(
        "wrote %s: top row originals (test images 0..%d), bottom row reconstructions; "
        "mean per-image PSNR %.2f dB\n",
        out.c_str(), count - 1, psnr / count);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "neat_mvot_sheet: %s\n", e.what());
    return 1;
  }
  return 0;
}
