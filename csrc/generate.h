// Generator: the decoding loop. Prefill each prompt once, then one decode step per new token, attending over
// the KV cache; or, with use_cache off, recompute the whole sequence at every step (the baseline the cache is
// measured against). Everything is allocated in the constructor; step() allocates nothing.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "kv_cache.h"
#include "model.h"
#include "sampler.h"

namespace kvcache {

struct GenerateOptions {
  int max_new_tokens = 20;
  SamplingParams sampling;
  uint64_t seed = 0;
  int eos_token_id = -1;  // < 0: never stop early
  bool use_cache = true;
  KVType cache_type = KVType::F32;  // how the cache stores keys and values (the uncached baseline's too)

  void validate(const GPT2Config& config) const;
};

class Generator {
 public:
  // prompts: one list of token ids per batch row, of any lengths (>= 1 each).
  Generator(const GPT2Model& model, std::vector<std::vector<int>> prompts, const GenerateOptions& options);

  // Produces the next token of every unfinished row. Returns false, doing nothing, once all rows are finished.
  bool step();
  // Runs step() until every row is finished.
  void run();

  bool done() const { return active_.empty(); }
  // The token each row produced in the last step, -1 for rows that produced none.
  const std::vector<int>& last_tokens() const { return last_tokens_; }
  // Prompt followed by the generated tokens (the EOS included, when one stopped the row), per row.
  const std::vector<std::vector<int>>& sequences() const { return sequences_; }
  const KVCache& cache() const { return cache_; }

 private:
  void prefill();
  void decode_cached();
  void decode_uncached();
  void emit(int row, const float* logits);

  const GPT2Model& model_;
  GenerateOptions options_;
  std::vector<std::vector<int>> sequences_;
  std::vector<int> prompt_lens_;
  std::vector<int> active_;       // rows still generating, ascending
  std::vector<int> step_tokens_;  // (B) inputs of one decode step, packed over the active rows
  std::vector<int> last_tokens_;  // (B)
  std::vector<std::mt19937_64> rngs_;  // one per row: a row's draws do not depend on the rest of the batch
  KVCache cache_;
  Workspace ws_;
  Sampler sampler_;
  bool prefilled_ = false;
};

}  // namespace kvcache
