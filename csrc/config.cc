#include "config.h"

#include <cmath>
#include <string>

#include "errors.h"

namespace kvcache {

void GPT2Config::validate() const {
  auto positive = [](int value, const char* name) {
    require(value > 0, std::string("config: ") + name + " must be positive, got " + std::to_string(value));
  };
  positive(n_vocab, "n_vocab");
  positive(n_ctx, "n_ctx");
  positive(n_embd, "n_embd");
  positive(n_head, "n_head");
  positive(n_layer, "n_layer");
  require(n_embd % n_head == 0, "config: n_embd (" + std::to_string(n_embd) + ") must be divisible by n_head (" +
                                    std::to_string(n_head) + ")");
  require(std::isfinite(eps) && eps > 0.0f,
          "config: layer_norm_epsilon must be a positive finite float32, got " + float_text(eps));
}

}  // namespace kvcache
