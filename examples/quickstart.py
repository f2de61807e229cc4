"""Ask one question, then stream another: the answer text and its numbered sources."""

from _offline import labs_server, parse_args

from langchain_pplx_labs import ChatPerplexityLabs

args = parse_args(__doc__)
with labs_server(args.base_url) as url, ChatPerplexityLabs(model=args.model, base_url=url) as llm:
    answer = llm.invoke("What is the capital of France?")
    print(answer.content)
    for number, source in enumerate(answer.response_metadata["citations"], 1):
        print(f"  [{number}] {source}")

    print("Streaming:", end=" ", flush=True)
    for chunk in llm.stream("What is LangChain?"):
        print(chunk.content, end="", flush=True)
    print()
