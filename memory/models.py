"""Memory tiers: working memory, summaries, semantic memories, checkpoints."""
