#include "generate.h"

#include <algorithm>
#include <string>

#include "errors.h"

namespace kvcache {

void GenerateOptions::validate(int n_vocab) const {
  require(max_new_tokens >= 0, "max_new_tokens must be >= 0, got " + std::to_string(max_new_tokens));
  require(num_return_sequences >= 1,
          "num_return_sequences must be >= 1, got " + std::to_string(num_return_sequences));
  sampling.validate();
  processing.validate(n_vocab);
}

namespace {

void check_prompts(const std::vector<std::vector<int>>& prompts, const CausalLM& model) {
  require(!prompts.empty(), "generate needs at least one prompt");
  for (std::size_t r = 0; r < prompts.size(); ++r) {
    const std::vector<int>& p = prompts[r];
    require(!p.empty(), "prompt " + std::to_string(r) + " is empty; give at least one token");
    for (int id : p) {
      if (id < 0 || id >= model.n_vocab()) {
        fail("token id " + std::to_string(id) + " in prompt " + std::to_string(r) + " is outside the vocabulary [0, " +
             std::to_string(model.n_vocab()) + ")");
      }
    }
  }
}

// Positions the generator's own cache needs: the longest prompt plus max_new_tokens, within n_ctx.
int required_length(const std::vector<std::vector<int>>& prompts, const GenerateOptions& options,
                    const CausalLM& model) {
  int longest = 1;
  for (std::size_t r = 0; r < prompts.size(); ++r) {
    const long total = static_cast<long>(prompts[r].size()) + options.max_new_tokens;
    if (total > model.n_ctx()) {
      fail("prompt " + std::to_string(r) + " of " + std::to_string(prompts[r].size()) + " tokens plus max_new_tokens=" +
           std::to_string(options.max_new_tokens) + " is " + std::to_string(total) + " tokens, beyond n_ctx=" +
           std::to_string(model.n_ctx()));
    }
    longest = std::max(longest, static_cast<int>(total));
  }
  return longest;
}

// A given cache: this model's, one row per generated sequence, and room in each row for its prompt and every new
// token (unless it is windowed), so that nothing fails (and nothing is written) half way.
void check_given_cache(const KVCache& cache, const std::vector<std::vector<int>>& sequences,
                       const GenerateOptions& options, const CausalLM& model) {
  model.check_owns(cache);
  const int B = static_cast<int>(sequences.size());
  // the uncached baseline may run on a given cache only from empty rows (it resets them at every step): a cache
  // that carries cross-attention keys and values, say
  bool empty = true;
  for (int r = 0; r < cache.batch_size(); ++r) empty = empty && cache.seq_len(r) == 0;
  require(options.use_cache || empty,
          "use_cache=False recomputes every sequence from its start; it cannot continue a cache");
  require(options.use_cache || !cache.windowed(),
          "use_cache=False recomputes every sequence from its start; it cannot run on a windowed cache (window=, "
          "sinks=), whose rows evict their oldest tokens");
  require(cache.batch_size() == B, "the cache has batch_size " + std::to_string(cache.batch_size()) + ", but " +
                                       std::to_string(B) + " sequences are generated");
  // a windowed cache evicts to make room: its rows never fill, and positions never pass max_seq_len <= n_ctx
  if (cache.windowed()) return;
  const int n = options.num_return_sequences;
  for (int r = 0; r < B; ++r) {
    const int held = r % n == 0 ? cache.seq_len(r) : cache.seq_len(r - r % n);  // a follower gets its leader's
    const long total = static_cast<long>(held) + static_cast<long>(sequences[r].size()) + options.max_new_tokens;
    if (total > cache.max_seq_len()) {
      fail("cache row " + std::to_string(r) + " holds " + std::to_string(held) + " positions; its " +
           std::to_string(sequences[r].size()) + " new tokens plus max_new_tokens=" +
           std::to_string(options.max_new_tokens) + " would make " + std::to_string(total) +
           ", beyond the cache's max_seq_len=" + std::to_string(cache.max_seq_len()));
    }
  }
}

// Each prompt after its context: the generator's sequences hold both.
std::vector<std::vector<int>> join_contexts(std::vector<std::vector<int>> prompts,
                                            const std::vector<std::vector<int>>& contexts) {
  if (contexts.empty()) return prompts;
  require(contexts.size() == prompts.size(), "contexts: " + std::to_string(contexts.size()) + " given for " +
                                                 std::to_string(prompts.size()) + " prompts");
  for (std::size_t p = 0; p < prompts.size(); ++p) {
    prompts[p].insert(prompts[p].begin(), contexts[p].begin(), contexts[p].end());
  }
  return prompts;
}

std::vector<std::vector<int>> repeat_rows(std::vector<std::vector<int>> prompts, int n) {
  if (n == 1) return prompts;
  std::vector<std::vector<int>> rows;
  for (const auto& p : prompts) rows.insert(rows.end(), static_cast<std::size_t>(n), p);
  return rows;
}

}  // namespace

Generator::Generator(const CausalLM& model, std::vector<std::vector<int>> prompts, const GenerateOptions& options,
                     KVCache* cache, std::vector<std::vector<int>> contexts)
    : model_(model), options_(options), sampler_(model.n_vocab()), processor_(model.n_vocab()) {
  options.validate(model.n_vocab());
  check_prompts(prompts, model);
  const int P = static_cast<int>(prompts.size());
  const int n = options.num_return_sequences;
  require(static_cast<long>(P) * n <= 1 << 20, "too many rows: " + std::to_string(P) + " prompts x " +
                                                   std::to_string(n) + " num_return_sequences");
  require(contexts.empty() || options.use_cache, "use_cache=False recomputes every sequence: it takes no contexts");
  {
    const std::vector<std::vector<int>> fed = repeat_rows(prompts, n);
    if (cache != nullptr) {
      check_given_cache(*cache, fed, options, model);
      cache_ = cache;
    } else {
      owned_cache_ = std::make_unique<KVCache>(model.new_cache(static_cast<int>(fed.size()),
                                                               required_length(fed, options, model),
                                                               options.cache_type));
      cache_ = owned_cache_.get();
    }
  }
  for (std::size_t p = 0; p < contexts.size() && p < prompts.size(); ++p) {
    context_lens_.insert(context_lens_.end(), static_cast<std::size_t>(n), static_cast<int>(contexts[p].size()));
  }
  sequences_ = repeat_rows(join_contexts(std::move(prompts), contexts), n);
  const int B = static_cast<int>(sequences_.size());
  context_lens_.resize(B, 0);
  const int V = model.n_vocab();
  if (options.keep_scores) scores_.assign(static_cast<std::size_t>(B) * V, 0.0f);
  if (options.keep_logits) logits_.assign(static_cast<std::size_t>(B) * V, 0.0f);
  int longest_prompt = 0;
  for (int r = 0; r < B; ++r) {
    prompt_lens_.push_back(static_cast<int>(sequences_[r].size()));
    longest_prompt = std::max(longest_prompt, prompt_lens_[r] - context_lens_[r]);
    sequences_[r].reserve(sequences_[r].size() + options.max_new_tokens);
    rngs_.emplace_back(options.seed + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(r));
    if (options.max_new_tokens > 0) active_.push_back(r);
  }
  step_tokens_.assign(B, 0);
  last_tokens_.assign(B, -1);
  // The largest pass: a batched prefill of equal prompts (group leaders only), one prompt, or (without cache) a
  // whole sequence.
  int widest = options.use_cache ? std::max(P * longest_prompt, B) : cache_->max_seq_len();
  // a windowed cache takes a longer prompt in pieces of at most max_seq_len tokens, one row at a time
  if (cache_->windowed()) widest = std::min(widest, std::max(P, B) * cache_->max_seq_len());
  model.reserve(ws_, widest, B, cache_->max_seq_len());
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
  std::vector<std::vector<int>> out;
  out.reserve(sequences_.size());
  for (std::size_t r = 0; r < sequences_.size(); ++r) {
    out.emplace_back(sequences_[r].begin() + context_lens_[r], sequences_[r].end());
  }
  return out;
}

std::vector<float> Generator::last_scores() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return scores_;
}

