"""The words a retired Labs is named with, written out once for the retirement tests that expect them."""

MAIN_SITE = "https://www.perplexity.ai/"
HISTORY = (
    "Perplexity retired Labs in 2025-09: labs.perplexity.ai has redirected to www.perplexity.ai since "
    "(gpt4free issue #3193, 2025-09-28), and gpt4free marked its Labs client not working (2025-10-02)"
)
INSTEAD = (
    'use ChatPerplexityLabs(transport="web") (Perplexity\'s web app), or the paid API through '
    "langchain-perplexity's ChatPerplexity"
)
