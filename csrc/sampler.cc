#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "errors.h"
#include "kernels/multiversion.h"

namespace kvcache {

void SamplingParams::validate() const {
  require(std::isfinite(temperature) && temperature >= 0.0f,
          "temperature must be a finite number >= 0, got " + float_text(temperature));
  require(top_k >= 0, "top_k must be >= 0 (0 = off), got " + std::to_string(top_k));
  require(top_p > 0.0f && top_p <= 1.0f, "top_p must be in (0, 1] (1 = off), got " + float_text(top_p));
  require(min_p >= 0.0f && min_p <= 1.0f, "min_p must be in [0, 1] (0 = off), got " + float_text(min_p));
  require(typical_p > 0.0f && typical_p <= 1.0f, "typical_p must be in (0, 1] (1 = off), got " + float_text(typical_p));
}

// The largest value is found in vector lanes first, then its first index: the scalar scan was about 1% of a
// batch-8 decode step's profile, and greedy kvcache.sample over (8, 50257) logits took 412 us with it, 167-224 with
// this. The NaN test rides in the same pass (x != x only for NaN).
KVCACHE_MULTIVERSION
int argmax(const float* values, int n) {
  if (n <= 0) return 0;
  float largest = values[0];
  int nan_seen = values[0] != values[0];
#pragma omp simd reduction(max : largest) reduction(| : nan_seen)
  for (int i = 1; i < n; ++i) {
    largest = values[i] > largest ? values[i] : largest;
    nan_seen |= values[i] != values[i];
  }
  if (nan_seen) return -1;
  for (int i = 0; i < n; ++i) {
    if (values[i] == largest) return i;
  }
  return 0;  // unreachable: largest is one of the values
}

namespace {
[[noreturn]] void fail_nan(const float* logits, int n) {
  int i = 0;
  while (i < n - 1 && !std::isnan(logits[i])) ++i;
  fail("logits contain NaN (token id " + std::to_string(i) + "): the model or its input is broken");
}
}  // namespace

Sampler::Sampler(int n_vocab) : n_vocab_(n_vocab), probs_(n_vocab), ids_(n_vocab), distance_(n_vocab) {}

int Sampler::sample(const float* logits, const SamplingParams& params, float coin, float* processed) {
  if (!params.do_sample || params.temperature == 0.0f) {
    const int best = argmax(logits, n_vocab_);
    if (best < 0) fail_nan(logits, n_vocab_);
    if (processed != nullptr) std::copy(logits, logits + n_vocab_, processed);
    return best;
  }
  for (int i = 0; i < n_vocab_; ++i) {
    if (std::isnan(logits[i])) fail_nan(logits, n_vocab_);  // before top-k's ordering, which NaNs would break
  }
  int* ids = ids_.data();
  float* probs = probs_.data();
  int n = n_vocab_;
  for (int i = 0; i < n; ++i) ids[i] = i;

  // step 1: top-k keeps every token whose logit reaches the k-th largest (as transformers does)
  if (params.top_k > 0 && params.top_k < n) {
    std::nth_element(ids, ids + params.top_k - 1, ids + n, [&](int a, int b) { return logits[a] > logits[b]; });
    const float kth = logits[ids[params.top_k - 1]];
    n = static_cast<int>(std::partition(ids, ids + n, [&](int id) { return logits[id] >= kth; }) - ids);
  }

  // step 2: softmax of logits / temperature over the candidates (left unnormalised; the sum is kept)
  float max_logit = -INFINITY;
  for (int i = 0; i < n; ++i) max_logit = std::max(max_logit, logits[ids[i]]);
  double total = 0.0;
  for (int i = 0; i < n; ++i) {
    // +inf logits take all the mass (inf - inf would be NaN); -inf ones get none
    const float logit = logits[ids[i]];
    probs[ids[i]] = std::isinf(max_logit) && max_logit > 0 ? (logit == max_logit ? 1.0f : 0.0f)
                                                            : std::exp((logit - max_logit) / params.temperature);
    total += probs[ids[i]];
  }

  if (!(total > 0.0)) fail("no token has a finite logit to sample from (all are -inf)");

  // step 3: top-p keeps the most likely tokens until their mass reaches top_p (at least one)
  if (params.top_p < 1.0f) {
    std::sort(ids, ids + n, [&](int a, int b) { return probs[a] > probs[b] || (probs[a] == probs[b] && a < b); });
    const double target = params.top_p * total;
    double kept = 0.0;
    int count = 0;
    while (count < n && kept < target) kept += probs[ids[count++]];
    n = count;
    total = kept;
  }

  // step 4: min-p keeps the tokens at least min_p times as likely as the likeliest
  if (params.min_p > 0.0f) {
    float top = 0.0f;
    for (int i = 0; i < n; ++i) top = std::max(top, probs[ids[i]]);
    const float floor = params.min_p * top;
    const int before = n;
    n = static_cast<int>(std::partition(ids, ids + n, [&](int id) { return probs[id] >= floor; }) - ids);
    if (n < before) {
      total = 0.0;
      for (int i = 0; i < n; ++i) total += probs[ids[i]];
    }
  }

  // step 5: typical-p keeps the tokens whose surprise is closest to the entropy, until their mass reaches typical_p
  if (params.typical_p < 1.0f) n = keep_typical(ids, n, total, params.typical_p);

  if (processed != nullptr) {
    std::fill(processed, processed + n_vocab_, -INFINITY);
    for (int i = 0; i < n; ++i) processed[ids[i]] = logits[ids[i]] / params.temperature;
  }

  // step 6: draw from the renormalised candidates
  const double threshold = coin * total;
  double cumulative = 0.0;
  for (int i = 0; i < n; ++i) {
    cumulative += probs[ids[i]];
    if (threshold < cumulative) return ids[i];
  }
  return ids[n - 1];  // coin * total rounded onto the very end
}

int Sampler::keep_typical(int* ids, int n, double& total, float mass) {
  // As transformers' TypicalLogitsWarper: surprise -log p against the entropy H of the candidates, ascending
  // |surprise - H|; the cut is the first token where the cumulative mass reaches typical_p, and every token with
  // the cut's distance is kept.
  float* distance = distance_.data();
  double entropy = 0.0;
  for (int i = 0; i < n; ++i) {
    const double p = probs_[ids[i]] / total;
    if (p > 0.0) entropy -= p * std::log(p);
  }
  for (int i = 0; i < n; ++i) {
    const double p = probs_[ids[i]] / total;
    distance[ids[i]] = p > 0.0 ? static_cast<float>(std::fabs(-std::log(p) - entropy)) : INFINITY;
  }
  // ties by id: std::stable_sort would allocate a buffer at every step
  std::sort(ids, ids + n,
            [&](int a, int b) { return distance[a] < distance[b] || (distance[a] == distance[b] && a < b); });
  double cumulative = 0.0;
  int cut = 0;
  while (cut < n - 1 && (cumulative += probs_[ids[cut]] / total) < mass) ++cut;
  const float limit = distance[ids[cut]];
  int kept = cut + 1;
  while (kept < n && distance[ids[kept]] <= limit) ++kept;
  double kept_mass = 0.0;
  for (int i = 0; i < kept; ++i) kept_mass += probs_[ids[i]];
  total = kept_mass;
  return kept;
}

}  // namespace kvcache