std::vector<float> Generator::last_logits() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return logits_;
}

void Generator::finish_row(int row) {
  std::lock_guard<std::mutex> lock(mutex_);
  require(row >= 0 && row < static_cast<int>(sequences_.size()),
          "row " + std::to_string(row) + " is outside [0, " + std::to_string(sequences_.size()) + ")");
  active_.erase(std::remove(active_.begin(), active_.end(), row), active_.end());
}

long Generator::prefilled_tokens() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return prefilled_tokens_;
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
    const std::vector<int>& eos = options_.processing.eos_token_ids;
    return produced >= options_.max_new_tokens ||
           std::find(eos.begin(), eos.end(), sequences_[row].back()) != eos.end();
  };
  active_.erase(std::remove_if(active_.begin(), active_.end(), finished), active_.end());
  return true;
}

void Generator::run() {
  while (step()) {
  }
}

void Generator::emit(int row, const float* logits) {
  const std::size_t V = static_cast<std::size_t>(model_.n_vocab());
  if (options_.keep_logits) std::copy(logits, logits + V, logits_.data() + row * V);
  const float* scores = logits;
  if (options_.processing.active()) {
    const std::vector<int>& seq = sequences_[row];
    const int generated = static_cast<int>(seq.size()) - prompt_lens_[row];
    scores = processor_.apply(logits, options_.processing, seq.data(), static_cast<int>(seq.size()), generated);
  }
  float* processed = options_.keep_scores ? scores_.data() + row * V : nullptr;
  const int token = sampler_.sample(scores, options_.sampling, uniform_coin(rngs_[row]), processed);
  sequences_[row].push_back(token);
  last_tokens_[row] = token;
}

