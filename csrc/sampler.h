// Sampler: greedy, temperature, top-k, top-p (nucleus), min-p and typical-p, in any combination, in the order
// transformers applies them (temperature, top-k, top-p, min-p, typical-p). Deterministic: the random draw is an
// argument.
#pragma once

#include <cstdint>
#include <vector>

namespace kvcache {

struct SamplingParams {
  bool do_sample = false;    // false: greedy (argmax), the other fields are ignored
  float temperature = 1.0f;  // > 0 divides the logits; 0 means greedy
  int top_k = 0;             // keep the k most likely tokens (ties with the k-th kept); 0 = off
  float top_p = 1.0f;        // keep the smallest set of most likely tokens whose probability reaches top_p; 1 = off
  float min_p = 0.0f;        // keep the tokens at least min_p times as likely as the likeliest; 0 = off
  float typical_p = 1.0f;    // keep the tokens closest to the entropy until their mass reaches typical_p; 1 = off

  // Throws std::invalid_argument naming the offending value.
  void validate() const;
};

class Sampler {
 public:
  explicit Sampler(int n_vocab);  // all scratch is allocated here, none per call

  // logits (n_vocab); coin uniform in [0, 1). Returns a token id. Throws std::invalid_argument when a logit is NaN
  // (a broken model or input: no answer would be right), and when sampling finds no token with a finite logit.
  // processed, when given (n_vocab): the scores the choice was made from, as transformers' output_scores: the
  // logits for greedy; for sampling logit / temperature, and -inf where a filter removed the token.
  int sample(const float* logits, const SamplingParams& params, float coin, float* processed = nullptr);

 private:
  int n_vocab_;
  std::vector<float> probs_;  // (V) unnormalised probabilities, by token id
  std::vector<int> ids_;      // (V) candidate token ids
  std::vector<float> distance_;  // (V) typical-p's |surprise - entropy|, by token id

  // Typical-p over the first n candidates: reorders them, returns how many are kept, sets total to their mass.
  int keep_typical(int* ids, int n, double& total, float mass);
};

// The first index of the largest value; -1 when any value is NaN.
int argmax(const float* values, int n);

// A uniform float in [0, 1) from a 64-bit generator, identical on every platform (unlike std distributions).
template <typename Rng>
float uniform_coin(Rng& rng) {
  return static_cast<float>(rng() >> 40) * (1.0f / 16777216.0f);
}

}  // namespace kvcache
