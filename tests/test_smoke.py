"""The shortest path works end to end: a question over a real socket returns the emulator's answer."""

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import LabsEmulator


async def test_ainvoke_returns_scripted_answer_and_sources(
    amodel: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.script(answer="Paris is the capital [1].", citations=["https://example.org/paris"])
    message = await amodel.ainvoke("What is the capital of France?")
    assert message.content == "Paris is the capital [1]."
    assert message.response_metadata["citations"] == ["https://example.org/paris"]
    assert emulator.requests[-1]["messages"][-1] == {
        "role": "user",
        "content": "What is the capital of France?",
    }
