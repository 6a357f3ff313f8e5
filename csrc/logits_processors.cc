#include "logits_processors.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "errors.h"

namespace kvcache {

void ProcessorParams::validate(int n_vocab) const {
  require(std::isfinite(repetition_penalty) && repetition_penalty > 0.0f,
          "repetition_penalty must be a finite number > 0 (1 = off), got " + float_text(repetition_penalty));
  require(no_repeat_ngram_size >= 0,
          "no_repeat_ngram_size must be >= 0 (0 = off), got " + std::to_string(no_repeat_ngram_size));
  require(min_new_tokens >= 0, "min_new_tokens must be >= 0, got " + std::to_string(min_new_tokens));
  for (int id : eos_token_ids) {
    require(id >= 0 && id < n_vocab, "eos_token_id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                         std::to_string(n_vocab) + ")");
  }
}

LogitsProcessor::LogitsProcessor(int n_vocab) : n_vocab_(n_vocab), scores_(n_vocab), seen_(n_vocab, 0) {}

const float* LogitsProcessor::apply(const float* logits, const ProcessorParams& params, const int* sequence, int n,
                                    int generated) {
  float* scores = scores_.data();
  std::copy(logits, logits + n_vocab_, scores);
  if (params.repetition_penalty != 1.0f) {
    const float penalty = params.repetition_penalty;
    for (int i = 0; i < n; ++i) {
      const int t = sequence[i];
      if (seen_[t]) continue;
      seen_[t] = 1;
      scores[t] = scores[t] < 0.0f ? scores[t] * penalty : scores[t] / penalty;
    }
    for (int i = 0; i < n; ++i) seen_[sequence[i]] = 0;
  }
  const int g = params.no_repeat_ngram_size;
  if (g > 0 && n + 1 >= g) {
    // the last g-1 tokens followed by t would repeat an n-gram: ban every t that followed them before
    const int* tail = sequence + n - (g - 1);
    for (int start = 0; start + g <= n; ++start) {
      if (std::equal(tail, tail + g - 1, sequence + start)) scores[sequence[start + g - 1]] = -INFINITY;
    }
  }
  if (generated < params.min_new_tokens) {
    for (int id : params.eos_token_ids) scores[id] = -INFINITY;
  }
  return scores;
}

}  // namespace kvcache
