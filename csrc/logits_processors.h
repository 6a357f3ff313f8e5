// Logits processors: the edits transformers makes to a row's logits before choosing a token, greedy or sampled,
// in its order: repetition penalty, no-repeat n-grams, then EOS suppressed until min_new_tokens. They read the
// row's whole sequence (context, prompt and the tokens generated so far).
#pragma once

#include <cstdint>
#include <vector>

namespace kvcache {

struct ProcessorParams {
  float repetition_penalty = 1.0f;  // > 0; a seen token's logit is divided by it (multiplied when negative); 1 = off
  int no_repeat_ngram_size = 0;     // a token that would repeat an n-gram of the sequence is banned; 0 = off
  int min_new_tokens = 0;           // EOS banned until this many tokens are generated
  std::vector<int> eos_token_ids;   // the tokens that end a row (any of them); empty: none

  bool active() const { return repetition_penalty != 1.0f || no_repeat_ngram_size > 0 || min_new_tokens > 0; }
  // Throws std::invalid_argument naming the offending value.
  void validate(int n_vocab) const;
};

class LogitsProcessor {
 public:
  explicit LogitsProcessor(int n_vocab);  // scratch allocated here, none per call

  // Copies logits (n_vocab) into scratch and applies the processors; returns the scratch. sequence: the row's
  // tokens so far (n of them), generated: how many of them were generated in this call.
  const float* apply(const float* logits, const ProcessorParams& params, const int* sequence, int n, int generated);

 private:
  int n_vocab_;
  std::vector<float> scores_;
  std::vector<uint8_t> seen_;  // (V) tokens already penalised in this call: each is penalised once
};

}  // namespace kvcache
