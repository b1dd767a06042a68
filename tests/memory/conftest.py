from tests.agents.conftest import llm  # noqa: F401  (the scripted LLM, reset per test)
