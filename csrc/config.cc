#include "config.h"

#include <cmath>
#include <string>

#include "errors.h"

namespace kvcache {

void GPT2Config::validate() const {
  require_positive(n_vocab, "n_vocab");
  require_positive(n_ctx, "n_ctx");
  require_positive(n_embd, "n_embd");
  require_positive(n_head, "n_head");
  require_positive(n_layer, "n_layer");
  require(n_embd % n_head == 0, "config: n_embd (" + std::to_string(n_embd) + ") must be divisible by n_head (" +
                                    std::to_string(n_head) + ")");
  require(std::isfinite(eps) && eps > 0.0f,
          "config: layer_norm_epsilon must be a positive finite float32, got " + float_text(eps));
}

}  // namespace kvcache
