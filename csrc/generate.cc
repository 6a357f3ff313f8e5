#include "generate.h"

#include <algorithm>
#include <string>

#include "errors.h"

namespace kvcache {

void GenerateOptions::validate(int n_vocab) const {
  require(max_new_tokens >= 0, "max_new_tokens must be >= 0, got " + std::to_string(max_new_tokens));
  require(eos_token_id < n_vocab, "eos_token_id " + std::to_string(eos_token_id) + " is outside the vocabulary [0, " +
                                      std::to_string(n_vocab) + ")");
  sampling.validate();
}

namespace {

int required_length(const std::vector<std::vector<int>>& prompts, const GenerateOptions& options,
                     const CausalLM& model) {
  require(!prompts.empty(), "generate needs at least one prompt");
  int longest = 1;
  for (std::size_t r = 0; r < prompts.size(); ++r) {
    const std::vector<int>& p = prompts[r];
    require(!p.empty(), "prompt " + std::to_string(r) + " is empty; give at least one token");
    for (int id : p) {
      if (id < 0 || id >= model.n_vocab()) {
        fail("token id " + std::to_string(id) + " in prompt " + std::to_string(r) + " is outside the vocabulary [0, " +
             std::to_string(model.n_vocab()) + ")");
      }
    }
    const long total = static_cast<long>(p.size()) + options.max_new_tokens;
    if (total > model.n_ctx()) {
      fail("prompt " + std::to_string(r) + " of " + std::to_string(p.size()) + " tokens plus max_new_tokens=" +
           std::to_string(options.max_new_tokens) + " is " + std::to_string(total) + " tokens, beyond n_ctx=" +
           std::to_string(model.n_ctx()));
    }
    longest = std::max(longest, static_cast<int>(total));
  }
  return longest;
}

}  // namespace

Generator::Generator(const CausalLM& model, std::vector<std::vector<int>> prompts, const GenerateOptions& options)
    : model_(model),
      options_(options),
      sequences_(std::move(prompts)),
      cache_(model.new_cache(std::max<int>(1, static_cast<int>(sequences_.size())),
                             (options.validate(model.n_vocab()), required_length(sequences_, options, model)),
                             options.cache_type)),
      sampler_(model.n_vocab()) {
  const int B = static_cast<int>(sequences_.size());
  int longest_prompt = 0;
  for (int r = 0; r < B; ++r) {
    prompt_lens_.push_back(static_cast<int>(sequences_[r].size()));
    longest_prompt = std::max(longest_prompt, prompt_lens_[r]);
    sequences_[r].reserve(sequences_[r].size() + options.max_new_tokens);
    rngs_.emplace_back(options.seed + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(r));
    if (options.max_new_tokens > 0) active_.push_back(r);
  }
  step_tokens_.assign(B, 0);
  last_tokens_.assign(B, -1);
  // The largest pass: a batched prefill of equal prompts, one prompt, or (without cache) a whole sequence.
  const int widest = options.use_cache ? std::max(B * longest_prompt, B) : cache_.max_seq_len();
  model.reserve(ws_, widest, B, cache_.max_seq_len());
}

bool Generator::step() {
  std::lock_guard<std::mutex> lock(mutex_);
  return advance();
}

bool Generator::done() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return active_.empty();
}

std::vector<int> Generator::last_tokens() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return last_tokens_;
}

std::vector<std::vector<int>> Generator::sequences() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return sequences_;
}

bool Generator::advance() {
  if (active_.empty()) return false;
  std::fill(last_tokens_.begin(), last_tokens_.end(), -1);
  if (!options_.use_cache) {
    decode_uncached();
  } else if (!prefilled_) {
    prefill();
  } else {
    decode_cached();
  }
  prefilled_ = true;
  // Drop finished rows in place (no allocation).
  auto finished = [&](int row) {
    const int produced = static_cast<int>(sequences_[row].size()) - prompt_lens_[row];
    return produced >= options_.max_new_tokens ||
           (options_.eos_token_id >= 0 && sequences_[row].back() == options_.eos_token_id);
  };
  active_.erase(std::remove_if(active_.begin(), active_.end(), finished), active_.end());
  return true;
}

void Generator::run() {
  while (step()) {
  }
}

void Generator::emit(int row, const float* logits) {
  const int token = sampler_.sample(logits, options_.sampling, uniform_coin(rngs_[row]));
  sequences_[row].push_back(token);
  last_tokens_[row] = token;
}

void Generator::prefill() {
  const int V = model_.n_vocab();
  const int n = static_cast<int>(active_.size());
  const bool equal_lengths = std::all_of(active_.begin(), active_.end(),
                                         [&](int row) { return prompt_lens_[row] == prompt_lens_[active_[0]]; });
  if (equal_lengths) {
    // One pass over all prompts: the weights are read once for the whole batch.
    const int T = prompt_lens_[active_[0]];
    std::vector<int> tokens;
    tokens.reserve(static_cast<std::size_t>(n) * T);
    for (int row : active_) tokens.insert(tokens.end(), sequences_[row].begin(), sequences_[row].end());
    model_.forward(tokens.data(), n, T, active_.data(), cache_, ws_, false);
    for (int i = 0; i < n; ++i) emit(active_[i], ws_.logits.data() + static_cast<std::size_t>(i) * V);
  } else {
    // Ragged prompts: each row alone, so no padding ever enters a row's attention.
    for (int row : active_) {
      model_.forward(sequences_[row].data(), 1, prompt_lens_[row], &row, cache_, ws_, false);
      emit(row, ws_.logits.data());
    }
  }
}

void Generator::decode_cached() {
  const int V = model_.n_vocab();
  const int n = static_cast<int>(active_.size());
  for (int i = 0; i < n; ++i) step_tokens_[i] = sequences_[active_[i]].back();
  model_.forward(step_tokens_.data(), n, 1, active_.data(), cache_, ws_, false);
  for (int i = 0; i < n; ++i) emit(active_[i], ws_.logits.data() + static_cast<std::size_t>(i) * V);
}

void Generator::decode_uncached() {
  for (int row : active_) {
    cache_.reset_row(row);
    model_.forward(sequences_[row].data(), 1, static_cast<int>(sequences_[row].size()), &row, cache_, ws_, false);
    emit(row, ws_.logits.data());
  }
}

}  // namespace kvcache