void Generator::fan_out(int leader, const float* logits) {
  emit(leader, logits);
  for (int k = 1; k < options_.num_return_sequences; ++k) {
    cache_->copy_row(leader, *cache_, leader + k);
    emit(leader + k, logits);
  }
}

void Generator::prefill() {
  // Only each group's leader is computed; at prefill every row is active, so the leaders are every n-th row.
  const int V = model_.n_vocab();
  const int n_rows = static_cast<int>(sequences_.size());
  std::vector<int> leaders;
  for (int row = 0; row < n_rows; row += options_.num_return_sequences) leaders.push_back(row);
  const int n = static_cast<int>(leaders.size());
  const bool equal_lengths = std::all_of(leaders.begin(), leaders.end(),
                                         [&](int row) {
                                           return prompt_lens_[row] - context_lens_[row] ==
                                                  prompt_lens_[leaders[0]] - context_lens_[leaders[0]];
                                         });
  if (equal_lengths) {
    // One pass over all prompts: the weights are read once for the whole batch.
    const int T = prompt_lens_[leaders[0]] - context_lens_[leaders[0]];
    std::vector<int> tokens;
    tokens.reserve(static_cast<std::size_t>(n) * T);
    for (int row : leaders) {
      tokens.insert(tokens.end(), sequences_[row].begin() + context_lens_[row], sequences_[row].end());
    }
    model_.forward(tokens.data(), n, T, leaders.data(), *cache_, ws_, false);
    prefilled_tokens_ += static_cast<long>(n) * T;
    for (int i = 0; i < n; ++i) fan_out(leaders[i], ws_.logits.data() + static_cast<std::size_t>(i) * V);
  } else {
    // Ragged prompts: each row alone, so no padding ever enters a row's attention.
    for (int row : leaders) {
      const int fed = prompt_lens_[row] - context_lens_[row];
      model_.forward(sequences_[row].data() + context_lens_[row], 1, fed, &row, *cache_, ws_, false);
      prefilled_tokens_ += fed;
      fan_out(row, ws_.logits.data());
    }
  }
}

void Generator::decode_cached() {
  const int V = model_.n_vocab();
  const int n = static_cast<int>(active_.size());
  for (int i = 0; i < n; ++i) step_tokens_[i] = sequences_[active_[i]].back();
  model_.forward(step_tokens_.data(), n, 1, active_.data(), *cache_, ws_, false);
  for (int i = 0; i < n; ++i) emit(active_[i], ws_.logits.data() + static_cast<std::size_t>(i) * V);
}

void Generator::decode_uncached() {
  for (int row : active_) {
    cache_->reset_row(row);
    model_.forward(sequences_[row].data(), 1, static_cast<int>(sequences_[row].size()), &row, *cache_, ws_, false);
    emit(row, ws_.logits.data());
  }
}

}  // namespace kvcache
