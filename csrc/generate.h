// Generator: the decoding loop. Prefill each prompt once, then one decode step per new token, attending over
// the KV cache; or, with use_cache off, recompute the whole sequence at every step (the baseline the cache is
// measured against). Everything is allocated in the constructor; step() allocates nothing.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <vector>

#include "kv_cache.h"
#include "causal_lm.h"
#include "logits_processors.h"
#include "sampler.h"

namespace kvcache {

struct GenerateOptions {
  int max_new_tokens = 20;
  SamplingParams sampling;
  ProcessorParams processing;  // repetition penalty, n-gram bans, min_new_tokens; its eos_token_ids end a row
  uint64_t seed = 0;
  bool use_cache = true;
  KVType cache_type = KVType::F32;  // how the cache stores keys and values (the uncached baseline's too)
  // Rows per prompt (transformers' num_return_sequences): each prompt is prefilled once and its keys and values
  // copied to the other rows of its group, which then sample on their own.
  int num_return_sequences = 1;
  // Keep the last step's scores (transformers' output_scores: what the token was chosen from) and raw logits,
  // (rows, n_vocab) each, for last_scores() / last_logits(); off, nothing is kept.
  bool keep_scores = false;
  bool keep_logits = false;

  void validate(int n_vocab) const;
};

class Generator {
 public:
  // prompts: one list of token ids per prompt, of any lengths (>= 1 each); rows are the prompts, each repeated
  // num_return_sequences times (row p * n + k). Without a cache the generator allocates its own, just large enough.
  // With one (of batch_size = the rows, made by this model), every row continues where the cache stands: prompts
  // are the tokens after what it holds, and a group's first row holds the context that its other rows, replaced,
  // get copies of. The cache must outlive the generator; use_cache=false cannot continue one.
  // contexts (empty, or one per prompt): tokens that come before each prompt and that the cache already holds
  // (a prefix cache's blocks, past_key_values): never fed, but read by the logits processors.
  Generator(const CausalLM& model, std::vector<std::vector<int>> prompts, const GenerateOptions& options,
            KVCache* cache = nullptr, std::vector<std::vector<int>> contexts = {});

  // Produces the next token of every unfinished row. Returns false, doing nothing, once all rows are finished.
  bool step();
  // Runs step() until every row is finished.
  void run();

  // The readers return copies taken between two steps: a step may be running on another thread (the bindings
  // release the GIL for it), and a reader must neither see a half-done step nor read a vector being appended to.
  bool done() const;
  // The token each row produced in the last step, -1 for rows that produced none.
  std::vector<int> last_tokens() const;
  // Prompt followed by the generated tokens (the EOS included, when one stopped the row), per row; not the contexts.
  std::vector<std::vector<int>> sequences() const;
  // The last step's (rows, n_vocab) scores and logits, row-major; rows that produced nothing keep older values.
  // Empty unless keep_scores / keep_logits.
  std::vector<float> last_scores() const;
  std::vector<float> last_logits() const;
  // Ends a row now (a stop string matched): it produces nothing more.
  void finish_row(int row);
  // Tokens the prefill passed through the model: each prompt once, however many rows it fans out to.
  long prefilled_tokens() const;
  int n_vocab() const { return model_.n_vocab(); }
  // Its size is fixed at construction, so reading it needs no lock.
  const KVCache& cache() const { return *cache_; }

 private:
  bool advance();  // step()'s work, with the lock held
  void prefill();
  void decode_cached();
  void decode_uncached();
  void emit(int row, const float* logits);
  // A group leader's prefill is done: its followers get copies of its keys and values and sample from its logits.
  void fan_out(int leader, const float* logits);

  const CausalLM& model_;
  GenerateOptions options_;
  std::vector<std::vector<int>> sequences_;  // per row: its context, prompt, then the generated tokens
  std::vector<int> context_lens_;  // tokens of each row's context: held in the cache, not fed
  std::vector<int> prompt_lens_;   // context + prompt
  std::vector<int> active_;       // rows still generating, ascending
  std::vector<int> step_tokens_;  // (B) inputs of one decode step, packed over the active rows
  std::vector<int> last_tokens_;  // (B)
  std::vector<std::mt19937_64> rngs_;  // one per row: a row's draws do not depend on the rest of the batch
  std::unique_ptr<KVCache> owned_cache_;  // the generator's own cache, when none was given
  KVCache* cache_;
  Workspace ws_;
  Sampler sampler_;
  LogitsProcessor processor_;
  std::vector<float> scores_;  // (B, V) when keep_scores
  std::vector<float> logits_;  // (B, V) when keep_logits
  bool prefilled_ = false;
  long prefilled_tokens_ = 0;
  // Held for the whole of a step and by the readers: steps from several threads run one after another, and a
  // reader waits for the step in progress (a pthread mutex allocates nothing, so decode stays allocation-free).
  mutable std::mutex mutex_;
};

}  // namespace kvcache
