"""Engine settings the exactness tests run under, besides the defaults."""

# Engine settings the exactness tests also run under (`indirect` parametrization of
# `engine`); each must give the same tokens as the default.
VARIANTS = {
    "default": {},
    "prefix caching off": {"enable_prefix_caching": False},
    "chunks of 16": {"max_num_batched_tokens": 16},
    # 80 blocks of 4 tokens (the tiny model's KV is 1 KiB a token): one max-model-len
    # sequence. Chunks of 32 admit prompts before all their blocks are free, so eight
    # running sequences must preempt each other. No prefix caching here, so that how
    # much they preempt does not depend on what earlier tests left in the cache.
    "small KV": {
        "enable_prefix_caching": False,
        "max_model_len": 320,
        "kv_cache_memory": 320 * 1024,
        "block_size": 4,
        "max_num_batched_tokens": 32,
    },
}
