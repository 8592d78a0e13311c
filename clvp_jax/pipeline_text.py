"""The text normaliser of the pipeline's jobs (`pipeline`, `scoring`, `speech`), below all of them."""

TEXT_NORMALIZER = "tortoise"
"""Text normaliser of every tokenizer the pipeline builds: Tortoise's own (`english_cleaners`, what the real weights
were trained on), not transformers' default; `ClvpTokenizer(normalizer="hf")` gives transformers' ids."""
