"""Retrieval-augmented answer: our documents go into the prompt, Labs' web sources come back as footnotes."""

from _offline import labs_server, parse_args
from langchain_core.documents import Document
from langchain_core.prompts import ChatPromptTemplate

from langchain_pplx_labs import ChatPerplexityLabs

DOCS = [
    Document("Paris is the capital and largest city of France.", metadata={"source": "notes/paris.md"}),
    Document("The Seine flows through Paris.", metadata={"source": "notes/seine.md"}),
    Document("Rome is the capital of Italy.", metadata={"source": "notes/rome.md"}),
]


def retrieve(question: str, k: int = 2) -> list[Document]:
    """A toy keyword retriever; swap in any LangChain retriever."""
    words = set(question.lower().replace("?", "").split())
    return sorted(DOCS, key=lambda d: -len(words & set(d.page_content.lower().rstrip(".").split())))[:k]


prompt = ChatPromptTemplate.from_messages(
    [("system", "Use this context and cite web sources as [n]:\n{context}"), ("human", "{question}")]
)
args = parse_args(__doc__)
question = "What is the capital of France?"
docs = retrieve(question)
with labs_server(args.base_url) as url, ChatPerplexityLabs(model=args.model, base_url=url) as llm:
    answer = (prompt | llm).invoke({"context": "\n".join(d.page_content for d in docs), "question": question})
print(answer.content)
print("\nContext:", ", ".join(d.metadata["source"] for d in docs))
print("Sources:")
for number, url in enumerate(answer.response_metadata["citations"], 1):
    print(f"[{number}] {url}")
